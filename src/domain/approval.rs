//! Approval rules: which requests must wait for an approver, and why.

use serde::{Deserialize, Serialize};

/// The facts about a request that rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    pub tenant: &'a str,
    pub region: &'a str,
    pub kind: &'a str,
    pub cpu: u32,
    pub memory_gb: u32,
    pub storage_gb: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRule {
    pub name: String,
    pub priority: i64,
    pub tenant: Option<String>,
    pub min_cpu: Option<u32>,
    pub min_memory_gb: Option<u32>,
    pub min_storage_gb: Option<u32>,
    pub types: Vec<String>,
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    pub rule: String,
    /// The rule as matched (its canonical JSON), so the store can keep which version applied.
    pub definition: String,
    /// Why it matched, e.g. "High-Resource VPS Approval: cpu 16 ≥ 16, region eu-west-1".
    pub reason: String,
}

impl ApprovalRule {
    /// The rule as canonical JSON (fields in declaration order): two rules with the same
    /// definition are the same version.
    pub fn definition(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every condition the rule sets must hold; the reasons list what matched.
    pub fn matches(&self, f: &RequestFacts<'_>) -> Option<Vec<String>> {
        let mut why = Vec::new();
        if let Some(t) = &self.tenant {
            if t != f.tenant {
                return None;
            }
            why.push(format!("tenant {t}"));
        }
        let mins = [
            ("cpu", self.min_cpu, f.cpu, ""),
            ("memory", self.min_memory_gb, f.memory_gb, " GB"),
            ("storage", self.min_storage_gb, f.storage_gb, " GB"),
        ];
        for (what, min, have, unit) in mins {
            if let Some(min) = min {
                if have < min {
                    return None;
                }
                why.push(format!("{what} {have}{unit} ≥ {min}{unit}"));
            }
        }
        if !self.types.is_empty() {
            if !self.types.iter().any(|t| t.eq_ignore_ascii_case(f.kind)) {
                return None;
            }
            why.push(format!("type {}", f.kind));
        }
        if !self.regions.is_empty() {
            if !self.regions.iter().any(|r| r == f.region) {
                return None;
            }
            why.push(format!("region {}", f.region));
        }
        Some(why)
    }
}

/// The rule that applies: highest priority first; on a tie a tenant-scoped rule beats a
/// global one, then the name decides so the answer never depends on file order.
pub fn first_match(rules: &[ApprovalRule], facts: &RequestFacts<'_>) -> Option<RuleMatch> {
    let mut ordered: Vec<&ApprovalRule> = rules.iter().collect();
    ordered.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(b.tenant.is_some().cmp(&a.tenant.is_some()))
            .then(a.name.cmp(&b.name))
    });
    ordered.into_iter().find_map(|rule| {
        rule.matches(facts).map(|why| RuleMatch {
            rule: rule.name.clone(),
            definition: rule.definition(),
            reason: if why.is_empty() {
                format!("{}: applies to every request", rule.name)
            } else {
                format!("{}: {}", rule.name, why.join(", "))
            },
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_rule() -> ApprovalRule {
        ApprovalRule {
            name: "High-Resource VPS Approval".into(),
            priority: 10,
            tenant: None,
            min_cpu: Some(16),
            min_memory_gb: Some(32),
            min_storage_gb: Some(500),
            types: vec!["vps".into()],
            regions: vec!["eu-west-1".into()],
        }
    }

    fn big(region: &'static str) -> RequestFacts<'static> {
        RequestFacts {
            tenant: "acme",
            region,
            kind: "vps",
            cpu: 16,
            memory_gb: 32,
            storage_gb: 500,
        }
    }

    #[test]
    fn seed_rule_matches_with_its_reasons() {
        let m = first_match(&[seed_rule()], &big("eu-west-1")).expect("matches");
        assert_eq!(
            m.reason,
            "High-Resource VPS Approval: cpu 16 ≥ 16, memory 32 GB ≥ 32 GB, storage 500 GB ≥ 500 GB, type vps, region eu-west-1"
        );
    }

    #[test]
    fn every_condition_must_hold() {
        let rules = [seed_rule()];
        assert!(first_match(&rules, &big("dallas")).is_none());
        let mut small = big("eu-west-1");
        small.cpu = 15;
        assert!(first_match(&rules, &small).is_none());
    }

    #[test]
    fn priority_then_scope_decides() {
        let global = ApprovalRule {
            name: "all".into(),
            priority: 1,
            tenant: None,
            min_cpu: None,
            min_memory_gb: None,
            min_storage_gb: None,
            types: vec![],
            regions: vec![],
        };
        let scoped = ApprovalRule {
            name: "acme-only".into(),
            tenant: Some("acme".into()),
            ..global.clone()
        };
        let m = first_match(&[global.clone(), scoped.clone()], &big("dallas")).expect("match");
        assert_eq!(m.rule, "acme-only");
        let m = first_match(&[global, scoped, seed_rule()], &big("eu-west-1")).expect("match");
        assert_eq!(m.rule, "High-Resource VPS Approval");
    }
}
