"""Evidently's data-drift preset, one report per one-hour window against the
first hour (its default tests per column type and size).

    python evidently_peer.py WORKLOAD.parquet > evidently.jsonl
"""

import sys

from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from common import Clock, emit, load


def main(path):
    clock = Clock()
    preds, _, num, cat = load(path)
    clock.lap("load")
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    columns = num + cat
    windows = sorted(preds["window"].unique())
    groups = dict(tuple(preds.groupby("window")))
    reference = Dataset.from_pandas(groups[windows[0]][columns], data_definition=definition)
    report = Report([DataDriftPreset()])
    drifted = 0
    for w in windows[1:]:
        current = Dataset.from_pandas(groups[w][columns], data_definition=definition)
        snapshot = report.run(current_data=current, reference_data=reference)
        for metric in snapshot.dict()["metrics"]:
            if metric.get("metric_id", "").startswith("DriftedColumnsCount"):
                drifted += int(metric["value"]["count"])
    clock.lap("drift")
    emit({"windows": len(windows) - 1, "drifted_columns": drifted})


if __name__ == "__main__":
    main(sys.argv[1])
