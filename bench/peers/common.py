"""What every peer shares: reading the workload and cutting it into the
windows driftwatch uses (tumbling one-hour windows of event time, aligned to
the epoch; the first window of the model is the reference).

The workload is the Parquet file `driftwatch gen` writes: one row per event,
predictions with `features` and `prediction` structs, labels with `label`.
"""

import json
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HOUR_MS = 3_600_000


def load(path):
    """(predictions, labels) as pandas frames: predictions with one column
    per feature, `window` (start, ms) and `score`/`class`; labels with
    `event_id`, `label` and their arrival `label_ms`."""
    table = pq.read_table(path)
    is_label = pc.is_valid(table["label"])
    preds = table.filter(pc.invert(is_label))
    labels = table.filter(is_label).select(["event_id", "timestamp", "label"])
    features = preds["features"].combine_chunks()
    prediction = preds["prediction"].combine_chunks()
    frame = {f.name: features.field(i) for i, f in enumerate(features.type)}
    ms = pc.cast(preds["timestamp"], "int64")
    frame["event_id"] = preds["event_id"]
    frame["ms"] = ms
    frame["score"] = prediction.field("score")
    frame["class"] = prediction.field("class")
    p = pa.table(frame).to_pandas()
    p["window"] = (p["ms"] // HOUR_MS) * HOUR_MS
    l = pa.table(
        {
            "event_id": labels["event_id"],
            "label_ms": pc.cast(labels["timestamp"], "int64"),
            "label": labels["label"],
        }
    ).to_pandas()
    numeric = [f.name for f in features.type if str(f.type) == "double"]
    categorical = [f.name for f in features.type if str(f.type) == "string"]
    return p, l, numeric, categorical


def emit(record):
    sys.stdout.write(json.dumps(record) + "\n")


class Clock:
    """Wall time of the phases, reported on stderr (the harness times the
    whole process)."""

    def __init__(self):
        self.t = time.perf_counter()

    def lap(self, what):
        now = time.perf_counter()
        sys.stderr.write(f"{what}: {now - self.t:.2f}s\n")
        self.t = now
