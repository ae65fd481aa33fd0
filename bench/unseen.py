"""Streams of kinds the pipeline benchmark (bench/pipeline) does not have, scored by what a user gets.

Per stream: the first 70% is history (a Parquet file, as an archive would hold it), `lambda-ml batch` trains on it
with one spec for every stream (only the dataset's fields differ), then `lambda-ml up` serves while the last 30% is
replayed test-then-train over HTTP: `POST /v1/predict` with the record's features, then `POST /v1/events` with the
event. The score is of those answers, not of the speed layer's own record. Peers learn the same history, then
test-then-train the same 30% in Python: River (logistic or linear regression, Hoeffding adaptive tree, adaptive
random forest), MOA through CapyMOA (adaptive random forest of 100 and 10 trees, Hoeffding adaptive tree), and
LightGBM and scikit-learn's HistGradientBoosting fitted on the history alone.

    unseen.py gen OUT N                 a folder per stream variant (spec.toml, master/history.parquet,
                                        stream.ndjson, all.csv, meta.json); their names in OUT/streams.txt
    unseen.py lambda BIN DIR            lambda-ml's line: batch, up, the replay over HTTP
    unseen.py river DIR                 River's lines
    unseen.py static DIR                LightGBM's and HistGradientBoosting's lines
    unseen.py moa DIR                   MOA's lines (run with the CapyMOA environment's python)
    unseen.py summary RESULTS OUT       markdown: the tuning set and the set kept aside, apart

Environment (read by gen): STREAMS (family names, default all), SEEDS (default "1 2 3": one variant of each
synthetic family per seed; the real sets have one). A third of the families (ASIDE below) are kept aside: they are
not looked at while the pipeline is tuned, and the summary reports them apart. SPEC_EXTRA: TOML appended to every
stream's spec alike (a setting tried on all of them, e.g. '[speed]\nlearners = [...]'; "\n" may be written as
the two characters).
"""
import csv
import json
import math
import os
import subprocess
import sys
import time

HISTORY = 0.7
# Kept aside while tuning: reported apart, never used to choose a setting.
ASIDE = {"random_tree", "sine", "moons", "wine", "blobs_classes", "mv", "friedman3"}


def synth():
    return __import__("river.datasets.synth", fromlist=["x"])


def river_rows(stream, n):
    return list(stream.take(n))


def drifting(streams, n, seed):
    """Changes between `streams`, evenly spaced: each nested stream counts its position from where it starts. As
    abrupt as River's sigmoid allows without overflowing (a change over n/150 events)."""
    s = streams[-1]
    k = len(streams)
    for i in range(k - 2, -1, -1):
        s = synth().ConceptDriftStream(stream=streams[i], drift_stream=s, position=n // k, width=max(50, n // 150),
                                       seed=seed + i)
    return s


def hyperplane(n, s):
    return (river_rows(synth().Hyperplane(seed=100 * s + 1, n_features=10, n_drift_features=5, mag_change=0.001,
                                          noise_percentage=0.05), n),
            "rotating hyperplane, 10 numeric features, 5 drifting, 5% label noise", set())


def led_drift(n, s):
    # 24 boolean features (7 segments, 17 irrelevant), 10 digits; the relevant segments swap places mid-stream.
    before = synth().LEDDrift(seed=100 * s + 1, noise_percentage=0.1, irrelevant_features=True, n_drift_features=0)
    after = synth().LEDDrift(seed=100 * s + 2, noise_percentage=0.1, irrelevant_features=True, n_drift_features=7)
    rows = [({k: bool(v) for k, v in x.items()}, y) for x, y in river_rows(drifting([before, after], n, 100 * s), n)]
    return rows, "LED digits, 24 boolean features, 10% noise, 7 segments swapped at 50%", set()


def stagger(n, s):
    # Three categorical features; the rule changes abruptly four times.
    fs = [synth().STAGGER(classification_function=f, seed=100 * s + i, balance_classes=False)
          for i, f in enumerate([0, 1, 2, 0, 1])]
    rows = [({k: f"v{v}" for k, v in x.items()}, y) for x, y in river_rows(drifting(fs, n, 100 * s), n)]
    return rows, "STAGGER, 3 categorical features, the rule changes abruptly at 20/40/60/80%", {"size", "color", "shape"}


