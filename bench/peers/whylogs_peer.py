"""whylogs: a profile of each one-hour window, and its drift scores against
the first hour's profile (whylogs' default algorithm per column: KS for
numeric, chi-squared for categorical, computed from the profiles).

    python whylogs_peer.py WORKLOAD.parquet > whylogs.jsonl
"""

import sys

import whylogs as why
from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

from common import Clock, emit, load


def main(path):
    clock = Clock()
    preds, _, num, cat = load(path)
    clock.lap("load")
    columns = num + cat
    windows = sorted(preds["window"].unique())
    groups = dict(tuple(preds.groupby("window")))
    reference = why.log(groups[windows[0]][columns]).view()
    drifted = 0
    for w in windows[1:]:
        view = why.log(groups[w][columns]).view()
        scores = calculate_drift_scores(target_view=view, reference_view=reference, with_thresholds=True)
        drifted += sum(1 for s in scores.values() if s and s.get("drift_category") == "DRIFT")
    clock.lap("profiles and drift")
    emit({"windows": len(windows) - 1, "drifted_columns": drifted})


if __name__ == "__main__":
    main(sys.argv[1])
