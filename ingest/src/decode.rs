//! Decoding and validation: bytes (or a Parquet row) in, a typed [`Event`] or a
//! typed [`Reject`] out.

use std::collections::HashMap;
use std::sync::Arc;

use ahash::{HashSet, HashSetExt};

use crate::event::{
    Event, EventTime, Feature, FeatureKind, FeatureValue, Label, LabelEvent, Prediction,
    PredictionEvent,
};
use crate::names::{MAX_ID_BYTES, MAX_NAME_BYTES, check_name};
use crate::raw::{RawEvent, RawPrediction, RawTime, Scalar, ScalarMap, Str};
use crate::reject::Reject;

/// Declared feature kinds per model. A declared feature whose value has the
/// other kind is refused with [`Reject::FeatureTypeMismatch`].
#[derive(Debug, Clone, Default)]
pub struct FeatureSchema {
    models: HashMap<String, HashMap<String, FeatureKind>>,
}

impl FeatureSchema {
    /// Declares the kind of one feature of one model.
    pub fn declare(&mut self, model: &str, feature: &str, kind: FeatureKind) {
        self.models
            .entry(model.to_owned())
            .or_default()
            .insert(feature.to_owned(), kind);
    }

    /// The declared kind of a feature, if any.
    pub fn kind(&self, model: &str, feature: &str) -> Option<FeatureKind> {
        self.models.get(model)?.get(feature).copied()
    }

    fn model(&self, model: &str) -> Option<&HashMap<String, FeatureKind>> {
        self.models.get(model)
    }
}

/// Most segments one event may carry (`too_many_segments` past it): each
/// is a column value of the `events` table, kept for its retention.
pub const MAX_SEGMENTS: usize = 32;

/// Decoder settings.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    /// Largest accepted event in bytes.
    pub max_event_bytes: u64,
    /// Declared feature kinds.
    pub schema: FeatureSchema,
    /// How far ahead of the wall clock an event time may be (ms); `None`
    /// takes any time.
    pub max_future_skew_ms: Option<i64>,
    /// The wall clock the skew is measured from: `None` reads the system
    /// clock at every event; `Some(t)` is a fixed clock (tests).
    pub clock: Option<EventTime>,
}

/// Default of [`DecoderConfig::max_future_skew_ms`]: five minutes.
pub const DEFAULT_MAX_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            max_event_bytes: 1024 * 1024,
            schema: FeatureSchema::default(),
            max_future_skew_ms: Some(DEFAULT_MAX_FUTURE_SKEW_MS),
            clock: None,
        }
    }
}

impl DecoderConfig {
    /// The wall clock now, in ms since the epoch.
    fn now(&self) -> EventTime {
        self.clock.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as EventTime)
        })
    }

    /// Refuses an event time further ahead of the clock than the skew.
    fn check_future(&self, t: EventTime) -> Result<(), Reject> {
        let Some(skew_ms) = self.max_future_skew_ms else {
            return Ok(());
        };
        let now = self.now();
        if t > now.saturating_add(skew_ms) {
            return Err(Reject::FutureEvent {
                event_time: t,
                now,
                skew_ms,
            });
        }
        Ok(())
    }
}

/// Names that recur in every event (model ids, feature and segment names) are
/// stored once and shared. The number of distinct names kept is bounded so a
/// producer sending random names cannot grow memory without limit; past the
/// bound names are still correct, just not shared.
#[derive(Debug)]
struct Interner {
    names: HashSet<Arc<str>>,
    limit: usize,
}

impl Interner {
    fn new(limit: usize) -> Self {
        Interner {
            names: HashSet::with_capacity(256),
            limit,
        }
    }

    /// Once full, new names are no longer shared.
    fn is_full(&self) -> bool {
        self.names.len() >= self.limit
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(name) = self.names.get(s) {
            return Arc::clone(name);
        }
        let name: Arc<str> = Arc::from(s);
        if self.names.len() < self.limit {
            self.names.insert(Arc::clone(&name));
        }
        name
    }
}

