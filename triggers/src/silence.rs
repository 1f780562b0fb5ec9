//! Silences: label matchers and a time range (clock time). A notification
//! leaves out the alerts a silence matches while it is active; when the
//! silence ends, those alerts are announced at the group's next turn.
//!
//! Silences are kept in `DATA_DIR/silences.json`, written whole, durably and
//! renamed into place ([`driftwatch_ingest::durable`]), so that the CLI of
//! another process can add or expire one while the service runs: the service
//! reads the file again when it changes. Adding and expiring read, change and
//! write the file under a lock (`silences.json.lock`), so concurrent CLIs
//! each keep the others' changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use driftwatch_ingest::durable;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io, state};

/// How a matcher compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (the whole value)
    Re,
    /// `!~`
    NotRe,
}

/// `name=value`, `name!=value`, `name=~regex` or `name!~regex`. A label the
/// Longest silence: a year, in ms.
pub const MAX_SILENCE_MS: i64 = 366 * 24 * 3_600_000;

/// Most bytes of a silence's comment, and of its author.
pub const MAX_SILENCE_TEXT: usize = 4096;

/// alert does not have counts as the empty string.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Matcher {
    /// The label.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value or pattern.
    pub value: String,
    regex: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// Reads `name<op>value`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let ops = [
            ("!=", MatchOp::Ne),
            ("=~", MatchOp::Re),
            ("!~", MatchOp::NotRe),
            ("=", MatchOp::Eq),
        ];
        let found = ops
            .iter()
            .filter_map(|(s, op)| text.find(s).map(|at| (at, *s, *op)))
            .min_by_key(|(at, s, _)| (*at, std::cmp::Reverse(s.len())));
        let Some((at, sym, op)) = found else {
            return Err(format!(
                "{text:?} is not a matcher: expected name=value, name!=value, name=~regex or name!~regex"
            ));
        };
        let name = text[..at].trim();
        let value = text[at + sym.len()..].trim().trim_matches('"');
        if name.is_empty() {
            return Err(format!(
                "{text:?} is not a matcher: the label name is missing"
            ));
        }
        let regex = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("{text:?}: not a regular expression: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// Whether `labels` satisfy it.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(r)) => r.is_match(v),
            (MatchOp::NotRe, Some(r)) => !r.is_match(v),
            _ => false,
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        };
        write!(f, "{}{op}{}", self.name, self.value)
    }
}

impl TryFrom<String> for Matcher {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        Matcher::parse(&s)
    }
}

impl From<Matcher> for String {
    fn from(m: Matcher) -> String {
        m.to_string()
    }
}

