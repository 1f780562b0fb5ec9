//! Reference profiles in the data directory: built from training data or
//! recorded events, listed, and loaded into the drift detector at start.
//! Nothing here prints: [`build`] returns what it did, and the binary
//! says it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use driftwatch_detectors::drift::{DriftConfig, Profile, StoredProfile};
use driftwatch_detectors::labelfree::{
    BinaryCalibration, Calibration, CalibrationFigures, Encoding, LABEL_FREE_FORMAT, Multivariate,
    Positions, RowEncoder,
};
use driftwatch_detectors::multivariate::{
    DEFAULT_VARIANCE_SHARE, ErrorSums, Moments, Reconstruction,
};
use driftwatch_detectors::performance::estimate::{
    Isotonic, Multiclass, MulticlassFigures, ReferenceFigures,
};
use driftwatch_detectors::performance::{Outcome, Task, predicted_class};
use driftwatch_detectors::{
    Component, DriftDetector, LabelFreeReference, LabelFreeReferences, WindowSpec,
};
use driftwatch_ingest::{
    Admit, DeadLetterBudget, DeadLetterFile, DeadLetterSink, Decoder, DecoderConfig, Event,
    EventTime, FeatureKind, Label, LabelEvent, PredictionEvent, Record, format_time, open_file,
    open_table_file,
};
use tracing::{info, warn};

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

fn sha256_of(path: &Path) -> Result<[u8; 32]> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(io(path))?;
    Ok(sha2::Sha256::digest(&bytes).into())
}

/// The label-free reference beside the profile at `profile`, when there is
/// one built with that very profile (one left from an earlier build is
/// skipped, with a warning).
pub fn label_free_of(profile: &Path, stored: &StoredProfile) -> Result<Option<LabelFreeReference>> {
    let path = profile.with_extension("labelfree");
    if !path.is_file() {
        return Ok(None);
    }
    let reference = LabelFreeReference::load(&path)?;
    if reference.model_id != stored.model_id || reference.model_version != stored.model_version {
        return Err(Error::Damaged {
            path,
            message: format!(
                "label-free reference of {} {} beside the profile of {} {}",
                reference.model_id,
                reference
                    .model_version
                    .as_deref()
                    .unwrap_or("(any version)"),
                stored.model_id,
                stored.model_version.as_deref().unwrap_or("(any version)")
            ),
        });
    }
    if reference.profile_sha256 != sha256_of(profile)? {
        warn!(
            reference = %path.display(),
            "label-free reference built with another profile (a build was interrupted?): not used; build the reference again"
        );
        return Ok(None);
    }
    Ok(Some(reference))
}

/// Loads every stored label-free reference into `into`; how many there were.
pub fn load_label_free(data: &DataDir, into: &LabelFreeReferences) -> Result<usize> {
    let mut loaded = 0;
    for (profile, stored) in stored(data)? {
        let Some(reference) = label_free_of(&profile, &stored)? else {
            continue;
        };
        info!(model = %reference.model_id, version = reference.model_version.as_deref().unwrap_or("any"), calibration = reference.calibration.is_some(), multivariate = reference.multivariate.is_some(), "label-free reference loaded");
        into.set(reference);
        loaded += 1;
    }
    Ok(loaded)
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
            ..BuildRequest::new(config, model)
        },
    )?;
    let stored = StoredProfile::load(&built.path)?;
    shared.set(model, Some(version), Profile::from_stored(&stored));
    match label_free_of(&built.path, &stored)? {
        Some(l) => shared.label_free.set(l),
        None => shared.label_free.remove(model, Some(version)),
    }
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
    /// Every prediction.
    pub const ALL: Selection = Selection {
        from: None,
        until: None,
        first: None,
        table: false,
    };

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
    /// The model's task, when configured (else inferred from its first
    /// prediction): a binary classifier's positive class and threshold.
    pub task: Option<Task>,
    /// The service's windows: the reference's own windows give the
    /// multivariate drift band.
    pub window: WindowSpec,
}

