//! What people read: a line per closed window and per metrics revision,
//! the run summary, tables of query results, all with what came from
//! events made safe to show on a terminal.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;
use arrow::array::{Array, AsArray, RecordBatch};
use driftwatch_detectors::output::{CHANGE_POINTS, cell};
use driftwatch_detectors::{About, Emitted, Revision, WindowKey};
use driftwatch_engine::{RunSummary, WindowSink};
use driftwatch_ingest::format_time;

/// An error and its causes on one line, each cause said once: a cause
/// whose text its error already holds (`FILE: No such file or directory`
/// wrapping the OS error) is not repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// `text` safe to show on a terminal or in a text log: control characters
/// (C0, DEL, C1: escape sequences, newlines, bells) and the bidirectional
/// overrides that reorder what a reader sees are written as escapes
/// (`\n`, `\u{1b}`). Values from events (categories, rule columns) and
/// from receivers reach the console and the logs.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let hostile = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(hostile) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hostile(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

/// `batches` as a table for people: string cells shown with
/// [`printable`], and anything nested that still holds a control character
/// escaped in the rendered text.
pub fn table_text(batches: &[RecordBatch]) -> Result<String> {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::DataType;
    let shown: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let columns: Vec<ArrayRef> = b
                .columns()
                .iter()
                .map(|c| -> Result<ArrayRef> {
                    if !matches!(
                        c.data_type(),
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                    ) {
                        return Ok(c.clone());
                    }
                    let text = arrow::compute::cast(c, &DataType::Utf8)?;
                    let text = text.as_string::<i32>();
                    let escaped: StringArray = text.iter().map(|v| v.map(printable)).collect();
                    Ok(std::sync::Arc::new(escaped))
                })
                .collect::<Result<_>>()?;
            // the shown columns are all Utf8 where they were text
            let fields: Vec<arrow::datatypes::Field> = b
                .schema()
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
                .collect();
            Ok(RecordBatch::try_new(
                std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
                columns,
            )?)
        })
        .collect::<Result<_>>()?;
    let table = arrow::util::pretty::pretty_format_batches(&shown)?.to_string();
    Ok(table.lines().map(printable).collect::<Vec<_>>().join("\n"))
}

/// Prints one readable line per closed window.
#[derive(Debug, Default)]
pub struct ConsoleSummary {
    /// Also list each window's features with the largest share of missing values.
    pub verbose: bool,
    /// Estimated accuracy (and its sampling error) of closed windows
    /// whose metrics are not final yet, printed beside the realised one.
    pub estimates: BTreeMap<(i64, String, Option<String>), (f64, f64)>,
}

/// Windows whose estimate [`ConsoleSummary`] keeps at most (the oldest go).
const MAX_ESTIMATES: usize = 10_000;

/// The value of `metric` (whole model) in a `model_metrics` batch.
fn metric(batch: &RecordBatch, name: &str) -> Option<f64> {
    let metrics = batch.column_by_name("metric")?.as_string_opt::<i32>()?;
    let classes = batch.column_by_name("class")?;
    (0..batch.num_rows())
        .find(|&i| metrics.value(i) == name && classes.is_null(i))
        .and_then(|i| cell::f64(batch, "value", i))
}

impl ConsoleSummary {
    fn revision(&mut self, r: &Revision, batch: &RecordBatch) {
        // the first figures (window closed) and the last (all labels in); every one when verbose
        if !(self.verbose || r.revision == 0 || r.is_final) {
            return;
        }
        let k = &r.key;
        let start = format_time(k.start);
        let end = format_time(k.end);
        let coverage = if r.predictions > 0 {
            100.0 * r.labeled as f64 / r.predictions as f64
        } else {
            0.0
        };
        let mut line = format!(
            "{:<6} {:<4} {} → {}  metrics rev {}{}  labelled {:>6}/{:<6} ({coverage:>3.0}%)",
            k.model_id,
            k.model_version.as_deref().unwrap_or("-"),
            &start[..16],
            &end[11..16],
            r.revision,
            if r.is_final { " final" } else { "" },
            r.labeled,
            r.predictions,
        );
        let key = (
            k.start,
            k.model_id.to_string(),
            k.model_version.as_deref().map(str::to_owned),
        );
        let estimate = if r.is_final {
            self.estimates.remove(&key)
        } else {
            self.estimates.get(&key).copied()
        };
        if let (Some((e, se)), Some(_)) = (estimate, metric(batch, "accuracy")) {
            line.push_str(&format!("  estimated {e:.3} ± {:.3} →", 3.0 * se));
        }
        for (name, label) in [
            ("accuracy", "accuracy"),
            ("roc_auc", "auc"),
            ("f1", "f1"),
            ("mae", "mae"),
            ("rmse", "rmse"),
        ] {
            if let Some(v) = metric(batch, name) {
                line.push_str(&format!("  {label} {v:.3}"));
            }
        }
        println!("{}", printable(&line));
    }

