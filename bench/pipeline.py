"""The whole pipeline on drifting and real streams: history (the first 70%) for the batch layer, then the stream (the
last 30%) for the speed layer and the blend, beside River, Vowpal Wabbit and a static LightGBM on the same split.

    pipeline.py gen OUT_DIR N       per stream a folder: spec.toml, master/history.parquet, stream.ndjson, all.csv
    pipeline.py peers DIR           River and Vowpal Wabbit learn the history, then test-then-train on the stream;
                                    LightGBM fits the history and scores the stream; one JSON line each
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


def drifting(make_before, make_after, position):
    s = synth()
    # As abrupt as River's sigmoid allows without overflowing: a change over n/150 events.
    return lambda n: s.ConceptDriftStream(stream=make_before(), drift_stream=make_after(), position=position(n),
                                          width=max(50, n // 150), seed=7)


STREAMS = {
    # name: (generator of n rows, or a fixed dataset)
    # Agrawal's rule 2 becomes rule 5 abruptly a third of the way into the live part.
    "agrawal_drift": lambda n: drifting(lambda: synth().Agrawal(classification_function=1, seed=42),
                                        lambda: synth().Agrawal(classification_function=4, seed=43),
                                        lambda n: int(n * (HISTORY + (1 - HISTORY) / 3)))(n),
    # SEA's threshold moves (variant 0 to 3) at the same point.
    "sea_drift": lambda n: drifting(lambda: synth().SEA(variant=0, seed=42), lambda: synth().SEA(variant=3, seed=43),
                                    lambda n: int(n * (HISTORY + (1 - HISTORY) / 3)))(n),
    # Centroids that move all along.
    "rbf_moving": lambda n: synth().RandomRBFDrift(seed_model=42, seed_sample=42, n_classes=4, n_features=10,
                                                   n_centroids=50, change_speed=0.001, n_drift_centroids=25),
    # A real data set shipped with River (1,250 web pages, phishing or not).
    "phishing": None,
}


def rows_of(name, n):
    if name == "phishing":
        from river.datasets import Phishing
        return list(Phishing())
    return list(STREAMS[name](n).take(n))


def gen(out, n):
    import pyarrow as pa
    import pyarrow.parquet as pq
    for name in STREAMS:
        rows = rows_of(name, n)
        keys = list(rows[0][0].keys())
        labels = sorted({str(y) for _, y in rows})
        cut = int(len(rows) * HISTORY)
        d = f"{out}/{name}"
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
                label = str(y)
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
        task = "binary_classification" if len(labels) == 2 else "multiclass_classification"
        features = "".join(f'[[features]]\nname = "x{i}"\ntype = "numeric"\n\n' for i in range(len(keys)))
        with open(f"{d}/spec.toml", "w") as f:
            f.write(f'name = "{name}"\n\n[dataset]\ntime_column = "ts"\nkey_column = "key"\nid_column = "event_id"\n'
                    f'target = "label"\ntask = "{task}"\n\n{features}[paths]\nmaster = "master"\n'
                    f'registry = "run/registry"\nviews = "run/views"\nstate = "run/state"\n\n'
                    f'[batch]\ntime_budget = "{os.environ.get("BUDGET", "20")}s"\n\n'
                    f'[speed]\nlisten = "127.0.0.1:0"\narchive_max_rows = 10000000\n\n'
                    f'[speed.retrain]\ntime_budget = "{os.environ.get("RETRAIN_BUDGET", "10")}s"\n')
        print(name, len(rows), cut, task)


def peers(d):
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


def lightgbm(d):
    import lightgbm as lgb
    import numpy as np
    with open(f"{d}/all.csv") as f:
        r = csv.reader(f)
        next(r)
        data = [row for row in r]
    cut = int(len(data) * HISTORY)
    labels = sorted({row[-1] for row in data})
    x = np.array([[float(v) for v in row[:-1]] for row in data])
    y = np.array([labels.index(row[-1]) for row in data])
    started = time.perf_counter()
    params = {"learning_rate": 0.1, "num_leaves": 63, "verbose": -1}
    if len(labels) == 2:
        params["objective"] = "binary"
    else:
        params.update(objective="multiclass", num_class=len(labels))
    m = lgb.train(params, lgb.Dataset(x[:cut], y[:cut]), num_boost_round=300)
    p = m.predict(x[cut:])
    if len(labels) == 2:
        p = np.column_stack([1 - p, p])
    seconds = time.perf_counter() - started
    n = len(data) - cut
    right = int((p.argmax(axis=1) == y[cut:]).sum())
    loss = float(-np.log(np.clip(p[np.arange(n), y[cut:]], 1e-15, 1)).sum())
    print(json.dumps({"system": "LightGBM (static, fit on the history)", "accuracy": round(right / n, 4),
                      "log_loss": round(loss / n, 4), "seconds": round(seconds, 3), "events_per_s": None}),
          flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "gen":
        gen(sys.argv[2], int(sys.argv[3]))
    elif cmd == "peers":
        peers(sys.argv[2])
    elif cmd == "lightgbm":
        lightgbm(sys.argv[2])
