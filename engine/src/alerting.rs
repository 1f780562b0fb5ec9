//! Alert rules from where they are kept, the rule runner and the delivery
//! worker, built from the [`Config`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use driftwatch_sql::rules::{RuleFiles, check_all, read_rule_files};
use driftwatch_sql::{Engine, LoadedRule, Tables};
use driftwatch_triggers::{Audit, DeliveryStats, Dispatcher, system_clock};

use crate::error::context;
use crate::{Config, Error, Result, RuleRunner, RunnerConfig};

/// Where rules come from.
#[derive(Debug, Clone)]
pub enum RuleSource {
    /// `*.toml` files of a directory (or one file).
    Dir(PathBuf),
    /// Rule files built into the program: (name, text).
    Bundled(&'static [(&'static str, &'static str)]),
}

/// The standard tables, over the history in the data directory when
/// `history`: a session's own ([`Tables::new`]) or the process-wide ones
/// ([`Tables::process`]).
fn tables(config: &Config, history: bool, process_wide: bool) -> Result<Tables> {
    let dir = history.then(|| config.data_dir.history());
    let defs = driftwatch_sql::standard_tables()?;
    if process_wide {
        Tables::process(defs, dir.as_deref())
    } else {
        Tables::new(defs, dir.as_deref())
    }
    .map_err(context("opening the history"))
}

/// A SQL session over the history in the data directory (when `history`)
/// and empty live tables.
pub fn sql_engine(config: &Config, history: bool) -> Result<Engine> {
    Ok(Engine::new(
        tables(config, history, false)?,
        config.sql.limits.clone(),
    )?)
}

/// The process-wide SQL session: the live rows of every pipeline whose
/// rule runner was built with it ([`runner`]) and the history (when
/// `sql.history`). Queries from any thread see each row once.
pub fn process_engine(config: &Config) -> Result<Engine> {
    Ok(Engine::new(
        tables(config, config.sql.history, true)?,
        config.sql.limits.clone(),
    )?)
}

/// Reads the rule files of `source` (a file that does not parse is listed
/// among the [`RuleFiles::errors`]).
pub fn read_rules(source: &RuleSource) -> Result<RuleFiles> {
    match source {
        RuleSource::Dir(dir) => {
            if !dir.exists() {
                return Err(Error::NotFound {
                    what: "rules".into(),
                    path: dir.clone(),
                });
            }
            Ok(read_rule_files(dir)?)
        }
        RuleSource::Bundled(files) => {
            let mut out = RuleFiles::default();
            for (name, text) in *files {
                out.add(PathBuf::from(name), text);
            }
            Ok(out)
        }
    }
}

/// Reads and checks the rules of `source`; any error refuses the whole set,
/// each named with its file and rule.
pub fn load_rules(
    engine: &Engine,
    source: &RuleSource,
    config: &Config,
) -> Result<Vec<LoadedRule>> {
    let files = read_rules(source)?;
    let (rules, errors) = check_all(engine, &files, &config.actions);
    if !errors.is_empty() {
        let text: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        return Err(Error::Input(format!(
            "{} rule error(s):\n{}",
            errors.len(),
            text.join("\n")
        )));
    }
    Ok(rules)
}

/// The rules a run uses: `sql.rules_dir` when it exists, otherwise
/// `fallback` (none, or the bundled rules for the demo).
pub fn configured_source(config: &Config, fallback: Option<RuleSource>) -> Option<RuleSource> {
    if config.sql.rules_dir.exists() {
        Some(RuleSource::Dir(config.sql.rules_dir.clone()))
    } else {
        if fallback.is_none() {
            tracing::info!(dir = %config.sql.rules_dir.display(), "no rules directory (sql.rules_dir): no alert rules");
        }
        fallback
    }
}

/// What the rule runner takes from the settings.
pub fn runner_config(config: &Config) -> RunnerConfig {
    RunnerConfig {
        data_dir: config.data_dir.clone(),
        history: config.sql.history,
        events_retention_ms: config.sql.events_retention_ms,
        actions: config.action_set.clone(),
        audit_sync: config.audit_sync,
        public_url: config.public_url.clone(),
    }
}

/// The rule runner of pipeline `writer`: rules from `source` (none when
/// `None`), the history written as `writer` under `DATA_DIR/history` when
/// `sql.history`; its live rows part of `process`'s tables when given
/// ([`process_engine`]).
pub fn runner(
    config: &Config,
    source: Option<&RuleSource>,
    writer: &str,
    process: Option<&Engine>,
) -> Result<RuleRunner> {
    let mut tables = tables(config, config.sql.history, false)?;
    if let Some(p) = process {
        p.tables().join(&mut tables)?;
    }
    let engine = Engine::new(tables, config.sql.limits.clone())?;
    let rules = match source {
        Some(source) => load_rules(&engine, source, config)?,
        None => Vec::new(),
    };
    RuleRunner::new(&runner_config(config), engine, rules, writer)
}

/// The delivery worker, when actions are configured: a task on `runtime`
/// (the process's), or without one on a thread of its own.
pub fn dispatcher(
    config: &Config,
    runtime: Option<&tokio::runtime::Handle>,
) -> Result<Option<Dispatcher>> {
    if config.action_set.is_empty() {
        return Ok(None);
    }
    let audit = Arc::new(
        Audit::open(&config.data_dir.audit(), config.audit_sync)
            .map_err(context("opening the audit log"))?,
    );
    let actions = config.action_set.clone();
    let d = match runtime {
        Some(runtime) => Dispatcher::spawn(actions, audit, system_clock(), runtime),
        None => Dispatcher::start(actions, audit, system_clock())
            .map_err(context("starting the delivery worker"))?,
    };
    Ok(Some(d))
}

/// Has `d` deliver what `runner`'s outbox holds (an earlier run's leftovers
/// first) and wakes it when the runner writes more.
pub fn attach(d: &Dispatcher, runner: &mut RuleRunner) {
    if let Some(t) = runner.triggers_mut() {
        d.add(t.outbox().clone());
        t.set_waker(d.waker());
    }
}

/// How long a bounded run (a replay, the demo, `run --exit-at-end`) waits at
/// its end for its notifications to be delivered; those still pending stay
/// in the outbox for the next run.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// What the delivery worker did by the end of a bounded run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Its counters.
    pub stats: DeliveryStats,
    /// Notifications still in the outbox (the next run delivers them).
    pub pending: u64,
}

