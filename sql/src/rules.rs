//! Alert rules: `rules/*.toml` files, each holding `[[rule]]` entries (and
//! optionally `[[test]]` examples). Loading checks everything that can be
//! checked without running a query: one read-only `SELECT`, planned against
//! the tables' schemas with the window placeholders bound; a numeric
//! `value` column when there is one; known actions and severities; valid
//! annotation templates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;
use driftwatch_ingest::event::ARROW_TIMEZONE;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Result};

/// How long a condition must hold before the alert fires, or keeps firing
/// after it stops holding: a number of evaluated windows, or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Hold {
    /// Consecutive windows.
    Windows(u32),
    /// Event time.
    #[serde(serialize_with = "duration_text")]
    Duration(Duration),
}

impl<'de> Deserialize<'de> for Hold {
    /// A number of windows (`3`, `"3 windows"`) or a duration (`"30m"`);
    /// anything else is refused saying so, with what was written.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u32),
            Text(String),
        }
        let expected = "a number of windows (e.g. 3) or a duration (e.g. \"30m\")";
        match Written::deserialize(d)
            .map_err(|_| serde::de::Error::custom(format!("expected {expected}")))?
        {
            Written::Number(n) => Ok(Hold::Windows(n)),
            Written::Text(text) => {
                let t = text.trim();
                let windows = t
                    .strip_suffix("windows")
                    .or_else(|| t.strip_suffix("window"))
                    .and_then(|n| n.trim().parse().ok());
                if let Some(n) = windows {
                    return Ok(Hold::Windows(n));
                }
                humantime::parse_duration(t)
                    .map(Hold::Duration)
                    .map_err(|e| {
                        serde::de::Error::custom(format!("expected {expected}, got {text:?}: {e}"))
                    })
            }
        }
    }
}

impl Default for Hold {
    fn default() -> Self {
        Hold::Windows(0)
    }
}

/// A duration as text (`"1h 30m"`).
fn duration_text<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Severities a rule may carry.
pub const SEVERITIES: &[&str] = &["info", "warning", "critical"];

/// One rule as written in a file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name (letters, digits, `_`).
    pub name: String,
    /// What the rule watches, for people.
    #[serde(default)]
    pub description: String,
    /// One `SELECT`; each result row is an alert instance.
    pub sql: String,
    /// How long the condition must hold before the alert fires.
    #[serde(default, rename = "for")]
    pub hold_for: Hold,
    /// How long the alert keeps firing after the condition stops holding.
    #[serde(default)]
    pub keep_firing_for: Hold,
    /// `info`, `warning` or `critical`.
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Labels added to every instance.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Texts for people, templates over the row's columns (minijinja).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Names of actions (`[actions.<name>]` in the config) to run.
    #[serde(default)]
    pub actions: Vec<String>,
}

fn default_severity() -> String {
    "warning".to_owned()
}

/// The window an evaluation is for: it fills the placeholders `$model_id`,
/// `$model_version`, `$window_start` and `$window_end`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WindowRef {
    /// Model.
    pub model_id: String,
    /// Model version, if the events carry one.
    pub model_version: Option<String>,
    /// Window start, ms since the epoch.
    pub start: i64,
    /// Window end (exclusive), ms since the epoch.
    pub end: i64,
}

impl From<&driftwatch_detectors::WindowKey> for WindowRef {
    fn from(k: &driftwatch_detectors::WindowKey) -> Self {
        WindowRef {
            model_id: k.model_id.to_string(),
            model_version: k.model_version.as_deref().map(str::to_owned),
            start: k.start,
            end: k.end,
        }
    }
}

/// The placeholders a rule may use.
pub const PLACEHOLDERS: &[&str] = &["model_id", "model_version", "window_start", "window_end"];

impl WindowRef {
    /// The type of each value [`params`](Self::params) gives, by name.
    pub fn param_types() -> std::collections::HashMap<String, arrow::datatypes::DataType> {
        let any = WindowRef {
            model_id: String::new(),
            model_version: None,
            start: 0,
            end: 0,
        };
        match any.params() {
            ParamValues::Map(values) => values
                .into_iter()
                .map(|(name, v)| (name, v.value.data_type()))
                .collect(),
            ParamValues::List(_) => unreachable!("named parameters"),
        }
    }

    /// The placeholder values for this window.
    pub fn params(&self) -> ParamValues {
        let ts = |ms: i64| ScalarValue::TimestampMillisecond(Some(ms), Some(ARROW_TIMEZONE.into()));
        let map: std::collections::HashMap<String, ScalarValue> = [
            (
                "model_id".to_owned(),
                ScalarValue::Utf8(Some(self.model_id.clone())),
            ),
            (
                "model_version".to_owned(),
                ScalarValue::Utf8(self.model_version.clone()),
            ),
            ("window_start".to_owned(), ts(self.start)),
            ("window_end".to_owned(), ts(self.end)),
        ]
        .into_iter()
        .collect();
        ParamValues::from(map)
    }
}