/// Earliest accepted timestamp sent as a number of epoch milliseconds
/// (1973-03-03). Smaller numbers are almost always epoch *seconds* sent by
/// mistake; an RFC 3339 string has no unit to confuse and may be older.
const MIN_EPOCH_MS: i64 = 100_000_000_000;
/// Latest accepted timestamp: 9999-12-31T23:59:59.999Z.
const MAX_EPOCH_MS: i64 = 253_402_300_799_999;

/// Turns payloads into validated events. One decoder per source thread: it
/// keeps the interned names.
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    interner: Interner,
    /// Per model (by interned id), the feature names of its last valid event.
    /// Producers send the same features in the same order, so most names
    /// are found here by position, without hashing; a list that matches
    /// entirely was already checked for duplicates.
    layouts: HashMap<Arc<str>, Vec<Arc<str>>, ahash::RandomState>,
}

impl Decoder {
    /// A decoder with the given settings.
    pub fn new(config: DecoderConfig) -> Self {
        Decoder {
            config,
            interner: Interner::new(100_000),
            layouts: HashMap::default(),
        }
    }

    /// The clock future event times are checked against (the wall clock
    /// unless a test fixed it), in ms since the epoch.
    pub fn now(&self) -> EventTime {
        self.config.now()
    }

    /// Fixes the clock future event times are checked against (`None`: the
    /// wall clock). A source that must decide again as it decided before
    /// (a log applied after a crash) sets the clock it decided at.
    pub fn set_clock(&mut self, clock: Option<EventTime>) {
        self.config.clock = clock;
    }

    /// Its settings.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Largest accepted payload in bytes.
    pub fn max_event_bytes(&self) -> u64 {
        self.config.max_event_bytes
    }

