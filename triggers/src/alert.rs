//! The alert lifecycle, per alert instance (a rule and the identity of its
//! result row): inactive → pending (holds, `for` not reached) → firing →
//! resolved (gone for `keep_firing_for`). A pending alert that stops holding
//! goes back to inactive without a notification.
//!
//! Time is event time: the end of the window evaluated. `for` is counted by
//! the SQL evaluator ([`AlertInstance::held_long_enough`]); this module
//! counts `keep_firing_for` the same way, in evaluated windows or in event
//! time since the condition was first seen gone.

use std::collections::BTreeMap;

use driftwatch_sql::rules::Hold;
use driftwatch_sql::{AlertInstance, WindowRef};
use serde::{Deserialize, Serialize};

use crate::key::short_hash;

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Holds, but not yet for the rule's `for`.
    Pending,
    /// Firing.
    Firing,
    /// Was firing; the condition has been gone for `keep_firing_for`.
    Resolved,
    /// Was pending; the condition went away before it fired.
    Inactive,
}

impl Status {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Firing => "firing",
            Status::Resolved => "resolved",
            Status::Inactive => "inactive",
        }
    }
}

/// An alert as notifications and the `alerts` table show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    /// Stable id: rule, model, version and the row's identity.
    pub fingerprint: String,
    /// The rule.
    pub rule: String,
    /// Its severity.
    pub severity: String,
    /// Where it stands.
    pub status: Status,
    /// Model.
    pub model_id: String,
    /// Model version.
    pub model_version: Option<String>,
    /// The window last evaluated with it holding.
    pub window_start: i64,
    /// See `window_start`.
    pub window_end: i64,
    /// The row's `value`.
    pub value: Option<f64>,
    /// Labels: the rule's labels, the row's columns, `rule` and `severity`.
    pub labels: BTreeMap<String, String>,
    /// The rule's annotations rendered with the row.
    pub annotations: BTreeMap<String, String>,
    /// The row's identity (its columns other than `value`).
    pub identity: String,
    /// When it began to hold (event time).
    pub starts_at: i64,
    /// When it fired.
    pub fired_at: Option<i64>,
    /// When it resolved.
    pub ends_at: Option<i64>,
    /// What the figures of the window that made it fire were (the engine
    /// gathers them: the window's metrics, its drifted features, links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<serde_json::Value>,
}

/// One alert known to the book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Alert {
    view: AlertView,
    actions: Vec<String>,
    keep_firing_for: Hold,
    /// Windows evaluated without it since it last held.
    misses: u32,
    /// The end of the first such window.
    cleared_at: Option<i64>,
    /// The end of the latest window that held it.
    last_held: i64,
}

/// A change of an alert (or, `from == to == Firing`, a firing alert seen
/// again with new values).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The alert after the change.
    pub alert: AlertView,
    /// Its status before (`None`: new).
    pub from: Option<Status>,
    /// The actions of its rule.
    pub actions: Vec<String>,
    /// Event time of the change.
    pub at: i64,
}

impl Transition {
    /// Whether the status changed (a row for the `alerts` table).
    pub fn is_change(&self) -> bool {
        self.from != Some(self.alert.status)
    }
}

/// The alerts of one rule for one model version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Scope {
    /// The latest window end evaluated.
    latest: i64,
    alerts: BTreeMap<String, Alert>,
}

/// Every alert that is pending or firing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertBook {
    /// By "rule\0model\0version".
    scopes: BTreeMap<String, Scope>,
}

fn scope_key(rule: &str, window: &WindowRef) -> String {
    format!(
        "{rule}\0{}\0{}",
        window.model_id,
        window.model_version.as_deref().unwrap_or("")
    )
}

