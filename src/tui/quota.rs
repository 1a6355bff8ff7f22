//! Each tenant's quota as the Approvals view shows it: what is reserved now (from the
//! snapshot) against the configured limits, and what approving one request would make of
//! it. Built once per snapshot; drawing only looks figures up.

use crate::config::Config;
use crate::store::{ConsoleRequest, ConsoleSnapshot, Usage};
use std::collections::HashMap;

/// One dimension of a quota: how much is (or would be) used of how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub name: &'static str,
    pub used: i64,
    pub limit: i64,
}

impl Share {
    /// How full, in thousandths (a zero limit with any use counts as far over).
    pub fn permille(&self) -> i64 {
        match (self.used, self.limit) {
            (u, _) if u <= 0 => 0,
            (_, l) if l <= 0 => i64::MAX,
            (u, l) => u.saturating_mul(1000) / l,
        }
    }

    pub fn over(&self) -> bool {
        self.used > self.limit
    }
}

/// A tenant's limits, what it holds, and how many of its requests wait for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantQuota {
    pub name: String,
    pub limit: Usage,
    pub used: Usage,
    pub pending: usize,
}

impl TenantQuota {
    /// Nodes, cpu, memory and storage, in that order.
    pub fn shares(&self) -> [Share; 4] {
        shares(&self.used, &self.limit)
    }

    /// The tightest dimension if `r` were approved on top of what is held now.
    pub fn if_approved(&self, r: &ConsoleRequest) -> Share {
        let after = Usage {
            nodes: self.used.nodes.saturating_add(1),
            cpu: self.used.cpu.saturating_add(r.cpu),
            memory_gb: self.used.memory_gb.saturating_add(r.memory_gb),
            storage_gb: self.used.storage_gb.saturating_add(r.storage_gb),
        };
        tightest(shares(&after, &self.limit))
    }
}

fn shares(used: &Usage, limit: &Usage) -> [Share; 4] {
    let s = |name, used, limit| Share { name, used, limit };
    [
        s("nodes", used.nodes, limit.nodes),
        s("cpu", used.cpu, limit.cpu),
        s("mem", used.memory_gb, limit.memory_gb),
        s("disk", used.storage_gb, limit.storage_gb),
    ]
}

/// The fullest share; on a tie the first (nodes before cpu before memory before disk).
fn tightest(all: [Share; 4]) -> Share {
    let mut best = all[0];
    for s in &all[1..] {
        if s.permille() > best.permille() {
            best = *s;
        }
    }
    best
}

/// Every configured tenant's quota, those with requests awaiting approval first.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    pub tenants: Vec<TenantQuota>,
    by_name: HashMap<String, usize>,
}

impl Quotas {
    /// From the tenants' use (`snap.quota_use`) and how many requests of each await
    /// approval (counted as rows arrive, see `app::Counts`).
    pub fn build(
        cfg: &Config,
        snap: &ConsoleSnapshot,
        pending: &std::collections::BTreeMap<crate::store::Word, usize>,
    ) -> Quotas {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut tenants: Vec<TenantQuota> = cfg
            .tenants
            .iter()
            .map(|t| TenantQuota {
                name: t.name.clone(),
                limit: Usage {
                    nodes: n(t.quota.nodes),
                    cpu: n(t.quota.cpu),
                    memory_gb: n(t.quota.memory_gb),
                    storage_gb: n(t.quota.storage_gb),
                },
                used: snap.quota_use.get(&t.name).copied().unwrap_or_default(),
                pending: pending.get(t.name.as_str()).copied().unwrap_or(0),
            })
            .collect();
        // Stable: config order within each group.
        tenants.sort_by_key(|t| t.pending == 0);
        let by_name = tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Quotas { tenants, by_name }
    }

    pub fn tenant(&self, name: &str) -> Option<&TenantQuota> {
        self.by_name.get(name).and_then(|i| self.tenants.get(*i))
    }

    /// The tightest dimension of `r`'s tenant if `r` were approved; `None` for a tenant
    /// the config no longer names.
    pub fn if_approved(&self, r: &ConsoleRequest) -> Option<Share> {
        self.tenant(&r.tenant).map(|t| t.if_approved(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_dimension_is_the_fullest_share() {
        let t = TenantQuota {
            name: "acme".into(),
            limit: Usage {
                nodes: 10,
                cpu: 64,
                memory_gb: 1000,
                storage_gb: 10_000,
            },
            used: Usage {
                nodes: 3,
                cpu: 50,
                memory_gb: 100,
                storage_gb: 900,
            },
            pending: 1,
        };
        let r = ConsoleRequest {
            id: uuid::Uuid::nil(),
            tenant: "acme".into(),
            region: "eu-west-1".into(),
            plan: "ssd-16".into(),
            cpu: 16,
            memory_gb: 32,
            storage_gb: 500,
            label: "x".into(),
            domain: None,
            state: "pending_approval".into(),
            requested_by: "alice".into(),
            approval_rule: None,
            approval_reason: None,
            wait_reason: None,
            error: None,
            needs_attention: false,
            created_at: 0,
            steps: Default::default(),
            upper: Default::default(),
        };
        let s = t.if_approved(&r);
        assert_eq!((s.name, s.used, s.limit, s.over()), ("cpu", 66, 64, true));
        let zero = Share {
            name: "cpu",
            used: 1,
            limit: 0,
        };
        assert!(zero.over() && zero.permille() == i64::MAX);
    }
}