    /// Decodes one JSON event.
    pub fn decode_json(&mut self, bytes: &[u8]) -> Result<Event, Reject> {
        if bytes.len() as u64 > self.config.max_event_bytes {
            return Err(Reject::Oversized {
                len: bytes.len() as u64,
                limit: self.config.max_event_bytes,
            });
        }
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => return Err(Reject::Empty),
            Some(b'{') => {}
            Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
                // valid JSON that is not an object, or garbage: tell them apart
                return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                    Ok(_) => Err(Reject::NotAnObject),
                    Err(e) => Err(Reject::InvalidJson(e.to_string())),
                };
            }
            Some(_) => {}
        }
        // validating UTF-8 once for the whole payload is cheaper than serde_json
        // validating every string it reads
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                return Err(Reject::InvalidJson(format!(
                    "not UTF-8: invalid byte at offset {}",
                    e.valid_up_to()
                )));
            }
        };
        let raw: RawEvent<'_> = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(e) => return Err(json_error(text, e)),
        };
        self.validate(raw)
    }

    /// Decodes one row of a plain feature table (a JSON object of feature
    /// values, no event fields) as a prediction of `model`, for building
    /// reference profiles from training data. The event has id `row-N`, time
    /// 0 and no model output.
    pub fn decode_table_json(
        &mut self,
        bytes: &[u8],
        model: &str,
        version: Option<&str>,
        row: u64,
    ) -> Result<Event, Reject> {
        if bytes.len() as u64 > self.config.max_event_bytes {
            return Err(Reject::Oversized {
                len: bytes.len() as u64,
                limit: self.config.max_event_bytes,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            Reject::InvalidJson(format!(
                "not UTF-8: invalid byte at offset {}",
                e.valid_up_to()
            ))
        })?;
        match text.trim_start().as_bytes().first() {
            None => return Err(Reject::Empty),
            Some(b'{') => {}
            Some(_) => return Err(Reject::NotAnObject),
        }
        let features: ScalarMap<'_> = serde_json::from_str(text).map_err(|e| {
            if e.is_data() {
                Reject::WrongType {
                    path: "features".into(),
                    detail: e.to_string(),
                }
            } else {
                Reject::InvalidJson(e.to_string())
            }
        })?;
        self.table_row(features, model, version, row)
    }

    /// A plain feature-table row as a prediction of `model` (see
    /// [`decode_table_json`](Self::decode_table_json)).
    pub fn table_row(
        &mut self,
        features: ScalarMap<'_>,
        model: &str,
        version: Option<&str>,
        row: u64,
    ) -> Result<Event, Reject> {
        check_name(|| "model_id".into(), model, MAX_ID_BYTES)?;
        if let Some(v) = version {
            check_name(|| "model_version".into(), v, MAX_ID_BYTES)?;
        }
        let model_id = self.interner.intern(model);
        let features = self.features(&model_id, Some(features))?;
        Ok(Event::Prediction(PredictionEvent {
            event_id: format!("row-{row}"),
            model_version: version.map(|v| self.interner.intern(v)),
            model_id,
            timestamp: 0,
            features,
            prediction: Prediction::default(),
            segments: Vec::new(),
            label: None,
        }))
    }

    /// Validates a raw event (from any syntax) into a typed event.
    pub fn validate(&mut self, raw: RawEvent<'_>) -> Result<Event, Reject> {
        let event_id = required_str(raw.event_id, "event_id")?;
        let model_id = required_str(raw.model_id, "model_id")?;
        check_name(|| "model_id".into(), &model_id, MAX_ID_BYTES)?;
        let timestamp = parse_time(raw.timestamp.ok_or(Reject::MissingField("timestamp"))?)?;
        self.config.check_future(timestamp)?;
        let model_id = self.interner.intern(&model_id);
        match (raw.prediction, raw.label) {
            (None, None) => Err(Reject::UnknownKind),
            (None, Some(label)) => Ok(Event::Label(LabelEvent {
                event_id: event_id.into_owned(),
                model_id,
                timestamp,
                label: parse_label(label)?,
            })),
            (Some(prediction), label) => {
                let model_version = match raw.model_version {
                    Some(Str(v)) if !v.is_empty() => {
                        check_name(|| "model_version".into(), &v, MAX_ID_BYTES)?;
                        Some(self.interner.intern(&v))
                    }
                    _ => None,
                };
                let features = self.features(&model_id, raw.features)?;
                let segments = self.segments(raw.segments)?;
                Ok(Event::Prediction(PredictionEvent {
                    event_id: event_id.into_owned(),
                    model_id,
                    model_version,
                    timestamp,
                    features,
                    prediction: parse_prediction(prediction)?,
                    segments,
                    label: label.map(parse_label).transpose()?,
                }))
            }
        }
    }

    fn features(
        &mut self,
        model_id: &Arc<str>,
        raw: Option<ScalarMap<'_>>,
    ) -> Result<Vec<Feature>, Reject> {
        let Some(ScalarMap(raw)) = raw else {
            return Ok(Vec::new());
        };
        let declared = self.config.schema.model(model_id);
        let layout = self.layouts.get(model_id);
        let mut same_layout = layout.is_some_and(|l| l.len() == raw.len());
        let mut features = Vec::with_capacity(raw.len());
        for (position, (Str(name), value)) in raw.into_iter().enumerate() {
            let value = match value {
                Scalar::Null => FeatureValue::Missing,
                Scalar::Int(i) => FeatureValue::Numeric(i as f64),
                // NaN / infinity cannot come from JSON; Parquet exports use NaN for missing
                Scalar::Float(x) if !x.is_finite() => FeatureValue::Missing,
                Scalar::Float(x) => FeatureValue::Numeric(x),
                Scalar::Bool(b) => {
                    FeatureValue::Categorical(if b { "true" } else { "false" }.into())
                }
                Scalar::Str(s) => FeatureValue::Categorical(s.as_ref().into()),
            };
            if let (Some(declared), Some(found)) = (declared, value.kind())
                && let Some(&expected) = declared.get(name.as_ref())
                && expected != found
            {
                return Err(Reject::FeatureTypeMismatch {
                    feature: name.into_owned(),
                    expected,
                    found,
                });
            }
            let name = match layout.and_then(|l| l.get(position)) {
                Some(known) if **known == *name => Arc::clone(known),
                _ => {
                    same_layout = false;
                    check_name(|| format!("features.{name}"), &name, MAX_NAME_BYTES)?;
                    self.interner.intern(&name)
                }
            };
            features.push(Feature { name, value });
        }
        if !same_layout {
            check_unique(
                features.iter().map(|f| &f.name),
                !self.interner.is_full(),
                "features",
            )?;
            // bounded: 10,000 models, layouts of up to 4,096 names
            if features.len() <= 4096
                && (self.layouts.len() < 10_000 || self.layouts.contains_key(model_id))
            {
                let names = features.iter().map(|f| Arc::clone(&f.name)).collect();
                self.layouts.insert(Arc::clone(model_id), names);
            }
        }
        Ok(features)
    }

    fn segments(&mut self, raw: Option<ScalarMap<'_>>) -> Result<Vec<(Arc<str>, String)>, Reject> {
        let Some(ScalarMap(raw)) = raw else {
            return Ok(Vec::new());
        };
        if raw.len() > MAX_SEGMENTS {
            return Err(Reject::TooMany {
                code: "too_many_segments",
                what: format!("{} segments in one event", raw.len()),
                key: "segments per event",
                limit: MAX_SEGMENTS as u64,
            });
        }
        let mut segments = Vec::with_capacity(raw.len());
        for (Str(name), value) in raw {
            if let Some(value) = value.to_category() {
                check_name(|| format!("segments.{name}"), &name, MAX_NAME_BYTES)?;
                segments.push((self.interner.intern(&name), value));
            }
        }
        check_unique(
            segments.iter().map(|(n, _)| n),
            !self.interner.is_full(),
            "segments",
        )?;
        Ok(segments)
    }
}

