"""The exact statistics, by hand with numpy/scipy/scikit-learn: what a team
writes when it does not use a monitoring library. Per window after the
reference, per feature: KS, Wasserstein (and over the reference's standard
deviation), PSI and JS on ten reference-quantile bins (numeric), chi-squared,
PSI and JS over the categories (categorical); accuracy and ROC AUC of the
labels that arrived within the label horizon. The definitions are
driftwatch's (docs/drift.md), the same as its oracle fixtures'.

    python exact_peer.py WORKLOAD.parquet > exact.jsonl
"""

import sys

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance
from sklearn.metrics import accuracy_score, roc_auc_score

from common import HOUR_MS, Clock, emit, load

BINS = 10
PSI_EPSILON = 1e-4
HORIZON_MS = 7 * 24 * HOUR_MS


def psi(r, c):
    r = np.maximum(r, PSI_EPSILON)
    c = np.maximum(c, PSI_EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def numeric(ref, cur):
    ref = ref[~np.isnan(ref)]
    cur = cur[~np.isnan(cur)]
    if len(ref) == 0 or len(cur) == 0:
        return {}
    w = wasserstein_distance(ref, cur)
    sd = float(np.std(ref))
    edges = np.unique(np.quantile(ref, [i / BINS for i in range(1, BINS)], method="inverted_cdf"))
    r = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=len(edges) + 1) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=len(edges) + 1) / len(cur)
    return {
        "ks": float(ks_2samp(ref, cur).statistic),
        "wasserstein": float(w),
        "wasserstein_norm": float(w / sd) if sd > 0 else None,
        "psi": psi(r, c),
        "js": float(jensenshannon(r, c, base=2)),
    }


def categorical(ref, cur):
    ref = ref[ref.notna()]
    cur = cur[cur.notna()]
    if len(ref) == 0 or len(cur) == 0:
        return {}
    rc = ref.value_counts()
    cc = cur.value_counts()
    cats = sorted(set(rc.index) | set(cc.index))
    rc = rc.reindex(cats, fill_value=0).to_numpy()
    cc = cc.reindex(cats, fill_value=0).to_numpy()
    stat, p, _, _ = chi2_contingency(np.vstack([rc, cc]), correction=False)
    r, c = rc / rc.sum(), cc / cc.sum()
    return {"chi2": float(stat), "p_value": float(p), "psi": psi(r, c), "js": float(jensenshannon(r, c, base=2))}


def main(path):
    clock = Clock()
    preds, labels, num, cat = load(path)
    clock.lap("load")
    windows = sorted(preds["window"].unique())
    groups = dict(tuple(preds.groupby("window")))
    ref = groups[windows[0]]
    for w in windows[1:]:
        cur = groups[w]
        for f in num:
            emit({"window_start": int(w), "feature": f, **numeric(ref[f].to_numpy(), cur[f].to_numpy())})
        for f in cat:
            emit({"window_start": int(w), "feature": f, **categorical(ref[f], cur[f])})
    clock.lap("drift")
    joined = preds[["event_id", "window", "score", "class"]].merge(labels, on="event_id")
    joined = joined[joined["label_ms"] < joined["window"] + HOUR_MS + HORIZON_MS]
    for w, g in joined.groupby("window"):
        y = g["label"].to_numpy()
        record = {"window_start": int(w), "labeled": len(g), "accuracy": float(accuracy_score(y, g["class"]))}
        if len(set(y)) == 2:
            record["roc_auc"] = float(roc_auc_score(y == "1", g["score"]))
        emit(record)
    clock.lap("performance")


if __name__ == "__main__":
    main(sys.argv[1])
