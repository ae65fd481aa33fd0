"""lambda-ml's batch layer (AutoML over its model zoo) beside Python peers, on the same data and the same time-ordered
holdout. Run by bench/automl; every subcommand prints JSON lines (or Markdown for `table`).

  export OUTDIR [--budget 60s]        scikit-learn's bundled datasets as lambda-ml pipelines (spec + master Parquet)
  peer NAME SPEC BUDGET_SECONDS       fit one peer (lightgbm, hist_gradient_boosting, linear, flaml), score the holdout
  view MASTER KEY_COLUMN [TIME]       the per-key aggregates of lambda-ml's batch view, with polars (the reference)
  trainonly SPEC OUTDIR               the spec's training part as a pipeline of its own (OUTDIR/spec.toml, master) and
                                      its holdout as OUTDIR/holdout.parquet, for lambda-ml to train on what the peers
                                      train on and forecast what they score
  manifest SPEC [LOG] [FORECAST]      lambda-ml's current model's manifest (and its batch log's phase times) as a line
                                      in the peers' format; with FORECAST (its predictions of the holdout), the
                                      metrics are those of the published model on the holdout
  record DATASET PEER BASE            the line in BASE.json or BASE.out (else BASE.err's error) plus the wall time and
                                      peak RSS from BASE.time (`/usr/bin/time -v`)
  table RESULTS.jsonl                 one Markdown table per dataset
"""

import json
import math
import os
import re
import sys
import time
import tomllib
from pathlib import Path

PEERS = ("lightgbm", "hist_gradient_boosting", "linear", "flaml")
T0_MS = 1767225600000  # 2026-01-01T00:00:00Z


# ---------------------------------------------------------------------------------------------------------- export


def sanitize(name):
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", name.lower())).strip("_")


def export(outdir, budget):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn import datasets

    loaders = {
        "breast_cancer": (datasets.load_breast_cancer, "binary_classification"),
        "digits": (datasets.load_digits, "multiclass_classification"),
        "diabetes": (datasets.load_diabetes, "regression"),
    }
    for name, (load, task) in loaders.items():
        d = load()
        x, y = np.asarray(d.data, dtype=np.float64), d.target
        order = np.random.default_rng(0).permutation(len(y))
        x, y = x[order], y[order]
        names = [sanitize(f) for f in d.feature_names]
        # lambda-ml refuses a feature that is constant in every row (digits has blank border pixels).
        keep = [j for j in range(x.shape[1]) if np.unique(x[:, j]).size > 1]
        if task == "regression":
            label = pa.array(y.astype(np.float64))
        elif hasattr(d, "target_names") and not np.issubdtype(np.asarray(d.target_names).dtype, np.number):
            label = pa.array([str(d.target_names[v]) for v in y])
        else:
            label = pa.array([str(int(v)) for v in y])
        n = len(y)
        cols = {
            "_ingest_seq": pa.array(np.arange(1, n + 1, dtype=np.uint64)),
            "event_id": pa.array([f"e{i}" for i in range(n)]),
            "user_id": pa.array([f"u{i % 50}" for i in range(n)]),
            "ts": pa.array(T0_MS + np.arange(n, dtype=np.int64) * 60000),
        }
        for j in keep:
            cols[names[j]] = pa.array(x[:, j])
        cols["label"] = label
        folder = Path(outdir) / name
        (folder / "master").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), folder / "master" / "part-000000000001.parquet")
        spec = [
            f'name = "{name}"',
            "",
            "[dataset]",
            'time_column = "ts"',
            'key_column = "user_id"',
            'id_column = "event_id"',
            'target = "label"',
            f'task = "{task}"',
            "",
        ]
        for j in keep:
            spec += ["[[features]]", f'name = "{names[j]}"', 'type = "numeric"', ""]
        spec += [
            "[paths]",
            'master = "master"',
            'registry = "run/registry"',
            'views = "run/views"',
            'state = "run/state"',
            "",
            "[batch]",
            "holdout_fraction = 0.2",
            f'time_budget = "{budget}"',
            "seed = 0",
            "",
        ]
        (folder / "spec.toml").write_text("\n".join(spec))
        dropped = x.shape[1] - len(keep)
        line = {"dataset": name, "task": task, "rows": n, "features": len(keep), "dropped_constant": dropped}
        print(json.dumps(line))


