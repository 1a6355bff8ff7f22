//! The `/` filter of the list views: words and `field:value` terms, all of which must match
//! (case-insensitive substrings), and a leading `!` that keeps the rows that do not.
//!
//! `tenant:acme region:eu-west-1 big` keeps the rows of tenant acme in eu-west-1 that
//! mention "big" anywhere. A `name:` this view does not know is an ordinary word.
//! Parsed when the filter or the data changes, never while drawing.

use super::action::View;
use super::app::App;

/// A field a `name:value` term matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Tenant,
    Region,
    Rule,
    State,
    Plan,
    Label,
    Requester,
    Status,
    Severity,
    Kind,
    Zone,
    Node,
}

const REQUEST_FIELDS: &[(&str, Field)] = &[
    ("tenant", Field::Tenant),
    ("region", Field::Region),
    ("rule", Field::Rule),
    ("state", Field::State),
    ("plan", Field::Plan),
    ("label", Field::Label),
    ("requester", Field::Requester),
];
const NODE_FIELDS: &[(&str, Field)] = &[
    ("tenant", Field::Tenant),
    ("region", Field::Region),
    ("status", Field::Status),
    ("label", Field::Label),
];

const LISTING_FIELDS: &[(&str, Field)] = &[
    ("severity", Field::Severity),
    ("zone", Field::Zone),
    ("node", Field::Node),
];
/// `state:` is open, acked, silenced or resolved; asking about state also shows the
/// resolved alerts the view otherwise hides (`state:resolved`, or `state:` for all).
const ALERT_FIELDS: &[(&str, Field)] = &[
    ("severity", Field::Severity),
    ("kind", Field::Kind),
    ("node", Field::Node),
    ("state", Field::State),
];

/// The `name:` terms a view understands, for parsing and for the help.
pub fn fields(v: View) -> &'static [(&'static str, Field)] {
    match v {
        View::Requests | View::Approvals | View::Pipeline => REQUEST_FIELDS,
        View::Fleet | View::Warmup => NODE_FIELDS,
        View::Blacklist => LISTING_FIELDS,
        View::Alerts => ALERT_FIELDS,
        View::Events | View::Triage => &[],
    }
}

/// A parsed filter: every term must match, then `invert` flips the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub invert: bool,
    pub terms: Vec<(Field, String)>,
    pub words: Vec<String>,
}

impl Filter {
    pub fn parse(text: &str, v: View) -> Filter {
        let (invert, rest) = match text.trim_start().strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let known = fields(v);
        let mut f = Filter {
            invert,
            ..Default::default()
        };
        for word in rest.split_whitespace() {
            let word = word.to_lowercase();
            let term = word.split_once(':').and_then(|(name, value)| {
                known
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, field)| (*field, value.to_string()))
            });
            match term {
                Some(t) => f.terms.push(t),
                None => f.words.push(word),
            }
        }
        f
    }

    /// Whether every row `narrower` keeps, this filter keeps too: each of this filter's
    /// words is inside one of its words, each term inside one of its terms on the same
    /// field (what typing one more character does). Then the rows it shows are a subset
    /// of these, in the same order: filtering them again is enough, with no sort.
    pub fn keeps_all_of(&self, narrower: &Filter) -> bool {
        // An empty filter keeps every row, inverted or not (see `table::member`).
        if self.is_empty() {
            return true;
        }
        if self.invert || narrower.invert {
            return false;
        }
        self.words
            .iter()
            .all(|w| narrower.words.iter().any(|n| n.contains(w.as_str())))
            && self.terms.iter().all(|(field, want)| {
                narrower
                    .terms
                    .iter()
                    .any(|(f, n)| f == field && n.contains(want.as_str()))
            })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty() && self.words.is_empty()
    }

    /// Whether row `i` of view `v` stays. `mentions` says whether the row's searchable
    /// text holds a (lower-case) word; it is only asked when there are free words.
    pub fn keeps(&self, app: &App, v: View, i: usize, mentions: impl Fn(&str) -> bool) -> bool {
        let terms = self.terms.iter().all(|(field, want)| {
            value(app, v, i, *field).is_some_and(|have| contains_folded(have, want))
        });
        let all = terms && { self.words.iter().all(|w| mentions(w)) };
        all != self.invert
    }
}

