//! Why an event was refused. Every refusal is typed, has a stable code for
//! counting, and a message that says what was wrong and where in the event.

use crate::event::{EventTime, FeatureKind, format_time};

/// The reason an event was refused. The event goes to the dead-letter sink
/// with this reason; nothing is dropped silently.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    /// The payload is larger than `ingest.max_event_bytes`.
    #[error("event of {len} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Size of the payload in bytes.
        len: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The payload is empty or only white space.
    #[error("empty payload")]
    Empty,
    /// The payload is not valid JSON (or not UTF-8).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The payload is JSON but not an object.
    #[error("event is not a JSON object")]
    NotAnObject,
    /// A required field is absent or `null`.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A required string field is empty.
    #[error("field `{0}` is empty")]
    EmptyField(&'static str),
    /// A field has the wrong JSON type.
    #[error("wrong type at `{path}`: {detail}")]
    WrongType {
        /// Dotted path of the field, e.g. `features.age`.
        path: String,
        /// What was found and what was expected.
        detail: String,
    },
    /// The timestamp is neither RFC 3339 nor plausible epoch milliseconds.
    #[error("bad timestamp {value}: {detail}")]
    BadTimestamp {
        /// The value as sent.
        value: String,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// The event has neither a `prediction` nor a `label`.
    #[error("event has neither `prediction` nor `label`")]
    UnknownKind,
    /// The prediction object carries none of the known outputs.
    #[error("`prediction` has none of `score`, `class`, `value`, `probabilities`")]
    EmptyPrediction,
    /// A number is outside the range its field allows.
    #[error("`{field}` = {value} is out of range: expected {expected}")]
    OutOfRange {
        /// Dotted path of the field.
        field: String,
        /// The value as sent.
        value: f64,
        /// The allowed range.
        expected: &'static str,
    },
    /// A feature's value has a different kind than the one declared for it.
    #[error("feature `{feature}` is declared {expected} but the event has a {found} value")]
    FeatureTypeMismatch {
        /// Feature name.
        feature: String,
        /// The declared kind.
        expected: FeatureKind,
        /// The kind found in the event.
        found: FeatureKind,
    },
    /// A feature or segment name appears twice in one event.
    #[error("`{0}` appears twice in the event")]
    Duplicate(String),
    /// A Kafka message without a key: the key must be the `model_id`.
    #[error("message has no key; the key must be the event's model_id")]
    MissingKey,
    /// A Kafka message whose key is not its event's `model_id`.
    #[error("message key {key:?} is not the event's model_id {model_id:?}")]
    KeyMismatch {
        /// The message key.
        key: String,
        /// The event's model.
        model_id: String,
    },
    /// An id or name is too long or holds a control character.
    #[error("invalid name at `{field}`: {detail}")]
    InvalidName {
        /// Where the name is: `model_id`, `model_version`, `features.<name>`.
        field: String,
        /// What is wrong with it, naming the limit.
        detail: String,
    },
    /// The event time is further ahead of the wall clock than
    /// `ingest.max_future_skew` allows: a producer's clock is wrong, and
    /// taking the time would close every window before it.
    #[error(
        "event time {} is {}s ahead of the clock ({}); the limit is ingest.max_future_skew = {}s",
        format_time(*event_time),
        (*event_time - *now) / 1000,
        format_time(*now),
        *skew_ms / 1000
    )]
    FutureEvent {
        /// The event's time.
        event_time: EventTime,
        /// The wall clock when it was decoded.
        now: EventTime,
        /// The configured skew.
        skew_ms: i64,
    },
    /// Taking the event would take the live state past a configured limit
    /// (models, versions of a model, feature names, open windows).
    #[error("{what}; the limit is {key} = {limit}")]
    TooMany {
        /// The reason's code: `too_many_models`, `too_many_versions`,
        /// `too_many_features` or `too_many_windows`.
        code: &'static str,
        /// What would pass the limit.
        what: String,
        /// The configuration key of the limit.
        key: &'static str,
        /// Its value.
        limit: u64,
    },
    /// The event arrived after every window it belongs to had closed.
    #[error(
        "late event: event time {} is before the watermark {} (window ended {})",
        format_time(*event_time),
        format_time(*watermark),
        format_time(*window_end)
    )]
    Late {
        /// The event's time.
        event_time: EventTime,
        /// The watermark when the event arrived.
        watermark: EventTime,
        /// End of the last window the event belongs to.
        window_end: EventTime,
    },
}

impl Reject {
    /// Stable machine-readable code, used for counting and in dead-letter records.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::Oversized { .. } => "oversized",
            Reject::Empty => "empty",
            Reject::InvalidJson(_) => "invalid_json",
            Reject::NotAnObject => "not_an_object",
            Reject::MissingField(_) => "missing_field",
            Reject::EmptyField(_) => "empty_field",
            Reject::WrongType { .. } => "wrong_type",
            Reject::BadTimestamp { .. } => "bad_timestamp",
            Reject::UnknownKind => "unknown_kind",
            Reject::EmptyPrediction => "empty_prediction",
            Reject::OutOfRange { .. } => "out_of_range",
            Reject::FeatureTypeMismatch { .. } => "feature_type_mismatch",
            Reject::Duplicate(_) => "duplicate",
            Reject::Late { .. } => "late_event",
            Reject::InvalidName { .. } => "invalid_name",
            Reject::TooMany { code, .. } => code,
            Reject::FutureEvent { .. } => "future_event",
            Reject::MissingKey => "missing_key",
            Reject::KeyMismatch { .. } => "key_mismatch",
        }
    }
}
