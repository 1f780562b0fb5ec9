//! Alert rules: where they come from, the engine's rule runner built from
//! the settings, the delivery worker, and how alerts are printed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;
use driftwatch_engine::{RuleRunner, RunnerConfig};
use driftwatch_ingest::format_time;
use driftwatch_sql::rules::{RuleFiles, check_all, read_rule_files};
use driftwatch_sql::{AlertInstance, Engine, Tables};
use driftwatch_triggers::{Audit, system_clock};

use crate::settings::Settings;

/// A session over the history in `data_dir` (when `history`) and empty live tables.
pub fn engine(settings: &Settings, history: bool) -> Result<Engine> {
    let dir = history.then(|| settings.data_dir.history());
    let tables = Tables::new(driftwatch_sql::standard_tables()?, dir.as_deref())?;
    Ok(Engine::new(tables, settings.sql.limits.clone())?)
}

/// The bundled example rules (`rules/` of the repository), built into the
/// binary so that the demo has them wherever it runs.
pub const BUNDLED_RULES: &[(&str, &str)] = &[
    (
        "rules/performance.toml",
        include_str!("../rules/performance.toml"),
    ),
    ("rules/drift.toml", include_str!("../rules/drift.toml")),
    ("rules/quality.toml", include_str!("../rules/quality.toml")),
];

/// Where rules come from.
#[derive(Debug, Clone)]
pub enum RuleSource {
    /// `*.toml` files of a directory (or one file).
    Dir(PathBuf),
    /// [`BUNDLED_RULES`].
    Bundled,
}

/// Reads the rule files of `source`.
pub fn read_rules(source: &RuleSource) -> Result<RuleFiles> {
    match source {
        RuleSource::Dir(dir) => {
            if !dir.exists() {
                anyhow::bail!("rules: {} not found", dir.display());
            }
            Ok(read_rule_files(dir)?)
        }
        RuleSource::Bundled => {
            let mut files = RuleFiles::default();
            for (name, text) in BUNDLED_RULES {
                files.add(PathBuf::from(name), text);
            }
            Ok(files)
        }
    }
}

/// Reads and checks the rules of `source`; any error refuses the whole set.
pub fn load_rules(
    engine: &Engine,
    source: &RuleSource,
    actions: &BTreeSet<String>,
) -> Result<Vec<driftwatch_sql::LoadedRule>> {
    let files = read_rules(source)?;
    let (rules, errors) = check_all(engine, &files, actions);
    if !errors.is_empty() {
        let text: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::bail!("{} rule error(s):\n{}", errors.len(), text.join("\n"));
    }
    Ok(rules)
}

/// The delivery worker, when actions are configured.
pub fn dispatcher(settings: &Settings) -> Result<Option<driftwatch_triggers::Dispatcher>> {
    if settings.action_set.is_empty() {
        return Ok(None);
    }
    let audit = std::sync::Arc::new(Audit::open(
        &settings.data_dir.audit(),
        settings.audit_sync,
    )?);
    let d =
        driftwatch_triggers::Dispatcher::start(settings.action_set.clone(), audit, system_clock())?;
    Ok(Some(d))
}

/// Has `d` deliver what `runner`'s outbox holds (an earlier run's leftovers
/// first) and wakes it when the runner writes more.
pub fn attach(d: &driftwatch_triggers::Dispatcher, runner: &mut RuleRunner) {
    if let Some(t) = runner.triggers_mut() {
        d.add(t.outbox().clone());
        t.set_waker(d.waker());
    }
}

/// How long a bounded run (a replay, the demo, `run --exit-at-end`) waits at
/// its end for its notifications to be delivered; those still pending stay
/// in the outbox for the next run.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits up to `limit` for the outboxes to empty, stops the worker and
/// reports what it did.
pub fn finish_delivery(
    d: &driftwatch_triggers::Dispatcher,
    limit: std::time::Duration,
) -> Result<()> {
    let pending = d.drain(limit)?;
    d.stop()?;
    let stats = d.stats();
    println!(
        "notifications: {} delivered, {} failed, {} attempts{}",
        stats.delivered,
        stats.failed,
        stats.attempts,
        if pending > 0 {
            format!("; {pending} still pending in the outbox (the next run delivers them)")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The rules a run uses: `sql.rules_dir` when it exists, otherwise none
/// (or, for the demo, the bundled rules).
pub fn configured_source(settings: &Settings, bundled_fallback: bool) -> Option<RuleSource> {
    if settings.sql.rules_dir.exists() {
        Some(RuleSource::Dir(settings.sql.rules_dir.clone()))
    } else if bundled_fallback {
        Some(RuleSource::Bundled)
    } else {
        tracing::info!(dir = %settings.sql.rules_dir.display(), "no rules directory (sql.rules_dir): no alert rules");
        None
    }
}

/// What the rule runner takes from the settings.
pub fn runner_config(settings: &Settings) -> RunnerConfig {
    RunnerConfig {
        data_dir: settings.data_dir.clone(),
        history: settings.sql.history,
        events_retention_ms: settings.sql.events_retention_ms,
        actions: settings.action_set.clone(),
        audit_sync: settings.audit_sync,
    }
}

/// The rule runner of pipeline `writer`: rules from `source` (none when
/// `None`), the history written as `writer` under `DATA_DIR/history` when
/// `sql.history`.
pub fn runner(
    settings: &Settings,
    source: Option<&RuleSource>,
    writer: &str,
) -> Result<RuleRunner> {
    let engine = engine(settings, settings.sql.history)?;
    let rules = match source {
        Some(source) => load_rules(&engine, source, &settings.actions)?,
        None => Vec::new(),
    };
    Ok(RuleRunner::new(
        &runner_config(settings),
        engine,
        rules,
        writer,
    )?)
}

/// Prints each alert instance a runner finds.
pub fn print_alerts(runner: &mut RuleRunner) {
    runner.on_alert = Some(print_instance);
}

fn print_instance(i: &AlertInstance) {
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
    if !i.held_long_enough() {
        line.push_str(&format!("  (pending: {} window(s) so far)", i.windows));
    }
    println!("{}", crate::output::printable(&line));
    if let Some(summary) = i.annotations.get("summary") {
        println!("      {}", crate::output::printable(summary));
    }
}
