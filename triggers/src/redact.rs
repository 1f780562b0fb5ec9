//! What a receiver answered, made safe to store: the audit log and the
//! `alerts` table keep why a delivery failed, and a receiver that echoes the
//! request (its headers, its URL) must not put a credential there.
//!
//! A message is redacted in two passes, then cut to [`MAX_EXCERPT`] chars:
//! 1. every secret value of the action (tokens, passwords, secret headers,
//!    the HMAC secret, a URL given through `url_env`), and the Basic and
//!    SMTP PLAIN encodings of its login, become `[redacted]`;
//! 2. whatever looks like a credential does too: the value of an
//!    `Authorization`, `Proxy-Authorization`, `Cookie` or `Set-Cookie`
//!    header, `Bearer …` and `Basic …`, and the value after a key named like
//!    a token, key, secret or password (`token=…`, `"api_key": "…"`).

use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;

use crate::config::{Action, ActionKind};

/// The most characters of a receiver's answer that are kept.
pub const MAX_EXCERPT: usize = 300;

const REDACTED: &str = "[redacted]";

/// Header-like keys whose whole value (to the end of the line or the string)
/// is a credential.
static HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b((?:proxy-)?authorization|(?:set-)?cookie)(["']?\s*[:=]\s*["']?)[^"'\r\n]*"#,
    )
    .unwrap_or_else(|e| unreachable!("{e}"))
});

/// Credentials after a scheme name.
static SCHEME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
        .unwrap_or_else(|e| unreachable!("{e}"))
});

/// Values of keys named like a secret.
static KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b([a-z0-9_-]*(?:token|api[_-]?key|secret|password|passwd|signature|session)[a-z0-9_-]*)(["']?\s*[:=]\s*["']?)[^"'\s,;&}]+"#,
    )
    .unwrap_or_else(|e| unreachable!("{e}"))
});

/// The values `action` holds that must never be stored, longest first (so
/// that a secret containing another is replaced whole).
pub fn secrets(action: &Action) -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut out: Vec<String> = Vec::new();
    let login = |user: &str, password: &str, out: &mut Vec<String>| {
        out.push(password.to_owned());
        out.push(b64(&format!("{user}:{password}")));
        out.push(b64(&format!("\0{user}\0{password}")));
        out.push(b64(password));
    };
    match &action.kind {
        ActionKind::Email(email) => {
            if let Some((user, password)) = &email.credentials {
                login(user.expose(), password.expose(), &mut out);
            }
        }
        ActionKind::Webhook(hook) => {
            if hook.url_is_secret {
                out.push(hook.url.expose().to_owned());
            }
            out.extend(
                hook.secret_headers
                    .iter()
                    .map(|(_, v)| v.expose().to_owned()),
            );
            out.extend(hook.token.iter().map(|t| t.expose().to_owned()));
            out.extend(hook.hmac_secret.iter().map(|t| t.expose().to_owned()));
            if let Some((user, password)) = &hook.basic {
                login(user.expose(), password.expose(), &mut out);
            }
        }
    }
    // a one- or two-character "secret" would blank out ordinary text
    out.retain(|s| s.chars().count() >= 3);
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// `message` with `secrets` and anything that looks like a credential
/// replaced, cut to [`MAX_EXCERPT`] characters.
pub fn redact(message: &str, secrets: &[String]) -> String {
    let mut text = message.to_owned();
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), REDACTED);
        }
    }
    let text = HEADER.replace_all(&text, format!("${{1}}${{2}}{REDACTED}"));
    let text = SCHEME.replace_all(&text, format!("${{1}} {REDACTED}"));
    let text = KEY.replace_all(&text, format!("${{1}}${{2}}{REDACTED}"));
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(MAX_EXCERPT).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_headers_and_configured_secrets_are_redacted() {
        let secrets = vec!["key-s3cret".to_owned(), "dXNlcjpwYXNz".to_owned()];
        let echo = r#"HTTP 400: {"headers": {"authorization": "Basic dXNlcjpwYXNz", "x-api-key": "key-s3cret", "cookie": "a=1; sid=xyz"}, "url": "/hook?token=abc123&x=1"}"#;
        let out = redact(echo, &secrets);
        for leaked in ["dXNlcjpwYXNz", "key-s3cret", "sid=xyz", "abc123"] {
            assert!(!out.contains(leaked), "{leaked} in {out}");
        }
        assert!(out.starts_with("HTTP 400: {\"headers\""), "{out}");
        assert!(out.contains("&x=1"), "{out}");
        let raw = "Authorization: Bearer eyJhbGciOi.x.y\r\nHost: h";
        assert_eq!(redact(raw, &[]), "Authorization: [redacted]\r\nHost: h");
        assert_eq!(
            redact("use bearer abc.def now", &[]),
            "use bearer [redacted] now"
        );
    }

    #[test]
    fn ordinary_text_is_kept_and_long_text_is_cut() {
        let text = "HTTP 422: field model_id is required";
        assert_eq!(redact(text, &[]), text);
        let long = "x".repeat(1000);
        let out = redact(&long, &[]);
        assert_eq!(out.chars().count(), MAX_EXCERPT + 1);
        assert!(out.ends_with('…'));
    }
}
