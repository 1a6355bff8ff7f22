//! What a blocklist check means for a node (seed 001): a listing on a high-severity zone
//! pauses the node at once; a listing elsewhere raises a medium alert; a delisting closes
//! the listing and, if the operator chose auto-resume, resumes a node that no listing holds
//! any more. Pure: the store applies the changes in one transaction.

use super::dnsbl::{Severity, Status, Verdict};

/// A listing the store holds open for the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenListing {
    pub zone: String,
    pub severity: Severity,
}

/// What the store must write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Open a listing event (and emit `node.blacklisted`).
    Listed {
        zone: String,
        severity: Severity,
        code: Option<String>,
        meaning: Option<String>,
        reason: Option<String>,
    },
    /// Close the open listing on this zone (and emit `node.delisted`).
    Delisted {
        zone: String,
    },
    /// Pause the node, out of rotation (and emit `node.paused`).
    Pause {
        reason: String,
    },
    /// Resume the node to the status it had before the pause (and emit `node.resumed`).
    Resume,
    Alert {
        severity: Severity,
        zone: String,
        message: String,
    },
    ResolveAlert {
        zone: String,
    },
}

/// The node as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView<'a> {
    pub label: &'a str,
    pub status: &'a str,
    /// Why it is paused, when it is: "blocklist", "bounce", "warmup", "operator".
    pub pause_cause: Option<&'a str>,
}

/// The score a node's open listings leave it (100 is clean).
pub fn score(open: &[Severity]) -> i64 {
    let lost: i64 = open
        .iter()
        .map(|s| match s {
            Severity::High => 50,
            Severity::Medium => 20,
            Severity::Low => 5,
        })
        .sum();
    (100 - lost).max(0)
}

