"""The whole pipeline on drifting and real streams: history (the first 70%) for the batch layer, then the stream (the
last 30%) for the speed layer and the blend, beside River, Vowpal Wabbit and a static LightGBM on the same split.

    pipeline.py gen OUT_DIR N       per stream variant a folder: spec.toml, master/history.parquet, stream.ndjson,
                                    all.csv, meta.json; the folders' names in order in OUT_DIR/streams.txt
    pipeline.py peers DIR           River and Vowpal Wabbit learn the history, then test-then-train on the stream
    pipeline.py lightgbm DIR        LightGBM fits the history and scores the stream; one JSON line each
    pipeline.py record STATUS SPEED_LOG START END   lambda-ml's JSON line from its status and replay log
    pipeline.py summary RESULTS OUT_DIR   markdown tables: per stream, per family, throughput

Environment (read by gen): STREAMS (base names, default all), SEEDS (default "1 2 3"), POSITIONS (drift positions as
shares of the whole stream, default "0.8 0.9 0.5"; seed s takes the ((s - 1) mod len)-th, so seed 1 always drifts at
the first, whatever else SEEDS holds), BUDGET, RETRAIN_BUDGET (the spec's batch and retraining budgets in seconds).
Synthetic streams get one variant per seed (folder `name-sS`; generator seeds 100 s + 1, 100 s + 2, ...); the real
data sets, whose order is theirs, one (folder `name`).
"""
import csv
import json
import math
import os
import sys
import time

HISTORY = 0.7


def synth():
    return __import__("river.datasets.synth", fromlist=["x"])