/// Whether `have`, lower-cased, contains `want` (already lower-case): without making a
/// copy when `have` has no upper-case letters, as the words the fleet is made of rarely do.
fn contains_folded(have: &str, want: &str) -> bool {
    if have.chars().any(char::is_uppercase) {
        have.to_lowercase().contains(want)
    } else {
        have.contains(want)
    }
}

/// The text of `field` in row `i` of view `v`.
fn value(app: &App, v: View, i: usize, field: Field) -> Option<&str> {
    let s = &app.snap;
    match v {
        View::Requests | View::Approvals | View::Pipeline => {
            let r = s.requests.get(i)?;
            Some(match field {
                Field::Tenant => &r.tenant,
                Field::Region => &r.region,
                Field::Rule => r.approval_rule.as_deref().unwrap_or(""),
                Field::State => &r.state,
                Field::Plan => &r.plan,
                Field::Label => &r.label,
                Field::Requester => &r.requested_by,
                _ => return None,
            })
        }
        View::Fleet | View::Warmup => {
            let n = s.nodes.get(i)?;
            Some(match field {
                Field::Tenant => &n.tenant,
                Field::Region => &n.region,
                Field::Status => &n.status,
                Field::Label => &n.label,
                _ => return None,
            })
        }
        View::Blacklist => {
            let l = s.listings.get(i)?;
            match field {
                Field::Severity => l.severity.as_deref(),
                Field::Zone => Some(&l.zone),
                Field::Node => l.node_label.as_deref(),
                _ => None,
            }
        }
        View::Alerts => {
            let a = s.alerts.get(i)?;
            match field {
                Field::Severity => Some(&a.severity),
                Field::Kind => Some(&a.kind),
                Field::Node => a.node_label.as_deref(),
                Field::State => Some(a.state_at(&crate::clock::ts(app.now))),
                _ => None,
            }
        }
        View::Events | View::Triage => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_words_and_inversion_parse() {
        let f = Filter::parse("!Tenant:ACME region:eu-west-1 Big rule:", View::Approvals);
        assert!(f.invert);
        assert_eq!(
            f.terms,
            vec![
                (Field::Tenant, "acme".to_string()),
                (Field::Region, "eu-west-1".to_string()),
                (Field::Rule, String::new()),
            ]
        );
        assert_eq!(f.words, vec!["big".to_string()]);
        // A name the view does not know is a word: nodes have no rule.
        let f = Filter::parse("rule:high status:paused", View::Fleet);
        assert_eq!(f.words, vec!["rule:high".to_string()]);
        assert_eq!(f.terms, vec![(Field::Status, "paused".to_string())]);
        assert!(Filter::parse("  ", View::Fleet).is_empty());
        let f = Filter::parse("severity:HIGH kind:blocklist dal", View::Alerts);
        assert_eq!(
            f.terms,
            vec![
                (Field::Severity, "high".to_string()),
                (Field::Kind, "blocklist".to_string()),
            ]
        );
        assert_eq!(f.words, vec!["dal".to_string()]);
    }

    #[test]
    fn narrowing_is_told_from_any_other_change() {
        let f = |t: &str| Filter::parse(t, View::Fleet);
        // Typing on: each step keeps a subset.
        for (from, to) in [
            ("", "n"),
            ("n", "no"),
            ("node-a", "node-am"),
            ("ams", "ams dal"),
            ("tenant:ac", "tenant:acme"),
            ("tenant:acme", "tenant:acme big"),
            ("", "!paused"),
        ] {
            assert!(f(from).keeps_all_of(&f(to)), "{from:?} → {to:?}");
        }
        // Anything else may show rows the old filter hid.
        for (from, to) in [
            ("no", "n"),
            ("node-am", "node-ab"),
            ("tenant", "tenant:"),
            ("tenant:acme", "region:acme"),
            ("!paused", "!paused2"),
            ("!p", "!pa"),
            ("ams", ""),
        ] {
            assert!(!f(from).keeps_all_of(&f(to)), "{from:?} → {to:?}");
        }
    }
}