/// The changes one round of checks calls for. Only `listed` and `not_listed` answers move
/// anything: an error or unknown answer neither opens nor closes a listing. Returns the
/// changes and the node's score afterwards.
pub fn plan(
    node: &NodeView<'_>,
    open: &[OpenListing],
    checked: &[(Verdict, Severity)],
    auto_resume: bool,
) -> (Vec<Change>, i64) {
    let mut changes = Vec::new();
    let mut still_open: Vec<OpenListing> = open.to_vec();
    let mut new_high: Vec<String> = Vec::new();
    for (v, severity) in checked {
        let was_open = open.iter().any(|o| o.zone == v.zone);
        match v.status {
            Status::Listed if !was_open => {
                let what = v.meaning.as_deref().unwrap_or("listed");
                changes.push(Change::Listed {
                    zone: v.zone.clone(),
                    severity: *severity,
                    code: v.code.map(|c| c.to_string()),
                    meaning: v.meaning.clone(),
                    reason: v.reason.clone(),
                });
                let alert = if *severity == Severity::High {
                    new_high.push(format!("{} ({what})", v.zone));
                    Severity::High
                } else {
                    Severity::Medium
                };
                changes.push(Change::Alert {
                    severity: alert,
                    zone: v.zone.clone(),
                    message: format!("{} {} is listed on {} ({what})", node.label, v.ip, v.zone),
                });
                still_open.push(OpenListing {
                    zone: v.zone.clone(),
                    severity: *severity,
                });
            }
            Status::NotListed if was_open => {
                changes.push(Change::Delisted {
                    zone: v.zone.clone(),
                });
                changes.push(Change::ResolveAlert {
                    zone: v.zone.clone(),
                });
                still_open.retain(|o| o.zone != v.zone);
            }
            _ => {}
        }
    }
    let serving = matches!(node.status, "warming" | "active");
    if !new_high.is_empty() && serving {
        changes.push(Change::Pause {
            reason: format!("blocklist: listed on {}", new_high.join(", ")),
        });
    }
    let held_high = still_open.iter().any(|o| o.severity == Severity::High);
    if auto_resume
        && node.status == "paused"
        && node.pause_cause == Some("blocklist")
        && !held_high
        && changes.iter().any(|c| matches!(c, Change::Delisted { .. }))
    {
        changes.push(Change::Resume);
    }
    let severities: Vec<Severity> = still_open.iter().map(|o| o.severity).collect();
    (changes, score(&severities))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v(zone: &str, status: Status) -> Verdict {
        Verdict {
            ip: Ipv4Addr::new(192, 0, 2, 10),
            zone: zone.into(),
            status,
            code: (status == Status::Listed).then(|| Ipv4Addr::new(127, 0, 0, 2)),
            meaning: (status == Status::Listed).then(|| "SBL".to_string()),
            reason: None,
        }
    }

    fn node(status: &'static str, cause: Option<&'static str>) -> NodeView<'static> {
        NodeView {
            label: "mx-1",
            status,
            pause_cause: cause,
        }
    }

    #[test]
    fn a_high_listing_pauses_a_serving_node_and_alerts_high() {
        let (c, score) = plan(
            &node("active", None),
            &[],
            &[(v("zen", Status::Listed), Severity::High)],
            false,
        );
        assert!(matches!(&c[0], Change::Listed { zone, .. } if zone == "zen"));
        assert!(matches!(
            &c[1],
            Change::Alert {
                severity: Severity::High,
                ..
            }
        ));
        assert_eq!(
            c[2],
            Change::Pause {
                reason: "blocklist: listed on zen (SBL)".into()
            }
        );
        assert_eq!(score, 50);
    }

    #[test]
    fn other_listings_alert_medium_without_pausing() {
        for sev in [Severity::Medium, Severity::Low] {
            let (c, _) = plan(
                &node("warming", None),
                &[],
                &[(v("spamcop", Status::Listed), sev)],
                false,
            );
            assert!(c.iter().any(|x| matches!(
                x,
                Change::Alert {
                    severity: Severity::Medium,
                    ..
                }
            )));
            assert!(!c.iter().any(|x| matches!(x, Change::Pause { .. })));
        }
    }

    #[test]
    fn nothing_changes_while_a_listing_stays_or_answers_fail() {
        let open = [OpenListing {
            zone: "zen".into(),
            severity: Severity::High,
        }];
        for status in [Status::Listed, Status::Error, Status::Unknown] {
            let (c, score) = plan(
                &node("paused", Some("blocklist")),
                &open,
                &[(v("zen", status), Severity::High)],
                true,
            );
            assert!(c.is_empty(), "{status:?}: {c:?}");
            assert_eq!(score, 50);
        }
        // An error never opens a listing either.
        let (c, _) = plan(
            &node("active", None),
            &[],
            &[(v("zen", Status::Error), Severity::High)],
            true,
        );
        assert!(c.is_empty());
    }

    #[test]
    fn delisting_closes_and_resumes_only_when_chosen_and_nothing_high_holds() {
        let open = [
            OpenListing {
                zone: "zen".into(),
                severity: Severity::High,
            },
            OpenListing {
                zone: "cop".into(),
                severity: Severity::Medium,
            },
        ];
        let delisted = [(v("zen", Status::NotListed), Severity::High)];
        let (c, score) = plan(&node("paused", Some("blocklist")), &open, &delisted, true);
        assert_eq!(
            c,
            vec![
                Change::Delisted { zone: "zen".into() },
                Change::ResolveAlert { zone: "zen".into() },
                Change::Resume
            ]
        );
        assert_eq!(score, 80);
        let (c, _) = plan(&node("paused", Some("blocklist")), &open, &delisted, false);
        assert!(!c.contains(&Change::Resume), "no auto-resume unless chosen");
        let (c, _) = plan(&node("paused", Some("operator")), &open, &delisted, true);
        assert!(!c.contains(&Change::Resume), "an operator's pause stays");
        // Still listed high elsewhere: no resume.
        let two_high = [
            open[0].clone(),
            OpenListing {
                zone: "other".into(),
                severity: Severity::High,
            },
        ];
        let (c, _) = plan(
            &node("paused", Some("blocklist")),
            &two_high,
            &delisted,
            true,
        );
        assert!(!c.contains(&Change::Resume));
    }

    #[test]
    fn scores_fall_with_each_open_listing_and_stop_at_zero() {
        assert_eq!(score(&[]), 100);
        assert_eq!(score(&[Severity::Low, Severity::Medium]), 75);
        assert_eq!(score(&[Severity::High, Severity::High, Severity::High]), 0);
    }
}