def drifting(before, after, at, n, seed):
    # As abrupt as River's sigmoid allows without overflowing: a change over n/150 events.
    return synth().ConceptDriftStream(stream=before, drift_stream=after, position=int(n * at),
                                      width=max(50, n // 150), seed=seed)


def pct(p):
    return f"{100 * p:.0f}%"


def agrawal_drift(n, s, p):
    # Agrawal's rule 2 (index 1) becomes rule 5 (index 4) abruptly at p.
    return (drifting(synth().Agrawal(classification_function=1, seed=100 * s + 1),
                     synth().Agrawal(classification_function=4, seed=100 * s + 2), p, n, 100 * s + 3),
            f"Agrawal rule 2 becomes rule 5 at {pct(p)}")


def sea_drift(n, s, p):
    # SEA's threshold moves (variant 0 to 3) at p.
    return (drifting(synth().SEA(variant=0, seed=100 * s + 1), synth().SEA(variant=3, seed=100 * s + 2), p, n,
                     100 * s + 3), f"SEA variant 0 becomes variant 3 at {pct(p)}")


def rbf_moving(n, s, p):
    # Centroids that move all along: no drift position.
    return (synth().RandomRBFDrift(seed_model=100 * s + 1, seed_sample=100 * s + 2, n_classes=4, n_features=10,
                                   n_centroids=50, change_speed=0.001, n_drift_centroids=25),
            "random RBF, 25 of 50 centroids moving all along")


def friedman(kind):
    # River's FriedmanDrift (10 uniform features, 5 relevant). The first change at p, the others after it, so that
    # whatever p, at least one change falls in the replayed 30%: lea expands its drifting regions at p, p + d, p + 2d
    # (d = (1 - p) / 3); gra switches to the other function at p and back at p + (1 - p) / 2; gsg moves gradually
    # (over n / 50 events) at p and again at p + (1 - p) / 2.
    def make(n, s, p):
        if kind == "lea":
            d = (1 - p) / 3
            at = (p, p + d, p + 2 * d)
            text = f"local expanding abrupt drift at {', '.join(pct(a) for a in at)}"
        else:
            at = (p, p + (1 - p) / 2)
            text = (f"global recurring abrupt drift at {pct(at[0])}, back at {pct(at[1])}" if kind == "gra" else
                    f"global slow gradual drift at {pct(at[0])} and {pct(at[1])} (over {max(1, n // 50)} events)")
        return (synth().FriedmanDrift(drift_type=kind, position=tuple(int(n * a) for a in at),
                                      transition_window=max(1, n // 50), seed=100 * s + 1), text)
    return make


def river_set(cls, text):
    def rows():
        from river import datasets
        return list(getattr(datasets, cls)()), text
    return rows


def diabetes():
    from sklearn.datasets import load_diabetes
    d = load_diabetes()
    return ([(dict(zip(d.feature_names, x)), float(y)) for x, y in zip(d.data, d.target)],
            "scikit-learn's diabetes set (442 patients, 10 features), in its order")


# name: (task, generator of n rows for a seed and a drift position, or a fixed data set)
SYNTHETIC = {
    "agrawal_drift": ("classification", agrawal_drift),
    "sea_drift": ("classification", sea_drift),
    "rbf_moving": ("classification", rbf_moving),
    "friedman_lea": ("regression", friedman("lea")),
    "friedman_gra": ("regression", friedman("gra")),
    "friedman_gsg": ("regression", friedman("gsg")),
}
REAL = {
    "phishing": ("classification", river_set("Phishing", "River's phishing set (1,250 web pages)")),
    "bananas": ("classification", river_set("Bananas", "River's bananas set (5,300 points, 2 features)")),
    "image_segments": ("classification", river_set("ImageSegments", "River's image segments (2,310, 7 classes)")),
    "shuttle": ("classification", river_set("Shuttle", "River's shuttle set (49,097, 7% positive)")),
    "trump_approval": ("regression", river_set("TrumpApproval", "River's Trump approval set (1,001 days)")),
    "chick_weights": ("regression", river_set("ChickWeights", "River's chick weights (578 weighings)")),
    "diabetes": ("regression", diabetes),
}
STREAMS = {n: s for task in ("classification", "regression") for n, s in {**SYNTHETIC, **REAL}.items() if s[0] == task}


def variants(n):
    """(folder, base name, seed or None, task, rows, description) for each wanted stream variant."""
    wanted = os.environ.get("STREAMS", "").split() or list(STREAMS)
    unknown = [w for w in wanted if w not in STREAMS]
    if unknown:
        sys.exit(f"STREAMS: unknown {unknown}; known: {' '.join(STREAMS)}")
    seeds = [int(s) for s in os.environ.get("SEEDS", "1 2 3").split()]
    positions = [float(p) for p in os.environ.get("POSITIONS", "0.8 0.9 0.5").split()]
    for name in (s for s in STREAMS if s in wanted):
        task, make = STREAMS[name]
        if name in REAL:
            rows, text = make()
            yield name, name, None, task, rows, text
            continue
        for s in seeds:
            stream, text = make(n, s, positions[(s - 1) % len(positions)])
            yield f"{name}-s{s}", name, s, task, list(stream.take(n)), f"{text}, seed {s}"


def gen(out, n):
    import pyarrow as pa
    import pyarrow.parquet as pq
    names = []
    for folder, base, seed, task, rows, text in variants(n):
        keys = list(rows[0][0].keys())
        regression = task == "regression"
        if regression:
            spec_task = "regression"
        else:
            labels = sorted({str(y) for _, y in rows})
            spec_task = "binary_classification" if len(labels) == 2 else "multiclass_classification"
        cut = int(len(rows) * HISTORY)
        d = f"{out}/{folder}"
        os.makedirs(f"{d}/master", exist_ok=True)
        cols = {"event_id": [], "key": [], "ts": [], "_ingest_seq": []}
        for i in range(len(keys)):
            cols[f"x{i}"] = []
        cols["label"] = []
        t0 = 1_769_904_000_000
        with open(f"{d}/stream.ndjson", "w") as s, open(f"{d}/all.csv", "w", newline="") as c:
            w = csv.writer(c)
            w.writerow([f"x{i}" for i in range(len(keys))] + ["label"])
            for j, (x, y) in enumerate(rows):
                xs = [float(x[k]) for k in keys]
                label = float(y) if regression else str(y)
                w.writerow(xs + [label])
                if j < cut:
                    cols["event_id"].append(f"e{j}")
                    cols["key"].append(f"k{j % 100}")
                    cols["ts"].append(t0 + j * 1000)
                    cols["_ingest_seq"].append(j + 1)
                    for i, v in enumerate(xs):
                        cols[f"x{i}"].append(v)
                    cols["label"].append(label)
                else:
                    e = {"event_id": f"e{j}", "key": f"k{j % 100}", "ts": t0 + j * 1000, "label": label}
                    e.update({f"x{i}": v for i, v in enumerate(xs)})
                    s.write(json.dumps(e) + "\n")
        table = pa.table({k: pa.array(v, pa.uint64()) if k == "_ingest_seq" else v for k, v in cols.items()})
        pq.write_table(table, f"{d}/master/history.parquet")
        features = "".join(f'[[features]]\nname = "x{i}"\ntype = "numeric"\n\n' for i in range(len(keys)))
        with open(f"{d}/spec.toml", "w") as f:
            f.write(f'name = "{folder}"\n\n[dataset]\ntime_column = "ts"\nkey_column = "key"\nid_column = "event_id"\n'
                    f'target = "label"\ntask = "{spec_task}"\n\n{features}[paths]\nmaster = "master"\n'
                    f'registry = "run/registry"\nviews = "run/views"\nstate = "run/state"\n\n'
                    f'[batch]\ntime_budget = "{os.environ.get("BUDGET", "20")}s"\n\n'
                    f'[speed]\nlisten = "127.0.0.1:0"\narchive_max_rows = 10000000\n\n'
                    f'[speed.retrain]\ntime_budget = "{os.environ.get("RETRAIN_BUDGET", "10")}s"\n')
        with open(f"{d}/meta.json", "w") as f:
            json.dump({"stream": folder, "family": base, "seed": seed, "task": task, "spec_task": spec_task,
                       "rows": len(rows), "history": cut, "description": text}, f)
        names.append(folder)
        print(folder, len(rows), cut, spec_task, text)
    with open(f"{out}/streams.txt", "w") as f:
        f.write("".join(f"{n}\n" for n in names))


def meta(d):
    with open(f"{d}/meta.json") as f:
        return json.load(f)


def peers(d):
    if meta(d)["task"] == "regression":
        return regression_peers(d)
    with open(f"{d}/all.csv") as f:
        r = csv.reader(f)
        next(r)
        data = [({f"x{i}": float(v) for i, v in enumerate(row[:-1])}, row[-1]) for row in r]
    cut = int(len(data) * HISTORY)
    history, stream = data[:cut], data[cut:]

    def report(name, right, loss, seconds):
        n = len(stream)
        print(json.dumps({"system": name, "accuracy": round(right / n, 4), "log_loss": round(loss / n, 4),
                          "seconds": round(seconds, 3), "events_per_s": round(n / seconds)}), flush=True)

    from river import compose, forest, linear_model, multiclass, naive_bayes, preprocessing, tree
    labels = sorted({y for _, y in data})
    binary = len(labels) == 2

    class Binary:
        """River's binary logistic regression learns booleans: the second label is True."""

        def __init__(self):
            self.m = preprocessing.StandardScaler() | linear_model.LogisticRegression()

        def learn_one(self, x, y):
            self.m.learn_one(x, y == labels[1])

        def predict_proba_one(self, x):
            p = self.m.predict_proba_one(x).get(True, 0.5)
            return {labels[1]: p, labels[0]: 1 - p}

    def logistic():
        return Binary() if binary else preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(
            linear_model.LogisticRegression())

    models = {
        "River logistic regression": logistic,
        "River Gaussian NB": lambda: naive_bayes.GaussianNB(),
        "River Hoeffding tree": lambda: tree.HoeffdingTreeClassifier(),
        "River Hoeffding adaptive tree": lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=42),
        "River adaptive random forest": lambda: forest.ARFClassifier(seed=42),
    }
    for name, make in models.items():
        m = make()
        for x, y in history:
            m.learn_one(x, y)
        started = time.perf_counter()
        right, loss = 0, 0.0
        for x, y in stream:
            p = m.predict_proba_one(x) or {}
            right += (max(p, key=p.get) if p else None) == y
            loss -= math.log(min(max(p.get(y, 0.0), 1e-15), 1.0))
            m.learn_one(x, y)
        report(name, right, loss, time.perf_counter() - started)

    try:
        from vowpalwabbit import pyvw
        index = {y: i + 1 for i, y in enumerate(labels)}
        args = "--quiet --loss_function logistic --link logistic" if binary else f"--quiet --oaa {len(labels)} --probabilities --loss_function logistic"
        vw = pyvw.Workspace(args)

        def ex(x, y=None):
            feats = " ".join(f"{k}:{v}" for k, v in x.items())
            if binary:
                lab = "" if y is None else ("1 " if y == labels[1] else "-1 ")
            else:
                lab = "" if y is None else f"{index[y]} "
            return f"{lab}| {feats}"

        for x, y in history:
            vw.learn(ex(x, y))
        started = time.perf_counter()
        right, loss = 0, 0.0
        for x, y in stream:
            out = vw.predict(ex(x))
            if binary:
                p = {labels[1]: out, labels[0]: 1 - out}
            else:
                p = {lab: out[index[lab] - 1] for lab in labels}
            right += max(p, key=p.get) == y
            loss -= math.log(min(max(p.get(y, 0.0), 1e-15), 1.0))
            vw.learn(ex(x, y))
        report("Vowpal Wabbit", right, loss, time.perf_counter() - started)
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"system": "Vowpal Wabbit", "error": str(e)}), flush=True)


def regression_peers(d):
    with open(f"{d}/all.csv") as f:
        r = csv.reader(f)
        next(r)
        data = [({f"x{i}": float(v) for i, v in enumerate(row[:-1])}, float(row[-1])) for row in r]
    cut = int(len(data) * HISTORY)
    history, stream = data[:cut], data[cut:]

    def report(name, abs_err, sq_err, seconds):
        n = len(stream)
        print(json.dumps({"system": name, "mae": round(abs_err / n, 4), "rmse": round(math.sqrt(sq_err / n), 4),
                          "seconds": round(seconds, 3), "events_per_s": round(n / seconds)}), flush=True)

    from river import forest, linear_model, preprocessing, tree
    models = {
        "River linear regression": lambda: preprocessing.StandardScaler() | linear_model.LinearRegression(),
        # Scaled as River's documentation does: their leaves hold linear models (one diverged on unscaled dates).
        "River Hoeffding tree": lambda: preprocessing.StandardScaler() | tree.HoeffdingTreeRegressor(),
        "River Hoeffding adaptive tree": lambda: preprocessing.StandardScaler() | tree.HoeffdingAdaptiveTreeRegressor(
            seed=42),
        "River adaptive random forest": lambda: preprocessing.StandardScaler() | forest.ARFRegressor(seed=42),
    }
    for name, make in models.items():
        m = make()
        for x, y in history:
            m.learn_one(x, y)
        started = time.perf_counter()
        abs_err, sq_err = 0.0, 0.0
        for x, y in stream:
            e = (m.predict_one(x) or 0.0) - y
            abs_err += abs(e)
            sq_err += e * e
            m.learn_one(x, y)
        report(name, abs_err, sq_err, time.perf_counter() - started)

    try:
        from vowpalwabbit import pyvw
        vw = pyvw.Workspace("--quiet --loss_function squared")

        def ex(x, y=None):
            feats = " ".join(f"{k}:{v}" for k, v in x.items())
            return f"{'' if y is None else f'{y} '}| {feats}"

        for x, y in history:
            vw.learn(ex(x, y))
        started = time.perf_counter()
        abs_err, sq_err = 0.0, 0.0
        for x, y in stream:
            e = vw.predict(ex(x)) - y
            abs_err += abs(e)
            sq_err += e * e
            vw.learn(ex(x, y))
        report("Vowpal Wabbit", abs_err, sq_err, time.perf_counter() - started)
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"system": "Vowpal Wabbit", "error": str(e)}), flush=True)


