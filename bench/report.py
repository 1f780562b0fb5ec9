#!/usr/bin/env python3
"""Turns one run of bench/run.sh into results: JSON, a Markdown table (also
spliced into docs/BENCHMARKS.md between its markers), and an SVG bar chart
of prediction events per CPU-second. Standard library only.

Agreement: driftwatch's per-window statistics (`feature_drift.jsonl` of its
`all` run) against the exact values the `exact` peer computed from the raw
values of the same windows; accuracy against the exact accuracy of the same
labels.
"""

import argparse
import json
import platform
import statistics
import subprocess
from pathlib import Path

BEGIN = "<!-- bench/run.sh: begin -->"
END = "<!-- bench/run.sh: end -->"

# what each tool does in this run, for the table
WORK = {
    ("driftwatch", "summaries"): "decode, windows, summaries (no drift, no labels)",
    ("driftwatch", "drift"): "+ drift of 25 features (KS, Wasserstein, PSI, JS, χ²) per window",
    ("driftwatch", "all"): "+ label join, accuracy/AUC per window, change detectors (ADWIN, …)",
    ("driftwatch", "rules"): "+ the bundled SQL alert rules",
    ("exact", "drift"): "numpy/scipy/scikit-learn by hand: the same statistics exactly, accuracy/AUC",
    ("nannyml", "drift"): "NannyML univariate drift (KS, JS, Wasserstein; χ², JS), hourly chunks",
    ("evidently", "drift"): "Evidently DataDriftPreset, one report per window",
    ("whylogs", "drift"): "whylogs profile per window and drift scores",
    ("river", "drift"): "River ADWIN over the per-prediction error stream",
}
# peers that compute drift statistics for every feature of every window
DRIFT_PEERS = ["exact", "nannyml", "evidently", "whylogs"]
TOLERANCE = {"ks": 0.01, "psi": 0.01, "js": 0.01}
# normalised Wasserstein: within 2 % of the exact value, or 0.005 where the
# value is small (the tolerance of detectors/tests/drift_oracle.rs)
WASSERSTEIN_REL, WASSERSTEIN_ABS = 0.02, 0.005


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def ms(text):
    """RFC 3339 text (as driftwatch writes it) → epoch ms."""
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def agreement(work):
    """Largest difference per statistic between driftwatch and the exact peer."""
    exact = jsonl(work / "exact.jsonl")
    drift = {(r["window_start"], r["feature"]): r for r in exact if "feature" in r}
    accuracy = {r["window_start"]: r for r in exact if "accuracy" in r}
    out = {s: {"max_abs": 0.0, "max_rel": 0.0, "compared": 0, "outside": 0}
           for s in ["ks", "wasserstein_norm", "psi", "js", "chi2", "accuracy"]}

    def compare(stat, mine, theirs):
        if mine is None or theirs is None:
            return
        d = abs(mine - theirs)
        o = out[stat]
        o["compared"] += 1
        o["max_abs"] = max(o["max_abs"], d)
        if theirs != 0:
            o["max_rel"] = max(o["max_rel"], d / abs(theirs))
        if stat == "wasserstein_norm" and d > max(WASSERSTEIN_REL * abs(theirs), WASSERSTEIN_ABS):
            o["outside"] += 1

    for row in jsonl(work / "dw-all" / "feature_drift.jsonl"):
        key = (ms(row["window_start"]), row["feature"])
        if key not in drift:
            continue
        for stat in ["ks", "wasserstein_norm", "psi", "js", "chi2"]:
            compare(stat, row.get(stat), drift[key].get(stat))
    # the last revision of each window's accuracy
    latest = {}
    for row in jsonl(work / "dw-all" / "model_metrics.jsonl"):
        if row.get("metric") != "accuracy":
            continue
        w = ms(row["window_start"])
        if w not in latest or row["revision"] > latest[w]["revision"]:
            latest[w] = row
    for w, row in latest.items():
        if w in accuracy:
            compare("accuracy", row["value"], accuracy[w]["accuracy"])
    return out


