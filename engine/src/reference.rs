//! Reference profiles in the data directory: built from training data or
//! recorded events, listed, and loaded into the drift detector at start.
//! Nothing here prints: [`build`] returns what it did, and the binary
//! says it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use driftwatch_detectors::drift::{DriftConfig, Profile, StoredProfile};
use driftwatch_detectors::{Component, DriftDetector};
use driftwatch_ingest::{
    Admit, DeadLetterBudget, DeadLetterFile, DeadLetterSink, Decoder, DecoderConfig, Event,
    EventTime, Record, format_time, open_file, open_table_file,
};
use tracing::info;

use crate::DataDir;
use crate::error::{Error, Result};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Every stored profile, sorted by path.
pub fn stored(data: &DataDir) -> Result<Vec<(PathBuf, StoredProfile)>> {
    let root = data.references();
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut paths = Vec::new();
    for model in std::fs::read_dir(&root).map_err(io(&root))? {
        let model = model.map_err(io(&root))?.path();
        if !model.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&model).map_err(io(&model))? {
            let file = file.map_err(io(&model))?.path();
            if file.extension().is_some_and(|e| e == "profile") {
                paths.push(file);
            }
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| Ok((p.clone(), StoredProfile::load(&p)?)))
        .collect()
}

/// The stored profile of a model version (`None`: of every version).
pub fn stored_one(data: &DataDir, model: &str, version: Option<&str>) -> Result<StoredProfile> {
    let path = data.reference(model, version);
    if !path.is_file() {
        return Err(Error::NotFound {
            what: format!(
                "reference profile for {model} {}",
                version.unwrap_or("(any version)")
            ),
            path,
        });
    }
    Ok(StoredProfile::load(&path)?)
}

/// Loads every stored profile into the detector; how many there were.
pub fn load_into(data: &DataDir, detector: &DriftDetector) -> Result<usize> {
    let profiles = stored(data)?;
    for (p, stored) in &profiles {
        info!(profile = %p.display(), model = %stored.model_id, version = stored.model_version.as_deref().unwrap_or("any"), "reference loaded");
        detector.set_reference(
            &stored.model_id,
            stored.model_version.as_deref(),
            Profile::from_stored(stored),
        );
    }
    Ok(profiles.len())
}

/// Builds the profile of `model` `version` from an uploaded `file` (event
/// lines or Parquet, as `driftwatch reference build` takes; with `table`, a
/// feature table of one row per prediction), stores it in
/// the data directory (where the next start loads it) and makes it the
/// version's reference in every running pipeline now (`shared`).
pub fn store_uploaded(
    config: &crate::Config,
    shared: &driftwatch_detectors::SharedReferences,
    file: &Path,
    model: &str,
    version: &str,
    table: bool,
) -> Result<Built> {
    let built = build(
        &config.data_dir,
        &BuildRequest {
            files: &[file.to_owned()],
            model,
            version: Some(version),
            selection: &Selection {
                table,
                ..Selection::default()
            },
            drift: config.drift.clone().unwrap_or_default(),
            decoder: config.decoder.clone(),
            dead_letter_max_bytes: config.dead_letter_max_bytes,
        },
    )?;
    let stored = StoredProfile::load(&built.path)?;
    shared.set(model, Some(version), Profile::from_stored(&stored));
    info!(model, version, profile = %built.path.display(), predictions = built.used, "reference stored and in use");
    Ok(built)
}

/// Which predictions of the files go into a profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Predictions at or after this time.
    pub from: Option<EventTime>,
    /// Predictions before this time.
    pub until: Option<EventTime>,
    /// At most this many predictions (the first ones read).
    pub first: Option<u64>,
    /// The files are plain feature tables (one row per prediction).
    pub table: bool,
}

impl Selection {
    fn contains(&self, t: EventTime) -> bool {
        self.from.is_none_or(|f| t >= f) && self.until.is_none_or(|u| t < u)
    }

