//! `driftwatch reference`: the command-line side of the reference
//! profiles (flags in, lines out); building, storing and loading them is
//! the engine's ([`driftwatch_engine::reference`]).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use driftwatch_detectors::drift::Profile;
use driftwatch_engine::reference::{self, BuildRequest, Selection};
use driftwatch_ingest::{FeatureKind, format_time};

use driftwatch_engine::Config;

/// The selection of the command line's `--from`, `--until` (RFC 3339),
/// `--first` and `--table`.
pub fn selection(
    from: Option<&str>,
    until: Option<&str>,
    first: Option<u64>,
    table: bool,
) -> Result<Selection> {
    let time = |flag: &str, s: Option<&str>| -> Result<Option<i64>> {
        s.map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .with_context(|| {
                    format!("{flag} {s:?}: expected an RFC 3339 time such as 2026-11-01T00:00:00Z")
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

/// Builds a model version's profile from the selected predictions of event
/// files, and says what it holds.
pub fn build(
    settings: &Config,
    files: &[PathBuf],
    model: &str,
    version: Option<&str>,
    selection: &Selection,
) -> Result<PathBuf> {
    let built = reference::build(
        &settings.data_dir,
        &BuildRequest {
            files,
            version,
            selection,
            ..BuildRequest::new(settings, model)
        },
    )?;
    println!(
        "reference for {model} {}: {} predictions of {} records ({}), {} features → {}",
        version.unwrap_or("(any version)"),
        built.used,
        built.read,
        built.refusals(),
        built.features,
        built.path.display()
    );
    if let Some(l) = &built.label_free {
        println!("label-free: {} → {}", label_free_words(l), l.path.display());
    }
    Ok(built.path)
}

/// What a label-free reference holds, in words.
pub fn label_free_words(l: &driftwatch_engine::reference::LabelFreeSummary) -> String {
    let calibration = match &l.calibration {
        Some(c) => format!(
            "performance estimation from {} labelled predictions of {} classes (accuracy {}, ROC AUC {}{}{})",
            c.labelled,
            c.classes,
            c.realised
                .accuracy
                .map_or("-".into(), |a| format!("{a:.3}")),
            c.realised.roc_auc.map_or("-".into(), |a| format!("{a:.3}")),
            if c.classes > 2 { " macro" } else { "" },
            c.calibration_error
                .map(|e| format!(", the scores' calibration error {e:.3}"))
                .unwrap_or_default()
        ),
        None => format!(
            "no performance estimation: {}",
            l.no_calibration
                .as_deref()
                .unwrap_or("no labelled classifier predictions")
        ),
    };
    let multivariate = match l.components {
        Some((k, d)) => format!("multivariate drift on {k} components of {d} features"),
        None => "no multivariate drift (fewer than two features)".to_owned(),
    };
    let bound = if l.labels_beyond_bound > 0 {
        format!(
            "; {} labels past the bound of {} not used",
            l.labels_beyond_bound,
            driftwatch_engine::reference::MAX_CALIBRATION_ROWS
        )
    } else {
        String::new()
    };
    format!("{calibration}; {multivariate}{bound}")
}

/// Prints the stored profiles, one line each.
pub fn list(settings: &Config) -> Result<()> {
    let profiles = reference::stored(&settings.data_dir)?;
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
pub fn show(settings: &Config, model: &str, version: Option<&str>) -> Result<()> {
    let stored = reference::stored_one(&settings.data_dir, model, version)?;
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
    let path = settings.data_dir.reference(model, version);
    if let Some(l) = reference::label_free_of(&path, &stored)? {
        let calibration = l.calibration.as_ref().map(|c| c.figures());
        let summary = reference::LabelFreeSummary {
            path: path.with_extension("labelfree"),
            labelled: calibration.map_or(0, |c| c.labelled),
            labels_beyond_bound: 0,
            calibration,
            no_calibration: None,
            components: l
                .multivariate
                .as_ref()
                .map(|m| (m.reconstruction.components(), m.encoder.len())),
        };
        println!("label-free: {}", label_free_words(&summary));
    }
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