# ------------------------------------------------------------------------------------------------------------ peers


def load_spec(path):
    path = Path(path)
    with open(path, "rb") as f:
        spec = tomllib.load(f)
    spec["_dir"] = path.parent
    return spec


def split_tables(spec):
    """The labelled rows in lambda-ml's order as a pyarrow table with every column the pipeline reads, and the
    index of the first holdout row."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    d = spec["dataset"]
    target, tcol, idcol = d["target"], d["time_column"], d["id_column"]
    names = [f["name"] for f in spec.get("features", [])]
    master = spec["_dir"] / spec["paths"]["master"]
    columns = list(dict.fromkeys(["_ingest_seq", idcol, d["key_column"], tcol, target, *names]))
    table = ds.dataset(master, format="parquet", partitioning=None).to_table(columns=columns)
    keep = pc.is_valid(table[target])
    if d["task"] == "regression":
        keep = pc.and_(keep, pc.is_finite(pc.cast(table[target], pa.float64())))
    table = table.filter(keep)
    table = table.sort_by([("_ingest_seq", "ascending")])
    ids = table[idcol].to_pandas()
    table = table.filter(pa.array(~ids.duplicated(keep="first").to_numpy()))
    table = table.sort_by([(tcol, "ascending"), ("_ingest_seq", "ascending")])
    n = table.num_rows
    frac = spec.get("batch", {}).get("holdout_fraction", 0.2)
    return table, n - math.ceil(frac * n)


def trainonly(spec_path, outdir):
    import pyarrow.parquet as pq

    spec = load_spec(spec_path)
    table, cut = split_tables(spec)
    out = Path(outdir)
    (out / "master").mkdir(parents=True, exist_ok=True)
    pq.write_table(table.slice(0, cut), out / "master" / "part-000000000001.parquet")
    pq.write_table(table.slice(cut), out / "holdout.parquet")
    text = Path(spec_path).read_text()
    for key, value in [("master", "master"), ("registry", "run/registry"), ("views", "run/views"), ("state", "run/state")]:
        text = re.sub(rf'(?m)^{key} = .*$', f'{key} = "{value}"', text)
    (out / "spec.toml").write_text(text)


def forecast_metrics(spec, outdir):
    """The published model's metrics on the holdout, from `lambda-ml forecast`'s predictions of it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    task, target = spec["dataset"]["task"], spec["dataset"]["target"]
    hold = pq.read_table(Path(outdir) / "holdout.parquet")
    pred = pq.read_table(Path(outdir) / "forecast.parquet")
    if task == "regression":
        y = pc.cast(hold[target], pa.float64()).to_numpy()
        return score(task, y, pred["prediction"].to_numpy(), None, 0)
    labels = pc.cast(hold[target], pa.string()).to_numpy(zero_copy_only=False)
    classes = sorted(c[len("probability_"):] for c in pred.column_names if c.startswith("probability_"))
    y = np.searchsorted(np.array(classes, dtype=object), labels)
    proba = np.column_stack([pred[f"probability_{c}"].to_numpy() for c in classes])
    return score(task, y, None, proba, len(classes))


