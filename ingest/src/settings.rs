//! Configuration values as written and how they are checked: the error every
//! crate's settings refuse a value with ([`Invalid`]: the key, the value,
//! what was expected), the one parser of durations (`"5m"`) and sizes
//! (`"64MiB"`), and the `[ingest]` section.
//!
//! Each library crate owns its sections in this shape: a `Raw…` struct as
//! written (`deny_unknown_fields`, defaults), validated once into the
//! settings its code trusts. The binary only layers the sources (defaults,
//! file, environment) and composes the validated parts.
//!
//! ```
//! use driftwatch_ingest::settings::{duration_ms, size_bytes};
//!
//! assert_eq!(duration_ms("window.size", "1h 30m").unwrap(), 5_400_000);
//! assert_eq!(size_bytes("sql.memory_limit", "64MiB", 0, "\"64MiB\"").unwrap(), 64 << 20);
//! let err = duration_ms("window.size", "soon").unwrap_err();
//! assert_eq!(err.key, "window.size");
//! ```

use serde::Deserialize;

use crate::decode::{DecoderConfig, FeatureSchema};

/// A configuration value that is wrong (the user's: fix the
/// configuration): the dotted key, the value found and the form expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` = {value:?}: expected {expected}")]
pub struct Invalid {
    /// Dotted key, e.g. `window.size`.
    pub key: String,
    /// The value found.
    pub value: String,
    /// What form is expected.
    pub expected: String,
}

impl Invalid {
    /// `key` = `value` refused: `expected` says what would be taken.
    pub fn new(
        key: impl Into<String>,
        value: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        Invalid {
            key: key.into(),
            value: value.into(),
            expected: expected.into(),
        }
    }
}

/// A duration such as `"30s"`, `"5m"` or `"1h 30m"` in milliseconds.
pub fn duration_ms(key: &str, value: &str) -> Result<i64, Invalid> {
    humantime::parse_duration(value)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            Invalid::new(
                key,
                value,
                "a duration such as \"30s\", \"5m\" or \"1h 30m\"",
            )
        })
}

/// A duration longer than zero, in milliseconds.
pub fn positive_duration_ms(key: &str, value: &str) -> Result<i64, Invalid> {
    match duration_ms(key, value)? {
        0 => Err(Invalid::new(key, value, "a positive duration")),
        ms => Ok(ms),
    }
}

/// A size such as `"64MiB"` in bytes, at least `min`; the error shows the
/// form expected with `example`.
pub fn size_bytes(key: &str, value: &str, min: u64, example: &str) -> Result<u64, Invalid> {
    value
        .parse::<bytesize::ByteSize>()
        .ok()
        .map(|b| b.as_u64())
        .filter(|b| *b >= min)
        .ok_or_else(|| {
            let expected = if min > 0 {
                format!(
                    "a size of at least {} such as {example}",
                    bytesize::ByteSize::b(min).display().iec()
                )
            } else {
                format!("a size such as {example}")
            };
            Invalid::new(key, value, expected)
        })
}

/// `[ingest]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawIngest {
    /// Largest accepted event, e.g. `"1MiB"`.
    pub max_event_bytes: String,
    /// How far ahead of the wall clock an event time may be, e.g. `"5m"`;
    /// `"off"` takes any time.
    pub max_future_skew: String,
    /// Dead-letter bytes one source (a file, a topic partition) may write
    /// in a run, e.g. `"256MiB"`; past it refusals are counted, not written.
    pub dead_letter_max_bytes: String,
}

impl Default for RawIngest {
    fn default() -> Self {
        RawIngest {
            max_event_bytes: "1MiB".into(),
            max_future_skew: "5m".into(),
            dead_letter_max_bytes: "256MiB".into(),
        }
    }
}

/// `[ingest]`, validated.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// How events are decoded and checked.
    pub decoder: DecoderConfig,
    /// Dead-letter bytes one source may write in a run.
    pub dead_letter_max_bytes: u64,
}

impl RawIngest {
    /// Checks every value; `schema` holds the declared feature kinds (the
    /// models' sections).
    pub fn validate(&self, schema: FeatureSchema) -> Result<IngestSettings, Invalid> {
        let max_event_bytes = size_bytes(
            "ingest.max_event_bytes",
            &self.max_event_bytes,
            64,
            "\"512KiB\" or \"1MiB\"",
        )?;
        let dead_letter_max_bytes = size_bytes(
            "ingest.dead_letter_max_bytes",
            &self.dead_letter_max_bytes,
            0,
            "\"64MiB\" or \"1GiB\"",
        )?;
        let max_future_skew_ms = match self.max_future_skew.trim() {
            "off" => None,
            skew => Some(duration_ms("ingest.max_future_skew", skew)?),
        };
        Ok(IngestSettings {
            decoder: DecoderConfig {
                max_event_bytes,
                schema,
                max_future_skew_ms,
                clock: None,
            },
            dead_letter_max_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_name_their_key_and_the_form_expected() {
        assert_eq!(duration_ms("a.b", "2m").unwrap(), 120_000);
        let e = duration_ms("a.b", "two minutes").unwrap_err();
        assert_eq!((e.key.as_str(), e.value.as_str()), ("a.b", "two minutes"));
        assert!(e.expected.contains("\"5m\""), "{e}");
        assert_eq!(
            positive_duration_ms("a.b", "0s").unwrap_err().expected,
            "a positive duration"
        );
        assert_eq!(size_bytes("s", "1KiB", 0, "x").unwrap(), 1024);
        let e = size_bytes("s", "10B", 64, "\"1MiB\"").unwrap_err();
        assert_eq!(e.expected, "a size of at least 64 B such as \"1MiB\"");
        assert!(e.to_string().starts_with("`s` = \"10B\": expected"), "{e}");
    }

    #[test]
    fn ingest_defaults_validate_and_off_takes_any_time() {
        let s = RawIngest::default()
            .validate(FeatureSchema::default())
            .unwrap();
        assert_eq!(s.decoder.max_event_bytes, 1 << 20);
        assert_eq!(s.decoder.max_future_skew_ms, Some(300_000));
        assert_eq!(s.dead_letter_max_bytes, 256 << 20);
        let off = RawIngest {
            max_future_skew: " off ".into(),
            ..RawIngest::default()
        };
        assert_eq!(
            off.validate(FeatureSchema::default())
                .unwrap()
                .decoder
                .max_future_skew_ms,
            None
        );
        let tiny = RawIngest {
            max_event_bytes: "10B".into(),
            ..RawIngest::default()
        };
        assert_eq!(
            tiny.validate(FeatureSchema::default()).unwrap_err().key,
            "ingest.max_event_bytes"
        );
    }
}
