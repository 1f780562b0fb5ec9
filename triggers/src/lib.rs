//! driftwatch-triggers: the alert lifecycle, routing and grouping,
//! silences, the durable outbox and the actions (retraining webhooks with
//! presets, email, chat).
//!
//! ```text
//! ingest ──► detectors ──► sql ──► [ triggers ] ──► webhook / email / chat
//!                                      │
//!   rule rows (AlertInstance) ─► AlertBook: pending → firing → resolved
//!                               ─► Groups: route, group, silence, repeat
//!                               ─► Outbox (redb, durable) ─► Dispatcher ─► receivers
//!   transitions, deliveries ──► `alerts` table rows + audit log
//!   delivered retraining requests ──► each model's latest (a new version
//!   is traced to it); retired versions ──► their alerts end
//! ```
//!
//! A firing alert keeps the evidence its window showed (handed over by the
//! engine in [`Triggers::observe`]); its notifications carry it.
//!
//! A pipeline owns a [`Triggers`]: it hands over each rule evaluation
//! ([`Triggers::observe`]), then calls [`Triggers::tick`] to write the due
//! notifications to its outbox and collect the `alerts` rows. A
//! [`Dispatcher`] delivers what the outboxes hold. The lifecycle and groups
//! are part of the pipeline's checkpoint ([`Triggers::snapshot`]); the
//! outbox is durable on its own and recognises a notification made again
//! after a restart by its idempotency key.
//!
//! ```no_run
//! # fn main() -> driftwatch_triggers::Result<()> {
//! use std::sync::Arc;
//! use driftwatch_triggers::{Actions, Audit, AuditSync, Dispatcher, Outbox, Silences, Triggers, system_clock};
//! let actions = Actions::default();
//! let dir = std::path::Path::new("driftwatch-data");
//! let audit = Arc::new(Audit::open(&dir.join("audit.jsonl"), AuditSync::Line)?);
//! let outbox = Arc::new(Outbox::open(&dir.join("outbox/replay.redb"))?);
//! let dispatcher = Dispatcher::start(actions.clone(), audit.clone(), system_clock())?;
//! dispatcher.add(outbox.clone());
//! let triggers = Triggers::new(actions, outbox, Silences::open(&dir.join("silences.json"))?, audit, system_clock());
//! # let _ = triggers; Ok(()) }
//! ```

pub mod actions;
pub mod alert;
pub mod audit;
pub mod config;
pub mod dispatch;
mod error;
pub mod group;
pub mod key;
pub mod outbox;
pub mod redact;
pub mod render;
pub mod rows;
pub mod silence;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use driftwatch_sql::{AlertInstance, WindowRef};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::warn;

pub use alert::{AlertBook, AlertView, Status, Transition};
pub use audit::{Audit, AuditConfig, AuditSync};
pub use config::{Action, ActionConfig, Actions};
pub use dispatch::{DeliveryStats, Dispatcher};
pub use error::{Error, Result};
pub use group::{Groups, Notification};
pub use key::{Clock, system_clock};
pub use outbox::{Entry, Outbox, Outcome};
pub use rows::{AlertRow, alerts_batch};
pub use silence::{Matcher, Silence, Silences};

/// Counters of the triggers of one pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerStats {
    /// Status changes of alerts.
    pub transitions: u64,
    /// Notifications written to the outbox.
    pub notifications: u64,
    /// Alerts left out of notifications by silences.
    pub silenced: u64,
}

/// A retraining request a receiver took: the latest per model is what a
/// new version of the model is traced back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrainRequest {
    /// The model.
    pub model_id: String,
    /// The version its alert was about.
    pub model_version: Option<String>,
    /// The alert's rule.
    pub rule: String,
    /// The alert.
    pub fingerprint: String,
    /// The action that sent it.
    pub action: String,
    /// The notification's idempotency key.
    pub key: String,
    /// The job or run the receiver named in its answer.
    pub job_id: Option<String>,
    /// The version the receiver said the job delivers, when it said.
    #[serde(default)]
    pub next_version: Option<String>,
    /// Clock time it was delivered (ms).
    pub delivered_at: i64,
}

