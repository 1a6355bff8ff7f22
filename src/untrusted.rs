//! Text from upstream (a DNS API's error body, a CA's problem detail, a provider's message)
//! before it becomes part of one of mailfleet's errors: every configured secret value is
//! replaced by `[redacted]`, control and invisible characters are taken out, and the rest
//! is cut to a bounded length. An endpoint that echoes the API key it was sent must not put
//! the key in a transition, an event, a log line or on the screen.
//!
//! The secret values are known in one place: the process's [`Redactor`], which learns
//! them from the environment variables the config names when the engine is built
//! ([`remember_config`]), and from each API client as it is made ([`remember_secret`]).
//! It only ever grows, so a value once known is never let through again.

use crate::config::Config;
use std::sync::RwLock;

/// The longest piece of upstream text kept, in characters (a `…` marks a cut).
pub const MAX_UNTRUSTED: usize = 512;

/// Values shorter than this are not treated as secrets: redacting them would blank out
/// ordinary words (and no real key is this short).
pub const MIN_SECRET_LEN: usize = 6;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// The secret values to take out of upstream text, longest first (so a secret that
/// contains another is taken out whole).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for these values; blank ones and ones shorter than [`MIN_SECRET_LEN`]
    /// are left out.
    pub fn new<I, S>(values: I) -> Redactor
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut r = Redactor::default();
        for v in values {
            r.add(v.as_ref());
        }
        r
    }

    /// The values held by the environment variables the config names for secrets (set or
    /// not, used or not: a key that is merely present must not leak either).
    pub fn from_config(cfg: &Config) -> Redactor {
        Redactor::new(
            secret_env_names(cfg)
                .into_iter()
                .filter_map(|name| std::env::var(name).ok()),
        )
    }

    fn add(&mut self, value: &str) {
        let v = value.trim();
        if v.chars().count() < MIN_SECRET_LEN || self.secrets.iter().any(|s| s == v) {
            return;
        }
        self.secrets.push(v.to_string());
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// `text` with every secret value replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

/// The environment variables the config names for secrets. A new secret setting belongs
/// here too.
fn secret_env_names(cfg: &Config) -> Vec<&str> {
    let mut names = vec![
        cfg.dns.powerdns.api_key_env.as_str(),
        cfg.dns.cloudflare.token_env.as_str(),
        cfg.dkim.key_env.as_str(),
    ];
    if let Some(h) = &cfg.providers.hostwinds {
        names.push(h.api_key_env.as_str());
    }
    names
}

/// Upstream text made fit for one of mailfleet's errors: secrets redacted, control
/// characters, bidirectional controls and zero-width characters removed, whitespace runs
/// (newlines included) folded to one space, and at most [`MAX_UNTRUSTED`] characters
/// kept (cut on a character boundary, marked with `…`).
pub fn untrusted(text: &str, redactor: &Redactor) -> String {
    // Redacted first: a cut must never leave the front half of a secret behind.
    let redacted = redactor.redact(text);
    let mut out = String::with_capacity(redacted.len().min(MAX_UNTRUSTED * 4));
    let mut kept = 0usize;
    let mut space = false;
    for c in redacted.trim().chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if c.is_control() || is_invisible(c) {
            continue;
        }
        if space && kept > 0 {
            if kept == MAX_UNTRUSTED {
                out.push('…');
                return out;
            }
            out.push(' ');
            kept += 1;
        }
        space = false;
        if kept == MAX_UNTRUSTED {
            out.push('…');
            return out;
        }
        out.push(c);
        kept += 1;
    }
    out
}

/// [`untrusted`] with the process's redactor.
pub fn untrusted_text(text: &str) -> String {
    untrusted(text, &current())
}

/// Characters that change how the text around them displays without being seen:
/// bidirectional embeddings, overrides, isolates and marks, zero-width spaces and
/// joiners, the byte-order mark.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

static KNOWN: RwLock<Redactor> = RwLock::new(Redactor {
    secrets: Vec::new(),
});

/// The process's redactor: every secret value it has learnt so far.
pub fn current() -> Redactor {
    KNOWN
        .read()
        .map(|r| r.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
}

/// Teaches the process's redactor one secret value (an API client's key, as it is made).
pub fn remember_secret(value: &str) {
    let mut known = KNOWN.write().unwrap_or_else(|p| p.into_inner());
    known.add(value);
}

/// Teaches the process's redactor the secret values the config's environment variables
/// hold. Called where the engine is built from a config.
pub fn remember_config(cfg: &Config) {
    for s in Redactor::from_config(cfg).secrets {
        remember_secret(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_before_the_text_is_cut() {
        let r = Redactor::new(["k3y-Secret-123", "abc", "  "]);
        assert_eq!(
            untrusted("bad key k3y-Secret-123 (k3y-Secret-123)", &r),
            "bad key [redacted] ([redacted])"
        );
        assert_eq!(
            untrusted("abc stays: too short to be a key", &r),
            "abc stays: too short to be a key"
        );
        // A secret that straddles the cut is gone whole, not half.
        let text = format!("{}k3y-Secret-123", "x".repeat(MAX_UNTRUSTED - 4));
        let out = untrusted(&text, &r);
        assert!(!out.contains("k3y"), "{out}");
        assert_eq!(out.chars().count(), MAX_UNTRUSTED + 1);
        assert!(out.ends_with('…'));
    }

    #[test]
    fn a_longer_secret_that_holds_a_shorter_one_goes_whole() {
        let r = Redactor::new(["secret", "secret-and-more"]);
        assert_eq!(untrusted("x secret-and-more y", &r), "x [redacted] y");
    }

    #[test]
    fn controls_and_invisible_characters_go_and_whitespace_folds() {
        let r = Redactor::default();
        assert_eq!(
            untrusted("  a\x1b[31m\u{9b}b\u{202e}c\u{200b}d\n\n\te  ", &r),
            "a[31mbcd e"
        );
        let long = "é".repeat(2 * MAX_UNTRUSTED);
        let out = untrusted(&long, &r);
        assert_eq!(
            out.chars().count(),
            MAX_UNTRUSTED + 1,
            "cut on a char boundary"
        );
        assert_eq!(
            untrusted(&"é".repeat(MAX_UNTRUSTED), &r).chars().count(),
            MAX_UNTRUSTED
        );
    }
}