impl<'a> BuildRequest<'a> {
    /// A request for every prediction of `model` (any version) in no
    /// file, with the settings' drift, decoder, task and window: set the
    /// rest with struct update syntax.
    pub fn new(config: &crate::Config, model: &'a str) -> Self {
        BuildRequest {
            files: &[],
            model,
            version: None,
            selection: &Selection::ALL,
            drift: config.drift.clone().unwrap_or_default(),
            decoder: config.decoder.clone(),
            dead_letter_max_bytes: config.dead_letter_max_bytes,
            task: config
                .performance
                .as_ref()
                .and_then(|p| p.tasks.get(model).cloned()),
            window: config.window,
        }
    }
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
    /// The label-free reference saved beside the profile, if any.
    pub label_free: Option<LabelFreeSummary>,
}

/// What the label-free reference of a [`build`] holds.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelFreeSummary {
    /// Its file.
    pub path: PathBuf,
    /// Labelled predictions of a binary classifier in the reference.
    pub labelled: u64,
    /// Labels not used: past [`MAX_CALIBRATION_ROWS`].
    pub labels_beyond_bound: u64,
    /// What the calibration's reference said (with enough labels of two
    /// classes or more).
    pub calibration: Option<CalibrationFigures>,
    /// Why there is no calibration, for a person (when there is none and
    /// the reason is known).
    pub no_calibration: Option<String>,
    /// Principal components kept, of how many encoded features.
    pub components: Option<(usize, usize)>,
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

/// Labelled reference predictions kept for the calibration, at most
/// (beyond it the labels are counted, not used).
pub const MAX_CALIBRATION_ROWS: usize = 2_000_000;

/// Labelled predictions a calibration needs (of both classes).
pub const MIN_CALIBRATION_ROWS: usize = 100;

/// Reads the files, calling `on` with each record and whether it is a
/// prediction the selection takes.
fn scan(request: &BuildRequest<'_>, mut on: impl FnMut(Record, bool) -> Result<()>) -> Result<()> {
    let BuildRequest {
        files,
        model,
        version,
        selection,
        ..
    } = *request;
    let mut decoder = Decoder::new(request.decoder.clone());
    let mut used = 0u64;
    for file in files {
        let mut source = if selection.table {
            open_table_file(file, model, version)?
        } else {
            open_file(file)?
        };
        while let Some(record) = source.next_record(&mut decoder)? {
            let selected = matches!(&record, Record::Event(Event::Prediction(p), _)
                if &*p.model_id == model
                    && (version.is_none() || p.model_version.as_deref() == version)
                    && selection.contains(p.timestamp)
                    && selection.first.is_none_or(|n| used < n));
            used += u64::from(selected);
            on(record, selected)?;
        }
    }
    Ok(())
}

/// Labelled predictions of a classifier's reference, joined by event id
/// when the labels come as label events (in either order).
#[derive(Default)]
struct Labelled {
    /// the configured task, else the first prediction's
    task: Option<Task>,
    /// whether the task was configured (else its class names are learnt)
    configured: bool,
    rows: Vec<(Outcome, Label)>,
    waiting: HashMap<String, Outcome>,
    /// labels before their prediction
    early: HashMap<String, Label>,
    /// labels beyond the bound
    dropped: u64,
}

impl Labelled {
    fn room(&mut self) -> bool {
        let full = self.rows.len() + self.waiting.len() + self.early.len() >= MAX_CALIBRATION_ROWS;
        self.dropped += u64::from(full);
        !full
    }

    fn prediction(&mut self, p: &PredictionEvent, configured: Option<&Task>) {
        let task = self.task.get_or_insert_with(|| {
            self.configured = configured.is_some();
            configured
                .cloned()
                .unwrap_or_else(|| Task::infer(&p.prediction))
        });
        if matches!(task, Task::Regression) {
            return;
        }
        if !self.configured {
            task.learn_classes(&p.prediction);
        }
        let outcome = Outcome::from(&p.prediction);
        let label = match &p.label {
            Some(label) => Some(label.clone()),
            None => self.early.remove(&p.event_id),
        };
        match label {
            Some(y) => self.rows.push((outcome, y)),
            None if self.room() => {
                self.waiting.insert(p.event_id.clone(), outcome);
            }
            None => {}
        }
    }

    fn label(&mut self, l: &LabelEvent) {
        match self.waiting.remove(&l.event_id) {
            Some(outcome) => self.rows.push((outcome, l.label.clone())),
            // before its prediction
            None if self.room() => {
                self.early.insert(l.event_id.clone(), l.label.clone());
            }
            None => {}
        }
    }