fn view(i: &AlertInstance, status: Status) -> AlertView {
    let identity = i.identity();
    let fingerprint = short_hash(&format!(
        "{}\0{}\0{}\0{identity}",
        i.rule,
        i.window.model_id,
        i.window.model_version.as_deref().unwrap_or("")
    ));
    let mut labels = i.labels.clone();
    labels
        .entry("model_id".into())
        .or_insert_with(|| i.window.model_id.clone());
    if let Some(v) = &i.window.model_version {
        labels
            .entry("model_version".into())
            .or_insert_with(|| v.clone());
    }
    labels.insert("rule".into(), i.rule.clone());
    labels.insert("severity".into(), i.severity.clone());
    AlertView {
        fingerprint,
        rule: i.rule.clone(),
        severity: i.severity.clone(),
        status,
        model_id: i.window.model_id.clone(),
        model_version: i.window.model_version.clone(),
        window_start: i.window.start,
        window_end: i.window.end,
        value: i.value,
        labels,
        annotations: i.annotations.clone(),
        identity,
        starts_at: i.active_since,
        fired_at: None,
        ends_at: None,
        evidence: None,
    }
}

impl AlertBook {
    /// Applies one rule's evaluation for `window` (`found`: its rows, maybe
    /// none) at event time `now`; returns what changed.
    ///
    /// An evaluation of an earlier window than the latest one evaluated for
    /// the rule (metrics revised by late labels) can raise or update alerts
    /// but does not count as the condition being gone.
    pub fn observe(
        &mut self,
        rule: &str,
        window: &WindowRef,
        found: &[&AlertInstance],
        now: i64,
    ) -> Vec<Transition> {
        let scope = self.scopes.entry(scope_key(rule, window)).or_default();
        let late = window.end < scope.latest;
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for i in found {
            let fresh = view(i, Status::Pending);
            let fp = fresh.fingerprint.clone();
            seen.insert(fp.clone());
            let held = i.held_long_enough();
            match scope.alerts.get_mut(&fp) {
                Some(a) => {
                    let from = a.view.status;
                    let mut v = fresh;
                    v.status = from;
                    v.starts_at = a.view.starts_at.min(v.starts_at);
                    v.fired_at = a.view.fired_at;
                    v.evidence = a.view.evidence.take();
                    if late && a.last_held > window.end {
                        // keep the newer window's figures
                        v.window_start = a.view.window_start;
                        v.window_end = a.view.window_end;
                        v.value = a.view.value;
                        v.annotations = a.view.annotations.clone();
                    }
                    if from == Status::Pending && held {
                        v.status = Status::Firing;
                        v.fired_at = Some(now);
                    }
                    a.view = v;
                    a.misses = 0;
                    a.cleared_at = None;
                    a.last_held = a.last_held.max(window.end);
                    if a.view.status == Status::Firing || from != a.view.status {
                        out.push(Transition {
                            alert: a.view.clone(),
                            from: Some(from),
                            actions: a.actions.clone(),
                            at: now,
                        });
                    }
                }
                None => {
                    let mut v = fresh;
                    if held {
                        v.status = Status::Firing;
                        v.fired_at = Some(now);
                    }
                    out.push(Transition {
                        alert: v.clone(),
                        from: None,
                        actions: i.actions.clone(),
                        at: now,
                    });
                    scope.alerts.insert(
                        fp,
                        Alert {
                            view: v,
                            actions: i.actions.clone(),
                            keep_firing_for: i.keep_firing_for,
                            misses: 0,
                            cleared_at: None,
                            last_held: window.end,
                        },
                    );
                }
            }
        }
        if !late {
            let mut gone = Vec::new();
            for (fp, a) in scope.alerts.iter_mut() {
                if seen.contains(fp) {
                    continue;
                }
                // the same window evaluated again counts once
                if a.cleared_at.is_none() || window.end > scope.latest {
                    a.misses += 1;
                }
                let cleared = *a.cleared_at.get_or_insert(window.end);
                let over = match a.view.status {
                    Status::Pending => true,
                    _ => match a.keep_firing_for {
                        Hold::Windows(n) => a.misses > n,
                        Hold::Duration(d) => window.end - cleared >= d.as_millis() as i64,
                    },
                };
                if over {
                    let from = a.view.status;
                    a.view.status = if from == Status::Pending {
                        Status::Inactive
                    } else {
                        Status::Resolved
                    };
                    a.view.ends_at = Some(now);
                    out.push(Transition {
                        alert: a.view.clone(),
                        from: Some(from),
                        actions: a.actions.clone(),
                        at: now,
                    });
                    gone.push(fp.clone());
                }
            }
            for fp in gone {
                scope.alerts.remove(&fp);
            }
            scope.latest = scope.latest.max(window.end);
        }
        out
    }