def lightgbm(d):
    import lightgbm as lgb
    import numpy as np
    with open(f"{d}/all.csv") as f:
        r = csv.reader(f)
        next(r)
        data = [row for row in r]
    cut = int(len(data) * HISTORY)
    n = len(data) - cut
    x = np.array([[float(v) for v in row[:-1]] for row in data])
    name = "LightGBM (static, fit on the history)"
    params = {"learning_rate": 0.1, "num_leaves": 63, "verbose": -1}
    if meta(d)["task"] == "regression":
        y = np.array([float(row[-1]) for row in data])
        started = time.perf_counter()
        m = lgb.train({**params, "objective": "regression"}, lgb.Dataset(x[:cut], y[:cut]), num_boost_round=300)
        e = m.predict(x[cut:]) - y[cut:]
        seconds = time.perf_counter() - started
        print(json.dumps({"system": name, "mae": round(float(np.abs(e).mean()), 4),
                          "rmse": round(float(np.sqrt((e * e).mean())), 4), "seconds": round(seconds, 3),
                          "events_per_s": None}), flush=True)
        return
    labels = sorted({row[-1] for row in data})
    y = np.array([labels.index(row[-1]) for row in data])
    started = time.perf_counter()
    if len(labels) == 2:
        params["objective"] = "binary"
    else:
        params.update(objective="multiclass", num_class=len(labels))
    m = lgb.train(params, lgb.Dataset(x[:cut], y[:cut]), num_boost_round=300)
    p = m.predict(x[cut:])
    if len(labels) == 2:
        p = np.column_stack([1 - p, p])
    seconds = time.perf_counter() - started
    right = int((p.argmax(axis=1) == y[cut:]).sum())
    loss = float(-np.log(np.clip(p[np.arange(n), y[cut:]], 1e-15, 1)).sum())
    print(json.dumps({"system": name, "accuracy": round(right / n, 4), "log_loss": round(loss / n, 4),
                      "seconds": round(seconds, 3), "events_per_s": None}), flush=True)


