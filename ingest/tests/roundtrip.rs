//! Property: every event the generator makes encodes to JSON that decodes
//! back to the same event.

#![allow(clippy::unwrap_used)]

use driftwatch_ingest::synth::{Synth, SynthConfig};
use driftwatch_ingest::{Decoder, DecoderConfig, encode_json};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn generated_events_round_trip(seed in any::<u64>()) {
        let mut decoder = Decoder::new(DecoderConfig::default());
        let mut buf = Vec::new();
        for event in Synth::new(SynthConfig { seed, ..SynthConfig::default() }).take(500) {
            buf.clear();
            encode_json(&event, &mut buf);
            let decoded = decoder.decode_json(&buf);
            prop_assert_eq!(decoded.as_ref(), Ok(&event), "{}", String::from_utf8_lossy(&buf));
        }
    }
}