def load_split(spec):
    """The master dataset as lambda-ml's batch layer sees it: labelled rows, one per id (the first ingested), in event
    time order, the last ceil(holdout_fraction * n) of them held out."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    task, target = spec["dataset"]["task"], spec["dataset"]["target"]
    features = spec.get("features", [])
    table, cut = split_tables(spec)

    x = {}
    kinds = {}
    for f in features:
        col, kind = table[f["name"]], f.get("type", "numeric")
        kinds[f["name"]] = kind
        if kind == "categorical":
            x[f["name"]] = pc.cast(col, pa.string()).to_pandas()
        else:  # numeric, boolean: float with NaN for missing
            x[f["name"]] = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    x = pd.DataFrame(x)
    for c, kind in kinds.items():
        if kind == "categorical":
            # Categories from the training part only: a holdout value never seen in training is missing.
            cats = sorted(x[c].iloc[:cut].dropna().unique().tolist())
            x[c] = pd.Categorical(x[c], categories=cats)
    if task == "regression":
        y = pc.cast(table[target], pa.float64()).to_numpy()
        classes = None
    else:
        labels = pc.cast(table[target], pa.string()).to_numpy(zero_copy_only=False)
        # Sorted string labels: for a binary task the second is the positive class, as in lambda-ml.
        classes = sorted(set(labels.tolist()))
        y = np.searchsorted(np.array(classes, dtype=object), labels)
    return x.iloc[:cut], y[:cut], x.iloc[cut:], y[cut:], kinds, classes


def full_proba(model_classes, proba, k):
    """Probabilities over every class of the dataset (a class missing from the training part gets 0)."""
    import numpy as np

    out = np.zeros((proba.shape[0], k))
    out[:, np.asarray(model_classes, dtype=int)] = proba
    return out


def score(task, y, pred, proba, k):
    import numpy as np
    from sklearn import metrics

    if task == "regression":
        return {
            "rmse": float(np.sqrt(metrics.mean_squared_error(y, pred))),
            "mae": float(metrics.mean_absolute_error(y, pred)),
            "r2": float(metrics.r2_score(y, pred)),
        }
    out = {}
    # lambda-ml's AUC: the positive class's for a binary task, else the mean one-vs-rest AUC over the classes that
    # have both positive and negative holdout rows.
    present = [c for c in (range(1, 2) if k == 2 else range(k)) if 0 < (y == c).sum() < len(y)]
    aucs = [metrics.roc_auc_score(y == c, proba[:, c]) for c in present]
    out["auc"] = float(np.mean(aucs)) if aucs else None
    out["accuracy"] = float(metrics.accuracy_score(y, proba.argmax(axis=1)))
    out["log_loss"] = float(metrics.log_loss(y, np.clip(proba, 1e-15, 1.0), labels=list(range(k))))
    return out


def fit_lightgbm(task, x, y, kinds, budget, cores):
    import lightgbm as lgb

    params = dict(n_estimators=300, learning_rate=0.05, num_leaves=63, n_jobs=cores, random_state=0, verbose=-1)
    cls = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
    cats = [c for c, k in kinds.items() if k == "categorical"]
    model = cls(**params).fit(x, y, categorical_feature=cats or "auto")
    return model, "n_estimators=300 learning_rate=0.05 num_leaves=63 (no early stopping, native categoricals)"


def fit_hgb(task, x, y, kinds, budget, cores):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    # Native categoricals take at most max_bins (255) categories: the rarer ones become missing.
    capped = []
    for c, k in kinds.items():
        if k == "categorical" and len(x[c].cat.categories) > 255:
            top = list(x[c].value_counts().index[:255])
            x = x.assign(**{c: x[c].cat.set_categories(top)})
            capped.append(c)
    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    model = cls(
        max_iter=300, learning_rate=0.1, early_stopping=False, categorical_features="from_dtype", random_state=0
    )
    model.fit(x, y)
    model._bench_categories = {c: x[c].cat.categories for c in capped}
    note = f" (categories capped at 255: {', '.join(capped)})" if capped else ""
    return model, "max_iter=300 learning_rate=0.1 max_leaf_nodes=31 (no early stopping, native categoricals)" + note


def fit_linear(task, x, y, kinds, budget, cores):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    nums = [c for c, k in kinds.items() if k != "categorical"]
    cats = [c for c, k in kinds.items() if k == "categorical"]
    prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="mean", add_indicator=True), StandardScaler()), nums),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="__missing__"), OneHotEncoder(handle_unknown="ignore")
                ),
                cats,
            ),
        ]
    )
    if task == "regression":
        est, setting = Ridge(alpha=1.0), "Ridge alpha=1"
    else:
        est, setting = LogisticRegression(C=1.0, max_iter=1000), "LogisticRegression C=1 lbfgs max_iter=1000"

    def objects(x):  # categoricals as plain strings with NaN for missing, as SimpleImputer expects
        return x.assign(**{c: x[c].astype(object).where(x[c].notna(), float("nan")) for c in cats})

    model = make_pipeline(FunctionTransformer(objects), prep, est).fit(x, y)
    return model, setting + " (mean imputation + missing indicators, standardized, one-hot)"


# lambda-ml's batch.metric names, as FLAML calls them.
FLAML_METRIC = {
    "log_loss": "log_loss", "accuracy": "accuracy", "auc": "roc_auc", "rmse": "rmse", "mae": "mae", "r2": "r2"
}


def fit_flaml(task, x, y, kinds, budget, cores, metric="log_loss"):
    from flaml import AutoML

    automl = AutoML()
    automl.fit(
        x,
        y,
        task="regression" if task == "regression" else "classification",
        time_budget=budget,
        metric=FLAML_METRIC[metric],
        eval_method="holdout",
        split_type="time",  # the training part is in time order: FLAML validates on its tail
        seed=0,
        n_jobs=cores,
        verbose=0,
    )
    # FLAML searches within the budget, then retrains the winner on the whole training part outside it.
    search_s = getattr(automl._state, "time_from_start", float("nan"))
    trials = getattr(automl, "modelcount", None)
    setting = (
        f"best={automl.best_estimator} {json.dumps(automl.best_config, sort_keys=True)} metric={FLAML_METRIC[metric]}"
        f" trials={trials} search={search_s:.1f}s"
    )
    return automl, setting


FITTERS = {"lightgbm": fit_lightgbm, "hist_gradient_boosting": fit_hgb, "linear": fit_linear, "flaml": fit_flaml}
IMPORTS = {"lightgbm": ["lightgbm"], "hist_gradient_boosting": [], "linear": [], "flaml": ["flaml.automl"]}


def peer(name, spec_path, budget):
    import importlib

    if name not in FITTERS:
        raise SystemExit(f"unknown peer {name!r}: one of {', '.join(PEERS)}")
    try:
        for module in ["numpy", "pandas", "pyarrow", "sklearn", *IMPORTS[name]]:
            importlib.import_module(module)
    except Exception as e:  # a missing or broken package: report it, do not crash the run
        print(json.dumps({"peer": name, "error": f"{type(e).__name__}: {e}"}))
        return 0
    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    spec = load_spec(spec_path)
    task = spec["dataset"]["task"]
    x_train, y_train, x_hold, y_hold, kinds, classes = load_split(spec)
    t1 = time.perf_counter()
    extra = {}
    if name == "flaml":
        extra["metric"] = spec.get("batch", {}).get("metric", "rmse" if task == "regression" else "log_loss")
    model, setting = FITTERS[name](task, x_train, y_train, kinds, budget, cores, **extra)
    t2 = time.perf_counter()
    for c, cats in getattr(model, "_bench_categories", {}).items():
        x_hold = x_hold.assign(**{c: x_hold[c].cat.set_categories(cats)})
    if task == "regression":
        metrics = score(task, y_hold, model.predict(x_hold), None, 0)
    else:
        proba = full_proba(model.classes_, model.predict_proba(x_hold), len(classes))
        metrics = score(task, y_hold, None, proba, len(classes))
    t3 = time.perf_counter()
    print(
        json.dumps(
            {
                "peer": name,
                "rows_train": len(y_train),
                "rows_holdout": len(y_hold),
                "read_seconds": t1 - t0,
                "fit_seconds": t2 - t1,
                "seconds": t3 - t0,
                "metrics": metrics,
                "params": setting,
            }
        )
    )
    return 0


# ------------------------------------------------------------------------------------------------------------- view


def view(master, key, tcol="ts"):
    """The batch view's per-key aggregates with polars: count, first and last event time, and per numeric (or boolean)
    column the sum, min and max."""
    import polars as pl

    t0 = time.perf_counter()
    # Every Parquet file under the master folder; `date=...` folders are not read as columns.
    df = pl.read_parquet(f"{master}/**/*.parquet", hive_partitioning=False)
    t1 = time.perf_counter()
    # Booleans count as 0/1 numbers, as in lambda-ml's view.
    numeric = [
        c for c, t in df.schema.items() if (t.is_numeric() or t == pl.Boolean) and c not in (key, tcol, "_ingest_seq")
    ]
    aggs = [pl.len().alias("count"), pl.col(tcol).min().alias("first"), pl.col(tcol).max().alias("last")]
    for c in numeric:
        v = pl.col(c).cast(pl.Float64)
        aggs += [v.sum().alias(f"{c}_sum"), v.min().alias(f"{c}_min"), v.max().alias(f"{c}_max")]
    out = df.group_by(key).agg(aggs)
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "peer": "polars-view",
                "rows": df.height,
                "keys": out.height,
                "numeric_columns": len(numeric),
                "read_seconds": t1 - t0,
                "group_by_seconds": t2 - t1,
                "seconds": t2 - t0,
                "params": f"polars {pl.__version__} group_by({key}): count, min/max {tcol}, sum/min/max of"
                f" {len(numeric)} numeric columns",
            }
        )
    )


# --------------------------------------------------------------------------------------------- lambda-ml + results


PHASES = {"reading": "read", "splitting": "split", "searching": "search", "refitting": "refit", "folding": "view",
          "publishing": "publish"}


def phases(log):
    """Seconds per batch phase, from the timestamps of lambda-ml's `batch phase="..."` log lines (each phase lasts
    until the next one, the last one until the last log line)."""
    from datetime import datetime

    marks, last = [], None
    for line in Path(log).read_text(errors="replace").splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        m = re.match(r"(\d{4}-\d\d-\d\dT[\d:.]+)Z", line)
        if not m:
            continue
        last = datetime.fromisoformat(m.group(1)[:26])
        p = re.search(r'phase="([^"]*)"', line)
        if p:
            marks.append((p.group(1), last))
    out = {}
    for i, (name, t) in enumerate(marks):
        end = marks[i + 1][1] if i + 1 < len(marks) else last
        out[PHASES.get(name.split()[0], name)] = (end - t).total_seconds()
    return out


def manifest(spec_path, log=None, forecast_dir=None):
    """lambda-ml's current model, read from the registry, in the peers' format, with the phases' seconds from the
    batch run's log when given, and its metrics on the holdout from `forecast_dir` (see `trainonly`) when given."""
    spec = load_spec(spec_path)
    registry = spec["_dir"] / spec["paths"]["registry"]
    version = (registry / "CURRENT").read_text().strip()
    path = registry / "versions" / version / "manifest.json"
    if not path.exists():  # older layout: the version folder right under the registry
        path = registry / version / "manifest.json"
    m = json.loads(path.read_text())
    # The winner's holdout metrics are those of the candidate fitted in the search (on a subsample of the training
    # part when the search runs in rounds); the published model is then refitted on `training_rows`.
    winner = next((e for e in m.get("leaderboard", []) if f"{e['algorithm']} {e['params']}" == m["algorithm"]), {})
    search_metrics = {k: v for k, v in m["metrics"].items() if k != "rows"}
    print(
        json.dumps(
            {
                "peer": "lambda-ml",
                "version": version,
                "rows_fit": winner.get("rows"),
                "rows_refit": m["training_rows"],
                "rows_holdout": m["holdout_rows"],
                "seconds": m.get("search", {}).get("seconds"),
                "metrics": forecast_metrics(spec, forecast_dir) if forecast_dir else search_metrics,
                "search_metrics": search_metrics,
                "params": m["algorithm"],
                "search": m.get("search", {}),
                "phases": phases(log) if log else {},
            }
        )
    )


