#!/usr/bin/env python3
"""Collect results/*.txt (one per process) into a markdown table. Run: nice -n 10 python3 summarize.py"""
import glob, json, os, re
rows = []
for f in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "*.txt"))):
    txt = open(f).read()
    m = re.search(r"^RESULT (\{.*\})$", txt, re.M)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", txt)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", txt)
    user = re.search(r"User time \(seconds\): (\S+)", txt)
    cpu = re.search(r"Percent of CPU this job got: (\S+)", txt)
    ex = re.search(r"^exit=(\d+)", txt, re.M)
    head = txt.splitlines()[0]
    if not m:
        rows.append(f"| {head} | no RESULT (exit={ex.group(1) if ex else '?'}) |")
        continue
    r = json.loads(m.group(1))
    rows.append("| {n} | {case} | {fit_s:.2f} | {n_trees} | {auc:.4f} | {logloss:.4f} | {rss:.0f} | {cpu} | {ident} | {json_mb:.1f} | {rt} | {us_m:.1f} / {us_t:.1f} | {bp:.3f} | {thr} |".format(
        n=r["n"], case=r["case"], fit_s=r["fit_s"], n_trees=r["n_trees"], auc=r["auc"], logloss=r["logloss"],
        rss=int(rss.group(1)) / 1024 if rss else float("nan"), cpu=cpu.group(1) if cpu else "?",
        ident=(("yes" if r["refit_identical"] else "NO") + ("" if r["json_identical"] else " (json text differs)")) if r.get("refit_done", True) else "not run",
        json_mb=r["json_bytes"] / 1e6, rt="yes" if r["roundtrip_identical"] else "NO",
        us_m=r["row_us_matrix"], us_t=r["row_us_trees"], bp=r["batch_pred_s"],
        thr=f'{r["fit_threads_seen"]} OS thr (rayon global {r["rayon_global_threads"]})'))
print("| N | case | fit s | trees | AUC | logloss | peak RSS MB (whole process) | CPU% (process) | refit bit-identical | JSON MB | load→same preds | 1-row µs (Matrix / tree loop) | batch predict s (holdout, parallel) | threads during fit |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
