//! Validation of what people and providers hand us, and neutralising of text before it
//! reaches a terminal.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} contains control characters")]
    ControlCharacters { field: &'static str },
    #[error("{field} is {len} characters long; at most {max} are allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} {value:?} is not a valid hostname label: use lowercase letters, digits and '-', not at either end")]
    NotALabel { field: &'static str, value: String },
    #[error("{field} {value:?} is not a valid domain name: {why}")]
    NotADomain {
        field: &'static str,
        value: String,
        why: &'static str,
    },
}

/// A hostname label (RFC 1123): 1–63 of `a-z 0-9 -`, not starting or ending with `-`.
pub fn validate_label(field: &'static str, value: &str) -> Result<(), NameError> {
    if value.chars().any(char::is_control) {
        return Err(NameError::ControlCharacters { field });
    }
    if value.is_empty() {
        return Err(NameError::Empty { field });
    }
    let len = value.chars().count();
    if len > 63 {
        return Err(NameError::TooLong {
            field,
            len,
            max: 63,
        });
    }
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_chars || value.starts_with('-') || value.ends_with('-') {
        return Err(NameError::NotALabel {
            field,
            value: sanitize(value).into_owned(),
        });
    }
    Ok(())
}

/// A domain name of at least two labels, each a valid label, at most 253 characters.
pub fn validate_domain(field: &'static str, value: &str) -> Result<(), NameError> {
    if value.chars().any(char::is_control) {
        return Err(NameError::ControlCharacters { field });
    }
    let name = value.strip_suffix('.').unwrap_or(value);
    if name.is_empty() {
        return Err(NameError::Empty { field });
    }
    let bad = |why| NameError::NotADomain {
        field,
        value: sanitize(value).into_owned(),
        why,
    };
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("it needs at least two labels, like example.com"));
    }
    if labels.iter().any(|l| validate_label(field, l).is_err()) {
        return Err(bad(
            "each label must be 1-63 lowercase letters, digits or '-'",
        ));
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("the last label cannot be all digits"));
    }
    Ok(())
}

/// The longest reason (for a rejection, a rollback, a suspension …) kept, in characters.
pub const MAX_REASON: usize = 500;

/// A reason someone gave for an action: at most [`MAX_REASON`] characters. (What it
/// holds is shown through [`sanitize`] and escaped in JSON, so any text may stay in it.)
pub fn validate_reason(field: &'static str, value: &str) -> Result<(), NameError> {
    let len = value.chars().count();
    if len > MAX_REASON {
        return Err(NameError::TooLong {
            field,
            len,
            max: MAX_REASON,
        });
    }
    Ok(())
}

/// Makes text from outside safe to draw: removes every control character (C0, DEL, C1 —
/// which takes the ESC out of any escape sequence, so none can reach the terminal) and the
/// bidirectional overrides that make text display in another order than it reads.
pub fn sanitize(s: &str) -> Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().filter(|c| !unsafe_char(*c)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_rfc_1123() {
        assert!(validate_label("label", "node-us-east-045").is_ok());
        assert!(validate_label("label", "a").is_ok());
        assert_eq!(
            validate_label("label", ""),
            Err(NameError::Empty { field: "label" })
        );
        assert!(matches!(
            validate_label("label", &"a".repeat(64)),
            Err(NameError::TooLong { len: 64, .. })
        ));
        for bad in ["-node", "node-", "Node", "node_1", "node.1", "nœud"] {
            assert!(
                matches!(
                    validate_label("label", bad),
                    Err(NameError::NotALabel { .. })
                ),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn control_characters_are_named_as_such() {
        assert_eq!(
            validate_label("label", "node\x1b[2J"),
            Err(NameError::ControlCharacters { field: "label" })
        );
        assert_eq!(
            validate_domain("domain", "mail.example.com\n"),
            Err(NameError::ControlCharacters { field: "domain" })
        );
    }

    #[test]
    fn domains_need_two_valid_labels() {
        assert!(validate_domain("domain", "mail.example.com").is_ok());
        assert!(validate_domain("domain", "example.com.").is_ok());
        for bad in ["localhost", "exa mple.com", "-x.com", "x..com", "1.2.3.4"] {
            assert!(validate_domain("domain", bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn reasons_have_a_length_limit() {
        assert!(validate_reason("reason", &"é".repeat(MAX_REASON)).is_ok());
        assert_eq!(
            validate_reason("reason", &"é".repeat(MAX_REASON + 1)),
            Err(NameError::TooLong {
                field: "reason",
                len: MAX_REASON + 1,
                max: MAX_REASON
            })
        );
    }

    #[test]
    fn escape_sequences_become_harmless_text() {
        assert_eq!(sanitize("\x1b]2;pwned\x07"), "]2;pwned");
        assert_eq!(sanitize("\x1b[2Jclear"), "[2Jclear");
        assert_eq!(sanitize("a\u{9b}31mb"), "a31mb", "C1 CSI removed");
        assert_eq!(sanitize("abc\u{202E}def"), "abcdef");
        assert!(matches!(sanitize("plain"), Cow::Borrowed("plain")));
    }
}