/// Refuses a name that appears twice. While the interner shares every name,
/// equal names are the same allocation, so comparing addresses suffices;
/// past its bound the names are compared as text.
fn check_unique<'a>(
    names: impl Iterator<Item = &'a Arc<str>>,
    all_interned: bool,
    what: &str,
) -> Result<(), Reject> {
    let duplicate = |name: &str| Err(Reject::Duplicate(format!("{what}.{name}")));
    if all_interned {
        let mut addresses: Vec<(*const u8, &Arc<str>)> = names.map(|n| (n.as_ptr(), n)).collect();
        addresses.sort_unstable_by_key(|(p, _)| *p);
        for pair in addresses.windows(2) {
            if pair[0].0 == pair[1].0 {
                return duplicate(pair[0].1);
            }
        }
    } else {
        let mut sorted: Vec<&Arc<str>> = names.collect();
        sorted.sort_unstable();
        for pair in sorted.windows(2) {
            if pair[0] == pair[1] {
                return duplicate(pair[0]);
            }
        }
    }
    Ok(())
}

fn required_str<'a>(
    value: Option<Str<'a>>,
    field: &'static str,
) -> Result<std::borrow::Cow<'a, str>, Reject> {
    match value {
        None => Err(Reject::MissingField(field)),
        Some(Str(s)) if s.trim().is_empty() => Err(Reject::EmptyField(field)),
        Some(Str(s)) => Ok(s),
    }
}

/// Parses an event time: RFC 3339 text or integer epoch milliseconds.
pub fn parse_time(raw: RawTime<'_>) -> Result<EventTime, Reject> {
    let t = match raw {
        // a date has no unit to confuse: any year RFC 3339 can write is taken
        RawTime::Text(Str(s)) => match chrono::DateTime::parse_from_rfc3339(&s) {
            Ok(dt) => return Ok(dt.timestamp_millis()),
            Err(_) => {
                return Err(Reject::BadTimestamp {
                    value: format!("{s:?}"),
                    detail: "not RFC 3339 (e.g. 2026-11-26T12:00:00.123Z)",
                });
            }
        },
        RawTime::Number(Scalar::Int(ms)) => ms,
        // 1.7e12 is an integer written as a float (JavaScript producers do this)
        RawTime::Number(Scalar::Float(x)) if x.fract() == 0.0 && x.abs() < 1e16 => x as i64,
        RawTime::Number(Scalar::Float(x)) => {
            return Err(Reject::BadTimestamp {
                value: x.to_string(),
                detail: "epoch milliseconds must be an integer",
            });
        }
        RawTime::Number(Scalar::Null) => return Err(Reject::MissingField("timestamp")),
        RawTime::Number(other) => {
            return Err(Reject::BadTimestamp {
                value: format!("{other:?}"),
                detail: "expected an RFC 3339 string or epoch milliseconds",
            });
        }
    };
    if t < MIN_EPOCH_MS {
        return Err(Reject::BadTimestamp {
            value: t.to_string(),
            detail: "before 1973-03-03: epoch seconds instead of milliseconds?",
        });
    }
    if t > MAX_EPOCH_MS {
        return Err(Reject::BadTimestamp {
            value: t.to_string(),
            detail: "after year 9999",
        });
    }
    Ok(t)
}