/// One silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Its id.
    pub id: String,
    /// Every matcher must hold for an alert to be silenced.
    pub matchers: Vec<Matcher>,
    /// Start, ms since the epoch (clock time).
    pub starts_at: i64,
    /// End (exclusive).
    pub ends_at: i64,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// Whether it is in force at `now`.
    pub fn active(&self, now: i64) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// `"active"`, `"pending"` (starts later) or `"ended"` at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.active(now) {
            "active"
        } else if self.starts_at > now {
            "pending"
        } else {
            "ended"
        }
    }

    /// Whether it silences an alert with these labels at `now`.
    pub fn silences(&self, labels: &BTreeMap<String, String>, now: i64) -> bool {
        self.active(now) && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// The silences of a data directory.
#[derive(Debug)]
pub struct Silences {
    path: PathBuf,
    list: Vec<Silence>,
    /// What the file was when last read: a rename gives a new inode.
    seen: Option<(Option<SystemTime>, u64)>,
}

/// Silences that ended longer ago than this are dropped from the file.
const KEEP_EXPIRED_MS: i64 = 7 * 86_400_000;

impl Silences {
    /// The silences kept in `path` (none yet when it does not exist).
    pub fn open(path: &Path) -> Result<Self> {
        let mut s = Silences {
            path: path.to_owned(),
            list: Vec::new(),
            seen: None,
        };
        s.refresh()?;
        Ok(s)
    }

    /// Reads the file again if it changed since it was last read.
    pub fn refresh(&mut self) -> Result<()> {
        let seen = match std::fs::metadata(&self.path) {
            Ok(m) => Some(version(&m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(format!("reading {}", self.path.display()))(e)),
        };
        if seen.is_some() && seen == self.seen {
            return Ok(());
        }
        self.reload()
    }

    /// Reads the file.
    fn reload(&mut self) -> Result<()> {
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.list.clear();
                self.seen = None;
                return Ok(());
            }
            Err(e) => return Err(io(format!("reading {}", self.path.display()))(e)),
        };
        let read = |e| io(format!("reading {}", self.path.display()))(e);
        let seen = version(&file.metadata().map_err(read)?);
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut text).map_err(read)?;
        self.list = serde_json::from_slice(&text)
            .map_err(|e| Error::Silence(format!("{}: {e}", self.path.display())))?;
        self.seen = Some(seen);
        Ok(())
    }

    /// Runs `change` on the silences as the file holds them now, and writes
    /// them, holding the file's lock throughout.
    fn update<T>(&mut self, change: impl FnOnce(&mut Vec<Silence>) -> Result<T>) -> Result<T> {
        let _lock = durable::Lock::acquire(&self.path)
            .map_err(io(format!("locking {}", self.path.display())))?;
        self.reload()?;
        let out = change(&mut self.list)?;
        let bytes = serde_json::to_vec_pretty(&self.list).map_err(state("silences"))?;
        durable::write(&self.path, &bytes)
            .map_err(io(format!("writing {}", self.path.display())))?;
        self.seen = std::fs::metadata(&self.path).ok().map(|m| version(&m));
        Ok(out)
    }

    /// Every silence kept (active, future and recently ended).
    pub fn list(&self) -> &[Silence] {
        &self.list
    }

    /// Whether an alert with these labels is silenced at `now`, and by which.
    pub fn silenced_by(&self, labels: &BTreeMap<String, String>, now: i64) -> Option<&Silence> {
        self.list.iter().find(|s| s.silences(labels, now))
    }

    /// Adds a silence of `matchers` from `starts_at` to `ends_at` (at most
    /// a year), its comment and author at most [`MAX_SILENCE_TEXT`] bytes;
    /// returns it with its id.
    pub fn add(
        &mut self,
        matchers: Vec<Matcher>,
        starts_at: i64,
        ends_at: i64,
        created_by: &str,
        comment: &str,
    ) -> Result<Silence> {
        if matchers.is_empty() {
            return Err(Error::Silence(
                "at least one matcher is needed (a silence of everything is refused)".into(),
            ));
        }
        if ends_at <= starts_at {
            return Err(Error::Silence("it must end after it starts".into()));
        }
        if ends_at.saturating_sub(starts_at) > MAX_SILENCE_MS {
            return Err(Error::Silence(
                "it may last at most a year (expire it and add another to go on)".into(),
            ));
        }
        if comment.len() > MAX_SILENCE_TEXT || created_by.len() > MAX_SILENCE_TEXT {
            return Err(Error::Silence(format!(
                "its comment and author may hold at most {MAX_SILENCE_TEXT} bytes each"
            )));
        }
        self.update(|list| {
            let text = format!(
                "{starts_at}\0{ends_at}\0{}\0{}",
                matchers
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join("\0"),
                list.len()
            );
            let silence = Silence {
                id: crate::key::short_hash(&text),
                matchers,
                starts_at,
                ends_at,
                created_by: created_by.to_owned(),
                comment: comment.to_owned(),
            };
            list.push(silence.clone());
            list.retain(|s| s.ends_at + KEEP_EXPIRED_MS > starts_at);
            Ok(silence)
        })
    }

    /// Ends the silence whose id starts with `id` at `now`.
    pub fn expire(&mut self, id: &str, now: i64) -> Result<Silence> {
        self.update(|list| {
            let found: Vec<usize> = (0..list.len())
                .filter(|&i| list[i].id.starts_with(id))
                .collect();
            let i = match found.as_slice() {
                [i] => *i,
                [] => return Err(Error::Silence(format!("no silence with id {id:?}"))),
                _ => {
                    return Err(Error::Silence(format!(
                        "{id:?} names more than one silence"
                    )));
                }
            };
            let s = &mut list[i];
            s.ends_at = s.ends_at.min(now).max(s.starts_at);
            Ok(s.clone())
        })
    }
}