/// At most this many models' latest retraining requests are kept (the
/// oldest go first); the audit log keeps every one.
pub const MAX_RETRAIN_REQUESTS: usize = 10_000;

/// At most this many retired model versions are remembered (the oldest go
/// first; a retired version forgotten can raise alerts again from late
/// label revisions).
pub const MAX_RETIRED: usize = 10_000;

/// What a checkpoint keeps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    book: AlertBook,
    groups: Groups,
    now: i64,
    stats: TriggerStats,
    /// Model versions that no longer serve ("model\0version" → the version
    /// that replaced it, and when): rules raise no alerts for them.
    #[serde(default)]
    retired: BTreeMap<String, (String, i64)>,
    /// Each model's latest retraining request.
    #[serde(default)]
    retrains: BTreeMap<String, RetrainRequest>,
}

fn version_key(model: &str, version: Option<&str>) -> String {
    format!("{model}\0{}", version.unwrap_or(""))
}

/// The triggers of one pipeline.
pub struct Triggers {
    actions: Actions,
    state: State,
    silences: Silences,
    outbox: Arc<Outbox>,
    audit: Arc<Audit>,
    clock: Clock,
    rows: Vec<rows::AlertRow>,
    wake: Option<Arc<dyn Fn() + Send + Sync>>,
    /// (action, fingerprint, silence) already written to the audit log.
    silenced_seen: BTreeSet<(String, String, String)>,
}

impl std::fmt::Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers")
            .field("outbox", &self.outbox.path())
            .field("stats", &self.state.stats)
            .finish_non_exhaustive()
    }
}

impl Triggers {
    /// Triggers running `actions`, writing notifications to `outbox`.
    pub fn new(
        actions: Actions,
        outbox: Arc<Outbox>,
        silences: Silences,
        audit: Arc<Audit>,
        clock: Clock,
    ) -> Self {
        Triggers {
            actions,
            state: State::default(),
            silences,
            outbox,
            audit,
            clock,
            rows: Vec::new(),
            wake: None,
            silenced_seen: BTreeSet::new(),
        }
    }

    /// Called after notifications were written (wakes the delivery worker).
    pub fn set_waker(&mut self, wake: Arc<dyn Fn() + Send + Sync>) {
        self.wake = Some(wake);
    }

    /// The outbox.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Counters so far.
    pub fn stats(&self) -> &TriggerStats {
        &self.state.stats
    }

    /// Alerts pending or firing.
    pub fn current(&self) -> impl Iterator<Item = &AlertView> {
        self.state.book.current()
    }

    /// Writes `event` with `fields` to the audit log (a failure is logged).
    pub fn audit_event(&self, event: &str, fields: serde_json::Value) {
        self.audit(event, fields);
    }

    fn audit(&self, event: &str, fields: serde_json::Value) {
        if let Err(e) = self.audit.write(&self.clock, event, fields) {
            warn!("audit log: {e}");
        }
    }

    /// One window's evaluation: the rules that ran (`evaluated`) and the
    /// instances they returned, whose `active_since` and `windows` are
    /// filled in (the rule's `for` is counted here). `evidence` is asked for
    /// what the window showed when an alert starts firing; notifications
    /// carry it. A retired model version's evaluations raise nothing.
    pub fn observe(
        &mut self,
        window: &WindowRef,
        evaluated: &[String],
        instances: &mut [AlertInstance],
        evidence: &mut dyn FnMut(&AlertView) -> Option<serde_json::Value>,
    ) {
        let now = self.state.now.max(window.end);
        self.state.now = now;
        let retired = self.is_retired(&window.model_id, window.model_version.as_deref());
        for rule in evaluated {
            let mut found: Vec<&mut AlertInstance> =
                instances.iter_mut().filter(|i| &i.rule == rule).collect();
            if retired {
                self.state.book.hold(rule, window, &mut found);
                continue;
            }
            for mut t in self.state.book.observe(rule, window, &mut found, now) {
                if t.alert.status == Status::Firing
                    && t.from != Some(Status::Firing)
                    && let Some(e) = evidence(&t.alert)
                {
                    self.state
                        .book
                        .set_evidence(rule, window, &t.alert.fingerprint, e.clone());
                    t.alert.evidence = Some(e);
                }
                self.record(&t, now);
            }
        }
    }