    fn window(&mut self, key: &WindowKey, events: u64, w: &Emitted) {
        let start = format_time(key.start);
        let end = format_time(key.end);
        let mut line = format!(
            "{:<6} {:<4} {} → {}  events {:>7}",
            key.model_id,
            key.model_version.as_deref().unwrap_or("-"),
            &start[..16],
            &end[11..16],
            events
        );
        if let Some(s) = w.table("window_summary") {
            if let Some(mean) = cell::f64(s, "score_mean", 0) {
                line.push_str(&format!("  score μ {mean:.3}"));
            }
            if let Some(mean) = cell::f64(s, "value_mean", 0) {
                line.push_str(&format!("  value μ {mean:.2}"));
            }
        }
        if let Some(f) = w.table("feature_summary") {
            let (mut present, mut missing) = (0, 0);
            for row in 0..f.num_rows() {
                present += cell::u64(f, "count", row).unwrap_or(0);
                missing += cell::u64(f, "missing", row).unwrap_or(0);
            }
            if present + missing > 0 {
                line.push_str(&format!(
                    "  features {}  missing {:.2}%",
                    f.num_rows(),
                    100.0 * missing as f64 / (present + missing) as f64
                ));
            }
        }
        if let Some(e) = w.table("estimated_metrics")
            && let Some(row) = (0..e.num_rows()).find(|&i| {
                e.column_by_name("metric")
                    .and_then(|c| c.as_string_opt::<i32>())
                    .is_some_and(|c| c.value(i) == "accuracy")
            })
            && let Some(value) = cell::f64(e, "value", row)
        {
            let se = cell::f64(e, "sampling_error", row).unwrap_or(0.0);
            line.push_str(&format!("  est. accuracy {value:.3}"));
            if self.estimates.len() >= MAX_ESTIMATES {
                self.estimates.pop_first();
            }
            self.estimates.insert(
                (
                    key.start,
                    key.model_id.to_string(),
                    key.model_version.as_deref().map(str::to_owned),
                ),
                (value, se),
            );
        }
        if let Some(d) = w.table("drift_summary") {
            let reference = d
                .column_by_name("is_reference")
                .and_then(|c| c.as_boolean_opt())
                .is_some_and(|c| c.value(0));
            if reference {
                line.push_str("  [reference]");
            } else if let (Some(n), Some(k)) = (
                cell::u64(d, "features_compared", 0),
                cell::u64(d, "features_drifted", 0),
            ) {
                line.push_str(&format!("  drifted {k}/{n}"));
            }
        }
        println!("{}", printable(&line));
        if let Some(f) = w.table("feature_drift") {
            let names = f.column_by_name("feature").map(|c| c.as_string::<i32>());
            let levels = f.column_by_name("level").map(|c| c.as_string::<i32>());
            if let (Some(names), Some(levels)) = (names, levels) {
                let mut drifted = Vec::new();
                for row in 0..f.num_rows() {
                    if levels.value(row) != "drift" {
                        continue;
                    }
                    let stat = match (
                        cell::f64(f, "wasserstein_norm", row),
                        cell::f64(f, "unseen_share", row),
                        cell::f64(f, "js", row),
                    ) {
                        (Some(w), _, _) => format!("W/sd {w:.2}"),
                        (None, Some(u), _) if u > 0.0 => format!("unseen {:.0}%", 100.0 * u),
                        (None, _, Some(js)) => format!("JS {js:.2}"),
                        _ => String::new(),
                    };
                    drifted.push(format!("{} ({stat})", names.value(row)));
                }
                if !drifted.is_empty() {
                    println!("    drift: {}", printable(&drifted.join(", ")));
                }
            }
        }
        if self.verbose
            && let Some(f) = w.table("feature_summary")
        {
            let names = f.column_by_name("feature").map(|c| c.as_string::<i32>());
            for row in 0..f.num_rows() {
                let name = names.map(|n| n.value(row)).unwrap_or("?");
                let count = cell::u64(f, "count", row).unwrap_or(0);
                let missing = cell::u64(f, "missing", row).unwrap_or(0);
                let stats = match (
                    cell::f64(f, "mean", row),
                    cell::f64(f, "min", row),
                    cell::f64(f, "max", row),
                ) {
                    (Some(mean), Some(min), Some(max)) => format!("μ {mean:>10.3}  [{min}, {max}]"),
                    _ => format!(
                        "categorical {}",
                        cell::u64(f, "categorical", row).unwrap_or(0)
                    ),
                };
                let name = printable(name);
                println!("    {name:<22} n {count:>7}  missing {missing:>5}  {stats}");
            }
        }
    }
}

impl WindowSink for ConsoleSummary {
    fn emit(&mut self, rows: &Emitted) -> driftwatch_engine::Result<()> {
        if let About::Closed { key, events } = &rows.about {
            self.window(key, *events, rows);
            return Ok(());
        }
        for (r, batch) in rows.revisions() {
            self.revision(r, &batch);
        }
        if let Some(p) = rows.table(CHANGE_POINTS) {
            for i in 0..p.num_rows() {
                let time = |column| {
                    cell::time(p, column, i)
                        .map(|t| format_time(t)[..16].to_owned())
                        .unwrap_or_default()
                };
                println!(
                    "    change: {} {} {} by {} at {} (seen {}), statistic {:.3}",
                    printable(cell::text(p, "model_id", i).unwrap_or_default()),
                    printable(cell::text(p, "model_version", i).unwrap_or("-")),
                    cell::text(p, "metric", i).unwrap_or_default(),
                    cell::text(p, "detector", i).unwrap_or_default(),
                    time("event_time"),
                    time("detected_at"),
                    cell::f64(p, "statistic", i).unwrap_or(f64::NAN)
                );
            }
        }
        Ok(())
    }
}

