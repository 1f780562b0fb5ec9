//! The alert lifecycle, per alert instance (a rule and the identity of its
//! result row): inactive → pending (holds, `for` not reached) → firing →
//! resolved (gone for `keep_firing_for`). A pending alert that stops holding
//! goes back to inactive without a notification.
//!
//! Time is event time: the end of the window evaluated. Both `for` and
//! `keep_firing_for` are counted here, in evaluated windows or in event
//! time: `for` from the first window of the run of consecutive evaluated
//! windows where the instance held ([`held_long_enough`]), `keep_firing_for`
//! since the condition was first seen gone. The SQL evaluator only says
//! which rows a rule returned for one window; the book is the lifecycle's
//! one state, checkpointed with the triggers.

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

/// An instance's current run of consecutive evaluated windows where it
/// held: since when, the latest window, how many windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Run {
    since: i64,
    last: i64,
    windows: u32,
}

/// Every alert that is pending or firing, and the runs `for` counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertBook {
    /// By "rule\0model\0version".
    scopes: BTreeMap<String, Scope>,
    /// By the same key, then by identity: the instances that held at the
    /// latest window evaluated. Kept apart from the alerts: a retired
    /// version's runs go on being counted while its evaluations raise
    /// nothing, so that if it serves again they count from where they are.
    #[serde(default)]
    runs: BTreeMap<String, BTreeMap<String, Run>>,
}