def goal_met(stat, a):
    if a["compared"] == 0:
        return None
    if stat in TOLERANCE:
        return a["max_abs"] <= TOLERANCE[stat]
    if stat == "wasserstein_norm":
        return a["outside"] == 0
    if stat == "chi2":
        return a["max_rel"] <= 1e-6
    if stat == "accuracy":
        return a["max_abs"] == 0.0
    return None


def kafka_ratios(path):
    """The bare consumer's time over driftwatch's, per round of
    scripts/bench-kafka.sh (its `ratio NN %` lines)."""
    import re

    if not path.exists():
        return None
    found = [int(m.group(1)) for m in re.finditer(r"ratio (\d+) %", path.read_text())]
    return found or None


# driftwatch's peak RSS at the largest size over the smallest that still
# counts as flat
FLAT = 1.25


def scaling(path):
    """The memory-scaling run: per tool and configuration, per size, the
    run's record (status, peak RSS, CPU seconds, error)."""
    if not path.exists():
        return None
    runs = jsonl(path)
    sizes = sorted({r["predictions"] for r in runs})
    tools = []
    for r in runs:
        key = (r["tool"], r["config"])
        if key not in tools:
            tools.append(key)
    table = {f"{t} ({c})" if t == "driftwatch" else t: {str(r["predictions"]): r for r in runs
                                                        if (r["tool"], r["config"]) == (t, c)}
             for t, c in tools}
    return {"sizes": sizes, "tools": table}