fn parse_label(raw: Scalar<'_>) -> Result<Label, Reject> {
    match raw {
        Scalar::Null => Err(Reject::MissingField("label")),
        Scalar::Int(i) => Ok(Label::Value(i as f64)),
        Scalar::Float(x) => Ok(Label::Value(x)),
        Scalar::Bool(b) => Ok(Label::Class(b.to_string())),
        Scalar::Str(s) if s.is_empty() => Err(Reject::EmptyField("label")),
        Scalar::Str(s) => Ok(Label::Class(s.into_owned())),
    }
}

fn probability(field: String, x: f64) -> Result<f64, Reject> {
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(Reject::OutOfRange {
            field,
            value: x,
            expected: "a probability in [0, 1]",
        })
    }
}

fn parse_prediction(raw: RawPrediction<'_>) -> Result<Prediction, Reject> {
    let mut out = Prediction {
        score: raw
            .score
            .map(|s| probability("prediction.score".into(), s))
            .transpose()?,
        class: raw.class.and_then(|c| c.to_category()),
        value: raw.value,
        probabilities: Vec::new(),
    };
    if let Some(ScalarMap(probs)) = raw.probabilities {
        out.probabilities.reserve(probs.len());
        for (Str(class), p) in probs {
            let path = || format!("prediction.probabilities.{class}");
            let p = match p {
                Scalar::Int(i) => i as f64,
                Scalar::Float(x) => x,
                other => {
                    return Err(Reject::WrongType {
                        path: path(),
                        detail: format!("expected a probability, found {other:?}"),
                    });
                }
            };
            out.probabilities
                .push((class.to_string(), probability(path(), p)?));
        }
    }
    if out.score.is_none()
        && out.class.is_none()
        && out.value.is_none()
        && out.probabilities.is_empty()
    {
        return Err(Reject::EmptyPrediction);
    }
    Ok(out)
}

