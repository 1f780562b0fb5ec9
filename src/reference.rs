//! Reference profiles in the data directory: built from training data,
//! listed, shown, and loaded into the drift detector at start-up.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use driftwatch_detectors::drift::{Profile, StoredProfile};
use driftwatch_detectors::{Component, DriftDetector};
use driftwatch_ingest::{
    Admit, DeadLetterBudget, DeadLetterFile, DeadLetterSink, Decoder, Event, EventTime,
    FeatureKind, Record, format_time, open_file, open_table_file,
};
use tracing::info;

use crate::settings::Settings;

/// Every stored profile, sorted by path.
pub fn all(settings: &Settings) -> Result<Vec<(PathBuf, StoredProfile)>> {
    let root = settings.data_dir.references();
    let mut out = Vec::new();
    if !root.is_dir() {
        return Ok(out);
    }
    let mut paths = Vec::new();
    for model in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let model = model?.path();
        if model.is_dir() {
            for file in std::fs::read_dir(&model)? {
                let file = file?.path();
                if file.extension().is_some_and(|e| e == "profile") {
                    paths.push(file);
                }
            }
        }
    }
    paths.sort();
    for p in paths {
        let stored = StoredProfile::load(&p)?;
        out.push((p, stored));
    }
    Ok(out)
}

/// Loads every stored profile into the detector.
pub fn load_into(settings: &Settings, detector: &DriftDetector) -> Result<usize> {
    let profiles = all(settings)?;
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

/// Which predictions of the files go into a profile.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    from: Option<EventTime>,
    until: Option<EventTime>,
    first: Option<u64>,
    /// the files are plain feature tables
    table: bool,
}

impl Selection {
    /// From the command line's `--from`, `--until` (RFC 3339), `--first` and `--table`.
    pub fn parse(
        from: Option<&str>,
        until: Option<&str>,
        first: Option<u64>,
        table: bool,
    ) -> Result<Self> {
        let time = |flag: &str, s: Option<&str>| -> Result<Option<EventTime>> {
            s.map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.timestamp_millis())
                    .with_context(|| {
                        format!(
                            "{flag} {s:?}: expected an RFC 3339 time such as 2026-11-01T00:00:00Z"
                        )
                    })
            })
            .transpose()
        };
        let selection = Selection {
            from: time("--from", from)?,
            until: time("--until", until)?,
            first,
            table,
        };
        if let (Some(f), Some(u)) = (selection.from, selection.until)
            && f >= u
        {
            bail!("--from must be before --until");
        }
        Ok(selection)
    }

    fn contains(&self, t: EventTime) -> bool {
        self.from.is_none_or(|f| t >= f) && self.until.is_none_or(|u| t < u)
    }

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

