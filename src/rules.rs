//! Alert rules on the command line: the bundled examples, and how alerts
//! and deliveries are printed. Loading and running them is the engine's
//! ([`driftwatch_engine::alerting`]).

use driftwatch_engine::alerting::{Delivered, RuleSource};
use driftwatch_ingest::format_time;
use driftwatch_sql::AlertInstance;

/// The bundled example rules (`rules/` of the repository), built into the
/// binary so that the demo has them wherever it runs.
pub const BUNDLED_RULES: RuleSource = RuleSource::Bundled(&[
    (
        "rules/performance.toml",
        include_str!("../rules/performance.toml"),
    ),
    ("rules/drift.toml", include_str!("../rules/drift.toml")),
    ("rules/quality.toml", include_str!("../rules/quality.toml")),
    (
        "rules/labelfree.toml",
        include_str!("../rules/labelfree.toml"),
    ),
]);

/// Prints what the delivery worker did by the end of a bounded run.
pub fn print_delivered(d: &Delivered) {
    let stats = &d.stats;
    println!(
        "notifications: {} delivered, {} failed, {} attempts{}",
        stats.delivered,
        stats.failed,
        stats.attempts,
        if d.pending > 0 {
            format!(
                "; {} still pending in the outbox (the next run delivers them)",
                d.pending
            )
        } else {
            String::new()
        }
    );
}

/// Prints one alert instance a runner found.
pub fn print_instance(i: &AlertInstance) {
    let mut line = format!(
        "    alert {} [{}] {} {} {}",
        i.rule,
        i.severity,
        i.window.model_id,
        i.window.model_version.as_deref().unwrap_or("-"),
        &format_time(i.window.end)[..16],
    );
    let mut extra: Vec<String> = i
        .columns
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "model_id" | "model_version" | "window_start" | "window_end"
            )
        })
        .filter_map(|(k, v)| match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(format!("{k}={s}")),
            other => Some(format!("{k}={other}")),
        })
        .collect();
    if let Some(v) = i.value {
        extra.push(format!("value={v:.4}"));
    }
    if !extra.is_empty() {
        line.push_str("  ");
        line.push_str(&extra.join(" "));
    }
    if !driftwatch_triggers::alert::held_long_enough(i) {
        line.push_str(&format!("  (pending: {} window(s) so far)", i.windows));
    }
    println!("{}", crate::output::printable(&line));
    if let Some(summary) = i.annotations.get("summary") {
        println!("      {}", crate::output::printable(summary));
    }
}
