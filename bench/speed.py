"""Measurements for bench/speed: the speed daemon's state while it streams events, and freshness (ack -> visible).
Each prints JSON lines. Standard library only."""

import json
import os
import sys
import time
import urllib.request


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def post(url, body, timeout=5):
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def parquet_files(path):
    return sum(1 for root, _, files in os.walk(path) for n in files if n.endswith(".parquet") and not n.startswith("."))


def watch(url, pid, state, master, total, milestones):
    """Polls the daemon's /v1/status until `total` events are applied; prints one line per milestone and a summary."""
    milestones = sorted(milestones)
    start = time.perf_counter()
    base_seq = None
    peak_rss = 0
    while True:
        try:
            s = get(f"{url}/v1/status")
        except Exception:
            time.sleep(0.05)
            continue
        if base_seq is None:
            base_seq = s["last_seq"] - s["accepted"]
        done = s["accepted"] + s["duplicates"] + s["rejected"]
        p = proc_status(pid)
        peak_rss = max(peak_rss, p.get("VmRSS", 0))
        while milestones and done >= milestones[0]:
            m = milestones.pop(0)
            print(json.dumps({
                "events": m, "seconds": time.perf_counter() - start, "rss": p.get("VmRSS"), "peak_rss": p.get("VmHWM"),
                "keys": s["keys"], "realtime_bytes": s["realtime_bytes"],
                "checkpoint_last_ms": s["checkpoint_last_ms"], "checkpoint_max_ms": s["checkpoint_max_ms"],
                "checkpoint_last_bytes": s["checkpoint_last_bytes"], "checkpoint_bytes": du(os.path.join(state, "checkpoint")),
                "log_bytes": du(os.path.join(state, "log")), "dedup_bytes": du(os.path.join(state, "dedup")),
                "dedup_in_memory": s["dedup_in_memory"], "dedup_flush_max_ms": s.get("dedup_flush_max_ms"),
                "master_files": parquet_files(master),
                "archived_through": s["archived_through"], "last_seq": s["last_seq"],
            }), flush=True)
        if done >= total:
            secs = time.perf_counter() - start
            print(json.dumps({"done": total, "seconds": secs, "events_per_s": total / secs, "peak_rss": peak_rss,
                              "speed_loss": s.get("speed_loss"), "batch_loss": s.get("batch_loss")}), flush=True)
            return
        time.sleep(0.1)


def freshness(ingest, serve, n, key_prefix):
    """Posts one event at a time; measures from its acknowledgement until /v1/predict on `serve` answers with a
    speed_seq that includes it."""
    samples = []
    record = '{"amount": 20.0, "country": "fr", "mobile": true, "session_seconds": 60}'
    for i in range(n):
        event = {"event_id": f"{key_prefix}-{i}-{time.time_ns()}", "user_id": f"{key_prefix}-{i % 50}",
                 "ts": 1769904000000, "amount": 20.0, "country": "fr", "mobile": True, "session_seconds": 60,
                 "converted": "yes"}
        ack = post(f"{ingest}/v1/events", json.dumps(event))
        t0 = time.perf_counter()
        seq = ack["last_seq"]
        while True:
            p = post(f"{serve}/v1/predict", record)
            if (p.get("speed_seq") or 0) >= seq:
                break
        samples.append(time.perf_counter() - t0)
        time.sleep(0.01)
    samples.sort()
    pct = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] * 1000
    print(json.dumps({"samples": n, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": samples[-1] * 1000}))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "watch":
        watch(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]),
              [int(m) for m in sys.argv[7].split(",")])
    elif what == "freshness":
        freshness(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