/// A progress bar for reading a source, when stderr is a terminal: the
/// callback [`driftwatch_engine::Pipeline::run_source`] takes, and the bar
/// to clear at the end.
pub fn progress_bar(name: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {percent:>3}% {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(name.to_owned());
    Some(bar)
}

/// Prints a run's summary for people.
pub fn print_summary(summary: &RunSummary, elapsed: Duration) {
    let s = summary;
    let secs = elapsed.as_secs_f64();
    println!();
    println!(
        "read {} records in {secs:.2}s ({:.0}/s): accepted {} ({} predictions, {} labels), rejected {}",
        s.read,
        s.read as f64 / secs.max(1e-9),
        s.accepted,
        s.predictions,
        s.labels,
        s.rejected
    );
    for (reason, n) in &s.rejected_by_reason {
        println!("  rejected {reason:<22} {n}");
    }
    for (model, c) in &s.models {
        let model = printable(model);
        println!(
            "  model {model:<10} predictions {:>9}  labels {:>9}  late {:>6}",
            c.predictions, c.labels, c.late
        );
    }
    println!("windows closed: {}", s.windows_closed);
    if let Some(p) = &s.performance {
        let l = &p.labels;
        println!(
            "labels: {} joined ({} before their prediction), {} duplicate, {} without prediction, {} after the horizon, {} unscorable; {} predictions never labelled",
            l.joined,
            l.joined_before_prediction,
            l.duplicate,
            l.without_prediction,
            l.after_horizon,
            l.unscorable,
            p.expired_unlabeled
        );
        println!(
            "performance: {} metric revisions, {} change points",
            p.revisions, p.change_points
        );
    }
    if let Some(r) = &s.rules {
        let instances: u64 = r.instances.values().sum();
        let errors: u64 = r.errors.values().sum();
        println!(
            "rules: {} windows evaluated, {instances} alert rows, {errors} rule errors",
            r.evaluations
        );
        for (rule, n) in &r.instances {
            println!("  rule {rule:<28} {n} alert rows");
        }
        for (rule, n) in &r.errors {
            println!("  rule {rule:<28} {n} errors (see the rule_errors table)");
        }
    }
    if s.rejected > 0 {
        println!("dead letters: {}", s.dead_letter);
    }
}

/// Prints each turn of the retraining loop `engine`'s tables hold.
pub fn print_retraining_loops(engine: &driftwatch_sql::Engine) -> Result<()> {
    let loops = driftwatch_engine::figures::retraining_loops(engine)?;
    println!();
    if loops.is_empty() {
        println!("the retraining loop: no new model version traced back to a retraining request");
        return Ok(());
    }
    println!("the retraining loop (SELECT * FROM model_versions):");
    let v = |v: &Option<String>| printable(v.as_deref().unwrap_or("(none)")).into_owned();
    let t = |t: &Option<String>| t.clone().unwrap_or_else(|| "(not yet)".into());
    for l in &loops {
        let (old, new) = (v(&l.old_version), v(&l.new_version));
        println!("  {}: {old} -> {new}", printable(&l.model_id));
        println!(
            "    1. alert {} fired on {old} -> retraining requested (job {})",
            v(&l.alert_rule),
            v(&l.retrain_job)
        );
        println!(
            "    2. {new} first seen in its window from {}",
            t(&l.first_seen)
        );
        match &l.retired_at {
            Some(at) => println!(
                "    3. {old} retired at {at}: {} of its alerts resolved",
                l.resolved_alerts.unwrap_or(0)
            ),
            None => println!("    3. {old} still serving"),
        }
        match (&l.healthy_window_start, &l.healthy_window_end) {
            (Some(start), Some(end)) => {
                let accuracy = match (l.healthy_accuracy, l.old_accuracy) {
                    (Some(a), Some(o)) => format!(": accuracy {a:.3} ({old}'s last: {o:.3})"),
                    (Some(a), None) => format!(": accuracy {a:.3}"),
                    _ => String::new(),
                };
                println!("    4. {new} healthy from its window {start} .. {end}{accuracy}");
            }
            _ => println!("    4. {new} not healthy yet (labels still to come, or an alert)"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 41, item 14): `reference build nope.jsonl` said the
    /// OS error twice.
    #[test]
    fn an_error_says_each_cause_once() {
        let os = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(std::io::Error::other(format!("nope.jsonl: {os}")))
            .context("reading the reference");
        assert_eq!(
            error_text(&e),
            "reading the reference: nope.jsonl: No such file or directory"
        );
        let chained = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&chained), "outer: inner");
    }
}