def record(status, speed_log, start, end, system="lambda-ml"):
    """lambda-ml's line from `lambda-ml status` (the blend's prequential record) and the replay's log."""
    import re
    text = open(status).read()
    log = re.sub(r"\x1b\[[0-9;]*m", "", open(speed_log).read())
    replay = re.search(r"in ([0-9.]+) s \(([0-9]+) events/s\)", log)
    done = re.search(r"retraining on the fly finished state=(\w+)", log)
    row = {"system": system}
    m = re.search(r"blend since it started: accuracy ([0-9.]+), log_loss ([0-9.]+) over (\d+) events", text)
    r = re.search(r"blend since it started: mae ([0-9.]+) over (\d+) events", text)
    if m:
        row.update(accuracy=float(m.group(1)), log_loss=float(m.group(2)), scored=int(m.group(3)))
    elif r:
        row.update(mae=float(r.group(1)), scored=int(r.group(2)))
    else:
        row["error"] = f"no blend record in {status}"
    if replay:
        row.update(seconds=float(replay.group(1)), events_per_s=int(replay.group(2)))
    else:
        row.setdefault("error", f"no replay throughput in {speed_log}")
    row.update(total_seconds=round(float(end) - float(start), 3), retraining=done.group(1).lower() if done else "none")
    print(json.dumps(row))


