//! The published JSON Schema (schema/event.schema.json) agrees with the
//! decoder: generated events are valid, and sample payloads are accepted by
//! the decoder exactly when the schema accepts them.

#![allow(clippy::unwrap_used)]

use driftwatch_ingest::synth::{Synth, SynthConfig};
use driftwatch_ingest::{Decoder, DecoderConfig, encode_json};
use serde_json::Value;

fn validator() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/event.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

#[test]
fn generated_events_are_valid() {
    let validator = validator();
    let mut buf = Vec::new();
    for event in Synth::new(SynthConfig::default()).take(3000) {
        buf.clear();
        encode_json(&event, &mut buf);
        let value: Value = serde_json::from_slice(&buf).unwrap();
        if let Err(e) = validator.validate(&value) {
            panic!("{value}: {e}");
        }
    }
}

#[test]
fn schema_and_decoder_agree_on_samples() {
    let validator = validator();
    let mut decoder = Decoder::new(DecoderConfig::default());
    let ts = r#""timestamp":"2026-11-26T12:00:00Z""#;
    let samples = [
        format!(
            r#"{{"event_id":"a","model_id":"m",{ts},"features":{{"x":1,"c":"u","b":true,"n":null}},"prediction":{{"score":0.5,"class":"1"}},"segments":{{"region":"eu"}}}}"#
        ),
        format!(r#"{{"event_id":"a","model_id":"m",{ts},"prediction":{{"value":3.5}}}}"#),
        format!(
            r#"{{"event_id":"a","model_id":"m",{ts},"prediction":{{"probabilities":{{"a":0.2,"b":0.8}}}}}}"#
        ),
        r#"{"event_id":"a","model_id":"m","timestamp":1795694400000,"label":"1"}"#.to_owned(),
        r#"{"event_id":"a","model_id":"m","timestamp":1795694400000,"label":2.5}"#.to_owned(),
        r#"{"event_id":"a","model_id":"m","timestamp":1.7956944e12,"label":2.5}"#.to_owned(),
        format!(r#"{{"event_id":"a","model_id":"m",{ts},"label":"1","prediction":null}}"#),
        // a prediction carrying its label (training data), of 1950
        r#"{"event_id":"a","model_id":"m","timestamp":"1950-01-01T00:00:00Z","prediction":{"score":0.5},"label":"1"}"#.to_owned(),
        format!(r#"{{"event_id":"a","model_id":"{}",{ts},"label":"1"}}"#, "m".repeat(64)),
        // refused by both
        format!(r#"{{"model_id":"m",{ts},"label":"1"}}"#),
        format!(r#"{{"event_id":"","model_id":"m",{ts},"label":"1"}}"#),
        format!(r#"{{"event_id":" ","model_id":"m",{ts},"label":"1"}}"#),
        r#"{"event_id":"a","model_id":"m","timestamp":"yesterday","label":"1"}"#.to_owned(),
        r#"{"event_id":"a","model_id":"m","timestamp":1795694400,"label":"1"}"#.to_owned(),
        r#"{"event_id":"a","model_id":"m","timestamp":1795694400000.5,"label":"1"}"#.to_owned(),
        format!(r#"{{"event_id":"a","model_id":"{}",{ts},"label":"1"}}"#, "m".repeat(65)),
        format!(r#"{{"event_id":"a","model_id":"m\u001b[2J",{ts},"label":"1"}}"#),
        format!(
            r#"{{"event_id":"a","model_id":"m","model_version":"v\n1",{ts},"prediction":{{"score":0.5}}}}"#
        ),
        format!(r#"{{"event_id":"a","model_id":"m",{ts},"prediction":{{"score":0.5}},"label":""}}"#),
        format!(r#"{{"event_id":"a","model_id":"m",{ts}}}"#),
        format!(r#"{{"event_id":"a","model_id":"m",{ts},"prediction":{{}}}}"#),
        format!(r#"{{"event_id":"a","model_id":"m",{ts},"prediction":{{"score":1.5}}}}"#),
        format!(
            r#"{{"event_id":"a","model_id":"m",{ts},"features":{{"x":[1]}},"prediction":{{"score":0.5}}}}"#
        ),
        format!(r#"{{"event_id":"a","model_id":"m",{ts},"label":""}}"#),
        format!(r#"{{"event_id":5,"model_id":"m",{ts},"label":"1"}}"#),
        "[1,2]".to_owned(),
    ];
    for sample in &samples {
        let value: Value = serde_json::from_str(sample).unwrap();
        let by_schema = validator.is_valid(&value);
        let by_decoder = decoder.decode_json(sample.as_bytes());
        assert_eq!(
            by_schema,
            by_decoder.is_ok(),
            "{sample}: decoder says {by_decoder:?}"
        );
    }
}
