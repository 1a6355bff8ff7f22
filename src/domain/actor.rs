//! Who acts: a principal name, and the operating-system account it acts through when that
//! account speaks for someone else (`carol (via ci-bot)`). Names follow one rule everywhere
//! (config, command line, four-eyes): 1–64 characters of `[a-z0-9._-]` after lowercasing.

use std::fmt;

/// The longest actor name.
pub const MAX_NAME: usize = 64;

/// A name that breaks the rule; displays with the value escaped, so invisible or
/// reordering characters (U+200B, U+202E) show as `\u{200b}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a user name: {why}")]
pub struct NameError {
    pub value: String,
    pub why: &'static str,
}

/// Lowercases `raw` and checks it is 1–64 characters of `[a-z0-9._-]`.
pub fn normalise(raw: &str) -> Result<String, NameError> {
    let bad = |why| NameError {
        value: raw.to_string(),
        why,
    };
    if raw.is_empty() {
        return Err(bad("it is empty"));
    }
    let name = raw.to_lowercase();
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad(
            "only letters a-z, digits, '.', '_' and '-' are allowed",
        ));
    }
    if name.len() > MAX_NAME {
        return Err(bad("it is longer than 64 characters"));
    }
    Ok(name)
}

/// Who is acting: `name`, and `via` the account it acts through when that is someone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub via: Option<String>,
}

impl Actor {
    /// The account itself acting (`account` already normalised).
    pub fn account(account: String) -> Actor {
        Actor {
            name: account,
            via: None,
        }
    }

    /// `account` acting for `name` (`--as NAME`); the name is normalised. Naming the
    /// account itself is just the account.
    pub fn impersonating(name: &str, account: String) -> Result<Actor, NameError> {
        let name = normalise(name)?;
        if name == account {
            return Ok(Actor::account(account));
        }
        Ok(Actor {
            name,
            via: Some(account),
        })
    }

    /// Reads an actor as the history records it (`name` or `name (via account)`). Names
    /// recorded before the rule existed are taken lowercased as they are, so that they
    /// still compare.
    pub fn parse(recorded: &str) -> Actor {
        let lenient = |s: &str| normalise(s.trim()).unwrap_or_else(|_| s.trim().to_lowercase());
        if let Some((name, rest)) = recorded.split_once(" (via ") {
            if let Some(via) = rest.strip_suffix(')') {
                return Actor {
                    name: lenient(name),
                    via: Some(lenient(via)),
                };
            }
        }
        Actor {
            name: lenient(recorded),
            via: None,
        }
    }

    /// Every identity this actor involves: the name and, when acting for someone, the
    /// account. Four-eyes refuses when two actors share any.
    pub fn identities(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.via.as_deref())
    }

    /// Whether this actor and `other` involve a common identity.
    pub fn overlaps(&self, other: &Actor) -> bool {
        self.identities()
            .any(|a| other.identities().any(|b| a == b))
    }

    /// "alice" or "carol via ci-bot": for the console's header.
    pub fn short(&self) -> String {
        match &self.via {
            Some(via) => format!("{} via {via}", self.name),
            None => self.name.clone(),
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.via {
            Some(via) => write!(f, "{} (via {via})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_checked() {
        assert_eq!(normalise("Alice").as_deref(), Ok("alice"));
        assert_eq!(normalise("ci-bot.2_x").as_deref(), Ok("ci-bot.2_x"));
        assert_eq!(normalise(&"a".repeat(64)).map(|n| n.len()), Ok(64));
        let long = "a".repeat(65);
        let e = normalise(&long).expect_err("65 characters");
        assert!(e.to_string().contains("64"), "{e}");
        let e = normalise("").expect_err("empty");
        assert!(e.to_string().contains("empty"), "{e}");
        for bad in [
            "b\u{200b}ob",
            "bob\u{202e}",
            "bo b",
            "bob\n",
            "bób",
            "a@b",
            "ＢＯＢ",
        ] {
            assert!(normalise(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn invisible_characters_show_in_the_error() {
        let e = normalise("b\u{200b}ob").expect_err("zero-width space");
        assert!(e.to_string().contains("\\u{200b}"), "{e}");
        let e = normalise("bob\u{202e}").expect_err("right-to-left override");
        assert!(e.to_string().contains("\\u{202e}"), "{e}");
        assert!(!e.to_string().contains('\u{202e}'), "{e}");
    }

    #[test]
    fn recorded_actors_round_trip_and_compare_by_identity() {
        let carol = Actor::impersonating("Carol", "ci-bot".into()).expect("valid");
        assert_eq!(carol.to_string(), "carol (via ci-bot)");
        assert_eq!(carol.short(), "carol via ci-bot");
        assert_eq!(Actor::parse("carol (via ci-bot)"), carol);
        assert_eq!(Actor::parse("Alice"), Actor::account("alice".into()));
        let same = Actor::impersonating("root", "root".into()).expect("valid");
        assert_eq!(same, Actor::account("root".into()));

        let dave = Actor::impersonating("dave", "ci-bot".into()).expect("valid");
        assert!(dave.overlaps(&carol), "the same account");
        assert!(
            Actor::account("carol".into()).overlaps(&carol),
            "the same name"
        );
        assert!(Actor::account("ci-bot".into()).overlaps(&carol));
        assert!(!Actor::account("bob".into()).overlaps(&carol));
    }
}