def summary(results, out):
    rows = [json.loads(line) for line in open(results) if line.strip()]
    metas = {r["stream"]: meta(f"{out}/{r['stream']}") for r in rows}
    ok = [r for r in rows if "error" not in r]
    # With RATE, the paced replay (events arriving over time, as in production) is the one compared; the replay at
    # full speed gives the throughput.
    compared = next((r["system"] for r in rows if r["system"].startswith("lambda-ml paced")), "lambda-ml")

    def score(r):  # higher is better
        return r["accuracy"] if "accuracy" in r else -r["mae"]

    def main_metric(task):
        return ("accuracy", "accuracy") if task == "classification" else ("mae", "MAE")

    def spread(values, fmt):
        if len(values) == 1:
            return fmt.format(values[0])
        return f"{fmt.format(sum(values) / len(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"

    def eps(v):
        return f"{v:,.0f}" if v else "-"

    print("\nHistory 70% (batch layer, or learned first by the online peers), then test-then-train over the last 30%.")
    print("lambda-ml: the blend's prequential record from `lambda-ml status`; events/s: its replay (`speed --once`),")
    print("the peers' test-then-train loop in Python (LightGBM: static, no events/s).\n")
    for stream, m in metas.items():
        print(f"### {stream}: {m['description']} ({m['rows']:,} rows, {m['history']:,} history)\n")
        if m["task"] == "classification":
            print("| system | accuracy | log loss | events/s |\n|---|---|---|---|")
        else:
            print("| system | MAE | RMSE | events/s |\n|---|---|---|---|")
        for r in (r for r in rows if r["stream"] == stream):
            name = r["system"] + (f" (retraining: {r['retraining']})" if "retraining" in r else "")
            if "error" in r:
                print(f"| {name} | error: {r['error']} | | |")
            elif m["task"] == "classification":
                print(f"| {name} | {r['accuracy']:.4f} | {r['log_loss']:.4f} | {eps(r.get('events_per_s'))} |")
            else:
                rmse = f"{r['rmse']:.4f}" if "rmse" in r else "-"
                print(f"| {name} | {r['mae']:.4f} | {rmse} | {eps(r.get('events_per_s'))} |")
        print()

    families = {}
    for stream, m in metas.items():
        families.setdefault(m["family"], []).append(stream)
    wins_all, streams_all = 0, 0
    for task in ("classification", "regression"):
        fams = {f: s for f, s in families.items() if metas[s[0]]["task"] == task}
        if not fams:
            continue
        key, label = main_metric(task)
        better = "at least" if task == "classification" else "at most"
        print(f"### Per family, {task}: {label} over the replayed 30% (mean, min–max over the seeds); lambda-ml: "
              f"{compared}\n")
        print(f"| family | streams | lambda-ml {label} | best peer (by mean) | its {label} | "
              f"lambda-ml {better} the stream's best peer |\n|---|---|---|---|---|---|")
        for fam, streams in fams.items():
            mine = {r["stream"]: r for r in ok if r["stream"] in streams and r["system"] == compared}
            peer_rows = [r for r in ok if r["stream"] in streams and not r["system"].startswith("lambda-ml")]
            by_peer = {}
            for r in peer_rows:
                by_peer.setdefault(r["system"], []).append(r)
            complete = {p: rs for p, rs in by_peer.items() if len(rs) == len(streams)}
            best = max(complete, key=lambda p: sum(score(r) for r in complete[p]) / len(streams)) if complete else None
            wins = 0
            for s in mine:
                here = [r for r in peer_rows if r["stream"] == s]
                if here and score(mine[s]) >= max(score(r) for r in here):
                    wins += 1
            wins_all += wins
            streams_all += len(streams)
            mine_text = spread([r[key] for r in mine.values()], "{:.4f}") if mine else "error"
            if len(mine) < len(streams):
                mine_text += f" ({len(streams) - len(mine)} failed)"
            best_text = spread([r[key] for r in complete[best]], "{:.4f}") if best else "-"
            print(f"| {fam} | {len(streams)} | {mine_text} | {best or '-'} | {best_text} | {wins} of {len(streams)} |")
        print()
    print(f"lambda-ml is at least as good as the stream's best peer (accuracy at least, MAE at most) on {wins_all} of "
          f"{streams_all} streams.\n")

    print("### Throughput per family: events/s over the replayed 30% (mean, min–max over the seeds)\n")
    print("| family | lambda-ml | fastest River model | its events/s | best River model (by mean metric) | "
          "its events/s |\n|---|---|---|---|---|---|")
    for fam, streams in families.items():
        mine = [r["events_per_s"] for r in ok if r["stream"] in streams and r["system"] == "lambda-ml"]
        river = {}
        for r in ok:
            if r["stream"] in streams and r["system"].startswith("River"):
                river.setdefault(r["system"], []).append(r)
        river = {p: rs for p, rs in river.items() if len(rs) == len(streams)}

        def mean(rs, f):
            return sum(f(r) for r in rs) / len(rs)

        fast = max(river, key=lambda p: mean(river[p], lambda r: r["events_per_s"])) if river else None
        good = max(river, key=lambda p: mean(river[p], score)) if river else None
        cell = (lambda p: spread([r["events_per_s"] for r in river[p]], "{:,.0f}") if p else "-")
        print(f"| {fam} | {spread(mine, '{:,.0f}') if mine else '-'} | {fast or '-'} | {cell(fast)} | "
              f"{good or '-'} | {cell(good)} |")
    print()


