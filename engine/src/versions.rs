//! Each model version's life, kept by the rule runner from the windows that
//! close: when it was first and last seen, where its reference came from,
//! the retraining request that led to it, which version replaced it and
//! when, and its first healthy window. Every change is a row of
//! `model_version_log` (the `model_versions` view shows the latest).
//!
//! ```text
//! alert fires ─► retrain request delivered (job id) ─► new version's first window
//!   ─► old version retired (a whole window of the new one without it)
//!   ─► new version's first healthy window (labels in, no alert)
//! ```
//!
//! Times are event time (window bounds), so the record is the same in a
//! replay as in the service. No per-event work: only closed windows and
//! metric revisions are looked at.

use std::collections::BTreeMap;

use driftwatch_sql::WindowRef;
use driftwatch_sql::versions::VersionRow;
use driftwatch_triggers::RetrainRequest;
use serde::{Deserialize, Serialize};

/// A window counts as healthy with at least this share of its predictions
/// labelled and no alert of its version pending or firing.
pub const HEALTHY_COVERAGE: f64 = 0.5;

/// At most this many versions are tracked; past it the longest retired go
/// first (their rows stay in the history).
pub const MAX_VERSIONS: usize = 10_000;

/// What a closed window says of its version.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSeen {
    /// The window.
    pub window: WindowRef,
    /// Predictions in it.
    pub predictions: u64,
    /// From `drift_summary`: whether the window is its version's reference
    /// (`None` without the drift detector), and the reference's start.
    pub reference: Option<(bool, Option<i64>)>,
}

/// One tracked version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    row: VersionRow,
    /// Start of its latest closed window.
    last_start: i64,
    /// Start of the window from which it serves: its first, or the one
    /// in which it served again after being retired (a rollback).
    serving_since: i64,
}

/// The tracked versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    /// By "model\0version".
    records: BTreeMap<String, Record>,
    /// Rows not yet handed out.
    #[serde(skip)]
    rows: Vec<VersionRow>,
}

fn key(model: &str, version: Option<&str>) -> String {
    format!("{model}\0{}", version.unwrap_or(""))
}

/// A version that stopped serving: (model, version, the one that replaced
/// it, event time).
pub type Retired = (String, Option<String>, String, i64);

impl Versions {
    /// A closed window of a version. A version seen for the first time is
    /// traced back to `retrain`, the model's latest delivered retraining
    /// request, when that request was about another version, led to no
    /// other version yet, and its answer named this version or none.
    /// Returns whether the version was retired before (it serves again).
    pub fn window(&mut self, seen: &WindowSeen, retrain: Option<&RetrainRequest>) -> bool {
        let w = &seen.window;
        let k = key(&w.model_id, w.model_version.as_deref());
        if let Some(rec) = self.records.get_mut(&k) {
            rec.last_start = rec.last_start.max(w.start);
            let again = rec.row.superseded_by.is_some();
            let r = &mut rec.row;
            r.first_seen = r.first_seen.min(w.start);
            r.last_seen = r.last_seen.max(w.end);
            r.windows += 1;
            r.predictions += seen.predictions;
            if again {
                rec.serving_since = w.start;
            }
            let r = &mut rec.row;
            let change = if again {
                r.superseded_by = None;
                r.superseded_at = None;
                "serving again"
            } else {
                "window"
            };
            let row = bump(r, change, w.end);
            self.rows.push(row);
            return again;
        }
        let previous = self
            .records
            .values()
            .map(|rec| &rec.row)
            .filter(|r| r.model_id == w.model_id)
            .max_by_key(|r| (r.first_seen, r.last_seen))
            .and_then(|r| r.model_version.clone());
        let mut r = VersionRow {
            model_id: w.model_id.clone(),
            model_version: w.model_version.clone(),
            first_seen: w.start,
            last_seen: w.end,
            windows: 1,
            predictions: seen.predictions,
            reference: seen.reference.map(|(own, _)| {
                if own {
                    "first window".to_owned()
                } else {
                    "stored profile".to_owned()
                }
            }),
            reference_start: seen.reference.and_then(
                |(own, start)| {
                    if own { Some(w.start) } else { start }
                },
            ),
            previous_version: previous,
            ..VersionRow::default()
        };
        if let Some(req) = retrain.filter(|req| {
            req.model_version != w.model_version
                && req
                    .next_version
                    .as_ref()
                    .is_none_or(|v| Some(v) == w.model_version.as_ref())
                && !self
                    .records
                    .values()
                    .any(|o| o.row.retrain_key.as_deref() == Some(req.key.as_str()))
        }) {
            r.alert_rule = Some(req.rule.clone());
            r.alert_fingerprint = Some(req.fingerprint.clone());
            r.retrain_action = Some(req.action.clone());
            r.retrain_key = Some(req.key.clone());
            r.retrain_job = req.job_id.clone();
            r.retrain_match = Some(
                if req.next_version.is_some() {
                    "named"
                } else {
                    "latest"
                }
                .to_owned(),
            );
            r.retrain_delivered_at = Some(req.delivered_at);
        }
        let row = bump(&mut r, "first seen", w.end);
        self.rows.push(row);
        self.records.insert(
            k,
            Record {
                row: r,
                last_start: w.start,
                serving_since: w.start,
            },
        );
        self.bound();
        false
    }