/// What identifies one version of the file.
fn version(m: &std::fs::Metadata) -> (Option<SystemTime>, u64) {
    #[cfg(unix)]
    let id = std::os::unix::fs::MetadataExt::ino(m);
    #[cfg(not(unix))]
    let id = m.len();
    (m.modified().ok(), id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matchers_compare_labels_by_value_or_whole_pattern() {
        let l = labels(&[("model_id", "churn"), ("feature", "tenure_months")]);
        let m = |t: &str| Matcher::parse(t).expect("matcher");
        assert!(m("model_id=churn").matches(&l));
        assert!(!m("model_id!=churn").matches(&l));
        assert!(m("feature=~tenure.*").matches(&l));
        assert!(
            !m("feature=~tenure").matches(&l),
            "the pattern covers the whole value"
        );
        assert!(m("feature!~plan|country").matches(&l));
        assert!(m("team=").matches(&l), "a missing label is empty");
        assert!(m("model_id = \"churn\"").matches(&l));
        assert!(Matcher::parse("team").is_err());
        assert!(Matcher::parse("=x").is_err());
        assert!(Matcher::parse("f=~(").is_err());
        assert_eq!(m("a!~b").to_string(), "a!~b");
    }

    #[test]
    fn silences_persist_match_in_their_time_range_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("silences.json");
        let mut s = Silences::open(&path).expect("open");
        let m = vec![Matcher::parse("model_id=churn").expect("matcher")];
        let added = s.add(m, 1_000, 5_000, "ana", "retraining").expect("add");
        let l = labels(&[("model_id", "churn")]);
        assert!(s.silenced_by(&l, 999).is_none());
        assert!(s.silenced_by(&l, 1_000).is_some());
        assert!(
            s.silenced_by(&labels(&[("model_id", "fraud")]), 2_000)
                .is_none()
        );
        assert!(s.silenced_by(&l, 5_000).is_none(), "the end is exclusive");
        // another handle (another process) sees it and expires it early
        let mut other = Silences::open(&path).expect("open");
        assert_eq!(other.list(), std::slice::from_ref(&added));
        other.expire(&added.id[..6], 2_000).expect("expire");
        s.refresh().expect("refresh");
        assert!(s.silenced_by(&l, 1_500).is_some());
        assert!(s.silenced_by(&l, 2_000).is_none());
        assert!(s.add(Vec::new(), 0, 1, "", "").is_err());
        assert!(other.expire("zzz", 0).is_err());
    }

    /// Regression (issue 41, m): a 5 MB comment and a 1e11-year silence
    /// were taken.
    #[test]
    fn silences_are_bounded_in_length_and_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Silences::open(&dir.path().join("silences.json")).expect("open");
        let m = || vec![Matcher::parse("model_id=churn").expect("matcher")];
        let err = s
            .add(m(), 0, i64::MAX, "ana", "")
            .expect_err("a silence past a year");
        assert!(err.to_string().contains("at most a year"), "{err}");
        let long = "x".repeat(5 << 20);
        assert!(s.add(m(), 0, 1_000, "ana", &long).is_err());
        assert!(s.add(m(), 0, 1_000, &long, "").is_err());
        s.add(m(), 0, MAX_SILENCE_MS, "ana", &"x".repeat(MAX_SILENCE_TEXT))
            .expect("at the bounds");
    }
}