    /// ` (from …, until …, first N, feature table)`, or nothing.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = self.from {
            parts.push(format!("from {}", format_time(f)));
        }
        if let Some(u) = self.until {
            parts.push(format!("until {}", format_time(u)));
        }
        if let Some(n) = self.first {
            parts.push(format!("first {n}"));
        }
        if self.table {
            parts.push("feature table".to_owned());
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }
}

/// What a profile is built from and with.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// Event files (JSON Lines, gzip, Parquet) or feature tables.
    pub files: &'a [PathBuf],
    /// The model.
    pub model: &'a str,
    /// Its version; `None`: a profile of every version.
    pub version: Option<&'a str>,
    /// Which predictions.
    pub selection: &'a Selection,
    /// The drift detector's settings (sketch sizes).
    pub drift: DriftConfig,
    /// How events are decoded and validated.
    pub decoder: DecoderConfig,
    /// Dead-letter bytes one file may write.
    pub dead_letter_max_bytes: u64,
}

/// What [`build`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// The profile's file.
    pub path: PathBuf,
    /// Records read.
    pub read: u64,
    /// Predictions in the profile.
    pub used: u64,
    /// Features in the profile.
    pub features: usize,
    /// Refused records, by reason code.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Where the refused records went, when any was written.
    pub dead_letter: Option<PathBuf>,
}

impl Built {
    /// `0 rejected`, or `N rejected: reason n, …; in FILE`.
    pub fn refusals(&self) -> String {
        let total: u64 = self.rejected.values().sum();
        if total == 0 {
            return "0 rejected".to_owned();
        }
        let by_reason: Vec<String> = self
            .rejected
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let place = match &self.dead_letter {
            Some(p) => format!("; in {}", p.display()),
            None => String::new(),
        };
        format!("{total} rejected: {}{place}", by_reason.join(", "))
    }
}