def waveform(n, s):
    return river_rows(synth().Waveform(seed=100 * s + 1, has_noise=True), n), "waveform, 3 classes, 40 numeric features (19 noise)", set()


def random_tree(n, s):
    rows = river_rows(synth().RandomTree(seed_tree=100 * s + 1, seed_sample=100 * s + 2, n_classes=3,
                                         n_num_features=5, n_cat_features=5, n_categories_per_feature=4,
                                         max_tree_depth=6, first_leaf_level=3), n)
    cats = {k for k in rows[0][0] if "cat" in str(k)}
    rows = [({k: (f"c{v}" if k in cats else v) for k, v in x.items()}, y) for x, y in rows]
    return rows, "random tree, 3 classes, 5 numeric and 5 categorical features", cats


def mixed(n, s):
    fs = [synth().Mixed(seed=100 * s + i, classification_function=i % 2) for i in range(3)]
    return river_rows(drifting(fs, n, 100 * s), n), "mixed: 2 boolean and 2 numeric features, the rule flips at 33/67%", set()


def sine(n, s):
    fs = [synth().Sine(classification_function=f, seed=100 * s + i, has_noise=True) for i, f in enumerate([0, 1, 2, 3])]
    return river_rows(drifting(fs, n, 100 * s), n), "sine, 2 relevant and 2 noise features, 4 rules in turn", set()


def random_rbf(n, s):
    return (river_rows(synth().RandomRBF(seed_model=100 * s + 1, seed_sample=100 * s + 2, n_classes=5, n_features=10,
                                         n_centroids=50), n), "random RBF (static), 5 classes, 10 numeric features", set())


def planes2d(n, s):
    return river_rows(synth().Planes2D(seed=100 * s + 1), n), "Planes2D regression, 10 features", set()


def mv(n, s):
    rows = river_rows(synth().Mv(seed=100 * s + 1), n)
    cats = {k for k, v in rows[0][0].items() if isinstance(v, str)}
    return rows, "Mv regression: dependent features, a categorical one", cats


def sk_rows(x, y):
    return [({f"f{i}": float(v) for i, v in enumerate(r)}, t) for r, t in zip(x, y)]


def hastie(n, s):
    from sklearn.datasets import make_hastie_10_2
    x, y = make_hastie_10_2(n_samples=n, random_state=s)
    return sk_rows(x, ["yes" if t > 0 else "no" for t in y]), "Hastie's 10 Gaussian features, a chi-squared rule", set()


def moons(n, s):
    from sklearn.datasets import make_moons
    x, y = make_moons(n_samples=n, noise=0.3, random_state=s)
    return sk_rows(x, [f"m{t}" for t in y]), "two interleaving moons, 2 features, noise 0.3", set()


def blobs_classes(n, s):
    from sklearn.datasets import make_classification
    x, y = make_classification(n_samples=n, n_features=20, n_informative=8, n_redundant=4, n_classes=4,
                               n_clusters_per_class=2, flip_y=0.03, random_state=s)
    return sk_rows(x, [f"k{t}" for t in y]), "4 classes in Gaussian clusters, 20 features (8 informative)", set()


def friedman2(n, s):
    from sklearn.datasets import make_friedman2
    x, y = make_friedman2(n_samples=n, noise=10.0, random_state=s)
    return sk_rows(x, [float(t) for t in y]), "Friedman #2 regression (4 features, wide ranges), noise 10", set()


def friedman3(n, s):
    from sklearn.datasets import make_friedman3
    x, y = make_friedman3(n_samples=n, noise=0.05, random_state=s)
    return sk_rows(x, [float(t) for t in y]), "Friedman #3 regression (an arctangent), noise 0.05", set()


def linear_sparse(n, s):
    from sklearn.datasets import make_regression
    x, y = make_regression(n_samples=n, n_features=30, n_informative=8, noise=5.0, random_state=s)
    return sk_rows(x, [float(t) for t in y]), "linear regression, 30 features (8 informative), noise 5", set()


