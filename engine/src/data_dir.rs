//! [`DataDir`]: where the service keeps its state between runs.

use std::path::{Path, PathBuf};

use driftwatch_ingest::names::path_component;

/// The data directory (`data_dir`) and the place of everything in it.
/// Names that come from events or configuration (models, versions,
/// consumer groups, pipelines) are made safe as one path component each.
///
/// ```text
/// DATA_DIR/
///   history/                       window results as Parquet (driftwatch-sql)
///   references/<model>/<version>.profile   (`_any.profile`: every version)
///   references/<model>/<version>.labelfree calibration and components beside it
///   checkpoints/<group>/partition-<n>.ckpt, partition-<n>.pending/run-*.dat
///   pending/replay/run-*.dat       a replay's predictions awaiting labels
///   outbox/<pipeline>.redb         deliveries not yet made
///   <table>/<model>/*.json         window results of `driftwatch run`
///   silences.json, audit.jsonl, dead-letter.jsonl,
///   metrics.json, run-summary.json, demo-receiver.jsonl, demo-training/<model>.jsonl
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Window results kept as Parquet, queryable by `driftwatch sql`.
    pub fn history(&self) -> PathBuf {
        self.root.join("history")
    }

    /// Where the reference profiles live.
    pub fn references(&self) -> PathBuf {
        self.root.join("references")
    }

    /// The reference profile of a model version (`_any` when it is the
    /// profile of every version).
    pub fn reference(&self, model: &str, version: Option<&str>) -> PathBuf {
        self.references().join(path_component(model)).join(format!(
            "{}.profile",
            version.map_or("_any".into(), path_component)
        ))
    }

    /// The label-free reference (calibration, principal components) of a
    /// model version, beside its profile.
    pub fn label_free(&self, model: &str, version: Option<&str>) -> PathBuf {
        self.reference(model, version).with_extension("labelfree")
    }

    /// The checkpoints of one consumer group.
    pub fn checkpoints(&self, group: &str) -> PathBuf {
        self.root.join("checkpoints").join(path_component(group))
    }

    /// Where a replay's predictions awaiting labels spill; removed when it ends.
    pub fn replay_pending(&self) -> PathBuf {
        self.root.join("pending").join("replay")
    }

    /// The outbox of pipeline `writer` (a name the service makes from the
    /// consumer group and partition, kept as it is: existing outboxes
    /// hold deliveries not yet made).
    pub fn outbox(&self, writer: &str) -> PathBuf {
        self.root.join("outbox").join(format!("{writer}.redb"))
    }

    /// The result files of one table and model (`driftwatch run` writes a
    /// JSON file per window there).
    pub fn window_results(&self, table: &str, model: &str) -> PathBuf {
        self.root.join(table).join(path_component(model))
    }

    /// The silences (`driftwatch silence` writes them, the service reads them).
    pub fn silences(&self) -> PathBuf {
        self.root.join("silences.json")
    }

    /// One line per notification attempt.
    pub fn audit(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }

    /// Rejected events with their reasons, when no other sink is configured.
    pub fn dead_letter(&self) -> PathBuf {
        self.root.join("dead-letter.jsonl")
    }

    /// Events posted to the HTTP API: `log/` (made durable before they are
    /// acknowledged, replayed after a crash), `checkpoint/` (the state of
    /// the pipeline they feed) and `dead-letter.jsonl` (those refused).
    pub fn http_ingest(&self) -> PathBuf {
        self.root.join("ingest").join("http")
    }

    /// The running service's counters.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.json")
    }

    /// The last run's summary.
    pub fn run_summary(&self) -> PathBuf {
        self.root.join("run-summary.json")
    }

    /// What `driftwatch demo`'s receiver was sent.
    pub fn demo_receiver(&self) -> PathBuf {
        self.root.join("demo-receiver.jsonl")
    }

    /// A model's labelled training set that `driftwatch demo` builds its
    /// reference from.
    pub fn demo_training(&self, model: &str) -> PathBuf {
        self.root
            .join("demo-training")
            .join(format!("{}.jsonl", path_component(model)))
    }

    /// The HTML report of `model` that `driftwatch demo` writes.
    pub fn report(&self, model: &str) -> PathBuf {
        self.root
            .join("reports")
            .join(format!("{}.html", path_component(model)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout is what existing data directories hold: a change here
    /// loses their state, so it is pinned.
    #[test]
    fn the_layout_of_existing_data_directories() {
        let d = DataDir::new("/d");
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(d.history(), p("/d/history"));
        assert_eq!(
            d.reference("churn", None),
            p("/d/references/churn/_any.profile")
        );
        assert_eq!(d.checkpoints("g1"), p("/d/checkpoints/g1"));
        assert_eq!(d.replay_pending(), p("/d/pending/replay"));
        assert_eq!(d.outbox("g1-p0"), p("/d/outbox/g1-p0.redb"));
        assert_eq!(
            d.window_results("feature_drift", "churn"),
            p("/d/feature_drift/churn")
        );
        assert_eq!(d.silences(), p("/d/silences.json"));
        assert_eq!(d.audit(), p("/d/audit.jsonl"));
        assert_eq!(d.dead_letter(), p("/d/dead-letter.jsonl"));
        assert_eq!(d.metrics(), p("/d/metrics.json"));
        assert_eq!(d.http_ingest(), p("/d/ingest/http"));
        assert_eq!(d.run_summary(), p("/d/run-summary.json"));
        assert_eq!(d.demo_receiver(), p("/d/demo-receiver.jsonl"));
    }

    #[test]
    fn names_from_events_stay_inside_the_directory() {
        let d = DataDir::new("/d");
        for path in [
            d.reference("../../etc", Some("../x")),
            d.checkpoints("../g"),
            d.window_results("model_metrics", "../../m"),
        ] {
            let inside = path.strip_prefix("/d").expect("under the root");
            assert!(
                inside
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
                "{} leaves the data directory",
                path.display()
            );
        }
    }
}