    /// The classes the labels name (at most `n`, sorted), for a message.
    fn classes_seen(&self, task: &Task, n: usize) -> String {
        let classes: std::collections::BTreeSet<String> = self
            .rows
            .iter()
            .filter_map(|(_, y)| task.label_class(y).map(|c| format!("{c:?}")))
            .take(100_000)
            .collect();
        let mut listed: Vec<String> = classes.iter().take(n).cloned().collect();
        if classes.len() > n {
            listed.push(format!("… ({} in all)", classes.len()));
        }
        listed.join(", ")
    }

    /// The calibration, with enough labels of two classes or more; else
    /// why there is none, for a person.
    fn calibration(&self) -> Result<Calibration, String> {
        let Some(task) = self.task.as_ref() else {
            return Err("no classifier predictions".into());
        };
        if matches!(task, Task::Regression) {
            return Err("a regression model (estimates are for classifiers)".into());
        }
        if self.rows.is_empty() {
            return Err("no labelled predictions".into());
        }
        if self.rows.len() < MIN_CALIBRATION_ROWS {
            return Err(format!(
                "{} labelled predictions (needs {MIN_CALIBRATION_ROWS})",
                self.rows.len()
            ));
        }
        let unfit =
            || "the labels could not be fitted (scores or probabilities all alike)".to_owned();
        match task {
            Task::Binary {
                positive,
                negative,
                threshold,
            } => {
                let rows: Vec<(f64, bool, bool)> = self
                    .rows
                    .iter()
                    .filter_map(|(o, y)| {
                        let score = o.score.filter(|s| s.is_finite())?;
                        let y = task.label_class(y)?;
                        let predicted = predicted_class(task, o)? == positive.as_str();
                        Some((score, y == positive.as_str(), predicted))
                    })
                    .collect();
                let positives = rows.iter().filter(|r| r.1).count();
                let negatives = self
                    .rows
                    .iter()
                    .filter(|(_, y)| task.label_class(y).is_some_and(|c| c == negative.as_str()))
                    .count();
                if positives == 0 || negatives == 0 {
                    return Err(format!(
                        "the labels name the classes {} but the scores are the probability of \
                         positive_class {positive:?} (negative_class {negative:?}): set both \
                         under [models.<id>] when they are other names",
                        self.classes_seen(task, 8)
                    ));
                }
                if rows.len() < MIN_CALIBRATION_ROWS {
                    return Err(format!(
                        "{} labelled predictions with a score (needs {MIN_CALIBRATION_ROWS})",
                        rows.len()
                    ));
                }
                if positives == rows.len() {
                    return Err(format!(
                        "every labelled prediction with a score is of the class {positive:?}"
                    ));
                }
                Ok(Calibration::Binary(BinaryCalibration {
                    positive: positive.to_string(),
                    threshold: *threshold,
                    isotonic: Isotonic::fit(rows.iter().map(|r| (r.0, r.1))).ok_or_else(unfit)?,
                    reference: ReferenceFigures::of(&rows).ok_or_else(unfit)?,
                }))
            }
            Task::Multiclass => {
                // the classes the probabilities name, sorted
                let classes: Vec<String> = self
                    .rows
                    .iter()
                    .flat_map(|(o, _)| o.probabilities.iter().map(|(c, _)| c.to_string()))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let index = |c: &str| classes.iter().position(|k| k == c);
                let rows: Vec<(Vec<f64>, usize, usize)> = self
                    .rows
                    .iter()
                    .filter_map(|(o, y)| {
                        if o.probabilities.is_empty() {
                            return None;
                        }
                        let p = classes
                            .iter()
                            .map(|c| {
                                o.probabilities
                                    .iter()
                                    .find(|(k, _)| k == c)
                                    .map_or(0.0, |(_, p)| *p)
                            })
                            .collect();
                        let y = task.label_class(y)?;
                        Some((p, index(&y)?, index(predicted_class(task, o)?)?))
                    })
                    .collect();
                let seen: std::collections::BTreeSet<usize> = rows.iter().map(|r| r.1).collect();
                if rows.len() < MIN_CALIBRATION_ROWS || seen.len() < 2 {
                    return Err(format!(
                        "{} labelled predictions with probabilities whose label is one of their \
                         classes, of {} classes (needs {MIN_CALIBRATION_ROWS} of two classes or \
                         more; the labels name {})",
                        rows.len(),
                        seen.len(),
                        self.classes_seen(task, 8)
                    ));
                }
                let fit: Vec<(Vec<f64>, usize)> =
                    rows.iter().map(|(p, y, _)| (p.clone(), *y)).collect();
                Ok(Calibration::Multiclass {
                    reference: MulticlassFigures::of(&rows, classes.len()).ok_or_else(unfit)?,
                    calibration: Multiclass::fit(classes, &fit).ok_or_else(unfit)?,
                })
            }
            Task::Regression => Err("a regression model (estimates are for classifiers)".into()),
        }
    }
}

