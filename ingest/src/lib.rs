//! driftwatch-ingest: the event model, decoding and validation, the sources
//! that read events, and the dead-letter sinks that keep what was refused.
//!
//! ```text
//! files (JSONL, JSONL.gz, Parquet) ─► [ Source ] ─► Decoder ─┬─► Event ─► detectors
//!                                                           └─► Rejected ─► DeadLetterSink
//! ```
//!
//! Bad input never stops a source: every refused event becomes a
//! [`Rejected`] with a typed [`Reject`] reason and its [`Position`]. Only
//! failures of the source itself (a file that cannot be read) are [`Error`]s.
//!
//! ```
//! use driftwatch_ingest::{Decoder, DecoderConfig, Event, Reject};
//!
//! let mut decoder = Decoder::new(DecoderConfig::default());
//! let line = br#"{"event_id":"e1","model_id":"churn","timestamp":"2026-11-26T12:00:00Z",
//!                 "features":{"age":42,"plan":"pro"},"prediction":{"score":0.8}}"#;
//! let Ok(Event::Prediction(p)) = decoder.decode_json(line) else { panic!() };
//! assert_eq!(p.features.len(), 2);
//!
//! let bad = br#"{"event_id":"e2","model_id":"churn","timestamp":"yesterday","label":"1"}"#;
//! assert_eq!(decoder.decode_json(bad).unwrap_err().code(), "bad_timestamp");
//! # let _: Option<Reject> = None;
//! ```

pub mod dead_letter;
pub mod decode;
pub mod durable;
pub mod encode;
pub mod error;
pub mod event;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod kafka_config;
pub mod merge;
pub mod names;
pub mod parquet_source;
pub mod parquet_writer;
pub mod raw;
pub mod reject;
pub mod settings;
pub mod source;
#[cfg(feature = "synth")]
pub mod synth;

pub use dead_letter::{Admit, DeadLetterBudget, DeadLetterFile, DeadLetterSink};
pub use decode::{Decoder, DecoderConfig, FeatureSchema};
pub use encode::encode_json;
pub use error::{Error, Result};
pub use event::{
    Event, EventTime, Feature, FeatureKind, FeatureValue, Label, LabelEvent, Prediction,
    PredictionEvent, format_time,
};
pub use kafka_config::{Assignment, KafkaConfig};
pub use merge::MergedSource;
pub use parquet_writer::EventParquetWriter;
pub use reject::Reject;
pub use source::{
    FileFormat, Position, Record, Rejected, Source, detect_format, open_file, open_table_file,
};