    /// A transition: counted, audited, an `alerts` row, and the groups told.
    fn record(&mut self, t: &Transition, now: i64) {
        if t.is_change() {
            self.state.stats.transitions += 1;
            let a = &t.alert;
            self.audit(
                "transition",
                json!({
                    "rule": a.rule, "fingerprint": a.fingerprint, "model_id": a.model_id,
                    "model_version": a.model_version, "from": t.from.map(Status::as_str),
                    "to": a.status.as_str(), "value": a.value,
                    "window_end": key::rfc3339(a.window_end), "event_time": key::rfc3339(now),
                    "labels": a.labels,
                }),
            );
            self.rows.push(rows::AlertRow {
                alert: a.clone(),
                state: a.status.as_str().into(),
                time: now,
                action: None,
                detail: None,
            });
        }
        self.state.groups.apply(&self.actions, t);
    }

    /// Model `model`'s version `version` no longer serves: `by` replaced it
    /// at event time `at`. Its alerts end (firing ones resolve and their
    /// resolved notices go out as usual) and its late evaluations raise
    /// nothing, until it is seen serving again ([`Self::unretire`]).
    pub fn retire(&mut self, model: &str, version: Option<&str>, by: &str, at: i64) {
        let now = self.state.now.max(at);
        self.state.now = now;
        for t in self.state.book.retire(model, version, now) {
            self.record(&t, now);
        }
        self.audit(
            "version_retired",
            json!({ "model_id": model, "model_version": version, "superseded_by": by, "event_time": key::rfc3339(at) }),
        );
        self.state
            .retired
            .insert(version_key(model, version), (by.to_owned(), at));
        while self.state.retired.len() > MAX_RETIRED {
            let oldest = self
                .state
                .retired
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.state.retired.remove(&k),
                None => break,
            };
        }
    }

    /// A retired version serves again (a rollback): its rules raise alerts
    /// again.
    pub fn unretire(&mut self, model: &str, version: Option<&str>) {
        if self
            .state
            .retired
            .remove(&version_key(model, version))
            .is_some()
        {
            self.audit(
                "version_serving_again",
                json!({ "model_id": model, "model_version": version }),
            );
        }
    }

    /// Whether a version was retired ([`Self::retire`]).
    pub fn is_retired(&self, model: &str, version: Option<&str>) -> bool {
        self.state
            .retired
            .contains_key(&version_key(model, version))
    }

    /// Whether any alert of the model version is pending or firing.
    pub fn has_alerts(&self, model: &str, version: Option<&str>) -> bool {
        self.current()
            .any(|a| a.model_id == model && a.model_version.as_deref() == version)
    }

    /// The model's latest retraining request a receiver took.
    pub fn latest_retrain(&self, model: &str) -> Option<&RetrainRequest> {
        self.state.retrains.get(model)
    }

    /// Keeps a delivered retraining request as each of its models' latest.
    fn note_retrain(&mut self, entry: &Entry) {
        let asks = self
            .actions
            .get(&entry.notification.action)
            .is_some_and(|a| a.requests_retraining());
        if !asks || entry.outcome != Outcome::Delivered || entry.notification.status != "firing" {
            return;
        }
        for a in &entry.notification.alerts {
            if a.status != Status::Firing {
                continue;
            }
            self.state.retrains.insert(
                a.model_id.clone(),
                RetrainRequest {
                    model_id: a.model_id.clone(),
                    model_version: a.model_version.clone(),
                    rule: a.rule.clone(),
                    fingerprint: a.fingerprint.clone(),
                    action: entry.notification.action.clone(),
                    key: entry.notification.key.clone(),
                    job_id: entry.job_id.clone(),
                    next_version: entry.model_version.clone(),
                    delivered_at: entry.finished_at.unwrap_or(entry.enqueued_at),
                },
            );
        }
        while self.state.retrains.len() > MAX_RETRAIN_REQUESTS {
            let oldest = self
                .state
                .retrains
                .iter()
                .min_by_key(|(_, r)| r.delivered_at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.state.retrains.remove(&k),
                None => break,
            };
        }
    }

    /// Writes the notifications due at event time `now` to the outbox, and
    /// returns the `alerts` rows since the last call (transitions, and
    /// deliveries that ended).
    pub fn tick(&mut self, now: i64) -> Result<Vec<rows::AlertRow>> {
        self.state.now = self.state.now.max(now);
        if let Err(e) = self.silences.refresh() {
            warn!("silences not read again, the last ones read stay in force: {e}");
        }
        let wall = (self.clock)();
        let (notes, quiet) =
            self.state
                .groups
                .due(&self.actions, self.state.now, wall, &self.silences);
        for q in quiet {
            let seen = (
                q.action.clone(),
                q.alert.fingerprint.clone(),
                q.silence.clone(),
            );
            if self.silenced_seen.insert(seen) {
                self.state.stats.silenced += 1;
                self.audit(
                    "silenced",
                    json!({ "action": q.action, "fingerprint": q.alert.fingerprint, "rule": q.alert.rule, "model_id": q.alert.model_id, "silence": q.silence }),
                );
            }
        }
        let added = self.outbox.enqueue(&notes, wall)?;
        for n in &added {
            self.state.stats.notifications += 1;
            self.audit(
                "notification",
                json!({ "key": n.key, "action": n.action, "status": n.status, "repeat": n.repeat, "group": n.group, "alerts": n.alert_refs() }),
            );
        }
        if !added.is_empty()
            && let Some(wake) = &self.wake
        {
            wake();
        }
        self.record_deliveries_at(wall)?;
        Ok(std::mem::take(&mut self.rows))
    }

    /// Takes the deliveries that ended since the last look: `alerts` rows
    /// for the next [`tick`](Self::tick), and a delivered retraining
    /// request becomes its model's latest ([`latest_retrain`](Self::latest_retrain)).
    pub fn record_deliveries(&mut self) -> Result<()> {
        let wall = (self.clock)();
        self.record_deliveries_at(wall)
    }

    fn record_deliveries_at(&mut self, wall: i64) -> Result<()> {
        for entry in self.outbox.take_unreported(wall)? {
            self.note_retrain(&entry);
            let state = match entry.outcome {
                Outcome::Delivered => "delivered",
                _ => "failed",
            };
            let detail = match (&entry.job_id, &entry.detail) {
                (Some(job), _) => Some(format!("job {job}")),
                (None, d) => d.clone(),
            };
            for a in &entry.notification.alerts {
                self.rows.push(rows::AlertRow {
                    alert: a.clone(),
                    state: state.into(),
                    time: entry.finished_at.unwrap_or(wall),
                    action: Some(entry.notification.action.clone()),
                    detail: detail.clone(),
                });
            }
        }
        Ok(())
    }

    /// The state to checkpoint with the pipeline.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.state).map_err(error::state("the triggers' state"))
    }

    /// Continues from a [`snapshot`](Self::snapshot).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        self.state = serde_json::from_slice(bytes).map_err(error::state("the triggers' state"))?;
        self.rows.clear();
        Ok(())
    }
}
