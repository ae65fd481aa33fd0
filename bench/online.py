"""Online learners on public benchmark streams (River's generators), test-then-train, beside River and Vowpal Wabbit.

    online.py gen OUT_DIR N         writes agrawal.csv, sea.csv, rbf.csv, rbf_moving.csv, friedman.csv (header, inputs,
                                    label last)
    online.py peers TASK FILE.csv   runs River's learners and Vowpal Wabbit over the file; one JSON line each
"""
import csv
import json
import math
import sys
import time

STREAMS = {
    # name: (task, generator factory)
    "agrawal": ("classification", lambda s: __import__("river.datasets.synth", fromlist=["x"]).Agrawal(classification_function=2, seed=s)),
    "sea": ("classification", lambda s: __import__("river.datasets.synth", fromlist=["x"]).SEA(variant=0, seed=s)),
    "rbf": ("classification", lambda s: __import__("river.datasets.synth", fromlist=["x"]).RandomRBF(seed_model=s, seed_sample=s, n_classes=4, n_features=10, n_centroids=50)),
    # 25 of the 50 centroids move all along (as bench/pipeline.py's rbf_moving).
    "rbf_moving": ("classification", lambda s: __import__("river.datasets.synth", fromlist=["x"]).RandomRBFDrift(seed_model=s, seed_sample=s, n_classes=4, n_features=10, n_centroids=50, change_speed=0.001, n_drift_centroids=25)),
    "friedman": ("regression", lambda s: __import__("river.datasets.synth", fromlist=["x"]).Friedman(seed=s)),
}


def gen(out, n):
    for name, (task, make) in STREAMS.items():
        rows = list(make(42).take(n))
        keys = list(rows[0][0].keys())
        with open(f"{out}/{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([f"x{i}" for i in range(len(keys))] + ["label"])
            for x, y in rows:
                label = y if task == "regression" else str(int(y) if isinstance(y, (bool, int)) else y)
                w.writerow([float(x[k]) for k in keys] + [label])
        print(name, task)


def read(path, task):
    with open(path) as f:
        r = csv.reader(f)
        next(r)
        for row in r:
            x = {f"x{i}": float(v) for i, v in enumerate(row[:-1])}
            yield x, (float(row[-1]) if task == "regression" else row[-1])


def run(name, task, data, predict_learn):
    started = time.perf_counter()
    right, loss, abs_err = 0, 0.0, 0.0
    for x, y in data:
        p = predict_learn(x, y)
        if task == "regression":
            abs_err += abs((p or 0.0) - y)
        else:
            best = max(p, key=p.get) if p else None
            right += best == y
            loss -= math.log(min(max(p.get(y, 0.0) if p else 0.0, 1e-15), 1.0))
    seconds = time.perf_counter() - started
    n = len(data)
    metric = {"mae": round(abs_err / n, 4)} if task == "regression" else {
        "accuracy": round(right / n, 4), "log_loss": round(loss / n, 4)}
    print(json.dumps({"system": name, **metric, "seconds": round(seconds, 3), "events_per_s": round(n / seconds)}),
          flush=True)


def river_models(task):
    from river import forest, linear_model, naive_bayes, preprocessing, tree
    if task == "regression":
        return {
            "River LinearRegression (StandardScaler)": preprocessing.StandardScaler() | linear_model.LinearRegression(),
            "River HoeffdingTreeRegressor": tree.HoeffdingTreeRegressor(),
            "River HoeffdingAdaptiveTreeRegressor": tree.HoeffdingAdaptiveTreeRegressor(seed=42),
            "River ARFRegressor (10 trees)": forest.ARFRegressor(n_models=10, seed=42),
        }
    return {
        "River LogisticRegression (StandardScaler)": preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        "River GaussianNB": naive_bayes.GaussianNB(),
        "River HoeffdingTreeClassifier": tree.HoeffdingTreeClassifier(),
        "River HoeffdingAdaptiveTreeClassifier": tree.HoeffdingAdaptiveTreeClassifier(seed=42),
        "River ARFClassifier (10 trees)": forest.ARFClassifier(n_models=10, seed=42),
    }


def peers(task, path):
    data = list(read(path, task))
    classes = sorted({y for _, y in data}) if task != "regression" else []
    for name, model in river_models(task).items():
        if name.startswith("River LogisticRegression") and len(classes) > 2:
            from river import multiclass
            from river import linear_model, preprocessing
            model = preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(linear_model.LogisticRegression())
            name = "River LogisticRegression one-vs-rest (StandardScaler)"

        binary_only = name.startswith("River LogisticRegression") and len(classes) == 2

        def step(x, y, model=model, binary_only=binary_only):
            if task == "regression":
                p = model.predict_one(x)
            elif binary_only:
                # River's binary logistic regression learns booleans.
                q = model.predict_proba_one(x)
                p = {classes[-1]: q.get(True, 0.5), classes[0]: q.get(False, 0.5)}
                y = y == classes[-1]
            else:
                p = model.predict_proba_one(x)
            model.learn_one(x, y)
            return p

        run(name, task, data, step)
    if len(classes) <= 2:
        from vowpalwabbit import Workspace
        args = "--quiet" + ("" if task == "regression" else " --loss_function logistic --link logistic")
        vw = Workspace(args)

        def line(x, y):
            feats = " ".join(f"{k}:{v}" for k, v in x.items())
            label = y if task == "regression" else (1 if y == classes[-1] else -1)
            return f"{label} |f {feats}"

        def step(x, y):
            ex = line(x, y)
            p = vw.predict(ex)
            vw.learn(ex)
            return p if task == "regression" else {classes[-1]: p, classes[0]: 1.0 - p}

        run("Vowpal Wabbit 9.11.9 (default learner: adaptive, normalized, invariant)", task, data, step)


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], int(sys.argv[3]))
    else:
        peers(sys.argv[2], sys.argv[3])