/// One example in a rule file: table rows, the window to evaluate, and the
/// alert rows expected.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleTest {
    /// What the example shows.
    pub name: String,
    /// The rule evaluated (default: every rule of the file).
    #[serde(default)]
    pub rule: Option<String>,
    /// The window the evaluation is for.
    pub window: TestWindow,
    /// Rows of each table (as JSON-like objects; timestamps as RFC 3339).
    #[serde(default)]
    pub tables: BTreeMap<String, Vec<toml::Table>>,
    /// The alert rows expected: `rule` plus the row's columns.
    #[serde(default)]
    pub expect: Vec<toml::Table>,
}

/// The window of a [`RuleTest`].
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestWindow {
    /// Model.
    pub model_id: String,
    /// Version.
    #[serde(default)]
    pub model_version: Option<String>,
    /// RFC 3339.
    pub window_start: String,
    /// RFC 3339.
    pub window_end: String,
}

/// A rule file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFileText {
    #[serde(default)]
    rule: Vec<Rule>,
    #[serde(default)]
    test: Vec<RuleTest>,
}

/// A rule that passed every check, with its plan.
#[derive(Debug, Clone)]
pub struct LoadedRule {
    /// As written.
    pub rule: Arc<Rule>,
    /// The file it came from.
    pub file: PathBuf,
    /// Planned with placeholders.
    pub plan: LogicalPlan,
    /// The tables it reads (views resolved to their tables).
    pub reads: BTreeSet<String>,
    /// Its annotations, compiled (template name = annotation key).
    pub annotations: Arc<minijinja::Environment<'static>>,
}

impl LoadedRule {
    /// Whether the rule reads any of `tables`.
    pub fn reads_any(&self, tables: &[&str]) -> bool {
        tables.iter().any(|t| self.reads.contains(*t))
    }
}

/// The tables a plan reads, subqueries included; views count as the
/// tables under them.
fn tables_read(plan: &LogicalPlan) -> BTreeSet<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut names = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.table();
            let name = crate::engine::view_base(name).unwrap_or(name);
            names.insert(name.to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    names
}

/// The rule files of a directory.
#[derive(Debug, Default)]
pub struct RuleFiles {
    /// `(file, rules, tests)` in file-name order.
    pub files: Vec<(PathBuf, Vec<Rule>, Vec<RuleTest>)>,
    /// Files that could not be read as rules.
    pub errors: Vec<FileError>,
}

/// A rule file that could not be read as rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub file: PathBuf,
    /// What was wrong (TOML errors with their line).
    pub message: String,
}

impl From<&FileError> for Error {
    fn from(e: &FileError) -> Self {
        Error::RuleFile {
            file: e.file.clone(),
            message: e.message.clone(),
        }
    }
}

