//! Routing and grouping: each firing alert goes to the actions its rule
//! names whose route takes it, into the group of its `group_by` labels; a
//! group becomes one notification.
//!
//! - A new group waits `group_wait` (so that alerts arriving together go
//!   out together), then announces its firing alerts.
//! - A group that changed (an alert joined or resolved) is announced again
//!   `group_interval` after its last notification.
//! - A group still firing with no change is announced again after
//!   `repeat_interval`.
//! - Silenced alerts are left out; a notification with nothing new to say
//!   is not sent. A resolved alert is announced only if its firing was.
//!
//! Times are event time (window ends), like the lifecycle's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alert::{AlertView, Status, Transition};
use crate::config::Actions;
use crate::key::short_hash;
use crate::silence::Silences;

/// One notification: a group's alerts, for one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Idempotency key: the same for every attempt, in every process.
    pub key: String,
    /// The action.
    pub action: String,
    /// `firing` when any alert in it fires, else `resolved`.
    pub status: String,
    /// The group's labels (its `group_by` values).
    pub group: BTreeMap<String, String>,
    /// The alerts.
    pub alerts: Vec<AlertView>,
    /// Event time it was made.
    pub time: i64,
    /// Whether it repeats an earlier one with nothing new.
    pub repeat: bool,
}

impl Notification {
    /// Each alert's fingerprint, rule, model and status: how the audit log
    /// names a notification's alerts.
    pub fn alert_refs(&self) -> serde_json::Value {
        self.alerts
            .iter()
            .map(|a| {
                serde_json::json!({ "fingerprint": a.fingerprint, "rule": a.rule, "model_id": a.model_id, "status": a.status })
            })
            .collect()
    }

    /// Labels every alert has with the same value.
    pub fn common_labels(&self) -> BTreeMap<String, String> {
        let mut alerts = self.alerts.iter();
        let Some(first) = alerts.next() else {
            return BTreeMap::new();
        };
        let mut common = first.labels.clone();
        for a in alerts {
            common.retain(|k, v| a.labels.get(k) == Some(v));
        }
        common
    }
}

/// An alert in a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    view: AlertView,
    /// Whether its firing was announced.
    announced: bool,
}

/// One group of one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group {
    action: String,
    labels: BTreeMap<String, String>,
    /// Event time its first alert came.
    created: i64,
    last_sent: Option<i64>,
    /// Notifications made so far.
    seq: u64,
    members: BTreeMap<String, Member>,
}

/// An alert left out of a notification by a silence.
#[derive(Debug, Clone, PartialEq)]
pub struct Silenced {
    /// The action.
    pub action: String,
    /// The alert.
    pub alert: AlertView,
    /// The silence.
    pub silence: String,
}

/// Every group of every action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Groups {
    /// By "action\0group labels".
    groups: BTreeMap<String, Group>,
}

impl Groups {
    /// Routes a transition into the groups of its actions.
    pub fn apply(&mut self, actions: &Actions, t: &Transition) {
        for action in actions.for_rule(&t.actions) {
            let name = &action.name;
            let v = &t.alert;
            if !action.route.takes(&v.severity, &v.labels) {
                continue;
            }
            let labels: BTreeMap<String, String> = action
                .grouping
                .group_by
                .iter()
                .map(|k| (k.clone(), v.labels.get(k).cloned().unwrap_or_default()))
                .collect();
            let key = format!(
                "{name}\0{}",
                serde_json::to_string(&labels).unwrap_or_default()
            );
            match v.status {
                Status::Firing => {
                    let g = self.groups.entry(key).or_insert_with(|| Group {
                        action: name.clone(),
                        labels,
                        created: t.at,
                        last_sent: None,
                        seq: 0,
                        members: BTreeMap::new(),
                    });
                    let announced = g.members.get(&v.fingerprint).is_some_and(|m| m.announced);
                    g.members.insert(
                        v.fingerprint.clone(),
                        Member {
                            view: v.clone(),
                            announced,
                        },
                    );
                }
                Status::Resolved => {
                    if let Some(g) = self.groups.get_mut(&key) {
                        let announce = action.route.send_resolved
                            && g.members.get(&v.fingerprint).is_some_and(|m| m.announced);
                        if announce {
                            g.members.insert(
                                v.fingerprint.clone(),
                                Member {
                                    view: v.clone(),
                                    announced: true,
                                },
                            );
                        } else {
                            g.members.remove(&v.fingerprint);
                        }
                        if g.members.is_empty() {
                            self.groups.remove(&key);
                        }
                    }
                }
                Status::Pending | Status::Inactive => {}
            }
        }
    }