/// Whether `instance` has held for its rule's `for`
/// ([`AlertBook::hold`] counted its run).
pub fn held_long_enough(instance: &AlertInstance) -> bool {
    match instance.hold_for {
        Hold::Windows(n) => instance.windows >= n,
        Hold::Duration(d) => instance.window.end - instance.active_since >= d.as_millis() as i64,
    }
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
    /// Counts the runs of one rule's evaluation for `window` (`found`: its
    /// rows, maybe none), and fills in each instance's `active_since` and
    /// `windows`. An instance missing from a later window stops holding;
    /// the same window evaluated again counts once; an evaluation of an
    /// earlier window (metrics revised by late labels) only reports, it
    /// does not move the runs back.
    pub fn hold(&mut self, rule: &str, window: &WindowRef, found: &mut [&mut AlertInstance]) {
        let held = self.runs.entry(scope_key(rule, window)).or_default();
        let latest = held.values().map(|r| r.last).max().unwrap_or(i64::MIN);
        if window.end < latest {
            for i in found.iter_mut() {
                let since = held.get(&i.identity()).map_or(i64::MAX, |r| r.since);
                i.active_since = since.min(window.end);
                i.windows = 1;
            }
            return;
        }
        let mut next = BTreeMap::new();
        for i in found.iter_mut() {
            let id = i.identity();
            let run = match held.get(&id) {
                Some(r) if r.last == window.end => r.clone(),
                Some(r) => Run {
                    since: r.since,
                    last: window.end,
                    windows: r.windows.saturating_add(1),
                },
                None => Run {
                    since: window.end,
                    last: window.end,
                    windows: 1,
                },
            };
            i.active_since = run.since;
            i.windows = run.windows;
            next.insert(id, run);
        }
        if next.is_empty() {
            self.runs.remove(&scope_key(rule, window));
        } else {
            *held = next;
        }
    }

    /// Applies one rule's evaluation for `window` (`found`: its rows, maybe
    /// none) at event time `now`: counts the runs ([`hold`](Self::hold)),
    /// then moves the alerts along; returns what changed.
    ///
    /// An evaluation of an earlier window than the latest one evaluated for
    /// the rule (metrics revised by late labels) can raise or update alerts
    /// but does not count as the condition being gone.
    pub fn observe(
        &mut self,
        rule: &str,
        window: &WindowRef,
        found: &mut [&mut AlertInstance],
        now: i64,
    ) -> Vec<Transition> {
        self.hold(rule, window, found);
        let scope = self.scopes.entry(scope_key(rule, window)).or_default();
        let late = window.end < scope.latest;
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for i in found.iter() {
            let fresh = view(i, Status::Pending);
            let fp = fresh.fingerprint.clone();
            seen.insert(fp.clone());
            let held = held_long_enough(i);
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
    /// over.
    pub(crate) fn instance(end: i64, feature: &str, hold: Hold, keep: Hold) -> AlertInstance {
        AlertInstance {
            rule: "r".into(),
            severity: "warning".into(),
            columns: [("feature".to_owned(), serde_json::json!(feature))].into(),
            labels: [("feature".to_owned(), feature.to_owned())].into(),
            value: Some(0.5),
            annotations: BTreeMap::new(),
            actions: vec!["hook".into()],
            window: window(end),
            active_since: end,
            windows: 1,
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
        let t = book.observe(
            "r",
            &window(10),
            &mut [&mut instance(10, "x", two, one)],
            10,
        );
        assert_eq!(states(&t), [(None, Status::Pending)]);
        let t = book.observe(
            "r",
            &window(20),
            &mut [&mut instance(20, "x", two, one)],
            20,
        );
        assert_eq!(states(&t), [(Some(Status::Pending), Status::Firing)]);
        assert_eq!(t[0].alert.fired_at, Some(20));
        assert_eq!(t[0].alert.starts_at, 10);
        // gone once: keep_firing_for = 1 window keeps it firing
        let t = book.observe("r", &window(30), &mut [], 30);
        assert!(t.is_empty());
        // the same window re-evaluated (a revision) does not count twice
        let t = book.observe("r", &window(30), &mut [], 31);
        assert!(t.is_empty());
        let t = book.observe("r", &window(40), &mut [], 40);
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
            &mut [&mut instance(10, "x", two, Hold::default())],
            10,
        );
        let t = book.observe("r", &window(20), &mut [], 20);
        assert_eq!(states(&t), [(Some(Status::Pending), Status::Inactive)]);
    }

    #[test]
    fn keep_firing_for_a_duration_counts_event_time_since_the_condition_went() {
        let mut book = AlertBook::default();
        let keep = Hold::Duration(std::time::Duration::from_millis(25));
        let mut i = instance(10, "x", Hold::default(), keep);
        let t = book.observe("r", &window(10), &mut [&mut i], 10);
        assert_eq!(states(&t), [(None, Status::Firing)]);
        assert!(book.observe("r", &window(20), &mut [], 20).is_empty()); // gone at 20
        assert!(book.observe("r", &window(30), &mut [], 30).is_empty()); // 10 ms
        assert!(book.observe("r", &window(40), &mut [], 40).is_empty()); // 20 ms
        let t = book.observe("r", &window(50), &mut [], 50); // 30 ms >= 25
        assert_eq!(states(&t), [(Some(Status::Firing), Status::Resolved)]);
    }

    #[test]
    fn a_late_revision_raises_alerts_but_does_not_resolve_them() {
        let mut book = AlertBook::default();
        let i = |end, f| instance(end, f, Hold::default(), Hold::default());
        book.observe("r", &window(30), &mut [&mut i(30, "x")], 30);
        // window 10 revised by late labels: y fires, x is not gone
        let t = book.observe("r", &window(10), &mut [&mut i(10, "y")], 30);
        assert_eq!(states(&t), [(None, Status::Firing)]);
        assert_eq!(book.current().count(), 2);
        // a firing alert seen again is reported with its new figures
        let mut again = i(40, "x");
        again.value = Some(0.9);
        let t = book.observe("r", &window(40), &mut [&mut again], 40);
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
    fn an_instance_counts_consecutive_windows_and_restarts_after_a_gap() {
        let mut book = AlertBook::default();
        let two = Hold::Windows(2);
        let mut hold = |end: i64, features: &[&str]| {
            let mut found: Vec<_> = features
                .iter()
                .map(|f| instance(end, f, two, Hold::default()))
                .collect();
            let mut refs: Vec<&mut _> = found.iter_mut().collect();
            book.hold("r", &window(end), &mut refs);
            found
        };
        let a = hold(10, &["x"]);
        assert_eq!((a[0].windows, a[0].active_since), (1, 10));
        assert!(!held_long_enough(&a[0]));
        // the same window evaluated again (a metrics revision) does not count twice
        assert_eq!(hold(10, &["x"])[0].windows, 1);
        let a = hold(20, &["x", "y"]);
        assert_eq!((a[0].windows, a[0].active_since), (2, 10));
        assert!(held_long_enough(&a[0]));
        assert_eq!(a[1].windows, 1);
        // a late revision of window 10 reports without moving the runs back
        let a = hold(10, &["y"]);
        assert_eq!((a[0].windows, a[0].active_since), (1, 10));
        assert_eq!(hold(20, &["x"])[0].windows, 2);
        // x gone at window 30: it starts over when it comes back
        hold(30, &["y"]);
        let a = hold(40, &["x"]);
        assert_eq!((a[0].windows, a[0].active_since), (1, 40));
    }

    #[test]
    fn numeric_columns_do_not_break_a_run() {
        let mut book = AlertBook::default();
        let with_psi = |end: i64, psi: f64| {
            let mut i = instance(end, "x", Hold::Windows(2), Hold::default());
            i.columns.insert("psi".into(), serde_json::json!(psi));
            i
        };
        book.observe("r", &window(10), &mut [&mut with_psi(10, 0.31)], 10);
        let mut again = with_psi(20, 0.47);
        let t = book.observe("r", &window(20), &mut [&mut again], 20);
        assert_eq!(again.windows, 2, "the same alert with another PSI");
        assert_eq!(states(&t), [(Some(Status::Pending), Status::Firing)]);
    }

    #[test]
    fn for_counts_windows_across_a_checkpoint() {
        let three = Hold::Windows(3);
        let mut book = AlertBook::default();
        for end in [10, 20] {
            let mut i = instance(end, "x", three, Hold::default());
            let t = book.observe("r", &window(end), &mut [&mut i], end);
            assert_eq!(i.windows as i64, end / 10);
            assert!(t.iter().all(|t| t.alert.status == Status::Pending));
        }
        let saved = serde_json::to_vec(&book).expect("encode");
        let mut book: AlertBook = serde_json::from_slice(&saved).expect("decode");
        let mut i = instance(30, "x", three, Hold::default());
        let t = book.observe("r", &window(30), &mut [&mut i], 30);
        assert_eq!((i.windows, i.active_since), (3, 10));
        assert_eq!(states(&t), [(Some(Status::Pending), Status::Firing)]);
        assert_eq!(t[0].alert.starts_at, 10);
        // a book saved before it kept runs: its alerts restore, runs start again
        let earlier = serde_json::json!({ "scopes": {} });
        let book: AlertBook = serde_json::from_value(earlier).expect("an earlier book");
        assert_eq!(book, AlertBook::default());
    }

    #[test]
    fn fingerprints_name_rule_model_and_identity() {
        let a = view(
            &instance(10, "x", Hold::default(), Hold::default()),
            Status::Firing,
        );
        let b = view(
            &instance(20, "x", Hold::default(), Hold::default()),
            Status::Firing,
        );
        let c = view(
            &instance(10, "y", Hold::default(), Hold::default()),
            Status::Firing,
        );
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_eq!(a.labels["rule"], "r");
        assert_eq!(a.labels["model_version"], "v1");
    }
}