def level_walk(n, s):
    # A level that wanders (a random walk) plus a fixed function of 6 features: what only tracking can follow.
    import random
    r = random.Random(s)
    level, rows = 0.0, []
    for _ in range(n):
        level += r.gauss(0, 0.05)
        x = {f"f{i}": r.uniform(-1, 1) for i in range(6)}
        y = level + 1.5 * x["f0"] - x["f1"] + 0.5 * x["f2"] * x["f3"] + r.gauss(0, 0.2)
        rows.append((x, y))
    return rows, "a wandering level (random walk) plus a function of 6 features", set()


def sk_real(loader, text, prefix=""):
    def make(n, s):
        from sklearn import datasets
        d = getattr(datasets, loader)()
        names = [f"{prefix}{i}" for i in range(d.data.shape[1])]
        rows = [({k: float(v) for k, v in zip(names, r)}, f"c{t}") for r, t in zip(d.data, d.target)]
        # Shuffled once, the same way every run: these sets are sorted by class.
        import random
        random.Random(7).shuffle(rows)
        return rows, text, set()
    return make


# family: (task, maker, real set?)
FAMILIES = {
    "hyperplane": ("classification", hyperplane, False),
    "led_drift": ("classification", led_drift, False),
    "stagger": ("classification", stagger, False),
    "waveform": ("classification", waveform, False),
    "random_tree": ("classification", random_tree, False),
    "mixed": ("classification", mixed, False),
    "sine": ("classification", sine, False),
    "random_rbf": ("classification", random_rbf, False),
    "hastie": ("classification", hastie, False),
    "moons": ("classification", moons, False),
    "blobs_classes": ("classification", blobs_classes, False),
    "breast_cancer": ("classification", sk_real("load_breast_cancer", "scikit-learn's breast cancer set (569, 30 features)", "f"), True),
    "wine": ("classification", sk_real("load_wine", "scikit-learn's wine set (178, 13 features, 3 classes)", "f"), True),
    "digits": ("classification", sk_real("load_digits", "scikit-learn's digits (1,797, 64 pixels, 10 classes)", "p"), True),
    "iris": ("classification", sk_real("load_iris", "scikit-learn's iris (150, 4 features, 3 classes)", "f"), True),
    "planes2d": ("regression", planes2d, False),
    "mv": ("regression", mv, False),
    "friedman2": ("regression", friedman2, False),
    "friedman3": ("regression", friedman3, False),
    "linear_sparse": ("regression", linear_sparse, False),
    "level_walk": ("regression", level_walk, False),
}


def variants(n):
    wanted = os.environ.get("STREAMS", "").split() or list(FAMILIES)
    unknown = [w for w in wanted if w not in FAMILIES]
    if unknown:
        sys.exit(f"STREAMS: unknown {unknown}; known: {' '.join(FAMILIES)}")
    seeds = [int(s) for s in os.environ.get("SEEDS", "1 2 3").split()]
    for name in (f for f in FAMILIES if f in wanted):
        task, make, real = FAMILIES[name]
        for s in ([1] if real else seeds):
            rows, text, cats = make(n, s)
            yield (name if real else f"{name}-s{s}"), name, None if real else s, task, rows, text, cats


def kind_of(values, categorical):
    if categorical:
        return "categorical"
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    return "numeric"