def scaling_lines(scale):
    sizes = scale["sizes"]
    lines = [
        "Memory as the workload grows (`bench/run.sh`, its scaling run): every tool reads the same "
        "Parquet file of the standard workload at each size, once, as a whole process. Peak RSS, "
        "with the CPU seconds in brackets. Each run has a time limit (BENCH_PEER_TIMEOUT); a tool "
        "that fails, or whose time extrapolated from the smaller sizes would pass the limit, is not "
        "run at the larger sizes.",
        "",
        "| tool | " + " | ".join(f"{n:,} predictions" for n in sizes) + " |",
        "| --- | " + " | ".join("---:" for _ in sizes) + " |",
    ]
    for label, runs in scale["tools"].items():
        cells = []
        for n in sizes:
            r = runs.get(str(n))
            if r is None:
                cells.append("—")
            elif r["status"] == "ok":
                cells.append(f"{r['peak_rss_kib'] / 1024:,.0f} MiB ({r['cpu_s']:,.0f} s)")
            elif r["status"] == "skipped":
                cells.append(r.get("error") or "not run")
                continue
            else:
                err = (r.get("error") or r["status"]).strip().splitlines()
                text = err[-1][:140] if err else r["status"]
                if r["status"] in ("failed", "timeout") and r.get("peak_rss_kib"):
                    text += f"; {r['peak_rss_kib'] / 1024:,.0f} MiB when stopped"
                cells.append(f"{r['status']}: {text}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for label, runs in scale["tools"].items():
        if not label.startswith("driftwatch"):
            continue
        ok = [runs[str(n)] for n in sizes if str(n) in runs and runs[str(n)]["status"] == "ok"]
        if len(ok) < 2:
            continue
        first, last = ok[0], ok[-1]
        growth = last["peak_rss_kib"] / first["peak_rss_kib"]
        verdict = "flat" if growth <= FLAT else \
            "**not flat**; what holds the memory: [memory as the stream grows](#memory-as-the-stream-grows)"
        lines.append(
            f"{label}: peak RSS {first['peak_rss_kib'] / 1024:,.0f} MiB at {first['predictions']:,} "
            f"predictions, {last['peak_rss_kib'] / 1024:,.0f} MiB at {last['predictions']:,}: "
            f"{growth:.2f}× ({verdict}; flat here means at most {FLAT}×).")
    lines.append("")
    return lines


def version(venvs, peer, package):
    try:
        text = subprocess.run(
            [str(venvs / f"venv-{peer}" / "bin" / "pip"), "show", package],
            capture_output=True, text=True, timeout=60,
        ).stdout
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return None


def svg(rows, path):
    """Horizontal bars: prediction events per CPU-second, log-free linear."""
    bars = [(r["label"], r["events_per_cpu_s"]) for r in rows if r.get("events_per_cpu_s")]
    if not bars:
        return
    width, left, bar_h, gap = 760, 260, 22, 8
    top = 40
    height = top + len(bars) * (bar_h + gap) + 30
    peak = max(v for _, v in bars)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<text x="10" y="20" font-size="14">prediction events per CPU-second (higher is better)</text>',
    ]
    for i, (label, value) in enumerate(bars):
        y = top + i * (bar_h + gap)
        w = (width - left - 90) * value / peak
        colour = "#2b6cb0" if label.startswith("driftwatch") else "#a0aec0"
        parts.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{label}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 15}">{value:,.0f}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--predictions", type=int, required=True)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--venvs", type=Path, required=True)
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--docs", type=Path)
    args = ap.parse_args()
    n = args.predictions
    times = jsonl(args.work / "times.jsonl") if (args.work / "times.jsonl").exists() else []
    rows = []
    for (tool, config), what in WORK.items():
        runs = [t for t in times if t["tool"] == tool and t["config"] in (config, "install")]
        ok = [t for t in runs if t["status"] == "ok"]
        row = {"tool": tool, "config": config, "work": what, "runs": len(runs),
               "label": tool if tool != "driftwatch" else f"driftwatch ({config})"}
        if not runs:
            row["status"] = "not run"
        elif not ok:
            row["status"] = "failed"
            row["error"] = runs[-1].get("error")
        else:
            cpu = statistics.median(t["cpu_s"] for t in ok)
            wall = statistics.median(t["wall_s"] for t in ok)
            row.update(status="ok", cpu_s=cpu, wall_s=wall,
                       events_per_cpu_s=n / cpu if cpu else None,
                       events_per_wall_s=n / wall if wall else None,
                       peak_rss_mib=max(t["peak_rss_kib"] for t in ok) / 1024)
        rows.append(row)
    by = {(r["tool"], r["config"]): r for r in rows}
    dw = by[("driftwatch", "drift")]
    peers = [by[(p, "drift")] for p in DRIFT_PEERS if by[(p, "drift")].get("events_per_cpu_s")]
    fastest = max(peers, key=lambda r: r["events_per_cpu_s"]) if peers else None
    ratio = dw["events_per_cpu_s"] / fastest["events_per_cpu_s"] if fastest and dw.get("events_per_cpu_s") else None
    agree = agreement(args.work) if (args.work / "exact.jsonl").exists() else {}
    kafka = kafka_ratios(args.work / "kafka.txt")
    scale = scaling(args.work / "scaling.jsonl")
    versions = {p: version(args.venvs, p, pkg) for p, pkg in
                [("exact", "scipy"), ("nannyml", "nannyml"), ("evidently", "evidently"),
                 ("whylogs", "whylogs"), ("river", "river")]}
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    import os
    machine = f"{os.cpu_count()} cores, {mem / 1048576:.0f} GiB, {cpu}, Python {platform.python_version()}"
    results = {
        "machine": machine, "predictions": n, "command": f"bench/run.sh {n}",
        "driftwatch": subprocess.run([args.binary, "--version"], capture_output=True, text=True).stdout.strip(),
        "versions": versions, "rows": rows, "agreement": agree,
        "ratio_vs_fastest_drift_peer": ratio,
        "kafka_vs_bare_consumer_percent": kafka,
        "fastest_drift_peer": fastest["tool"] if fastest else None,
        "scaling": scale,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    svg(rows, args.results / "throughput.svg")

    lines = [
        f"Machine: {machine}. Workload: `driftwatch gen --predictions {n} --model churn "
        "--numeric-features 20 --categorical-features 5 --late-fraction 0` "
        f"({n:,} predictions of one model, 25 features, 80 % labelled with delays of minutes to days, "
        "drift from half-way); one-hour windows, the first hour as reference. driftwatch replays the "
        "JSON Lines file (median of three runs); the peers read the same events from Parquet, each "
        "timed once as a whole process (load included). Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + f"; {results['driftwatch']}.",
        "",
        "| tool | work | status | predictions per CPU-second | per second (wall) | CPU s | peak RSS |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r["status"] == "ok":
            lines.append(f"| {r['label']} | {r['work']} | ok | {r['events_per_cpu_s']:,.0f} | "
                         f"{r['events_per_wall_s']:,.0f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} MiB |")
        else:
            err = (r.get("error") or "").strip().splitlines()
            detail = f": `{err[-1][:160]}`" if err else ""
            lines.append(f"| {r['label']} | {r['work']} | {r['status']}{detail} | — | — | — | — |")
    lines.append("")
    if ratio is not None:
        verdict = "met" if ratio >= 20 else "**not met**; where the time goes: [the profile](#where-driftwatchs-time-goes-in-this-workload)"
        lines.append(
            f"driftwatch with drift on against the fastest peer computing drift for every feature "
            f"({fastest['tool']}): **{ratio:.1f}×** prediction events per CPU-second (goal ≥ 20×: {verdict})."
        )
        lines.append("")
    if kafka:
        median = statistics.median(kafka)
        verdict = "met" if median >= 70 else "**not met**; see [Kafka](#kafka-driftwatch-run-against-a-bare-consumer)"
        lines.append(
            f"`driftwatch run` consuming the same events from a local broker (Tansu, 4 partitions) "
            f"against a bare rdkafka consumer reading the same topic: **{median:.0f} %** of its "
            f"throughput (rounds: {', '.join(f'{k} %' for k in kafka)}; goal ≥ 70 %: {verdict})."
        )
    else:
        lines.append("The Kafka comparison did not run in this run (see kafka.stderr.txt in the work directory).")
    lines.append("")
    lines += [
        "Agreement with the exact values (driftwatch's `feature_drift` and `model_metrics` against "
        "numpy/scipy on the raw values of the same windows):",
        "",
        "| statistic | compared | largest difference | goal | met |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    goals = {"ks": "≤ 0.01", "psi": "≤ 0.01", "js": "≤ 0.01",
             "wasserstein_norm": "within 2 %, or 0.005 where the value is small",
             "chi2": "≤ 1e-6 relative", "accuracy": "exact"}
    for stat, a in agree.items():
        met = goal_met(stat, a)
        if stat == "chi2":
            diff = f"{a['max_rel']:.2e} relative"
        elif stat == "wasserstein_norm":
            diff = (f"{a['max_abs']:.2e}; {a['outside']:,} windows outside the goal" if a["outside"]
                    else f"{a['max_abs']:.2e}; every window within the goal")
        else:
            diff = f"{a['max_abs']:.2e}"
        lines.append(f"| {stat} | {a['compared']:,} | {diff} | {goals[stat]} | "
                     f"{'—' if met is None else ('yes' if met else '**no**')} |")
    lines.append("")
    if scale:
        lines += scaling_lines(scale)
    else:
        lines += ["The memory-scaling run did not run (`bench/run.sh --scaling-only` runs it).", ""]
    chart = "![events per CPU-second]({}throughput.svg)"
    table = "\n".join(lines) + "\n"
    # the chart beside the table in bench/results/, and from docs/
    (args.results / "table.md").write_text(table + chart.format("") + "\n")
    table += chart.format("../bench/results/") + "\n"
    print(table)
    if args.docs and args.docs.exists():
        text = args.docs.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            args.docs.write_text(head + BEGIN + "\n" + table + END + tail)


if __name__ == "__main__":
    main()
