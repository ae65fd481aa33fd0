//! The daemon under traffic: a reader in another process reads its own writes with `?min_seq`, and under an
//! ingest overload `up` answers the excess 503 with `Retry-After` while its serving layer keeps answering.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

fn event(i: u64, key: &str) -> String {
    format!(
        r#"{{"event_id": "live-{i}", "user_id": "{key}", "ts": 1769904000000, "amount": 35.5, "country": "us", "mobile": false, "session_seconds": 80, "converted": "yes"}}"#
    )
}

fn pipeline(extra_speed: &str, extra_serving: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    let text = std::fs::read_to_string(&spec_path)
        .unwrap()
        .replace("[speed]\n", &format!("[speed]\n{extra_speed}"))
        .replace("[serving]\n", &format!("[serving]\n{extra_serving}"));
    std::fs::write(&spec_path, text).unwrap();
    // Predictions come from the speed layer's model when it continues a linear champion.
    pin_families(&spec_path, &["linear"]);
    let sp = spec_path.to_str().unwrap().to_string();
    let stream = dir.path().join("stream.ndjson");
    run_ok(&["generate", "--spec", &sp, "--rows", "2000", "--stream-rows", "0", "--stream", stream.to_str().unwrap()]);
    run_ok(&["batch", "--spec", &sp]);
    (dir, sp)
}

#[test]
fn a_reader_in_another_process_reads_its_own_writes_with_min_seq() {
    // Long enough for a loaded machine: the answer comes as soon as the write is visible.
    let (_dir, sp) = pipeline("", "min_seq_wait = \"3s\"\n");
    let (speed_port, serve_port) = (free_port(), free_port());
    let speed =
        start(&["speed", "--spec", &sp, "--listen", &format!("127.0.0.1:{speed_port}")], speed_port, "/health/live");
    let serve =
        start(&["serve", "--spec", &sp, "--listen", &format!("127.0.0.1:{serve_port}")], serve_port, "/health/ready");
    for i in 0..5 {
        let (status, ack) = post(&format!("{}/v1/events", speed.base), &event(i, "reader"));
        assert_eq!(status, 200, "{ack}");
        let seq = ack["last_seq"].as_u64().unwrap();
        // No sleep: the read waits until the serving process has the write, then answers it.
        let (status, view) = get(&format!("{}/v1/views/reader?min_seq={seq}", serve.base));
        assert_eq!((status, view["count"].as_u64()), (200, Some(i + 1)), "{view}");
        assert!(view["speed_seq"].as_u64().unwrap() >= seq);
        let (status, p) = post(&format!("{}/v1/predict?min_seq={seq}&model=speed", serve.base), r#"{"amount": 20.0}"#);
        assert_eq!(status, 200, "{p}");
        assert!(p["speed_seq"].as_u64().unwrap() >= seq && p["speed_update"].as_u64().unwrap() > i, "{p}");
    }
    // A sequence number nobody has written yet: 409 once `serving.min_seq_wait` has passed.
    let (status, v) = get(&format!("{}/v1/views/reader?min_seq=999999999", serve.base));
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("min_seq 999999999"), "{v}");
}

#[test]
fn up_sheds_an_ingest_overload_with_503_and_keeps_serving() {
    let (_dir, sp) = pipeline("max_queued = 1\nmax_parsing = 1\ningest_wait = \"10ms\"\n", "");
    let (server, ingest) = start_up(&sp);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let (stop, ingest) = (stop.clone(), ingest.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let (mut ok, mut shed, mut acked) = (0u64, 0u64, 0u64);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) && n < 40 {
                    let body: Vec<String> =
                        (0..1500).map(|i| event(w * 1_000_000 + n * 1500 + i, &format!("load-{w}"))).collect();
                    let mut r = agent.post(&format!("{ingest}/v1/events")).send(&body.join("\n")).unwrap();
                    match r.status().as_u16() {
                        200 => {
                            ok += 1;
                            let v: serde_json::Value =
                                serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                            acked += v["accepted"].as_u64().unwrap();
                            n += 1;
                        }
                        503 => {
                            assert!(r.headers().get("retry-after").is_some(), "503 without Retry-After");
                            shed += 1;
                        }
                        other => panic!("ingest answered {other}"),
                    }
                }
                (ok, shed, acked)
            })
        })
        .collect();
    // The serving layer answers every prediction while ingest is overloaded.
    let mut predictions = 0;
    while predictions < 300 {
        let (status, p) = post(&format!("{}/v1/predict", server.base), r#"{"amount": 20.0, "country": "fr"}"#);
        assert_eq!(status, 200, "{p}");
        predictions += 1;
    }
    std::thread::sleep(Duration::from_millis(10));
    stop.store(true, Ordering::SeqCst);
    let results: Vec<(u64, u64, u64)> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let shed: u64 = results.iter().map(|r| r.1).sum();
    let acked: u64 = results.iter().map(|r| r.2).sum();
    assert!(shed > 0, "the overload should have been shed: {results:?}");
    assert!(acked > 0, "{results:?}");
    // Nothing acknowledged is missing from the views.
    let mut counted = 0;
    for w in 0..8 {
        let (status, v) = get(&format!("{}/v1/views/load-{w}", server.base));
        if status == 200 {
            counted += v["count"].as_u64().unwrap();
        }
    }
    assert_eq!(counted, acked, "{results:?}");
}

#[test]
fn a_drift_on_the_live_errors_makes_ready_degraded_and_status_says_why() {
    let (_dir, sp) = pipeline("", "");
    let (server, ingest) = start_up(&sp);
    let (_, ready) = get(&format!("{}/health/ready", server.base));
    assert_eq!(ready["status"], "ready", "{ready}");
    // The same record, 1,500 times "yes", then 600 times "no": whatever a model learned first, its errors rise after.
    // A drift shows for a window (1,000 events) after it, so the stream ends inside that window whenever the last
    // refresh comes.
    let labelled =
        |i: u64, label: &str| event(i, "drift").replace(r#""converted": "yes""#, &format!(r#""converted": "{label}""#));
    for (first, n, label) in [(0u64, 500u64, "yes"), (500, 500, "yes"), (1_000, 500, "yes"), (10_000, 600, "no")] {
        let body: Vec<String> = (first..first + n).map(|i| labelled(i, label)).collect();
        let (status, ack) = post(&format!("{ingest}/v1/events"), &body.join("\n"));
        assert_eq!((status, ack["accepted"].as_u64()), (200, Some(n)), "{ack}");
    }
    // The windows are refreshed at each checkpoint tick: poll, never sleep-and-assert.
    let mut last = serde_json::Value::Null;
    wait_for(Duration::from_secs(20), || {
        let (status, r) = get(&format!("{}/health/ready", server.base));
        assert_eq!(status, 200, "degraded is still ready: {r}");
        last = r;
        last["status"] == "degraded"
    });
    let alerts = last["alerts"].as_array().unwrap();
    assert!(alerts.iter().any(|a| a.as_str().unwrap().contains("drift since seq")), "{last}");
    // `status` reads the last checkpoint, written at a later tick than the one that refreshed the windows.
    let mut out = String::new();
    wait_for(Duration::from_secs(20), || {
        out = run_ok(&["status", "--spec", &sp]);
        out.contains("2100 accepted")
    });
    assert!(out.contains("status: degraded") && out.contains("hoeffding_tree"), "{out}");
    drop(server);
}