def parse_time(path):
    """Wall seconds and peak RSS (MB) from `/usr/bin/time -v`'s report."""
    wall = rss = None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("Elapsed (wall clock) time"):
            parts = [float(p) for p in line.rsplit(" ", 1)[1].split(":")]
            wall = sum(p * 60**i for i, p in enumerate(reversed(parts)))
        elif line.startswith("Maximum resident set size"):
            rss = int(line.rsplit(" ", 1)[1]) / 1024
    return wall, rss


def record(dataset, peer, base):
    """One results line: the JSON line in BASE.json or BASE.out (when there is none, the error at the end of
    BASE.err), with the dataset, and the wall time and peak RSS from BASE.time."""
    def f(ext):
        return Path(f"{base}{ext}")

    try:
        # lambda-ml's line is in BASE.json (from `manifest`), a peer's is its output's last line.
        lines = (f(".json") if f(".json").exists() else f(".out")).read_text().strip().splitlines()
        r = json.loads(lines[-1])
    except (OSError, IndexError, ValueError):
        err = f(".err").read_text(errors="replace") if f(".err").exists() else ""
        err = re.sub(r"\x1b\[[0-9;]*m", "", err.split("Stack backtrace:")[0])
        last = [l.strip() for l in err.splitlines() if l.strip()]
        r = {"peer": peer, "error": last[-1] if last else "no output"}
    wall, rss = parse_time(f(".time")) if f(".time").exists() else (None, None)
    r.update({"peer": r.get("peer", peer), "dataset": dataset, "wall_seconds": wall, "peak_rss_mb": rss})
    print(json.dumps(r))