/// Builds a model version's profile from the selected predictions of the
/// files (predictions of other models or versions, and labels, are
/// skipped) and saves it in the data directory. Refused records go to a
/// dead-letter file beside the profile, with their reasons.
pub fn build(data: &DataDir, request: &BuildRequest<'_>) -> Result<Built> {
    let BuildRequest {
        files,
        model,
        version,
        selection,
        ..
    } = *request;
    let detector = DriftDetector::new(request.drift.clone())?;
    let mut state = detector.new_state();
    let mut decoder = Decoder::new(request.decoder.clone());
    let path = data.reference(model, version);
    let dead_letter_path = path.with_extension("dead-letter.jsonl");
    match std::fs::remove_file(&dead_letter_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(&dead_letter_path)(e));
        }
        _ => {}
    }
    let mut built = Built {
        path,
        read: 0,
        used: 0,
        features: 0,
        rejected: BTreeMap::new(),
        dead_letter: None,
    };
    let mut dead_letter: Option<DeadLetterFile> = None;
    let mut budget = DeadLetterBudget::new(request.dead_letter_max_bytes);
    let (mut first, mut last) = (EventTime::MAX, EventTime::MIN);
    for file in files {
        let mut source = if selection.table {
            open_table_file(file, model, version)?
        } else {
            open_file(file)?
        };
        while let Some(record) = source.next_record(&mut decoder)? {
            built.read += 1;
            match record {
                Record::Event(Event::Prediction(p), _)
                    if &*p.model_id == model
                        && (version.is_none() || p.model_version.as_deref() == version)
                        && selection.contains(p.timestamp)
                        && selection.first.is_none_or(|n| built.used < n) =>
                {
                    built.used += 1;
                    first = first.min(p.timestamp);
                    last = last.max(p.timestamp);
                    detector.update(&mut state, &p);
                }
                Record::Event(..) => {}
                Record::Rejected(r) => {
                    *built.rejected.entry(r.reason.code()).or_default() += 1;
                    if budget.admit(&r) == Admit::Write {
                        let sink = match &mut dead_letter {
                            Some(sink) => sink,
                            None => dead_letter.insert(DeadLetterFile::open(&dead_letter_path)?),
                        };
                        sink.send(&r)?;
                    }
                }
            }
        }
    }
    if let Some(sink) = &mut dead_letter {
        sink.flush()?;
        built.dead_letter = Some(dead_letter_path);
    }
    if built.used == 0 {
        return Err(Error::Input(format!(
            "no prediction of model {model}{} in {} records ({})",
            version.map(|v| format!(" version {v}")).unwrap_or_default(),
            built.read,
            built.refusals()
        )));
    }
    let profile = Profile::from_state(&state, (first, last));
    let sources: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let stored = profile.to_stored(
        model,
        version,
        &format!("{}{}", sources.join(", "), selection.describe()),
    );
    stored.save(&built.path)?;
    built.features = stored.features.len();
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prediction `second` seconds into 2026-11-01.
    fn prediction(id: u32, model: &str, version: &str, second: u32, x: f64) -> String {
        format!(
            r#"{{"event_id":"e{id}","type":"prediction","model_id":"{model}","model_version":"{version}","timestamp":"2026-11-01T00:{:02}:{:02}Z","features":{{"x":{x},"city":"c{}"}},"prediction":{{"class":"yes","score":0.5}}}}"#,
            second / 60,
            second % 60,
            id % 3
        )
    }

    fn request<'a>(
        files: &'a [PathBuf],
        version: Option<&'a str>,
        selection: &'a Selection,
    ) -> BuildRequest<'a> {
        BuildRequest {
            files,
            model: "churn",
            version,
            selection,
            drift: DriftConfig::default(),
            decoder: DecoderConfig::default(),
            dead_letter_max_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_profile_holds_the_selected_predictions_and_names_the_refused_ones() -> Result<()> {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let data = DataDir::new(tmp.path().join("data"));
        let file = tmp.path().join("train.jsonl");
        let mut lines: Vec<String> = (0..100)
            .map(|i| prediction(i, "churn", "v2", i, f64::from(i)))
            .collect();
        lines.push(prediction(100, "other", "v2", 0, 1.0));
        lines.push(prediction(101, "churn", "v1", 0, 1.0));
        lines.push("{not json".to_owned());
        std::fs::write(&file, lines.join("\n")).expect("write");
        let files = [file];
        let selection = Selection {
            first: Some(60),
            ..Selection::default()
        };
        let built = build(&data, &request(&files, Some("v2"), &selection))?;
        assert_eq!(built.path, data.reference("churn", Some("v2")));
        // the two features and the model's two outputs
        assert_eq!((built.read, built.used, built.features), (103, 60, 4));
        assert_eq!(
            built.rejected,
            BTreeMap::from([("invalid_json", 1)]),
            "the bad line"
        );
        let dead = built.dead_letter.clone().expect("a dead-letter file");
        let text = std::fs::read_to_string(&dead).expect("read the dead letters");
        assert!(text.contains("invalid_json"), "{text}");
        assert_eq!(
            built.refusals(),
            format!("1 rejected: invalid_json 1; in {}", dead.display())
        );

        let profile = stored_one(&data, "churn", Some("v2"))?;
        assert_eq!(profile.events, 60);
        let names: Vec<&str> = profile.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["city", "prediction.class", "prediction.score", "x"]);
        assert!(
            profile.source.ends_with("train.jsonl (first 60)"),
            "{}",
            profile.source
        );
        let all = stored(&data)?;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, built.path);

        let detector = DriftDetector::new(DriftConfig::default())?;
        assert_eq!(load_into(&data, &detector)?, 1);
        Ok(())
    }

    #[test]
    fn no_matching_prediction_is_an_error_saying_what_was_read() {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let data = DataDir::new(tmp.path().join("data"));
        let file = tmp.path().join("train.jsonl");
        std::fs::write(&file, prediction(1, "other", "v1", 0, 1.0)).expect("write");
        let files = [file];
        let selection = Selection::default();
        let err = build(&data, &request(&files, None, &selection))
            .expect_err("nothing of churn")
            .to_string();
        assert!(
            err.contains("no prediction of model churn in 1 records (0 rejected)"),
            "{err}"
        );
        let missing = stored_one(&data, "churn", None)
            .expect_err("none saved")
            .to_string();
        assert!(
            missing.contains("no reference profile for churn (any version)"),
            "{missing}"
        );
    }
}