/// Classifies a serde_json error. Type errors are parsed a second time with
/// path tracking so the reason names the field (`features.age`); this costs
/// nothing on the happy path.
fn json_error(text: &str, err: serde_json::Error) -> Reject {
    if !err.is_data() {
        return Reject::InvalidJson(err.to_string());
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, RawEvent<'_>>(&mut de) {
        Err(e) => Reject::WrongType {
            path: e.path().to_string(),
            detail: e.inner().to_string(),
        },
        Ok(_) => Reject::InvalidJson(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"event_id":"7c1e","model_id":"churn","model_version":"v12",
        "timestamp":"2026-11-26T12:00:00.123Z",
        "features":{"age":42,"plan":"pro","spend":13.5,"country":null,"vip":true},
        "prediction":{"score":0.83,"class":"1"},"segments":{"region":"eu"}}"#;

    fn decode(s: &str) -> Result<Event, Reject> {
        Decoder::new(DecoderConfig::default()).decode_json(s.as_bytes())
    }

    fn code(s: &str) -> &'static str {
        decode(s).expect_err("should be refused").code()
    }

    #[test]
    fn decodes_the_documented_prediction() {
        let Ok(Event::Prediction(p)) = decode(GOOD) else {
            panic!("not a prediction")
        };
        assert_eq!(p.event_id, "7c1e");
        assert_eq!(&*p.model_id, "churn");
        assert_eq!(p.model_version.as_deref(), Some("v12"));
        assert_eq!(p.timestamp, 1_795_694_400_123);
        let values: Vec<_> = p
            .features
            .iter()
            .map(|f| (&*f.name, f.value.clone()))
            .collect();
        assert_eq!(
            values,
            vec![
                ("age", FeatureValue::Numeric(42.0)),
                ("plan", FeatureValue::Categorical("pro".into())),
                ("spend", FeatureValue::Numeric(13.5)),
                ("country", FeatureValue::Missing),
                ("vip", FeatureValue::Categorical("true".into())),
            ]
        );
        assert_eq!(p.prediction.score, Some(0.83));
        assert_eq!(p.prediction.class.as_deref(), Some("1"));
        assert_eq!(p.segments, vec![(Arc::from("region"), "eu".to_owned())]);
    }

    #[test]
    fn decodes_labels_and_epoch_millis() {
        let Ok(Event::Label(l)) = decode(
            r#"{"event_id":"7c1e","model_id":"churn","timestamp":1795694400123,"label":"1"}"#,
        ) else {
            panic!("not a label")
        };
        assert_eq!(l.timestamp, 1_795_694_400_123);
        assert_eq!(l.label, Label::Class("1".into()));
        let Ok(Event::Label(l)) =
            decode(r#"{"event_id":"x","model_id":"eta","timestamp":1795694400123,"label":12.5}"#)
        else {
            panic!("not a label")
        };
        assert_eq!(l.label, Label::Value(12.5));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let Ok(Event::Prediction(p)) = decode(
            r#"{"event_id":"a\"b","model_id":"m","timestamp":1795608000000,"features":{"caf\u00e9":"x\ny"},"prediction":{"value":1}}"#,
        ) else {
            panic!()
        };
        assert_eq!(p.event_id, "a\"b");
        assert_eq!(&*p.features[0].name, "café");
        assert_eq!(
            p.features[0].value,
            FeatureValue::Categorical("x\ny".into())
        );
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let ts = r#""timestamp":"2026-11-26T12:00:00Z""#;
        assert_eq!(code(""), "empty");
        assert_eq!(code("   "), "empty");
        assert_eq!(code(r#"{"event_id":"a","model_id""#), "invalid_json");
        assert_eq!(code("not json"), "invalid_json");
        assert_eq!(code("[1,2]"), "not_an_object");
        assert_eq!(code("42"), "not_an_object");
        assert_eq!(
            code(&format!(r#"{{"model_id":"m",{ts},"label":"1"}}"#)),
            "missing_field"
        );
        assert_eq!(
            code(&format!(
                r#"{{"event_id":"","model_id":"m",{ts},"label":"1"}}"#
            )),
            "empty_field"
        );
        assert_eq!(
            code(r#"{"event_id":"a","model_id":"m","label":"1"}"#),
            "missing_field"
        );
        assert_eq!(
            code(&format!(
                r#"{{"event_id":5,"model_id":"m",{ts},"label":"1"}}"#
            )),
            "wrong_type"
        );
        assert_eq!(
            code(r#"{"event_id":"a","model_id":"m","timestamp":"yesterday","label":"1"}"#),
            "bad_timestamp"
        );
        assert_eq!(
            code(r#"{"event_id":"a","model_id":"m","timestamp":1795608000,"label":"1"}"#),
            "bad_timestamp"
        );
        assert_eq!(
            code(r#"{"event_id":"a","model_id":"m","timestamp":1795694400000.5,"label":"1"}"#),
            "bad_timestamp"
        );
        assert_eq!(
            code(r#"{"event_id":"a","model_id":"m","timestamp":true,"label":"1"}"#),
            "wrong_type"
        );
        assert_eq!(
            code(&format!(
                r#"{{"event_id":"a","model_id":"m",{ts},"label":"","prediction":{{"score":0.1}}}}"#
            )),
            "empty_field"
        );
        assert_eq!(
            code(&format!(r#"{{"event_id":"a","model_id":"m",{ts}}}"#)),
            "unknown_kind"
        );
        assert_eq!(
            code(&format!(
                r#"{{"event_id":"a","model_id":"m",{ts},"prediction":{{}}}}"#
            )),
            "empty_prediction"
        );
        assert_eq!(
            code(&format!(
                r#"{{"event_id":"a","model_id":"m",{ts},"prediction":{{"score":1.5}}}}"#
            )),
            "out_of_range"
        );
        assert_eq!(
            code(&format!(
                r#"{{"event_id":"a","model_id":"m",{ts},"features":{{"x":1,"x":2}},"prediction":{{"score":0.5}}}}"#
            )),
            "duplicate"
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let err = decode(
            r#"{"event_id":"a","model_id":"m","timestamp":1795608000000,"features":{"age":[1,2]},"prediction":{"score":0.5}}"#,
        )
        .expect_err("array feature");
        let Reject::WrongType { path, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(path, "features.age");
        let err = decode(
            r#"{"event_id":"a","model_id":"m","timestamp":1795608000000,"prediction":{"score":"high"}}"#,
        )
        .expect_err("string score");
        assert!(err.to_string().contains("prediction.score"), "{err}");
    }

    #[test]
    fn declared_kinds_are_enforced() {
        let mut schema = FeatureSchema::default();
        schema.declare("churn", "age", FeatureKind::Numeric);
        let mut decoder = Decoder::new(DecoderConfig {
            schema,
            ..DecoderConfig::default()
        });
        let event = |age: &str| {
            format!(
                r#"{{"event_id":"a","model_id":"churn","timestamp":1795608000000,"features":{{"age":{age}}},"prediction":{{"score":0.5}}}}"#
            )
        };
        assert!(decoder.decode_json(event("42").as_bytes()).is_ok());
        assert!(decoder.decode_json(event("null").as_bytes()).is_ok());
        let err = decoder
            .decode_json(event(r#""42""#).as_bytes())
            .expect_err("string age");
        assert_eq!(
            err.to_string(),
            "feature `age` is declared numeric but the event has a categorical value"
        );
    }

    #[test]
    fn oversized_events_are_refused_before_parsing() {
        let mut decoder = Decoder::new(DecoderConfig {
            max_event_bytes: 64,
            ..DecoderConfig::default()
        });
        assert_eq!(
            decoder
                .decode_json(GOOD.as_bytes())
                .expect_err("too big")
                .code(),
            "oversized"
        );
    }

    #[test]
    fn rfc3339_times_before_1973_are_taken_but_small_epoch_numbers_are_not() {
        let event = |ts: &str| {
            format!(
                r#"{{"event_id":"a","model_id":"rain","timestamp":{ts},"prediction":{{"score":0.5}}}}"#
            )
        };
        let Ok(Event::Prediction(p)) = decode(&event(r#""1950-01-01T00:00:00Z""#)) else {
            panic!("1950 refused")
        };
        assert_eq!(p.timestamp, -631_152_000_000);
        assert!(decode(&event(r#""1969-12-31T23:59:59.999Z""#)).is_ok());
        assert_eq!(code(&event("-631152000000")), "bad_timestamp");
        assert_eq!(code(&event("1795608000")), "bad_timestamp");
    }

    #[test]
    fn times_ahead_of_the_clock_are_refused_past_the_skew() {
        let now = 1_795_694_400_000; // 2026-11-26T12:00:00Z
        let mut decoder = Decoder::new(DecoderConfig {
            clock: Some(now),
            ..DecoderConfig::default()
        });
        let event = |ts: &str, label: bool| {
            let kind = if label {
                r#""label":"1""#
            } else {
                r#""prediction":{"score":0.5}"#
            };
            format!(r#"{{"event_id":"a","model_id":"m","timestamp":"{ts}",{kind}}}"#)
        };
        for label in [false, true] {
            assert!(
                decoder
                    .decode_json(event("2026-11-26T12:04:59Z", label).as_bytes())
                    .is_ok()
            );
            let err = decoder
                .decode_json(event("9999-12-31T23:00:00Z", label).as_bytes())
                .expect_err("far future");
            assert_eq!(err.code(), "future_event");
            assert!(err.to_string().contains("ingest.max_future_skew"), "{err}");
            assert_eq!(
                decoder
                    .decode_json(event("2026-11-26T12:05:01Z", label).as_bytes())
                    .expect_err("past the skew")
                    .code(),
                "future_event"
            );
        }
        let mut unchecked = Decoder::new(DecoderConfig {
            clock: Some(now),
            max_future_skew_ms: None,
            ..DecoderConfig::default()
        });
        assert!(
            unchecked
                .decode_json(event("9999-12-31T23:00:00Z", false).as_bytes())
                .is_ok()
        );
    }

    /// Issue 41, M4: 20,000 segments in one event were accepted, and
    /// afterwards every query on `events` failed ("Resources exhausted").
    #[test]
    fn segments_past_the_bound_are_refused() {
        let segments = |n: usize| {
            (0..n)
                .map(|i| format!(r#""s{i}":"v""#))
                .collect::<Vec<_>>()
                .join(",")
        };
        let event = |n| {
            format!(
                r#"{{"event_id":"a","model_id":"m","timestamp":1795608000000,"segments":{{{}}},"prediction":{{"score":0.5}}}}"#,
                segments(n)
            )
        };
        assert_eq!(decode(&event(MAX_SEGMENTS)).map(|_| ()), Ok(()));
        let err = decode(&event(20_000)).expect_err("20,000 segments");
        assert_eq!(err.code(), "too_many_segments");
        assert_eq!(
            err.to_string(),
            "20000 segments in one event; the limit is segments per event = 32"
        );
    }

    #[test]
    fn ids_and_names_past_their_limits_are_refused_with_the_field() {
        let long = "m".repeat(250);
        let err = decode(&format!(
            r#"{{"event_id":"a","model_id":"{long}","timestamp":1795608000000,"label":"1"}}"#
        ))
        .expect_err("long model id");
        assert_eq!(err.code(), "invalid_name");
        assert!(err.to_string().contains("`model_id`"), "{err}");
        assert!(err.to_string().contains("limit is 64 bytes"), "{err}");
        let err = decode(&format!(
            r#"{{"event_id":"a","model_id":"m","model_version":"{long}","timestamp":1795608000000,"prediction":{{"score":0.5}}}}"#
        ))
        .expect_err("long version");
        assert!(err.to_string().contains("`model_version`"), "{err}");
        let err = decode(
            r#"{"event_id":"a","model_id":"m","timestamp":1795608000000,"features":{"x\u001b[2J":1},"prediction":{"score":0.5}}"#,
        )
        .expect_err("escape in a feature name");
        assert_eq!(err.code(), "invalid_name");
        let err = decode(
            r#"{"event_id":"a","model_id":"m","timestamp":1795608000000,"segments":{"a\nb":"eu"},"prediction":{"score":0.5}}"#,
        )
        .expect_err("newline in a segment name");
        assert_eq!(err.code(), "invalid_name");
        assert!(decode(&format!(
            r#"{{"event_id":"a","model_id":"{}","timestamp":1795608000000,"prediction":{{"score":0.5}}}}"#,
            "/".repeat(64)
        ))
        .is_ok());
    }

    #[test]
    fn a_prediction_may_carry_its_label() {
        let Ok(Event::Prediction(p)) = decode(
            r#"{"event_id":"r1","model_id":"rain","timestamp":"1950-01-02T00:00:00Z","features":{"humidity":81},"prediction":{"score":0.7},"label":"1"}"#,
        ) else {
            panic!("a labelled prediction refused")
        };
        assert_eq!(p.label, Some(Label::Class("1".into())));
        let label = p.carried_label().expect("carried");
        assert_eq!(
            (label.event_id.as_str(), label.timestamp),
            ("r1", p.timestamp)
        );
        let mut json = Vec::new();
        crate::encode_json(&Event::Prediction(p.clone()), &mut json);
        assert_eq!(
            decode(std::str::from_utf8(&json).expect("utf-8")),
            Ok(Event::Prediction(p))
        );
    }

    #[test]
    fn names_are_interned() {
        let mut decoder = Decoder::new(DecoderConfig::default());
        let (Ok(Event::Prediction(a)), Ok(Event::Prediction(b))) = (
            decoder.decode_json(GOOD.as_bytes()),
            decoder.decode_json(GOOD.as_bytes()),
        ) else {
            panic!()
        };
        assert!(Arc::ptr_eq(&a.model_id, &b.model_id));
        assert!(Arc::ptr_eq(&a.features[0].name, &b.features[0].name));
    }
}