def fmt(v, digits=4):
    return "n/a" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(results):
    from importlib import metadata

    rows = [json.loads(l) for l in Path(results).read_text().splitlines() if l.strip()]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    versions = []
    for p in ("lightgbm", "scikit-learn", "flaml", "xgboost-cpu", "polars"):
        try:
            versions.append(f"{p} {metadata.version(p)}")
        except metadata.PackageNotFoundError:
            pass
    print(f"Peers: {', '.join(versions)}.")
    print("Wall s and peak RSS are the whole process's (`/usr/bin/time -v`): for lambda-ml read, search, refit, batch")
    print("view and publish; for a peer Python's start and imports, read, fit (FLAML: search, then retrain), score.")
    for d in datasets:
        rs = [r for r in rows if r["dataset"] == d]
        split = next((r for r in rs if "rows_train" in r), {})
        train, hold = fmt(split.get("rows_train")), fmt(split.get("rows_holdout"))
        print(f"\n### {d}: {train} training rows, {hold} holdout rows\n")
        print("| system | setting / winner | holdout metric(s) | wall s | peak RSS MB |")
        print("|---|---|---|---|---|")
        for r in rs:
            if "error" in r:
                setting, metrics = "error: " + r["error"], ""
            elif r["peer"] == "polars-view":
                setting = r["params"]
                metrics = f"{r['rows']} rows, {r['keys']} keys; read {r['read_seconds']:.2f} s,"
                metrics += f" group_by {r['group_by_seconds']:.2f} s"
            else:
                setting = r["params"]
                if r["peer"] == "lambda-ml":
                    s = r.get("search", {})
                    cut = ", cut by time" if s.get("cut_by_time") else ""
                    sm = r.get("search_metrics", {})
                    search = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(sm.items()) if k in ("auc", "log_loss", "rmse"))
                    setting += f" (chosen on {fmt(r.get('rows_fit'))} rows: {search}; refit on {fmt(r.get('rows_refit'))};"
                    setting += f" {s.get('tried')} trials of {s.get('candidates')} candidates{cut};"
                    setting += " " + ", ".join(f"{k} {v:.1f} s" for k, v in r.get("phases", {}).items()) + ")"
                else:
                    setting += f" (read {r['read_seconds']:.1f} s, fit {r['fit_seconds']:.1f} s)"
                metrics = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(r["metrics"].items()))
            setting = setting.replace("|", "\\|")
            wall, rss = fmt(r.get("wall_seconds"), 1), fmt(r.get("peak_rss_mb"), 0)
            print(f"| {r['peer']} | {setting} | {metrics} | {wall} | {rss} |")


def main(argv):
    what = argv[1] if len(argv) > 1 else ""
    if what == "export":
        budget = argv[argv.index("--budget") + 1] if "--budget" in argv else "60s"
        export(argv[2], budget)
    elif what == "peer":
        name = argv[2]
        try:
            return peer(name, argv[3], float(argv[4]))
        except Exception as e:
            print(json.dumps({"peer": name, "error": f"{type(e).__name__}: {e}"}))
            return 1
    elif what == "view":
        view(argv[2], argv[3], *argv[4:5])
    elif what == "manifest":
        manifest(argv[2], *argv[3:5])
    elif what == "trainonly":
        trainonly(argv[2], argv[3])
    elif what == "record":
        record(argv[2], argv[3], argv[4])
    elif what == "table":
        table(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