/// The frequency-encoded columns of a profile's features (not the
/// model's outputs), each with its fill value.
fn row_encoder(profile: &StoredProfile) -> RowEncoder {
    let mut columns = Vec::new();
    for f in &profile.features {
        if f.name.starts_with("prediction.") {
            continue;
        }
        match f.kind {
            FeatureKind::Numeric => {
                let sketch = driftwatch_detectors::sketch::NumericSketch::restore(&f.numeric);
                if let Some(mean) = sketch.mean() {
                    columns.push((f.name.clone(), Encoding::Numeric, mean));
                }
            }
            FeatureKind::Categorical => {
                let total = f.categorical.total();
                if total == 0 {
                    continue;
                }
                let (counts, _) = f.categorical.frequencies();
                let shares: HashMap<String, f64> = counts
                    .iter()
                    .map(|(k, c)| ((*k).to_owned(), *c as f64 / total as f64))
                    .collect();
                let most = shares.values().copied().fold(0.0, f64::max);
                columns.push((f.name.clone(), Encoding::Frequency(shares), most));
            }
        }
    }
    RowEncoder::new(columns)
}

/// The multivariate reference: a second pass over the files for the
/// moments of the encoded rows, a third for the reference's own errors.
///
/// Those errors are taken out of sample: the components fitted to all rows
/// reconstruct those very rows better than any later ones (by about 3 % at
/// 8,000 rows of 28 features), which would put every production window
/// above a band of in-sample errors. So each row's error is measured
/// against the components fitted to the other half of the rows (even and
/// odd rows, two-fold), a slight overestimate of the production error
/// instead of an underestimate.
fn multivariate(
    request: &BuildRequest<'_>,
    profile: &StoredProfile,
) -> Result<Option<Multivariate>> {
    let encoder = row_encoder(profile);
    if encoder.len() < 2 {
        return Ok(None);
    }
    let (mut positions, mut row) = (Positions::default(), Vec::new());
    let mut halves = [Moments::new(encoder.len()), Moments::new(encoder.len())];
    let mut i = 0usize;
    scan(request, |record, selected| {
        if let (Record::Event(Event::Prediction(p), _), true) = (record, selected) {
            encoder.encode(&p, &mut positions, &mut row);
            halves[i % 2].add(&row);
            i += 1;
        }
        Ok(())
    })?;
    let mut moments = halves[0].clone();
    moments.merge(&halves[1]);
    let fit = |m: &Moments| Reconstruction::fit(m, DEFAULT_VARIANCE_SHARE);
    let (Some(reconstruction), Some(even), Some(odd)) =
        (fit(&moments), fit(&halves[0]), fit(&halves[1]))
    else {
        return Ok(None);
    };
    let size = request.window.size();
    let mut all = ErrorSums::default();
    let mut windows: BTreeMap<i64, ErrorSums> = BTreeMap::new();
    let mut i = 0usize;
    scan(request, |record, selected| {
        if let (Record::Event(Event::Prediction(p), _), true) = (record, selected) {
            encoder.encode(&p, &mut positions, &mut row);
            let other = if i.is_multiple_of(2) { &odd } else { &even };
            i += 1;
            let error = other.error_in_place(&mut row);
            all.add(error);
            windows
                .entry(p.timestamp - p.timestamp.rem_euclid(size))
                .or_default()
                .add(error);
        }
        Ok(())
    })?;
    // partial windows at the ends of the span would widen the band: only
    // windows of at least half the median window's rows count
    let mut sizes: Vec<u64> = windows.values().map(|w| w.n).collect();
    sizes.sort_unstable();
    let median = sizes.get(sizes.len() / 2).copied().unwrap_or(0);
    let reference_windows: Vec<f64> = windows
        .values()
        .filter(|w| w.n * 2 >= median)
        .filter_map(ErrorSums::mean)
        .collect();
    Ok(Some(Multivariate {
        encoder,
        reconstruction,
        reference: all,
        reference_windows: if reference_windows.len() >= 2 {
            reference_windows
        } else {
            Vec::new()
        },
    }))
}

