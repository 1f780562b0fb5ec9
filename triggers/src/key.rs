//! Stable identifiers: alert fingerprints, idempotency keys, silence ids.

use sha2::{Digest, Sha256};

/// The first 128 bits of the SHA-256 of `text`, in hex: the same text gives
/// the same id in every process and after every restart.
pub fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..16])
}

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// A clock giving milliseconds since the epoch: the system's in the
/// service, a hand-moved one in tests.
pub type Clock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    std::sync::Arc::new(|| chrono::Utc::now().timestamp_millis())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_are_stable_and_short() {
        // pinned: idempotency keys must not change between versions
        assert_eq!(super::short_hash("a"), "ca978112ca1bbdcafac231b39a23dc4d");
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