def gen(out, n):
    import pyarrow as pa
    import pyarrow.parquet as pq
    names = []
    for folder, family, seed, task, rows, text, cats in variants(n):
        keys = [str(k) for k in rows[0][0].keys()]
        rows = [({str(k): v for k, v in x.items()}, y) for x, y in rows]
        kinds = {k: kind_of([x[k] for x, _ in rows[:200]], k in {str(c) for c in cats}) for k in keys}
        for k in keys:
            for x, _ in rows:
                x[k] = str(x[k]) if kinds[k] == "categorical" else bool(x[k]) if kinds[k] == "boolean" else float(x[k])
        regression = task == "regression"
        labels = None if regression else sorted({str(y) for _, y in rows})
        spec_task = "regression" if regression else (
            "binary_classification" if len(labels) == 2 else "multiclass_classification")
        cut = int(len(rows) * HISTORY)
        d = f"{out}/{folder}"
        os.makedirs(f"{d}/master", exist_ok=True)
        field = {k: f"x_{k}" for k in keys}
        cols = {"event_id": [], "key": [], "ts": [], "_ingest_seq": []}
        cols.update({field[k]: [] for k in keys})
        cols["label"] = []
        t0 = 1_769_904_000_000
        with open(f"{d}/stream.ndjson", "w") as s, open(f"{d}/all.csv", "w", newline="") as c:
            w = csv.writer(c)
            w.writerow([field[k] for k in keys] + ["label"])
            for j, (x, y) in enumerate(rows):
                label = float(y) if regression else str(y)
                w.writerow([x[k] for k in keys] + [label])
                e = {"event_id": f"e{j}", "key": f"k{j % 100}", "ts": t0 + j * 1000}
                e.update({field[k]: x[k] for k in keys})
                e["label"] = label
                if j < cut:
                    for k, v in e.items():
                        cols[k].append(v)
                    cols["_ingest_seq"].append(j + 1)
                else:
                    s.write(json.dumps(e) + "\n")
        table = pa.table({k: pa.array(v, pa.uint64()) if k == "_ingest_seq" else v for k, v in cols.items()})
        pq.write_table(table, f"{d}/master/history.parquet")
        features = "".join(f'[[features]]\nname = "{field[k]}"\ntype = "{kinds[k]}"\n\n' for k in keys)
        # The one spec: the dataset's description and where things go; every setting else is the default, but the
        # batch search's budget (the same for every stream).
        with open(f"{d}/spec.toml", "w") as f:
            f.write(f'name = "{folder}"\n\n[dataset]\ntime_column = "ts"\nkey_column = "key"\nid_column = "event_id"\n'
                    f'target = "label"\ntask = "{spec_task}"\n\n{features}[paths]\nmaster = "master"\n'
                    f'registry = "run/registry"\nviews = "run/views"\nstate = "run/state"\n\n'
                    f'[batch]\ntime_budget = "{os.environ.get("BUDGET", "10")}s"\n'
                    + os.environ.get("SPEC_EXTRA", "").replace("\\n", "\n"))
        with open(f"{d}/meta.json", "w") as f:
            json.dump({"stream": folder, "family": family, "seed": seed, "task": task, "rows": len(rows),
                       "history": cut, "description": text, "aside": family in ASIDE, "labels": labels,
                       "fields": [field[k] for k in keys], "kinds": [kinds[k] for k in keys]}, f)
        names.append(folder)
        print(folder, len(rows), cut, spec_task, text, file=sys.stderr)
    with open(f"{out}/streams.txt", "w") as f:
        f.write("".join(f"{n}\n" for n in names))


def meta(d):
    with open(f"{d}/meta.json") as f:
        return json.load(f)


def data(d):
    """(features as numbers with categories one-hot, label) per row, and the history's length."""
    m = meta(d)
    with open(f"{d}/all.csv") as f:
        r = csv.reader(f)
        next(r)
        raw = list(r)
    cats = {f: sorted({row[i] for row in raw}) for i, (f, k) in enumerate(zip(m["fields"], m["kinds"]))
            if k == "categorical"}
    rows = []
    for row in raw:
        x = {}
        for i, (f, k) in enumerate(zip(m["fields"], m["kinds"])):
            v = row[i]
            if k == "categorical":
                for c in cats[f]:
                    x[f"{f}={c}"] = 1.0 if v == c else 0.0
            elif k == "boolean":
                x[f] = 1.0 if v == "True" else 0.0
            else:
                x[f] = float(v)
        y = float(row[-1]) if m["task"] == "regression" else row[-1]
        rows.append((x, y))
    return rows, m["history"], m


class Score:
    def __init__(self, task, labels):
        self.task, self.labels, self.n, self.right, self.loss, self.abs, self.sq = task, labels, 0, 0, 0.0, 0.0, 0.0

    def add(self, y, label=None, probs=None, value=None):
        self.n += 1
        if self.task == "regression":
            e = (value if value is not None else 0.0) - y
            self.abs += abs(e)
            self.sq += e * e
        else:
            self.right += label == y
            p = (probs or {}).get(y, 0.0)
            self.loss -= math.log(min(max(p, 1e-15), 1.0))

    def row(self, system, seconds, per_event=True, **extra):
        rate = round(self.n / seconds) if per_event and seconds else None
        out = {"system": system, "seconds": round(seconds, 3), "events_per_s": rate}
        if self.task == "regression":
            out.update(mae=round(self.abs / self.n, 4), rmse=round(math.sqrt(self.sq / self.n), 4))
        else:
            out.update(accuracy=round(self.right / self.n, 4), log_loss=round(self.loss / self.n, 4))
        out.update(extra)
        print(json.dumps(out), flush=True)