/// Builds a model version's profile from the selected predictions of event
/// files (predictions of other models or versions, and labels, are skipped).
pub fn build(
    settings: &Settings,
    files: &[PathBuf],
    model: &str,
    version: Option<&str>,
    selection: &Selection,
) -> Result<PathBuf> {
    let config = settings.drift.clone().unwrap_or_default();
    let detector = DriftDetector::new(config)?;
    let mut state = detector.new_state();
    let mut decoder = Decoder::new(settings.decoder.clone());
    let (mut read, mut used, mut rejected) = (0u64, 0u64, 0u64);
    // a build's refusals, beside the profile, with their reasons
    let target = settings.data_dir.reference(model, version);
    let dead_letter_path = target.with_extension("dead-letter.jsonl");
    match std::fs::remove_file(&dead_letter_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", dead_letter_path.display()));
        }
        _ => {}
    }
    let mut dead_letter: Option<DeadLetterFile> = None;
    let mut budget = DeadLetterBudget::new(settings.dead_letter_max_bytes);
    let mut reasons: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut first, mut last) = (EventTime::MAX, EventTime::MIN);
    for file in files {
        let mut source = if selection.table {
            open_table_file(file, model, version)?
        } else {
            open_file(file)?
        };
        while let Some(record) = source.next_record(&mut decoder)? {
            read += 1;
            match record {
                Record::Event(Event::Prediction(p), _)
                    if &*p.model_id == model
                        && (version.is_none() || p.model_version.as_deref() == version)
                        && selection.contains(p.timestamp)
                        && selection.first.is_none_or(|n| used < n) =>
                {
                    used += 1;
                    first = first.min(p.timestamp);
                    last = last.max(p.timestamp);
                    detector.update(&mut state, &p);
                }
                Record::Event(..) => {}
                Record::Rejected(r) => {
                    rejected += 1;
                    *reasons.entry(r.reason.code()).or_default() += 1;
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
    }
    let refusals = if rejected == 0 {
        "0 rejected".to_owned()
    } else {
        let by_reason: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let place = match &dead_letter {
            Some(_) => format!("; in {}", dead_letter_path.display()),
            None => String::new(),
        };
        format!("{rejected} rejected: {}{place}", by_reason.join(", "))
    };
    if used == 0 {
        bail!(
            "no prediction of model {model}{} in {} records ({refusals})",
            version.map(|v| format!(" version {v}")).unwrap_or_default(),
            read
        );
    }
    let profile = Profile::from_state(&state, (first, last));
    let source: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let stored = profile.to_stored(
        model,
        version,
        &format!("{}{}", source.join(", "), selection.describe()),
    );
    stored.save(&target)?;
    println!(
        "reference for {model} {}: {used} predictions of {read} records ({refusals}), {} features → {}",
        version.unwrap_or("(any version)"),
        stored.features.len(),
        target.display()
    );
    Ok(target)
}

/// Prints the stored profiles, one line each.
pub fn list(settings: &Settings) -> Result<()> {
    let profiles = all(settings)?;
    if profiles.is_empty() {
        println!(
            "no reference profiles in {}",
            settings.data_dir.references().display()
        );
    }
    for (p, s) in profiles {
        println!(
            "{:<10} {:<8} {:>9} predictions  {:>3} features  {} → {}  from {}  ({})",
            s.model_id,
            s.model_version.as_deref().unwrap_or("any"),
            s.events,
            s.features.len(),
            format_time(s.span.0),
            format_time(s.span.1),
            s.source,
            p.display()
        );
    }
    Ok(())
}

/// Prints one profile feature by feature.
pub fn show(settings: &Settings, model: &str, version: Option<&str>) -> Result<()> {
    let p = settings.data_dir.reference(model, version);
    if !p.is_file() {
        bail!(
            "no reference profile for {model} {} ({})",
            version.unwrap_or("(any version)"),
            p.display()
        );
    }
    let stored = StoredProfile::load(&p)?;
    let profile = Profile::from_stored(&stored);
    println!(
        "{} {}: {} predictions, {} → {}, from {}",
        stored.model_id,
        stored.model_version.as_deref().unwrap_or("(any version)"),
        stored.events,
        format_time(stored.span.0),
        format_time(stored.span.1),
        stored.source
    );
    for (name, (kind, s)) in &profile.features {
        match kind {
            FeatureKind::Numeric => {
                let v = s.numeric.view();
                let q = |x: f64| v.quantile(x).map_or("-".into(), |q| format!("{q:.4}"));
                println!(
                    "  {name:<24} numeric      n {:>9}  mean {:>12.4}  sd {:>10.4}  min {}  p50 {}  max {}",
                    s.numeric.count(),
                    s.numeric.mean().unwrap_or(f64::NAN),
                    s.numeric.std_dev().unwrap_or(f64::NAN),
                    q(0.0),
                    q(0.5),
                    q(1.0)
                );
            }
            FeatureKind::Categorical => {
                let (mut counts, other) = s.categorical.frequencies();
                counts.sort_by_key(|c| std::cmp::Reverse(c.1));
                let top: Vec<String> = counts
                    .iter()
                    .take(6)
                    .map(|(k, c)| format!("{k} {c}"))
                    .collect();
                println!(
                    "  {name:<24} categorical  n {:>9}  {} categories{}: {}",
                    s.categorical.total(),
                    counts.len(),
                    if other > 0 {
                        format!(" (+{other} other)")
                    } else {
                        String::new()
                    },
                    top.join(", ")
                );
            }
        }
    }
    Ok(())
}