    /// Versions of `models` that stopped serving: a version is retired by a
    /// newer one of its model (serving since later: first seen later, or
    /// serving again after a rollback) with a closed window that starts at
    /// or after the older one's last window ended.
    pub fn retire(&mut self, models: &std::collections::BTreeSet<String>) -> Vec<Retired> {
        let mut out = Vec::new();
        let keys: Vec<String> = self
            .records
            .iter()
            .filter(|(_, r)| r.row.superseded_by.is_none() && models.contains(&r.row.model_id))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let Some((old, since)) = self.records.get(&k).map(|r| (&r.row, r.serving_since)) else {
                continue;
            };
            let by = self
                .records
                .values()
                .filter(|n| {
                    n.row.model_id == old.model_id
                        && n.row.model_version != old.model_version
                        && n.serving_since > since
                        && n.last_start >= old.last_seen
                })
                .max_by_key(|n| (n.serving_since, n.row.last_seen))
                .map(|n| {
                    (
                        n.row.model_version.clone().unwrap_or_default(),
                        n.row.last_seen,
                    )
                });
            if let Some((by, at)) = by
                && let Some(r) = self.records.get_mut(&k).map(|r| &mut r.row)
            {
                r.superseded_by = Some(by.clone());
                r.superseded_at = Some(at);
                let row = bump(r, "retired", at);
                out.push((r.model_id.clone(), r.model_version.clone(), by, at));
                self.rows.push(row);
            }
        }
        out
    }

    /// A window's metrics revised: `coverage` of its predictions labelled,
    /// `alerts` whether its version has an alert pending or firing after
    /// its rules ran. The first such window with enough labels and no alert
    /// is the version's first healthy one; returns whether it is.
    pub fn revised(&mut self, window: &WindowRef, coverage: f64, alerts: bool) -> bool {
        let Some(r) = self
            .records
            .get_mut(&key(&window.model_id, window.model_version.as_deref()))
            .map(|r| &mut r.row)
        else {
            return false;
        };
        if r.first_healthy_window_end.is_some() || coverage < HEALTHY_COVERAGE || alerts {
            return false;
        }
        r.first_healthy_window_start = Some(window.start);
        r.first_healthy_window_end = Some(window.end);
        let at = r.last_seen.max(window.end);
        let row = bump(r, "healthy", at);
        self.rows.push(row);
        true
    }

    /// The record of a version.
    pub fn get(&self, model: &str, version: Option<&str>) -> Option<&VersionRow> {
        self.records.get(&key(model, version)).map(|r| &r.row)
    }

    /// Rows made since the last call.
    pub fn take_rows(&mut self) -> Vec<VersionRow> {
        std::mem::take(&mut self.rows)
    }

    fn bound(&mut self) {
        while self.records.len() > MAX_VERSIONS {
            let oldest = self
                .records
                .iter()
                .min_by_key(|(_, r)| (r.row.superseded_by.is_none(), r.row.last_seen))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.records.remove(&k),
                None => break,
            };
        }
    }
}