def lambda_ml(binary, d):
    """batch, then up, then the replay test-then-train over HTTP: what /v1/predict answered before each event."""
    import http.client
    import signal
    m = meta(d)
    spec = f"{d}/spec.toml"
    started = time.perf_counter()
    subprocess.run([binary, "batch", "--spec", spec], check=True, capture_output=True)
    batch_s = time.perf_counter() - started
    log = open(f"{d}/up.log", "w")
    up = subprocess.Popen([binary, "up", "--spec", spec, "--listen", "127.0.0.1:0", "--ingest-listen", "127.0.0.1:0"],
                          stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        addr = None
        for line in up.stdout:
            if line.strip().startswith("serving:"):
                addr = line.split("http://")[1].split()[0]
                break
        if addr is None:
            raise SystemExit(f"lambda-ml up printed no serving address, see {d}/up.log")
        host, port = addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)

        def post(path, body):
            conn.request("POST", path, body=json.dumps(body), headers={"content-type": "application/json"})
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"null")

        def add(score, p, y):
            if m["task"] == "regression":
                score.add(y, value=p and p.get("value"))
            else:
                score.add(y, label=p and p.get("label"), probs=p and p.get("probabilities"))

        score, refused, rejected = Score(m["task"], m["labels"]), 0, 0
        # DIAG=1: each model the blend holds is also asked (`?model=NAME`) before each event and scored apart: which
        # of them the blend should have followed. Slower; its events/s is not the product's.
        each, last = {}, None
        events = [json.loads(line) for line in open(f"{d}/stream.ndjson")]
        t0 = time.perf_counter()
        for e in events:
            x = {f: e[f] for f in m["fields"]}
            status, answer = post("/v1/predict", x)
            p = answer.get("prediction") if status == 200 else None
            if p is None:
                refused += 1
            y = e["label"]
            add(score, p, y)
            if os.environ.get("DIAG") and status == 200:
                last = answer.get("components")
                for c in last or []:
                    st, a = post(f"/v1/predict?model={c['name']}", x)
                    add(each.setdefault(c["name"], Score(m["task"], m["labels"])), a.get("prediction") if st == 200 else None, y)
            status, _ = post("/v1/events", e)
            rejected += status != 200
        replay_s = time.perf_counter() - t0
        conn.close()
        extra = {}
        if each:
            metric = (lambda s: round(s.abs / s.n, 4)) if m["task"] == "regression" else (lambda s: round(s.right / s.n, 4))
            extra = {"each_model": {k: metric(v) for k, v in each.items()},
                     "last_weights": {c["name"]: c.get("weight") for c in last or []}}
        score.row("lambda-ml", replay_s, batch_seconds=round(batch_s, 1), refused_predictions=refused,
                  rejected_events=rejected, **extra)
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()


def replay(name, model, rows, cut, m, proba):
    for x, y in rows[:cut]:
        model.learn_one(x, y)
    score = Score(m["task"], m["labels"])
    t0 = time.perf_counter()
    for x, y in rows[cut:]:
        if m["task"] == "regression":
            score.add(y, value=model.predict_one(x))
        else:
            p = proba(model, x)
            score.add(y, label=max(p, key=p.get) if p else None, probs=p)
        model.learn_one(x, y)
    score.row(name, time.perf_counter() - t0)