    /// The notifications due at event time `now`, with silences checked at
    /// clock time `wall`; and the alerts silences left out.
    pub fn due(
        &mut self,
        actions: &Actions,
        now: i64,
        wall: i64,
        silences: &Silences,
    ) -> (Vec<Notification>, Vec<Silenced>) {
        let mut out = Vec::new();
        let mut quiet = Vec::new();
        let mut empty = Vec::new();
        for (key, g) in self.groups.iter_mut() {
            let Some(action) = actions.get(&g.action) else {
                continue;
            };
            let grouping = &action.grouping;
            let news = g
                .members
                .values()
                .any(|m| m.view.status == Status::Resolved || !m.announced);
            let when = match g.last_sent {
                None => g.created + grouping.group_wait,
                Some(t) if news => t + grouping.group_interval,
                Some(t) => t + grouping.repeat_interval,
            };
            if now < when {
                continue;
            }
            let mut alerts = Vec::new();
            let mut has_news = false;
            let mut resolved_done = Vec::new();
            for (fp, m) in &g.members {
                let silence = silences.silenced_by(&m.view.labels, wall);
                if m.view.status == Status::Resolved {
                    // announced or not, a resolved alert leaves the group
                    resolved_done.push(fp.clone());
                }
                if let Some(s) = silence {
                    quiet.push(Silenced {
                        action: g.action.clone(),
                        alert: m.view.clone(),
                        silence: s.id.clone(),
                    });
                    continue;
                }
                has_news |= m.view.status == Status::Resolved || !m.announced;
                alerts.push(m.view.clone());
            }
            let firing = alerts.iter().any(|a| a.status == Status::Firing);
            // silenced news made the group due, but a reminder waits for its interval
            let repeat = !has_news
                && firing
                && g.last_sent
                    .is_some_and(|t| now >= t + grouping.repeat_interval);
            if has_news || repeat {
                g.seq += 1;
                let key_text = format!(
                    "{}\0{}\0{}\0{}",
                    g.action,
                    serde_json::to_string(&g.labels).unwrap_or_default(),
                    g.created,
                    g.seq
                );
                let sent: Vec<String> = alerts.iter().map(|a| a.fingerprint.clone()).collect();
                out.push(Notification {
                    key: short_hash(&key_text),
                    action: g.action.clone(),
                    status: if firing { "firing" } else { "resolved" }.into(),
                    group: g.labels.clone(),
                    alerts,
                    time: now,
                    repeat,
                });
                g.last_sent = Some(now);
                for fp in sent {
                    if let Some(m) = g.members.get_mut(&fp) {
                        m.announced = true;
                    }
                }
            }
            // resolved alerts leave the group, announced or (silenced) not
            for fp in &resolved_done {
                g.members.remove(fp);
            }
            if g.members.is_empty() {
                empty.push(key.clone());
            }
        }
        for key in empty {
            self.groups.remove(&key);
        }
        (out, quiet)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use driftwatch_sql::rules::Hold;

    use super::*;
    use crate::alert::AlertBook;
    use crate::alert::tests::{instance, window};
    use crate::config::ActionConfig;
    use crate::silence::Matcher;

    fn actions(extra: &str) -> Actions {
        let text = format!(
            "[hook]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\ngroup_by = [\"model_id\"]\n{extra}"
        );
        let raw: BTreeMap<String, ActionConfig> = toml::from_str(&text).expect("config");
        Actions::from_config(&raw, &|_| None).expect("valid")
    }

    struct Run {
        book: AlertBook,
        groups: Groups,
        actions: Actions,
        silences: Silences,
        wall: i64,
        _dir: tempfile::TempDir,
    }

    impl Run {
        fn new(extra: &str) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let silences = Silences::open(&dir.path().join("s.json")).expect("silences");
            Run {
                book: AlertBook::default(),
                groups: Groups::default(),
                actions: actions(extra),
                silences,
                wall: 0,
                _dir: dir,
            }
        }

        /// Evaluates window `end` with `features` holding, then returns the
        /// notifications due at `end`.
        fn at(&mut self, end: i64, features: &[&str]) -> Vec<Notification> {
            let mut found: Vec<_> = features
                .iter()
                .map(|f| instance(end, f, Hold::default(), Hold::default()))
                .collect();
            let mut refs: Vec<&mut _> = found.iter_mut().collect();
            for t in self.book.observe("r", &window(end), &mut refs, end) {
                self.groups.apply(&self.actions, &t);
            }
            self.tick(end, self.wall)
        }

        fn tick(&mut self, now: i64, wall: i64) -> Vec<Notification> {
            self.groups.due(&self.actions, now, wall, &self.silences).0
        }
    }

    fn summary(n: &[Notification]) -> Vec<(String, Vec<String>)> {
        n.iter()
            .map(|n| {
                let mut alerts: Vec<String> = n
                    .alerts
                    .iter()
                    .map(|a| format!("{}:{}", a.labels["feature"], a.status.as_str()))
                    .collect();
                alerts.sort();
                (n.status.clone(), alerts)
            })
            .collect()
    }