/// Waits up to `limit` for the outboxes to empty, stops the worker and
/// says what it did.
pub fn finish_delivery(d: &Dispatcher, limit: Duration) -> Result<Delivered> {
    let pending = d
        .drain(limit)
        .map_err(context("delivering the last notifications"))?;
    d.stop().map_err(context("stopping the delivery worker"))?;
    Ok(Delivered {
        stats: d.stats(),
        pending,
    })
}

/// Alerts as the `alerts` table tells them.
#[derive(Debug, Clone)]
pub struct AlertsView {
    /// Each alert instance pending or firing now (its latest transition):
    /// state, severity, rule, model, version, value, since, instance.
    pub current: Vec<arrow::array::RecordBatch>,
    /// The latest rows of the table, newest first: transitions and deliveries.
    pub recent: Vec<arrow::array::RecordBatch>,
}

/// The alerts pending or firing now and the `recent` latest alert events,
/// read by `engine` (the history, and the live rows it holds).
pub fn alerts(engine: &Engine, recent: usize) -> Result<AlertsView> {
    let transitions = "state IN ('pending', 'firing', 'resolved', 'inactive')";
    // transitions at the same event time in the order they happen (a
    // version retired in the window its alert turned pending ends it there)
    let current = format!(
        "SELECT state, severity, rule, model_id, model_version, value, \
           date_format(time, '%Y-%m-%dT%H:%M:%SZ') AS since_event_time, instance \
         FROM (SELECT *, row_number() OVER (PARTITION BY rule, model_id, model_version, instance \
                 ORDER BY time DESC, CASE state WHEN 'pending' THEN 3 WHEN 'firing' THEN 2 \
                   ELSE 1 END) AS latest \
               FROM alerts WHERE {transitions}) \
         WHERE latest = 1 AND state IN ('pending', 'firing') \
         ORDER BY state, severity, rule, model_id"
    );
    // transitions happen at event times, deliveries (rows with an action)
    // at the clock's: each in a column of its own
    let recent = format!(
        "SELECT CASE WHEN action IS NULL THEN date_format(time, '%Y-%m-%dT%H:%M:%SZ') END \
             AS event_time, \
           CASE WHEN action IS NOT NULL THEN date_format(time, '%Y-%m-%dT%H:%M:%SZ') END \
             AS sent_at, \
           state, severity, rule, model_id, model_version, value, action, detail \
         FROM alerts ORDER BY time DESC, rule LIMIT {recent}"
    );
    let read = |sql: &str| {
        engine
            .query(sql)
            .map(|(_, batches)| batches)
            .map_err(context("reading the alerts"))
    };
    Ok(AlertsView {
        current: read(&current)?,
        recent: read(&recent)?,
    })
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};

    use super::*;

    /// Regression (issue 41, item 4): after the demo, `driftwatch alerts`
    /// listed `pending accuracy_drop churn v12` as current, while the
    /// table recorded it pending → inactive at the same event time, when
    /// v12 was retired.
    #[test]
    fn an_alert_ended_at_the_time_it_turned_pending_is_not_current() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = crate::pipeline::tests::config(dir.path());
        let engine = sql_engine(&config, false).expect("engine");
        let row = |state: &str, instance: &str, time: &str, action: Option<&str>| {
            serde_json::json!({
                "model_id": "churn", "model_version": "v12",
                "window_start": "2026-11-01T10:00:00Z", "window_end": "2026-11-01T11:00:00Z",
                "time": time, "rule": "accuracy_drop", "severity": "critical", "state": state,
                "instance": instance, "value": 0.6, "annotations": "{}", "action": action,
            })
        };
        // the ending first in the rows, as a later file may hold it
        let rows = [
            row("inactive", "a", "2026-11-01T11:00:00Z", None),
            row("pending", "a", "2026-11-01T11:00:00Z", None),
            row("pending", "b", "2026-11-01T11:00:00Z", None),
            row("pending", "b", "2026-12-08T03:00:00Z", Some("retrain")),
        ];
        let batch = driftwatch_sql::testing::table_rows("alerts", &rows).expect("rows");
        engine.tables().push("alerts", &batch).expect("pushed");
        let view = alerts(&engine, 10).expect("alerts");
        let instances: Vec<String> = view
            .current
            .iter()
            .flat_map(|b| {
                let c = b
                    .column_by_name("instance")
                    .expect("instance")
                    .as_string::<i32>();
                (0..c.len())
                    .map(|i| c.value(i).to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(instances, ["b"]);
        // event times and the clock's times of deliveries apart
        let recent = &view.recent[0];
        let sent = recent.column_by_name("sent_at").expect("sent_at");
        let event = recent.column_by_name("event_time").expect("event_time");
        assert_eq!((sent.null_count(), event.null_count()), (3, 1));
    }
}