def river(d):
    from river import forest, linear_model, multiclass, preprocessing, tree
    rows, cut, m = data(d)
    if m["task"] == "regression":
        models = {
            "River linear regression": lambda: preprocessing.StandardScaler() | linear_model.LinearRegression(),
            "River Hoeffding adaptive tree": lambda: preprocessing.StandardScaler() | tree.HoeffdingAdaptiveTreeRegressor(seed=42),
            "River adaptive random forest": lambda: preprocessing.StandardScaler() | forest.ARFRegressor(seed=42),
        }
    else:
        labels = m["labels"]

        class Binary:
            def __init__(self):
                self.m = preprocessing.StandardScaler() | linear_model.LogisticRegression()

            def learn_one(self, x, y):
                self.m.learn_one(x, y == labels[1])

            def predict_proba_one(self, x):
                p = self.m.predict_proba_one(x).get(True, 0.5)
                return {labels[1]: p, labels[0]: 1 - p}

        models = {
            "River logistic regression": (lambda: Binary()) if len(labels) == 2 else (
                lambda: preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(linear_model.LogisticRegression())),
            "River Hoeffding adaptive tree": lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=42),
            "River adaptive random forest": lambda: forest.ARFClassifier(seed=42),
        }
    for name, make in models.items():
        replay(name, make(), rows, cut, m, lambda model, x: model.predict_proba_one(x) or {})


