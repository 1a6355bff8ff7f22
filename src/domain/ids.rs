//! Identifiers: UUIDv7 (time-ordered) stored as text.
//!
//! The short form people see is the *last* 8 hex digits. A UUIDv7 starts with the
//! millisecond timestamp, so its first 8 hex digits are the same for every id made within
//! the same ~65 seconds; its last digits are random. People may type a unique prefix of the
//! full id (as git allows) or the short form (a suffix).

/// A fresh time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The short form the console and CLI show: the last 8 hex digits.
pub fn short(id: &str) -> &str {
    id.len()
        .checked_sub(8)
        .and_then(|start| id.get(start..))
        .unwrap_or(id)
}

/// Checks that a user-typed id prefix can only match ids: hex digits and dashes.
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 36
        && prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_time() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert!(a < b);
        assert_eq!(short(&a).len(), 8);
        assert!(a.ends_with(short(&a)));
        assert_ne!(
            short(&a),
            short(&b),
            "short forms come from the random part"
        );
    }

    #[test]
    fn prefixes_are_hex_only() {
        assert!(valid_prefix("7f3a"));
        assert!(!valid_prefix(""));
        assert!(!valid_prefix("7f3a%"));
        assert!(!valid_prefix("x"));
    }
}