    /// Keeps `evidence` with alert `fingerprint` of `rule` for `window`'s
    /// model version (the notifications and later changes carry it).
    pub fn set_evidence(
        &mut self,
        rule: &str,
        window: &WindowRef,
        fingerprint: &str,
        evidence: serde_json::Value,
    ) {
        if let Some(a) = self
            .scopes
            .get_mut(&scope_key(rule, window))
            .and_then(|s| s.alerts.get_mut(fingerprint))
        {
            a.view.evidence = Some(evidence);
        }
    }

    /// Ends every alert of model `model`'s version `version` at event time
    /// `now` (the version no longer serves): firing ones resolve, pending
    /// ones become inactive. Returns the changes.
    pub fn retire(&mut self, model: &str, version: Option<&str>, now: i64) -> Vec<Transition> {
        let suffix = format!("\0{model}\0{}", version.unwrap_or(""));
        let mut out = Vec::new();
        self.scopes.retain(|key, scope| {
            if !key.ends_with(&suffix) || key.len() == suffix.len() {
                return true;
            }
            for a in std::mem::take(&mut scope.alerts).into_values() {
                let from = a.view.status;
                let mut view = a.view;
                view.status = if from == Status::Pending {
                    Status::Inactive
                } else {
                    Status::Resolved
                };
                view.ends_at = Some(now);
                out.push(Transition {
                    alert: view,
                    from: Some(from),
                    actions: a.actions,
                    at: now,
                });
            }
            false
        });
        out
    }