    fn s(status: &str, alerts: &[&str]) -> (String, Vec<String>) {
        (
            status.to_owned(),
            alerts.iter().map(|a| a.to_string()).collect(),
        )
    }

    #[test]
    fn alerts_of_one_group_go_out_together_and_resolve_with_one_notice() {
        let mut r = Run::new("");
        let n = r.at(100, &["a", "b"]);
        assert_eq!(summary(&n), [s("firing", &["a:firing", "b:firing"])]);
        assert_eq!(n[0].group["model_id"], "churn");
        // nothing new: no notification until the repeat interval
        assert!(r.at(200, &["a", "b"]).is_empty());
        // b resolves, but the group interval (5m) has not passed since 100
        assert!(r.at(300, &["a"]).is_empty());
        let n = r.tick(300 + 300_000, 0);
        assert_eq!(summary(&n), [s("firing", &["a:firing", "b:resolved"])]);
        // a resolves: the resolved notice, after the group interval
        assert!(r.at(400_000, &[]).is_empty());
        let n = r.tick(300 + 600_000, 0);
        assert_eq!(summary(&n), [s("resolved", &["a:resolved"])]);
        assert!(r.groups.groups.is_empty());
    }

    #[test]
    fn group_wait_holds_the_first_notification_and_gathers_later_alerts() {
        let mut r = Run::new("group_wait = \"30s\"\n");
        assert!(r.at(1_000, &["a"]).is_empty());
        assert!(r.at(11_000, &["a", "b"]).is_empty());
        let n = r.tick(31_000, 0);
        assert_eq!(summary(&n), [s("firing", &["a:firing", "b:firing"])]);
    }

    #[test]
    fn a_group_still_firing_repeats_after_repeat_interval_with_the_same_alerts() {
        let mut r = Run::new("repeat_interval = \"1h\"\n");
        let first = r.at(0, &["a"]);
        assert_eq!(first.len(), 1);
        assert!(r.tick(3_599_999, 0).is_empty());
        let n = r.tick(3_600_000, 0);
        assert_eq!(summary(&n), [s("firing", &["a:firing"])]);
        assert!(n[0].repeat);
        assert_ne!(n[0].key, first[0].key, "each notification has its own key");
    }

    #[test]
    fn resolved_notices_follow_only_announced_firing_and_only_when_asked() {
        let mut r = Run::new("group_interval = \"0s\"\n");
        r.at(10, &["a"]);
        let n = r.at(20, &[]);
        assert_eq!(summary(&n), [s("resolved", &["a:resolved"])]);
        // the group is gone: a new firing makes a new group with a new key
        let again = r.at(30, &["a"]);
        assert_eq!(summary(&again), [s("firing", &["a:firing"])]);
        let mut quiet = Run::new("group_interval = \"0s\"\nsend_resolved = false\n");
        quiet.at(10, &["a"]);
        assert!(quiet.at(20, &[]).is_empty());
    }

    #[test]
    fn an_alert_goes_to_the_actions_its_rule_names_and_to_those_taking_every_rule() {
        let mut r = Run::new(
            "[all]\nkind = \"chat\"\nurl = \"http://127.0.0.1:9/\"\nevery_rule = true\n\
             [other]\nkind = \"chat\"\nurl = \"http://127.0.0.1:9/\"\n",
        );
        let mut to: Vec<String> = r.at(10, &["a"]).iter().map(|n| n.action.clone()).collect();
        to.sort();
        assert_eq!(to, ["all", "hook"]);
    }

    #[test]
    fn routes_filter_by_severity_and_labels() {
        let mut r = Run::new("severities = [\"critical\"]\n");
        assert!(r.at(10, &["a"]).is_empty(), "warning alerts are not taken");
        let mut r = Run::new("matchers = [\"feature=~a|c\"]\n");
        assert_eq!(
            summary(&r.at(10, &["a", "b"])),
            [s("firing", &["a:firing"])]
        );
    }

    #[test]
    fn a_silence_leaves_alerts_out_until_it_ends() {
        let mut r = Run::new("group_interval = \"0s\"\n");
        let m = vec![Matcher::parse("feature=b").expect("matcher")];
        r.silences.add(m, 0, 1_000, "test", "").expect("silence");
        r.wall = 500;
        let n = r.at(10, &["a", "b"]);
        assert_eq!(summary(&n), [s("firing", &["a:firing"])]);
        // still silenced: nothing new to say
        assert!(r.tick(20, 999).is_empty());
        // the silence ended: b is announced, with a
        let n = r.tick(30, 1_000);
        assert_eq!(summary(&n), [s("firing", &["a:firing", "b:firing"])]);
        assert!(!n[0].repeat);
    }
}
