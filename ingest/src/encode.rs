//! Writes events back into the wire format (one JSON object, no newline). Used
//! by the synthetic generator, and to keep a faithful copy of an accepted event
//! that later turns out to be late.

use std::io::Write;

use crate::event::{Event, FeatureValue, Label, format_time};

fn string(out: &mut Vec<u8>, s: &str) {
    // writing into a Vec cannot fail
    let _ = serde_json::to_writer(&mut *out, s);
}

fn number(out: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        // Display prints the shortest text that reads back to the same f64
        let _ = write!(out, "{x}");
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends `event` to `out` as one JSON object in the documented event format.
pub fn encode_json(event: &Event, out: &mut Vec<u8>) {
    match event {
        Event::Prediction(p) => {
            out.extend_from_slice(b"{\"event_id\":");
            string(out, &p.event_id);
            out.extend_from_slice(b",\"model_id\":");
            string(out, &p.model_id);
            if let Some(v) = &p.model_version {
                out.extend_from_slice(b",\"model_version\":");
                string(out, v);
            }
            out.extend_from_slice(b",\"timestamp\":");
            string(out, &format_time(p.timestamp));
            out.extend_from_slice(b",\"features\":{");
            for (i, f) in p.features.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, &f.name);
                out.push(b':');
                match &f.value {
                    FeatureValue::Numeric(x) => number(out, *x),
                    FeatureValue::Categorical(c) => string(out, c),
                    FeatureValue::Missing => out.extend_from_slice(b"null"),
                }
            }
            out.extend_from_slice(b"},\"prediction\":{");
            let mut first = true;
            let mut key = |out: &mut Vec<u8>, k: &[u8]| {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(k);
            };
            let pred = &p.prediction;
            if let Some(s) = pred.score {
                key(out, b"\"score\":");
                number(out, s);
            }
            if let Some(c) = &pred.class {
                key(out, b"\"class\":");
                string(out, c);
            }
            if let Some(v) = pred.value {
                key(out, b"\"value\":");
                number(out, v);
            }
            if !pred.probabilities.is_empty() {
                key(out, b"\"probabilities\":{");
                for (i, (class, prob)) in pred.probabilities.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    string(out, class);
                    out.push(b':');
                    number(out, *prob);
                }
                out.push(b'}');
            }
            out.push(b'}');
            if let Some(label) = &p.label {
                out.extend_from_slice(b",\"label\":");
                encode_label(out, label);
            }
            if !p.segments.is_empty() {
                out.extend_from_slice(b",\"segments\":{");
                for (i, (name, value)) in p.segments.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    string(out, name);
                    out.push(b':');
                    string(out, value);
                }
                out.push(b'}');
            }
            out.push(b'}');
        }
        Event::Label(l) => {
            out.extend_from_slice(b"{\"event_id\":");
            string(out, &l.event_id);
            out.extend_from_slice(b",\"model_id\":");
            string(out, &l.model_id);
            out.extend_from_slice(b",\"timestamp\":");
            string(out, &format_time(l.timestamp));
            out.extend_from_slice(b",\"label\":");
            encode_label(out, &l.label);
            out.push(b'}');
        }
    }
}

fn encode_label(out: &mut Vec<u8>, label: &Label) {
    match label {
        Label::Class(c) => string(out, c),
        Label::Value(v) => number(out, *v),
    }
}