def adopt_client(url, d, binary, name):
    """bench/adopt's client: 10 events per request, one every 10 ms, for 3 s, then while a rollback to v000001 is
    adopted and 3 s more, then while a rollback to v000002 is and 3 s more; each request timed."""
    import subprocess
    import urllib.error
    import urllib.request

    lines = [json.loads(l) for l in open(os.path.join(d, "stream.ndjson"))]
    id_field = next(l.split('"')[1] for l in open(os.path.join(d, "spec.toml")) if l.startswith("id_column"))
    latencies, refused, n = [], 0, 0

    def status():
        with urllib.request.urlopen(url + "/v1/status", timeout=30) as r:
            return json.load(r)

    def post_for(seconds, until=None):
        nonlocal refused, n
        end = time.time() + seconds
        deadline = time.time() + 300
        while time.time() < end or (until and not until()):
            if time.time() > deadline:
                raise SystemExit("no adoption within 300 s")
            batch = []
            for _ in range(10):
                e = dict(lines[n % len(lines)])
                e[id_field] = f"adopt-{n}"
                batch.append(json.dumps(e))
                n += 1
            req = urllib.request.Request(url + "/v1/events", data="\n".join(batch).encode(), method="POST")
            t = time.time()
            try:
                urllib.request.urlopen(req, timeout=60).read()
            except urllib.error.HTTPError as e:
                if e.code != 503:
                    raise
                refused += 1
            latencies.append(time.time() - t)
            time.sleep(max(0.0, 0.01 - (time.time() - t)))

    spec = os.path.join(d, "spec.toml")
    post_for(3)
    for v in ("v000001", "v000002"):
        subprocess.run([binary, "rollback", "--spec", spec, "--to", v], check=True, capture_output=True)
        post_for(3, lambda: status()["base_version"] == v)
    latencies.sort()
    print(json.dumps({"system": name, "requests": len(latencies), "events": n, "answered_503": refused,
                      "slowest_ms": round(1000 * latencies[-1], 1),
                      "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
                      "median_ms": round(1000 * latencies[len(latencies) // 2], 1)}), flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "adopt-client":
        adopt_client(*sys.argv[2:6])
        sys.exit(0)
    if cmd == "gen":
        gen(sys.argv[2], int(sys.argv[3]))
    elif cmd == "peers":
        peers(sys.argv[2])
    elif cmd == "lightgbm":
        lightgbm(sys.argv[2])
    elif cmd == "record":
        record(*sys.argv[2:7])
    elif cmd == "summary":
        summary(sys.argv[2], sys.argv[3])