/// Counts a change of `r` at `time` and returns its row.
fn bump(r: &mut VersionRow, change: &str, time: i64) -> VersionRow {
    r.revision += 1;
    r.time = time;
    r.change = change.to_owned();
    r.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn churn() -> std::collections::BTreeSet<String> {
        ["churn".to_owned()].into()
    }

    fn seen(version: &str, hour: i64, predictions: u64) -> WindowSeen {
        WindowSeen {
            window: WindowRef {
                model_id: "churn".into(),
                model_version: Some(version.into()),
                start: hour * H,
                end: (hour + 1) * H,
            },
            predictions,
            reference: Some((false, Some(0))),
        }
    }

    fn request(version: &str, key: &str) -> RetrainRequest {
        RetrainRequest {
            model_id: "churn".into(),
            model_version: Some(version.into()),
            rule: "critical_feature_drift".into(),
            fingerprint: "f1".into(),
            action: "retrain".into(),
            key: key.into(),
            job_id: Some("run-7".into()),
            next_version: None,
            delivered_at: 1,
        }
    }

    #[test]
    fn a_new_version_is_traced_to_the_request_and_retires_the_old_one_after_a_whole_window() {
        let mut v = Versions::default();
        for hour in 0..3 {
            assert!(!v.window(&seen("v12", hour, 100), None));
        }
        let req = request("v12", "k1");
        // hour 3: both versions serve (the switch happens inside it)
        v.window(&seen("v12", 3, 40), Some(&req));
        let mut first = seen("v13", 3, 60);
        first.reference = Some((true, None));
        v.window(&first, Some(&req));
        assert!(v.retire(&churn()).is_empty(), "v12 still served in hour 3");
        let new = v.get("churn", Some("v13")).expect("v13");
        assert_eq!(new.previous_version.as_deref(), Some("v12"));
        assert_eq!(new.retrain_key.as_deref(), Some("k1"));
        assert_eq!(new.retrain_job.as_deref(), Some("run-7"));
        assert_eq!(new.retrain_match.as_deref(), Some("latest"));
        assert_eq!(new.alert_rule.as_deref(), Some("critical_feature_drift"));
        assert_eq!(new.reference.as_deref(), Some("first window"));
        assert_eq!(new.reference_start, Some(3 * H));
        assert_eq!(v.get("churn", Some("v12")).expect("v12").retrain_key, None);

        // hour 4: only v13
        v.window(&seen("v13", 4, 100), Some(&req));
        let retired = v.retire(&churn());
        assert_eq!(
            retired,
            [("churn".into(), Some("v12".into()), "v13".into(), 5 * H)]
        );
        let old = v.get("churn", Some("v12")).expect("v12");
        assert_eq!(old.superseded_by.as_deref(), Some("v13"));
        assert_eq!((old.first_seen, old.last_seen), (0, 4 * H));
        assert_eq!((old.windows, old.predictions), (4, 340));
        assert!(v.retire(&churn()).is_empty(), "retired once");
        assert!(
            v.retire(&["fraud".to_owned()].into()).is_empty(),
            "only the models named"
        );

        // the same request leads to no second version
        v.window(&seen("v14", 6, 10), Some(&req));
        assert_eq!(v.get("churn", Some("v14")).expect("v14").retrain_key, None);

        let rows = v.take_rows();
        let changes: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.model_version.as_deref().unwrap_or(""), r.change.as_str()))
            .collect();
        assert_eq!(
            changes,
            [
                ("v12", "first seen"),
                ("v12", "window"),
                ("v12", "window"),
                ("v12", "window"),
                ("v13", "first seen"),
                ("v13", "window"),
                ("v12", "retired"),
                ("v14", "first seen"),
            ]
        );
        assert_eq!(rows.last().map(|r| r.revision), Some(1));
        assert!(v.take_rows().is_empty());
    }

    #[test]
    fn a_request_whose_answer_named_another_version_leads_to_that_one_only() {
        let mut v = Versions::default();
        v.window(&seen("v12", 0, 10), None);
        let mut req = request("v12", "k1");
        req.next_version = Some("v14".into());
        v.window(&seen("v13", 1, 10), Some(&req));
        assert_eq!(v.get("churn", Some("v13")).expect("v13").retrain_key, None);
        v.window(&seen("v14", 2, 10), Some(&req));
        let named = v.get("churn", Some("v14")).expect("v14");
        assert_eq!(named.retrain_key.as_deref(), Some("k1"));
        assert_eq!(named.retrain_match.as_deref(), Some("named"));
    }

    #[test]
    fn a_retired_version_seen_again_serves_again() {
        let mut v = Versions::default();
        v.window(&seen("v1", 0, 10), None);
        v.window(&seen("v2", 1, 10), None);
        assert_eq!(v.retire(&churn()).len(), 1);
        assert!(v.window(&seen("v1", 2, 10), None), "a rollback");
        let old = v.get("churn", Some("v1")).expect("v1");
        assert_eq!(old.superseded_by, None);
        assert_eq!(old.change, "serving again");
        // hour 2 is a whole window of v1 without v2: v2 is retired
        assert_eq!(
            v.retire(&churn()),
            [("churn".into(), Some("v2".into()), "v1".into(), 3 * H)]
        );
        assert!(v.retire(&churn()).is_empty(), "v1 is not retired by v2");
    }

    #[test]
    fn the_first_healthy_window_needs_labels_and_no_alert() {
        let mut v = Versions::default();
        let w = seen("v13", 3, 100);
        v.window(&w, None);
        assert!(!v.revised(&w.window, 0.2, false), "too few labels");
        assert!(
            !v.revised(&w.window, 0.9, true),
            "an alert pending or firing"
        );
        assert!(v.revised(&w.window, 0.6, false));
        let r = v.get("churn", Some("v13")).expect("v13");
        assert_eq!(r.first_healthy_window_start, Some(3 * H));
        assert_eq!(r.first_healthy_window_end, Some(4 * H));
        assert!(!v.revised(&seen("v13", 4, 1).window, 1.0, false), "once");
        assert!(!v.revised(&seen("v9", 4, 1).window, 1.0, false), "unknown");
    }

    #[test]
    fn the_records_are_bounded() {
        let mut v = Versions::default();
        for i in 0..(MAX_VERSIONS + 5) {
            v.window(&seen(&format!("v{i}"), i as i64, 1), None);
        }
        assert_eq!(v.records.len(), MAX_VERSIONS);
    }
}