    /// Alerts pending or firing now.
    pub fn current(&self) -> impl Iterator<Item = &AlertView> {
        self.scopes
            .values()
            .flat_map(|s| s.alerts.values().map(|a| &a.view))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn window(end: i64) -> WindowRef {
        WindowRef {
            model_id: "churn".into(),
            model_version: Some("v1".into()),
            start: end - 10,
            end,
        }
    }

    /// An instance of rule `r` for `feature` as the SQL evaluator hands it
    /// over: held for `windows` windows.
    pub(crate) fn instance(
        end: i64,
        feature: &str,
        windows: u32,
        hold: Hold,
        keep: Hold,
    ) -> AlertInstance {
        AlertInstance {
            rule: "r".into(),
            severity: "warning".into(),
            columns: [("feature".to_owned(), serde_json::json!(feature))].into(),
            labels: [("feature".to_owned(), feature.to_owned())].into(),
            value: Some(0.5),
            annotations: BTreeMap::new(),
            actions: vec!["hook".into()],
            window: window(end),
            active_since: end - 10 * i64::from(windows - 1),
            windows,
            hold_for: hold,
            keep_firing_for: keep,
        }
    }

    fn states(t: &[Transition]) -> Vec<(Option<Status>, Status)> {
        t.iter().map(|t| (t.from, t.alert.status)).collect()
    }

    #[test]
    fn an_alert_is_pending_until_for_then_fires_and_resolves_after_keep_firing_for() {
        let mut book = AlertBook::default();
        let (two, one) = (Hold::Windows(2), Hold::Windows(1));
        let t = book.observe("r", &window(10), &[&instance(10, "x", 1, two, one)], 10);
        assert_eq!(states(&t), [(None, Status::Pending)]);
        let t = book.observe("r", &window(20), &[&instance(20, "x", 2, two, one)], 20);
        assert_eq!(states(&t), [(Some(Status::Pending), Status::Firing)]);
        assert_eq!(t[0].alert.fired_at, Some(20));
        assert_eq!(t[0].alert.starts_at, 10);
        // gone once: keep_firing_for = 1 window keeps it firing
        let t = book.observe("r", &window(30), &[], 30);
        assert!(t.is_empty());
        // the same window re-evaluated (a revision) does not count twice
        let t = book.observe("r", &window(30), &[], 31);
        assert!(t.is_empty());
        let t = book.observe("r", &window(40), &[], 40);
        assert_eq!(states(&t), [(Some(Status::Firing), Status::Resolved)]);
        assert_eq!(t[0].alert.ends_at, Some(40));
        assert_eq!(book.current().count(), 0);
    }

    #[test]
    fn a_pending_alert_that_goes_away_becomes_inactive() {
        let mut book = AlertBook::default();
        let two = Hold::Windows(2);
        book.observe(
            "r",
            &window(10),
            &[&instance(10, "x", 1, two, Hold::default())],
            10,
        );
        let t = book.observe("r", &window(20), &[], 20);
        assert_eq!(states(&t), [(Some(Status::Pending), Status::Inactive)]);
    }

    #[test]
    fn keep_firing_for_a_duration_counts_event_time_since_the_condition_went() {
        let mut book = AlertBook::default();
        let keep = Hold::Duration(std::time::Duration::from_millis(25));
        let i = instance(10, "x", 1, Hold::default(), keep);
        let t = book.observe("r", &window(10), &[&i], 10);
        assert_eq!(states(&t), [(None, Status::Firing)]);
        assert!(book.observe("r", &window(20), &[], 20).is_empty()); // gone at 20
        assert!(book.observe("r", &window(30), &[], 30).is_empty()); // 10 ms
        assert!(book.observe("r", &window(40), &[], 40).is_empty()); // 20 ms
        let t = book.observe("r", &window(50), &[], 50); // 30 ms >= 25
        assert_eq!(states(&t), [(Some(Status::Firing), Status::Resolved)]);
    }

    #[test]
    fn a_late_revision_raises_alerts_but_does_not_resolve_them() {
        let mut book = AlertBook::default();
        let i = |end, f| instance(end, f, 1, Hold::default(), Hold::default());
        book.observe("r", &window(30), &[&i(30, "x")], 30);
        // window 10 revised by late labels: y fires, x is not gone
        let t = book.observe("r", &window(10), &[&i(10, "y")], 30);
        assert_eq!(states(&t), [(None, Status::Firing)]);
        assert_eq!(book.current().count(), 2);
        // a firing alert seen again is reported with its new figures
        let mut again = i(40, "x");
        again.value = Some(0.9);
        let t = book.observe("r", &window(40), &[&again], 40);
        let x: Vec<_> = t
            .iter()
            .filter(|t| t.alert.labels["feature"] == "x")
            .collect();
        assert_eq!(x.len(), 1);
        assert!(!x[0].is_change());
        assert_eq!(x[0].alert.value, Some(0.9));
        // y is gone at 40 (the latest window), so it resolves
        assert!(
            t.iter()
                .any(|t| t.alert.labels["feature"] == "y" && t.alert.status == Status::Resolved)
        );
    }

    #[test]
    fn fingerprints_name_rule_model_and_identity() {
        let a = view(
            &instance(10, "x", 1, Hold::default(), Hold::default()),
            Status::Firing,
        );
        let b = view(
            &instance(20, "x", 3, Hold::default(), Hold::default()),
            Status::Firing,
        );
        let c = view(
            &instance(10, "y", 1, Hold::default(), Hold::default()),
            Status::Firing,
        );
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_eq!(a.labels["rule"], "r");
        assert_eq!(a.labels["model_version"], "v1");
    }
}
