"""NannyML's univariate drift: KS, Jensen-Shannon and Wasserstein for
numeric features, chi-squared and Jensen-Shannon for categorical ones, in
one-hour chunks against the first hour as reference.

    python nannyml_peer.py WORKLOAD.parquet > nannyml.jsonl
"""

import sys

import nannyml as nml
import pandas as pd

from common import Clock, emit, load


def main(path):
    clock = Clock()
    preds, _, num, cat = load(path)
    preds["timestamp"] = pd.to_datetime(preds["ms"], unit="ms")
    clock.lap("load")
    first = preds["window"].min()
    reference = preds[preds["window"] == first]
    analysis = preds[preds["window"] != first]
    calc = nml.UnivariateDriftCalculator(
        column_names=num + cat,
        timestamp_column_name="timestamp",
        continuous_methods=["kolmogorov_smirnov", "jensen_shannon", "wasserstein"],
        categorical_methods=["chi2", "jensen_shannon"],
        chunk_period="h",
    )
    calc.fit(reference)
    results = calc.calculate(analysis).filter(period="analysis").to_df()
    clock.lap("drift")
    alerts = results.xs("alert", axis=1, level=-1)
    emit({"chunks": len(results), "alerts": int(alerts.to_numpy().sum()), "statistics": int(alerts.size)})


if __name__ == "__main__":
    main(sys.argv[1])