def static(d):
    import numpy as np
    rows, cut, m = data(d)
    names = list(rows[0][0].keys())
    x = np.array([[r[k] for k in names] for r, _ in rows])
    regression = m["task"] == "regression"
    y = np.array([t for _, t in rows]) if regression else np.array([m["labels"].index(t) for _, t in rows])
    peers = {}
    try:
        import lightgbm as lgb
        params = {"learning_rate": 0.1, "num_leaves": 63, "verbose": -1, "min_data_in_leaf": min(20, max(2, cut // 20))}
        if regression:
            params["objective"] = "regression"
        elif len(m["labels"]) == 2:
            params["objective"] = "binary"
        else:
            params.update(objective="multiclass", num_class=len(m["labels"]))

        def fit_lgb(xs, ys):
            b = lgb.train(params, lgb.Dataset(xs, ys), num_boost_round=300)
            if regression:
                return b.predict
            if len(m["labels"]) == 2:
                return lambda z: np.column_stack([1 - b.predict(z), b.predict(z)])
            return b.predict
        peers["LightGBM (static, fit on the history)"] = fit_lgb
    except ImportError as e:
        print(json.dumps({"system": "LightGBM", "error": str(e)}), flush=True)
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    def fit_hgb(xs, ys):
        h = (HistGradientBoostingRegressor(random_state=0) if regression else
             HistGradientBoostingClassifier(random_state=0)).fit(xs, ys)
        if regression:
            return h.predict
        classes = list(h.classes_)

        def proba(z):
            p = h.predict_proba(z)
            out = np.zeros((len(z), len(m["labels"])))
            for j, c in enumerate(classes):
                out[:, c] = p[:, j]
            return out
        return proba
    peers["HistGradientBoosting (static, fit on the history)"] = fit_hgb
    for name, fit in peers.items():
        t0 = time.perf_counter()
        predict = fit(x[:cut], y[:cut])
        out = predict(x[cut:])
        score = Score(m["task"], m["labels"])
        for i, (_, t) in enumerate(rows[cut:]):
            if regression:
                score.add(t, value=float(out[i]))
            else:
                probs = {lab: float(out[i][j]) for j, lab in enumerate(m["labels"])}
                score.add(t, label=max(probs, key=probs.get), probs=probs)
        score.row(name, time.perf_counter() - t0, per_event=False)


def moa(d):
    import numpy as np
    from capymoa.stream import Schema
    rows, cut, m = data(d)
    names = list(rows[0][0].keys())
    regression = m["task"] == "regression"
    if regression:
        from capymoa.core import RegressionInstance
        from capymoa.regressor import AdaptiveRandomForestRegressor
        schema = Schema.from_custom(features=names + ["target"], target="target", name=m["stream"])
        learners = {
            "MOA adaptive random forest (100 trees)": lambda: AdaptiveRandomForestRegressor(schema, ensemble_size=100),
            "MOA adaptive random forest (10 trees)": lambda: AdaptiveRandomForestRegressor(schema, ensemble_size=10),
        }
    else:
        from capymoa.classifier import AdaptiveRandomForestClassifier, HoeffdingAdaptiveTree
        from capymoa.core import LabeledInstance
        schema = Schema.from_custom(features=names + ["class"], target="class", categories={"class": m["labels"]},
                                    name=m["stream"])
        learners = {
            "MOA adaptive random forest (100 trees)": lambda: AdaptiveRandomForestClassifier(schema, ensemble_size=100),
            "MOA adaptive random forest (10 trees)": lambda: AdaptiveRandomForestClassifier(schema, ensemble_size=10),
            "MOA Hoeffding adaptive tree": lambda: HoeffdingAdaptiveTree(schema),
        }

    def instance(x, y):
        v = np.array([x[k] for k in names], dtype=float)
        if regression:
            return RegressionInstance.from_array(schema, v, float(y))
        return LabeledInstance.from_array(schema, v, m["labels"].index(y))

    data_instances = [instance(x, y) for x, y in rows]
    for name, make in learners.items():
        learner = make()
        for inst in data_instances[:cut]:
            learner.train(inst)
        score = Score(m["task"], m["labels"])
        t0 = time.perf_counter()
        for inst, (_, y) in zip(data_instances[cut:], rows[cut:]):
            if regression:
                score.add(y, value=learner.predict(inst))
            else:
                p = learner.predict_proba(inst)
                probs = {lab: float(p[j]) for j, lab in enumerate(m["labels"])} if p is not None and len(p) else {}
                score.add(y, label=max(probs, key=probs.get) if probs else None, probs=probs)
            learner.train(inst)
        score.row(name, time.perf_counter() - t0)


def summary(results, out):
    rows = [json.loads(line) for line in open(results) if line.strip()]
    metas = {r["stream"]: meta(f"{out}/{r['stream']}") for r in rows}
    ok = [r for r in rows if "error" not in r]

    def score(r):  # higher is better
        return r["accuracy"] if "accuracy" in r else -r["mae"]

    print("History: the first 70% (the batch layer's, and learned first by the online peers); then test-then-train")
    print("over the last 30%. lambda-ml: the answers of POST /v1/predict under `lambda-ml up`, each asked before its")
    print("event was posted (one spec for every stream); events/s: that HTTP loop (two requests per event). Peers:")
    print("their own loop in Python (MOA through CapyMOA); the static boosters fit the history once.\n")
    for aside in (False, True):
        streams = [s for s, m in metas.items() if m["aside"] == aside]
        if not streams:
            continue
        print("## Kept aside while tuning\n" if aside else "## Streams used while tuning\n")
        print("| stream | kind | metric | lambda-ml | best peer | its score | lambda-ml at least the best peer | "
              "lambda-ml events/s |\n|---|---|---|---|---|---|---|---|")
        wins, total = 0, 0
        for s in streams:
            m = metas[s]
            key = "mae" if m["task"] == "regression" else "accuracy"
            mine = next((r for r in ok if r["stream"] == s and r["system"] == "lambda-ml"), None)
            peers = [r for r in ok if r["stream"] == s and r["system"] != "lambda-ml"]
            best = max(peers, key=score) if peers else None
            good = mine is not None and best is not None and score(mine) >= score(best)
            wins += good
            total += 1
            err = next((r["error"] for r in rows if r["stream"] == s and r["system"] == "lambda-ml" and "error" in r), "")
            print(f"| {s} | {m['description']} | {key} | {mine[key] if mine else 'error ' + err} | "
                  f"{best['system'] if best else '-'} | {best[key] if best else '-'} | {'yes' if good else 'no'} | "
                  f"{mine['events_per_s'] if mine else '-'} |")
        print(f"\nlambda-ml at least the best peer on {wins} of {total}.\n")
    print("## Every system per stream\n")
    for s, m in metas.items():
        key = "mae" if m["task"] == "regression" else "accuracy"
        cells = [f"{r['system']} {r[key]}" for r in ok if r["stream"] == s]
        cells += [f"{r['system']} error: {r['error']}" for r in rows if r["stream"] == s and "error" in r]
        print(f"- {s} ({key}): " + "; ".join(cells))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "gen":
        gen(sys.argv[2], int(sys.argv[3]))
    elif cmd == "lambda":
        lambda_ml(sys.argv[2], sys.argv[3])
    elif cmd == "river":
        river(sys.argv[2])
    elif cmd == "static":
        static(sys.argv[2])
    elif cmd == "moa":
        moa(sys.argv[2])
    elif cmd == "summary":
        summary(sys.argv[2], sys.argv[3])
