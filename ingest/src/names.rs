//! Limits on the names events carry (model ids, versions, feature and
//! segment names), and the one way such a name becomes a file name.
//!
//! Ids end up in file and directory names, in SQL rows and on terminals, so
//! they are bounded in length and may hold no control characters. File names
//! are made by [`path_component`]: an injective escape, never `.` or `..`,
//! so two ids never share a file and no id leaves its directory.

use crate::reject::Reject;

/// Longest accepted `model_id` and `model_version`, in bytes. Escaped for a
/// file name (at most three bytes per byte) an id stays under the 255 bytes
/// file systems allow for one name.
pub const MAX_ID_BYTES: usize = 64;

/// Longest accepted feature or segment name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Refuses a name longer than `limit` bytes or holding a control character
/// (newlines, escape sequences). `field` names it in the refusal
/// (`model_id`, `features.age`).
pub fn check_name(field: impl FnOnce() -> String, name: &str, limit: usize) -> Result<(), Reject> {
    if name.len() > limit {
        return Err(Reject::InvalidName {
            field: field(),
            detail: format!("{} bytes long; the limit is {limit} bytes", name.len()),
        });
    }
    // ASCII names (almost all) are checked byte by byte
    let control = if name.is_ascii() {
        name.bytes().find(|b| b.is_ascii_control()).map(char::from)
    } else {
        name.chars().find(|c| c.is_control())
    };
    if let Some(c) = control {
        return Err(Reject::InvalidName {
            field: field(),
            detail: format!("holds the control character U+{:04X}", c as u32),
        });
    }
    Ok(())
}

/// `value` as one path component: ASCII letters, digits, `-`, `_` and `.`
/// stay, every other byte becomes `%XX`, and so does a leading `.` (no
/// name is `.`, `..` or hidden). The escape is injective, and
/// [`from_path_component`] reverses it.
pub fn path_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, b) in value.bytes().enumerate() {
        match b {
            b'.' if i == 0 => out.push_str("%2E"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    if out.is_empty() {
        // an empty value still needs a name of its own
        out.push('%');
    }
    out
}

/// Longest name [`bounded_file_name`] returns, in bytes: with an extension
/// of up to 16 bytes and the temporary prefix and suffix of an atomic write
/// (`.{name}.{pid}.{n}.tmp`, at most 34 bytes more) a file name stays under
/// the 255 bytes file systems allow.
pub const MAX_FILE_NAME_BYTES: usize = 200;

/// `name` (a file name made of escaped ids and other parts) if it is at most
/// [`MAX_FILE_NAME_BYTES`] long; otherwise its start, `~` and a 128-bit hash
/// of the whole name in hex, [`MAX_FILE_NAME_BYTES`] long. Escaped ids hold
/// no `~`, so a shortened name never equals one kept whole, and two long
/// names share a file only if their hashes collide.
pub fn bounded_file_name(name: String) -> String {
    if name.len() <= MAX_FILE_NAME_BYTES {
        return name;
    }
    let hash = twox_hash::XxHash3_128::oneshot(name.as_bytes());
    let suffix = format!("~{hash:032x}");
    let mut keep = MAX_FILE_NAME_BYTES - suffix.len();
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    let mut out = name[..keep].to_owned();
    out.push_str(&suffix);
    out
}

/// The value [`path_component`] escaped.
pub fn from_path_component(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| name.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None if name == "%" => i += 1,
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn path_components_stay_in_their_directory() {
        assert_eq!(path_component("churn-v2.1_x"), "churn-v2.1_x");
        assert_eq!(path_component("."), "%2E");
        assert_eq!(path_component(".."), "%2E.");
        assert_eq!(path_component("a/b"), "a%2Fb");
        assert_eq!(path_component("a_b"), "a_b");
        assert_eq!(path_component("é"), "%C3%A9");
        assert_eq!(path_component(""), "%");
        let longest = "/".repeat(MAX_ID_BYTES);
        assert!(path_component(&longest).len() + "model_id=".len() < 255);
    }

    /// Regression (issue 41, S1): a change point of a version made of 64 `/`
    /// was named past 249 bytes, its temporary past 255, and writing it
    /// stopped the service.
    #[test]
    fn file_names_made_from_long_ids_stay_under_the_limit() {
        let version = path_component(&"/".repeat(MAX_ID_BYTES));
        let long = format!("1764547200000_error_rate_page_hinkley_1764550800000_{version}.json");
        assert!(long.len() > 240);
        let bounded = bounded_file_name(long.clone());
        assert_eq!(bounded.len(), MAX_FILE_NAME_BYTES);
        assert!(bounded.starts_with("1764547200000_error_rate_page_hinkley_"));
        let tmp = format!(".{bounded}.{}.{}.tmp", 4_194_304, u64::MAX);
        assert!(tmp.len() < 255, "{}", tmp.len());
        // the same name gives the same file; another long name another one
        assert_eq!(bounded_file_name(long.clone()), bounded);
        assert_ne!(bounded_file_name(long.replace("page", "adwin")), bounded);
        // short names are kept, multi-byte ones are cut on a character
        assert_eq!(bounded_file_name("a_b.json".into()), "a_b.json");
        let wide = bounded_file_name("é".repeat(150));
        assert!(wide.len() <= MAX_FILE_NAME_BYTES && wide.contains('~'));
    }

    #[test]
    fn names_past_the_limit_or_with_control_characters_are_refused() {
        let field = || "model_id".to_owned();
        assert!(check_name(field, &"m".repeat(MAX_ID_BYTES), MAX_ID_BYTES).is_ok());
        let err = check_name(field, &"m".repeat(250), MAX_ID_BYTES).expect_err("too long");
        assert_eq!(err.code(), "invalid_name");
        assert_eq!(
            err.to_string(),
            "invalid name at `model_id`: 250 bytes long; the limit is 64 bytes"
        );
        let err = check_name(field, "a\u{1b}[31mb", MAX_ID_BYTES).expect_err("escape");
        assert!(err.to_string().contains("U+001B"), "{err}");
        assert!(check_name(field, "a\nb", MAX_ID_BYTES).is_err());
        assert!(check_name(field, "ü\u{85}", MAX_ID_BYTES).is_err());
        assert!(check_name(field, "kündigung/eu", MAX_ID_BYTES).is_ok());
    }

    proptest! {
        #[test]
        fn path_components_are_injective_and_reversible(a in ".{0,20}", b in ".{0,20}") {
            prop_assert_eq!(from_path_component(&path_component(&a)), a.clone());
            if a != b {
                prop_assert_ne!(path_component(&a), path_component(&b));
            }
            let c = path_component(&a);
            prop_assert!(c != "." && c != ".." && !c.contains('/') && !c.starts_with('.'));
        }
    }
}