/// The `*.toml` files of `path` (a directory, or one file).
pub fn rule_paths(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let entries =
        std::fs::read_dir(path).map_err(crate::error::io(format!("reading {}", path.display())))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(crate::error::io(format!("reading {}", path.display())))?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "toml") && p.is_file() {
            paths.push(p);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Reads the rule files under `path`; files that do not parse are in `errors`.
pub fn read_rule_files(path: &Path) -> Result<RuleFiles> {
    let mut out = RuleFiles::default();
    for file in rule_paths(path)? {
        match std::fs::read_to_string(&file) {
            Ok(text) => out.add(file, &text),
            Err(e) => out.errors.push(FileError {
                file,
                message: e.to_string(),
            }),
        }
    }
    Ok(out)
}

impl RuleFiles {
    /// Adds one file's text (read from disk or bundled in the binary).
    pub fn add(&mut self, file: PathBuf, text: &str) {
        match toml::from_str::<RuleFileText>(text) {
            Ok(parsed) => self.files.push((file, parsed.rule, parsed.test)),
            Err(e) => self.errors.push(FileError {
                file,
                message: e.to_string().trim_end().replace('\n', "\n  "),
            }),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A window used to check plans: any values of the right types.
fn check_window() -> WindowRef {
    WindowRef {
        model_id: "check".into(),
        model_version: Some("check".into()),
        start: 0,
        end: 3_600_000,
    }
}

/// A value of a column of type `t`, as a result row shows it to annotations.
fn sample_value(t: &DataType) -> serde_json::Value {
    match t {
        t if t.is_integer() => 1.into(),
        t if t.is_numeric() => 0.5.into(),
        DataType::Boolean => true.into(),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            "2026-01-01T00:00:00Z".into()
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            serde_json::Value::Array(Vec::new())
        }
        DataType::Struct(_) | DataType::Map(..) => serde_json::Value::Object(Default::default()),
        _ => "check".into(),
    }
}

/// Checks one rule (everything but the name's uniqueness) and plans it.
pub fn check_rule(
    engine: &Engine,
    file: &Path,
    rule: &Rule,
    actions: &BTreeSet<String>,
) -> Result<LoadedRule> {
    let fail = |message: String| Error::Rule {
        file: file.to_owned(),
        rule: rule.name.clone(),
        message,
    };
    if !valid_name(&rule.name) {
        return Err(fail(
            "a rule name is letters, digits and _, starting with a letter or _".into(),
        ));
    }
    if !SEVERITIES.contains(&rule.severity.as_str()) {
        return Err(fail(format!(
            "severity {:?} is not one of {}",
            rule.severity,
            SEVERITIES.join(", ")
        )));
    }
    for action in &rule.actions {
        if !actions.contains(action) {
            let known = if actions.is_empty() {
                "none are configured".to_owned()
            } else {
                format!(
                    "configured: {}",
                    actions.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            return Err(fail(format!(
                "unknown action {action:?} ([actions.{action}] is not in the config; {known})"
            )));
        }
    }
    let mut env = minijinja::Environment::new();
    for (key, text) in &rule.annotations {
        env.add_template_owned(key.clone(), text.clone())
            .map_err(|e| fail(format!("annotation {key}: {e}")))?;
    }
    let plan = engine.plan(&rule.sql).map_err(|e| fail(e.to_string()))?;
    let schema = plan.schema();
    // annotations render over the result's columns: refuse one that reads a
    // column the query does not return, or uses a filter that does not exist
    let columns: BTreeSet<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let sample = serde_json::Value::Object(
        schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), sample_value(f.data_type())))
            .collect(),
    );
    for key in rule.annotations.keys() {
        crate::template::check(&env, key, &columns, std::slice::from_ref(&sample))
            .map_err(|e| fail(format!("annotation {key}: {e}")))?;
    }
    if let Ok(field) = schema.field_with_unqualified_name("value")
        && !field.data_type().is_numeric()
    {
        return Err(fail(format!(
            "the value column must be numeric, it is {}",
            field.data_type()
        )));
    }
    let mut seen = BTreeSet::new();
    for field in schema.fields() {
        if !seen.insert(field.name()) {
            return Err(fail(format!(
                "two result columns are named {}; name each column once (AS …)",
                field.name()
            )));
        }
    }
    engine
        .check(&plan, Some(check_window().params()))
        .map_err(|e| fail(e.to_string()))?;
    Ok(LoadedRule {
        rule: Arc::new(rule.clone()),
        file: file.to_owned(),
        reads: tables_read(&plan),
        plan,
        annotations: Arc::new(env),
    })
}

/// Checks and plans every rule of `files`: the rules that passed, and an
/// error for each that did not (files that did not parse included).
pub fn check_all(
    engine: &Engine,
    files: &RuleFiles,
    actions: &BTreeSet<String>,
) -> (Vec<LoadedRule>, Vec<Error>) {
    let mut errors: Vec<Error> = files.errors.iter().map(Error::from).collect();
    let mut loaded = Vec::new();
    let mut names: BTreeMap<&str, &Path> = BTreeMap::new();
    for (file, rules, _) in &files.files {
        for rule in rules {
            if let Some(first) = names.insert(&rule.name, file) {
                errors.push(Error::Rule {
                    file: file.clone(),
                    rule: rule.name.clone(),
                    message: format!("a rule of this name is already in {}", first.display()),
                });
                continue;
            }
            match check_rule(engine, file, rule, actions) {
                Ok(r) => loaded.push(r),
                Err(e) => errors.push(e),
            }
        }
    }
    (loaded, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_reads_windows_or_a_duration() {
        #[derive(Deserialize)]
        struct T {
            a: Hold,
            b: Hold,
        }
        let t: T = toml::from_str("a = 3\nb = \"90m\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.a, Hold::Windows(3));
        assert_eq!(t.b, Hold::Duration(Duration::from_secs(5400)));
        assert!(toml::from_str::<T>("a = 3\nb = \"soon\"").is_err());
        // regression (issue 41, item 14): `for = "2 windws"` was refused as
        // "data did not match any variant of untagged enum Hold"
        let t: T =
            toml::from_str("a = \"2 windows\"\nb = \"1 window\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.a, t.b), (Hold::Windows(2), Hold::Windows(1)));
        let err = toml::from_str::<T>("a = \"2 windws\"\nb = 1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("expected a number of windows (e.g. 3) or a duration (e.g. \"30m\"), got \"2 windws\""),
            "{err}"
        );
        assert!(!err.contains("untagged"), "{err}");
    }

    #[test]
    fn rule_names_are_identifiers() {
        assert!(valid_name("accuracy_drop"));
        assert!(valid_name("_x1"));
        assert!(!valid_name("1x"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }
}
