"""Peers measured on the same data as lambda-ml: scikit-learn for batch training, River and Vowpal Wabbit for online
learning. Each prints one JSON line per measurement."""

import json
import math
import sys
import time

FEATURES = ["amount", "country", "mobile", "session_seconds"]


def load_history(master):
    import pyarrow.dataset as ds

    table = ds.dataset(master, format="parquet", partitioning=None).to_table()
    return table.to_pandas()


def design(df, stats=None):
    """The same encoding as lambda-ml's encoder: standardized numerics with missing flags, one-hot country with an
    unknown and a missing slot, boolean with a missing flag."""
    import numpy as np

    if stats is None:
        stats = {}
        for c in ("amount", "session_seconds"):
            v = df[c].astype(float)
            stats[c] = (v.mean(), v.std(ddof=0) or 1.0)
        stats["country"] = sorted(df["country"].dropna().unique().tolist())
    cols = []
    for c in ("amount", "session_seconds"):
        v = df[c].astype(float)
        m, s = stats[c]
        cols.append(((v - m) / s).fillna(0.0).to_numpy())
        cols.append(v.isna().astype(float).to_numpy())
    for k in stats["country"]:
        cols.append((df["country"] == k).astype(float).to_numpy())
    cols.append((~df["country"].isin(stats["country"]) & df["country"].notna()).astype(float).to_numpy())
    cols.append(df["country"].isna().astype(float).to_numpy())
    mob = df["mobile"]
    cols.append(mob.fillna(False).astype(float).to_numpy())
    cols.append(mob.isna().astype(float).to_numpy())
    return np.column_stack(cols), stats


def batch(master, alphas):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score, log_loss

    t0 = time.perf_counter()
    df = load_history(master)
    df = df[df["converted"].notna()].sort_values(["ts", "_ingest_seq"])
    cut = len(df) - math.ceil(len(df) * 0.2)
    train, hold = df.iloc[:cut], df.iloc[cut:]
    x_train, stats = design(train)
    x_hold, _ = design(hold, stats)
    y_train = (train["converted"] == "yes").to_numpy()
    y_hold = (hold["converted"] == "yes").to_numpy()
    best = None
    for a in alphas:
        # linfa minimizes the summed log loss + alpha * |w|^2 / 2, which is scikit-learn's objective with C = 1 / alpha.
        m = LogisticRegression(C=1.0 / a, max_iter=200).fit(x_train, y_train)
        p = m.predict_proba(x_hold)[:, 1]
        ll = log_loss(y_hold, p)
        if best is None or ll < best[0]:
            best = (ll, a, roc_auc_score(y_hold, p))
    x_all, _ = design(df)
    LogisticRegression(C=1.0 / best[1], max_iter=200).fit(x_all, (df["converted"] == "yes").to_numpy())
    secs = time.perf_counter() - t0
    print(json.dumps({"peer": "scikit-learn", "rows": len(df), "seconds": secs, "auc": best[2], "log_loss": best[0]}))


def events(path):
    with open(path) as f:
        for line in f:
            yield line


def online_river(path, lr):
    from river import compose, linear_model, optim, preprocessing

    # Absent keys are River's missing values; the country is one-hot encoded by name.
    model = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression(optimizer=optim.SGD(lr)))
    n, loss, labelled = 0, 0.0, 0
    t0 = time.perf_counter()
    for line in events(path):
        e = json.loads(line)
        try:
            x = {k: float(e[k]) for k in ("amount", "session_seconds", "mobile") if e.get(k) is not None}
        except (TypeError, ValueError):
            continue
        if any(v != v or v in (float("inf"), float("-inf")) for v in x.values()):
            continue
        if e.get("country") is not None:
            x["country=" + e["country"]] = 1.0
        y = e.get("converted")
        n += 1
        if y is None:
            continue
        p = model.predict_proba_one(x).get(True, 0.5)
        yb = y == "yes"
        loss += -math.log(max(min(p if yb else 1 - p, 1.0), 1e-15))
        labelled += 1
        model.learn_one(x, yb)
    secs = time.perf_counter() - t0
    print(json.dumps({"peer": "River", "events": n, "seconds": secs, "log_loss": loss / max(labelled, 1)}))


def online_vw(path, lr):
    import vowpalwabbit

    vw = vowpalwabbit.Workspace(f"--loss_function logistic --link logistic -l {lr} --quiet")
    n, loss, labelled = 0, 0.0, 0
    t0 = time.perf_counter()
    for line in events(path):
        e = json.loads(line)
        feats = []
        for k in ("amount", "session_seconds"):
            if e.get(k) is not None:
                feats.append(f"{k}:{float(e[k])}")
        if e.get("country") is not None:
            feats.append(f"country={e['country']}")
        if e.get("mobile"):
            feats.append("mobile")
        body = "|f " + " ".join(feats)
        y = e.get("converted")
        n += 1
        if y is None:
            continue
        p = vw.predict(body)
        yb = y == "yes"
        loss += -math.log(max(min(p if yb else 1 - p, 1.0), 1e-15))
        labelled += 1
        vw.learn(("1 " if yb else "-1 ") + body)
    secs = time.perf_counter() - t0
    vw.finish()
    print(json.dumps({"peer": "Vowpal Wabbit", "events": n, "seconds": secs, "log_loss": loss / max(labelled, 1)}))


def vw_text(path, out):
    """The same events in Vowpal Wabbit's text format (labels -1/1; an unlabelled event is predicted only)."""
    n, labelled = 0, 0
    with open(out, "w") as w:
        for line in events(path):
            e = json.loads(line)
            feats = []
            for k in ("amount", "session_seconds"):
                if e.get(k) is not None:
                    feats.append(f"{k}:{float(e[k])}")
            if e.get("country") is not None:
                feats.append(f"country={e['country']}")
            if e.get("mobile"):
                feats.append("mobile")
            y = e.get("converted")
            label = "" if y is None else ("1 " if y == "yes" else "-1 ")
            w.write(f"{label}|f {' '.join(feats)}\n")
            n += 1
            labelled += y is not None
    return n, labelled


def online_vw_driver(path, lr):
    """Vowpal Wabbit's own driver (native parser and learning loop over a data file, as the vw command runs it,
    through the wheel's `-d`), after converting the events to its text format (not timed). The loss is VW's own
    progressive validation loss: each example scored before it is learned."""
    import vowpalwabbit

    data = path + ".vw"
    n, labelled = vw_text(path, data)
    t0 = time.perf_counter()
    vw = vowpalwabbit.Workspace(f"-d {data} --loss_function logistic --link logistic -l {lr} --quiet")
    secs = time.perf_counter() - t0
    # Unlabelled examples are predicted only and add no loss.
    loss = vw.get_sum_loss() / max(labelled, 1)
    vw.finish()
    print(json.dumps({"peer": "Vowpal Wabbit (driver)", "events": n, "seconds": secs, "log_loss": loss}))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "batch":
        batch(sys.argv[2], [float(a) for a in sys.argv[3].split(",")])
    elif what == "river":
        online_river(sys.argv[2], float(sys.argv[3]))
    elif what == "vw":
        online_vw(sys.argv[2], float(sys.argv[3]))
    elif what == "vw-driver":
        online_vw_driver(sys.argv[2], float(sys.argv[3]))