/// Builds a model version's profile from the selected predictions of the
/// files (predictions of other models or versions, and labels, are
/// skipped) and saves it in the data directory. Refused records go to a
/// dead-letter file beside the profile, with their reasons. Beside it goes
/// the label-free reference: the calibration of a binary classifier whose
/// reference predictions have labels (inline, or label events of the same
/// files), and the principal components of its features.
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
        label_free: None,
    };
    let mut dead_letter: Option<DeadLetterFile> = None;
    let mut budget = DeadLetterBudget::new(request.dead_letter_max_bytes);
    let (mut first, mut last) = (EventTime::MAX, EventTime::MIN);
    let mut labelled = Labelled::default();
    scan(request, |record, selected| {
        built.read += 1;
        match record {
            Record::Event(Event::Prediction(p), _) if selected => {
                built.used += 1;
                first = first.min(p.timestamp);
                last = last.max(p.timestamp);
                detector.update(&mut state, &p);
                labelled.prediction(&p, request.task.as_ref());
            }
            Record::Event(Event::Label(l), _) if &*l.model_id == model => labelled.label(&l),
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
        Ok(())
    })?;
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

    let (calibration, no_calibration) = match labelled.calibration() {
        Ok(c) => (Some(c), None),
        Err(why) => (None, Some(why)),
    };
    let label_free = LabelFreeReference {
        format: LABEL_FREE_FORMAT,
        model_id: model.to_owned(),
        model_version: version.map(str::to_owned),
        profile_sha256: sha256_of(&built.path)?,
        calibration,
        multivariate: multivariate(request, &stored)?,
    };
    let path = data.label_free(model, version);
    built.label_free = Some(LabelFreeSummary {
        labelled: labelled.rows.len() as u64,
        labels_beyond_bound: labelled.dropped,
        calibration: label_free.calibration.as_ref().map(Calibration::figures),
        no_calibration,
        components: label_free
            .multivariate
            .as_ref()
            .map(|m| (m.reconstruction.components(), m.encoder.len())),
        path: path.clone(),
    });
    if label_free.calibration.is_none() && label_free.multivariate.is_none() {
        // an older build's file must not outlive the profile it was made with
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path)(e)),
            _ => {}
        }
        built.label_free = None;
    } else {
        label_free.save(&path)?;
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
            task: None,
            window: WindowSpec::tumbling(3_600_000).expect("a window"),
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

    #[test]
    fn labels_of_the_reference_join_their_predictions_in_either_order() -> Result<()> {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let data = DataDir::new(tmp.path().join("data"));
        let file = tmp.path().join("validation.jsonl");
        let label = |id: u32, y: bool| {
            format!(
                r#"{{"event_id":"e{id}","model_id":"churn","timestamp":"2026-11-02T00:00:00Z","label":"{}"}}"#,
                if y { "yes" } else { "no" }
            )
        };
        let mut lines = Vec::new();
        for id in 0..300 {
            // a third of the labels come first (the first before any
            // prediction); a third are positive
            let y = id % 3 == 1;
            if id % 3 == 0 {
                lines.push(label(id, y));
            }
            lines.push(prediction(id, "churn", "v2", id % 3600, f64::from(id)));
            if id % 3 != 0 {
                lines.push(label(id, y));
            }
        }
        // a label of another model is not ours
        lines.push(label(5, true).replace("churn", "other"));
        std::fs::write(&file, lines.join("\n")).expect("write");
        let files = [file];
        let selection = Selection::default();
        let mut r = request(&files, Some("v2"), &selection);
        r.task = Some(Task::Binary {
            positive: "yes".into(),
            negative: "no".into(),
            threshold: 0.5,
        });
        let built = build(&data, &r)?;
        let l = built.label_free.expect("label-free");
        assert_eq!(l.labelled, 300);
        assert_eq!(l.calibration.expect("calibrated").labelled, 300);
        let Some(Calibration::Binary(c)) =
            LabelFreeReference::load(&data.label_free("churn", Some("v2")))?.calibration
        else {
            panic!("a binary calibration")
        };
        assert!((c.reference.positive_share - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            c.reference.predicted_positive_share, 1.0,
            "every prediction says \"yes\""
        );
        // two features, one of them categorical
        assert_eq!(l.components.map(|c| c.1), Some(2));
        let stored = LabelFreeReference::load(&data.label_free("churn", Some("v2")))?;
        assert_eq!(stored.model_version.as_deref(), Some("v2"));
        let into = LabelFreeReferences::default();
        assert_eq!(load_label_free(&data, &into)?, 1);
        assert_eq!(into.len(), 1);
        // a profile built again without the label-free file's rebuild (a
        // build killed between the two) leaves the old one unused
        let profile = data.reference("churn", Some("v2"));
        let mut other = StoredProfile::load(&profile)?;
        other.source = "another file".into();
        other.save(&profile)?;
        let into = LabelFreeReferences::default();
        assert_eq!(load_label_free(&data, &into)?, 0);
        Ok(())
    }

    #[test]
    fn a_multiclass_reference_calibrates_each_class() -> Result<()> {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let data = DataDir::new(tmp.path().join("data"));
        let file = tmp.path().join("validation.jsonl");
        let lines: Vec<String> = (0..300)
            .map(|i| {
                // the model says its class with 0.8; it is right 3 times in 5
                let said = ["a", "b", "c"][i % 3];
                let truth = if i % 5 < 3 { said } else { ["b", "c", "a"][i % 3] };
                let p = |c: &str| if c == said { 0.8 } else { 0.1 };
                format!(
                    r#"{{"event_id":"m{i}","model_id":"kind","timestamp":"2026-11-01T00:00:{:02}Z","features":{{"x":{i},"y":{}}},"prediction":{{"probabilities":{{"a":{},"b":{},"c":{}}}}},"label":"{truth}"}}"#,
                    i % 60,
                    (i * 7) % 13,
                    p("a"),
                    p("b"),
                    p("c")
                )
            })
            .collect();
        std::fs::write(&file, lines.join("\n")).expect("write");
        let files = [file];
        let selection = Selection::default();
        let mut r = request(&files, None, &selection);
        r.model = "kind";
        let built = build(&data, &r)?;
        let figures = built
            .label_free
            .and_then(|l| l.calibration)
            .expect("calibrated");
        assert_eq!((figures.labelled, figures.classes), (300, 3));
        assert!((figures.realised.accuracy.expect("accuracy") - 0.6).abs() < 1e-12);
        assert_eq!(figures.calibration_error, None);
        let Some(Calibration::Multiclass { calibration, .. }) =
            LabelFreeReference::load(&data.label_free("kind", None))?.calibration
        else {
            panic!("a multi-class calibration")
        };
        assert_eq!(calibration.classes, ["a", "b", "c"]);
        // 0.8 for a class means right 3 times in 5 once calibrated
        let mut out = Vec::new();
        calibration.calibrate(&[0.8, 0.1, 0.1], &mut out);
        assert!((out[0] - 0.6).abs() < 1e-9, "{out:?}");
        Ok(())
    }

    /// A credit model on four features: `x1` decides (truth P(y = 1) =
    /// sigmoid(2 x1); the model's score sigmoid(4 x1), miscalibrated), `x2`
    /// plays no part, `x3` follows `x1`, `plan` is a category.
    struct Credit {
        rng: rand_pcg::Pcg64,
        seq: u64,
    }

    /// How the inputs move in a phase of the stream.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Phase {
        /// As in the reference.
        Same,
        /// Customers crowd near the decision boundary: accuracy falls.
        Harmful,
        /// The feature the model ignores moves.
        Harmless,
        /// `x3` no longer follows `x1` (each keeps its own distribution).
        Decorrelated,
    }

    impl Credit {
        fn prediction(
            &mut self,
            t: i64,
            phase: Phase,
            inline_label: bool,
        ) -> (PredictionEvent, bool) {
            use driftwatch_ingest::{Feature, FeatureValue, Prediction};
            use rand::RngExt;
            use rand_distr::{Distribution, Normal};
            let normal = |m: f64, s: f64| Normal::new(m, s).expect("normal");
            let rng = &mut self.rng;
            let x1 = normal(0.0, if phase == Phase::Harmful { 0.4 } else { 1.5 }).sample(rng);
            let x2 = normal(if phase == Phase::Harmless { 3.0 } else { 0.0 }, 1.0).sample(rng);
            let x3 = match phase {
                Phase::Decorrelated => normal(0.0, (0.64f64 * 2.25 + 0.36).sqrt()).sample(rng),
                _ => 0.8 * x1 + normal(0.0, 0.6).sample(rng),
            };
            let plan = ["a", "a", "a", "b", "b", "c"][rng.random_range(0..6)];
            let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
            let y = rng.random::<f64>() < sigmoid(2.0 * x1);
            let score = (sigmoid(4.0 * x1) * 1e4).round() / 1e4;
            self.seq += 1;
            let number = |name: &str, v: f64| Feature {
                name: Arc::from(name),
                value: FeatureValue::Numeric(v),
            };
            let event = PredictionEvent {
                event_id: format!("c{}", self.seq),
                model_id: Arc::from("credit"),
                model_version: Some(Arc::from("v1")),
                timestamp: t,
                features: vec![
                    number("x1", x1),
                    number("x2", x2),
                    number("x3", x3),
                    Feature {
                        name: Arc::from("plan"),
                        value: FeatureValue::Categorical(plan.into()),
                    },
                ],
                prediction: Prediction {
                    score: Some(score),
                    class: Some(if score >= 0.5 { "1" } else { "0" }.into()),
                    ..Prediction::default()
                },
                segments: Vec::new(),
                label: inline_label.then(|| Label::Class(if y { "1" } else { "0" }.into())),
            };
            (event, y)
        }
    }

    /// The Done-when of label-free estimation, through the pipeline: a
    /// reference built from a labelled training file, then a stream whose
    /// inputs move harmfully, harmlessly, and in how they move together.
    /// In every window of ≥ 1,000 predictions the realised accuracy is
    /// inside the estimate's band; the harmful shift moves the estimate
    /// below the reference's threshold, the harmless one does not; the
    /// decorrelated features raise the multivariate drift, which rests
    /// while nothing moves.
    #[test]
    fn estimates_follow_realised_accuracy_under_covariate_shift_through_the_pipeline() {
        use rand::SeedableRng;
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = crate::pipeline::tests::config(dir.path());
        config.sql.history = true;
        let hour = 3_600_000;
        let start = 1_793_491_200_000; // 2026-11-01
        let mut credit = Credit {
            rng: rand_pcg::Pcg64::seed_from_u64(21),
            seq: 0,
        };
        // the training set: ten hours before production, labels inline
        let train = dir.path().join("train.jsonl");
        let mut text = Vec::new();
        for i in 0..20_000 {
            let (e, _) = credit.prediction(start - 10 * hour + i * 1_800, Phase::Same, true);
            driftwatch_ingest::encode_json(&Event::Prediction(e), &mut text);
            text.push(b'\n');
        }
        std::fs::write(&train, &text).expect("training file");
        let files = [train];
        let built = build(
            &config.data_dir,
            &BuildRequest {
                files: &files,
                version: Some("v1"),
                ..BuildRequest::new(&config, "credit")
            },
        )
        .expect("built");
        let label_free = built.label_free.expect("a label-free reference");
        assert_eq!(label_free.labelled, 20_000);
        let figures = label_free.calibration.expect("calibrated");
        let error = figures.calibration_error.expect("binary");
        assert!(error > 0.05, "the scores are miscalibrated: {error}");
        assert_eq!(label_free.components.map(|c| c.1), Some(4));

        let process = crate::alerting::process_engine(&config).expect("engine");
        let mut pipeline = crate::pipeline::Pipeline::new(
            &config,
            Box::new(
                driftwatch_ingest::DeadLetterFile::open(&dir.path().join("dl.jsonl"))
                    .expect("dead letters"),
            ),
            "none".into(),
            Vec::new(),
            None,
            None,
        )
        .expect("pipeline");
        let runner =
            crate::alerting::runner(&config, None, "labelfree", Some(&process)).expect("runner");
        pipeline.set_rules(runner).expect("rules");
        let phases = [
            Phase::Same,
            Phase::Harmful,
            Phase::Harmless,
            Phase::Decorrelated,
        ];
        let mut buf = Vec::new();
        let mut seq = 0;
        for (p, phase) in phases.iter().enumerate() {
            for hour_of_phase in 0..3 {
                let from = start + (3 * p as i64 + hour_of_phase) * hour;
                for i in 0..2_000 {
                    let t = from + i * 1_800;
                    let (e, y) = credit.prediction(t, *phase, false);
                    let label = LabelEvent {
                        event_id: e.event_id.clone(),
                        model_id: Arc::clone(&e.model_id),
                        timestamp: t + 1_000,
                        label: Label::Class(if y { "1" } else { "0" }.into()),
                    };
                    for event in [Event::Prediction(e), Event::Label(label)] {
                        buf.clear();
                        driftwatch_ingest::encode_json(&event, &mut buf);
                        pipeline.handle_bytes(seq, &buf).expect("handled");
                        seq += 1;
                    }
                }
            }
        }
        pipeline.close_all().expect("closed");

        let (_, batches) = process
            .query(
                "SELECT e.window_start, e.predictions, e.value, e.lower, e.upper, e.alert, \
                 m.value AS realised, d.reconstruction_error, d.alert AS multivariate_alert \
                 FROM estimated_metrics e \
                 JOIN model_metrics m ON m.model_id = e.model_id AND m.window_start = e.window_start \
                   AND m.metric = 'accuracy' AND m.class IS NULL AND m.final \
                 JOIN multivariate_drift d ON d.model_id = e.model_id AND d.window_start = e.window_start \
                 WHERE e.model_id = 'credit' AND e.metric = 'accuracy' ORDER BY e.window_start",
            )
            .expect("query");
        use arrow::array::AsArray;
        use arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt64Type};
        let mut windows = 0;
        for b in &batches {
            for row in 0..b.num_rows() {
                let f = |c: usize| b.column(c).as_primitive::<Float64Type>().value(row);
                let start_of = b
                    .column(0)
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row);
                let phase = phases[((start_of - start) / hour / 3) as usize];
                let n = b.column(1).as_primitive::<UInt64Type>().value(row);
                let (estimate, lower, upper, realised) = (f(2), f(3), f(4), f(6));
                let alert = b.column(5).as_boolean().value(row);
                let multivariate = b.column(8).as_boolean().value(row);
                let what = format!(
                    "{phase:?} window {start_of}: estimate {estimate:.4} [{lower:.4}, {upper:.4}], \
                     realised {realised:.4}, reference {:.4}, error {:.3}",
                    figures.realised.accuracy.unwrap_or(f64::NAN),
                    f(7)
                );
                assert!(n >= 1_000, "{what}");
                assert!(lower <= realised && realised <= upper, "{what}");
                assert_eq!(alert, phase == Phase::Harmful, "{what}");
                if phase == Phase::Harmful {
                    let reference = figures.realised.accuracy.expect("accuracy");
                    assert!(estimate < reference - 0.1, "{what}");
                }
                // the multivariate figure watches the inputs, not the
                // model: it rests where nothing moved and sees the broken
                // correlation (a moved input may raise it too)
                match phase {
                    Phase::Same => assert!(!multivariate, "{what}"),
                    Phase::Decorrelated => assert!(multivariate, "{what}"),
                    Phase::Harmful | Phase::Harmless => {}
                }
                windows += 1;
            }
        }
        assert_eq!(windows, 12, "every window has its figures");
        // the report draws the estimate beside the realised accuracy
        let report = crate::report::gather(
            &process,
            &config.data_dir,
            "credit",
            crate::report::Span::default(),
        )
        .expect("report");
        assert_eq!(report.performance.len(), 12);
        for p in &report.performance {
            let (e, a) = (p.estimated.expect("estimated"), p.value.expect("realised"));
            assert!((e - a).abs() < 0.06, "{p:?}");
        }
    }
}
