"""River's ADWIN over the stream of per-prediction errors, in the order the
labels arrive: the streaming check of accuracy that driftwatch's label join
and its ADWIN do.

    python river_peer.py WORKLOAD.parquet > river.jsonl
"""

import sys

from river import drift

from common import Clock, emit, load


def main(path):
    clock = Clock()
    preds, labels, _, _ = load(path)
    clock.lap("load")
    predicted = dict(zip(preds["event_id"], preds["class"]))
    adwin = drift.ADWIN()
    detections = 0
    seen = 0
    for event_id, label in zip(labels["event_id"], labels["label"]):
        cls = predicted.get(event_id)
        if cls is None:
            continue
        seen += 1
        adwin.update(0.0 if cls == label else 1.0)
        if adwin.drift_detected:
            detections += 1
    clock.lap("adwin")
    emit({"errors": seen, "detections": detections})


if __name__ == "__main__":
    main(sys.argv[1])
