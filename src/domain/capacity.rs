//! Quota and capacity arithmetic, and cluster selection. Pure: the store sums what is
//! reserved, these functions decide.

use serde::Serialize;

/// Amounts of what a request needs or a limit allows. `units` is nodes for a quota and VM
/// slots for a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Amounts {
    pub units: i64,
    pub cpu: i64,
    pub memory_gb: i64,
    pub storage_gb: i64,
}

impl Amounts {
    pub fn plus(self, o: Amounts) -> Amounts {
        Amounts {
            units: self.units + o.units,
            cpu: self.cpu + o.cpu,
            memory_gb: self.memory_gb + o.memory_gb,
            storage_gb: self.storage_gb + o.storage_gb,
        }
    }

    /// The first dimension in which `self` exceeds `limit`, as (name, value, limit).
    pub fn first_excess(
        self,
        limit: Amounts,
        units_name: &'static str,
    ) -> Option<(&'static str, i64, i64)> {
        [
            (units_name, self.units, limit.units),
            ("cpu", self.cpu, limit.cpu),
            ("memory_gb", self.memory_gb, limit.memory_gb),
            ("storage_gb", self.storage_gb, limit.storage_gb),
        ]
        .into_iter()
        .find(|(_, v, l)| v > l)
    }
}

/// What a resize from `old` to `new` needs beyond what the node holds: each dimension's
/// growth, nothing for one that shrinks, and no unit (the node is counted already).
pub fn growth(old: Amounts, new: Amounts) -> Amounts {
    Amounts {
        units: 0,
        cpu: (new.cpu - old.cpu).max(0),
        memory_gb: (new.memory_gb - old.memory_gb).max(0),
        storage_gb: (new.storage_gb - old.storage_gb).max(0),
    }
}

/// The first dimension that `need` grows past `limit`, as (name, value, limit). Only the
/// dimensions that grow are looked at: a pool already over its limit in another (a limit
/// lowered since) does not stop a resize that does not add to it.
pub fn growth_excess(
    limit: Amounts,
    used: Amounts,
    need: Amounts,
) -> Option<(&'static str, i64, i64)> {
    [
        ("cpu", used.cpu + need.cpu, limit.cpu, need.cpu),
        (
            "memory_gb",
            used.memory_gb + need.memory_gb,
            limit.memory_gb,
            need.memory_gb,
        ),
        (
            "storage_gb",
            used.storage_gb + need.storage_gb,
            limit.storage_gb,
            need.storage_gb,
        ),
    ]
    .into_iter()
    .find(|(_, v, l, n)| *n > 0 && v > l)
    .map(|(what, v, l, _)| (what, v, l))
}

/// Checks a tenant's quota: "acme: cpu 66/64 after this request" when it would not fit.
pub fn check_quota(
    tenant: &str,
    limit: Amounts,
    used: Amounts,
    need: Amounts,
) -> Result<(), String> {
    match used.plus(need).first_excess(limit, "nodes") {
        None => Ok(()),
        Some((what, v, l)) => Err(format!("{tenant}: {what} {v}/{l} after this request")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Online,
    Degraded,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub region: &'a str,
    pub default: bool,
    pub health: Health,
    pub capacity: Amounts,
    pub used: Amounts,
}

/// Why no cluster could take a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoCluster {
    NoneInRegion,
    NoneHealthy,
    NoRoom,
}

/// Picks the cluster for a request: same provider type and region, online, with room for
/// `need`; the region's default cluster first, then the others in the order given.
pub fn select_cluster<'a>(
    clusters: &'a [ClusterView<'a>],
    provider: Option<&str>,
    region: &str,
    need: Amounts,
) -> Result<&'a ClusterView<'a>, NoCluster> {
    let in_region: Vec<&ClusterView<'a>> = clusters
        .iter()
        .filter(|c| c.region == region && provider.is_none_or(|p| p == c.provider))
        .collect();
    if in_region.is_empty() {
        return Err(NoCluster::NoneInRegion);
    }
    let healthy: Vec<&ClusterView<'a>> = in_region
        .into_iter()
        .filter(|c| c.health == Health::Online)
        .collect();
    if healthy.is_empty() {
        return Err(NoCluster::NoneHealthy);
    }
    let fits = |c: &&ClusterView<'a>| {
        c.used
            .plus(need)
            .first_excess(c.capacity, "vm_slots")
            .is_none()
    };
    healthy
        .iter()
        .find(|c| c.default && fits(c))
        .or_else(|| healthy.iter().find(|c| fits(c)))
        .copied()
        .ok_or(NoCluster::NoRoom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(units: i64, cpu: i64, mem: i64, disk: i64) -> Amounts {
        Amounts {
            units,
            cpu,
            memory_gb: mem,
            storage_gb: disk,
        }
    }

    #[test]
    fn quota_error_names_the_numbers() {
        let limit = a(20, 64, 128, 2000);
        assert!(check_quota("acme", limit, a(3, 60, 10, 10), a(1, 4, 8, 100)).is_ok());
        assert_eq!(
            check_quota("acme", limit, a(3, 62, 10, 10), a(1, 4, 8, 100)),
            Err("acme: cpu 66/64 after this request".to_string())
        );
    }

    #[test]
    fn a_resize_needs_only_what_grows_and_is_stopped_only_by_what_it_adds_to() {
        // ssd-2 (2 cpu, 4 GB, 80 GB) to a plan with more cpu and memory but less disk.
        let need = growth(a(1, 2, 4, 80), a(1, 4, 8, 40));
        assert_eq!(need, a(0, 2, 4, 0));
        let limit = a(3, 10, 16, 100);
        assert_eq!(growth_excess(limit, a(3, 8, 12, 100), need), None);
        assert_eq!(
            growth_excess(limit, a(3, 9, 12, 100), need),
            Some(("cpu", 11, 10))
        );
        // Disk already over its (lowered) limit: not this resize's to refuse, it adds none.
        assert_eq!(growth_excess(limit, a(9, 8, 12, 500), need), None);
        // A shrink needs nothing.
        assert_eq!(growth(a(1, 4, 8, 160), a(1, 2, 4, 80)), a(0, 0, 0, 0));
    }

    fn cluster<'a>(
        name: &'a str,
        region: &'a str,
        default: bool,
        health: Health,
        used_cpu: i64,
    ) -> ClusterView<'a> {
        ClusterView {
            name,
            provider: "sim",
            region,
            default,
            health,
            capacity: a(10, 16, 64, 1000),
            used: a(0, used_cpu, 0, 0),
        }
    }

    #[test]
    fn selection_table() {
        let need = a(1, 4, 8, 100);
        let cs = [
            cluster("d-a", "dallas", false, Health::Online, 0),
            cluster("d-def", "dallas", true, Health::Online, 0),
            cluster("d-full-def", "dallas", true, Health::Online, 14),
            cluster("s-deg", "seattle", true, Health::Degraded, 0),
            cluster("a-full", "amsterdam", true, Health::Online, 13),
        ];
        let cases: [(&str, Result<&str, NoCluster>); 4] = [
            ("dallas", Ok("d-def")),
            ("seattle", Err(NoCluster::NoneHealthy)),
            ("amsterdam", Err(NoCluster::NoRoom)),
            ("tokyo", Err(NoCluster::NoneInRegion)),
        ];
        for (region, want) in cases {
            let got = select_cluster(&cs, Some("sim"), region, need).map(|c| c.name);
            assert_eq!(got, want, "region {region}");
        }
        // A full default falls back to the first other cluster with room.
        let only = [cs[2].clone(), cs[0].clone()];
        assert_eq!(
            select_cluster(&only, Some("sim"), "dallas", need).map(|c| c.name),
            Ok("d-a")
        );
        assert_eq!(
            select_cluster(&cs, Some("openstack"), "dallas", need).map(|c| c.name),
            Err(NoCluster::NoneInRegion)
        );
    }

    #[test]
    fn every_capacity_dimension_and_health_counts() {
        // capacity: 10 slots, 16 cpu, 64 GB, 1000 GB; nothing used.
        let room = |need: Amounts, health: Health| {
            let cs = [cluster("c", "dallas", true, health, 0)];
            select_cluster(&cs, None, "dallas", need).map(|c| c.name.to_string())
        };
        let cases = [
            (a(1, 16, 64, 1000), Health::Online, Ok("c".to_string())),
            (a(11, 1, 1, 1), Health::Online, Err(NoCluster::NoRoom)),
            (a(1, 17, 1, 1), Health::Online, Err(NoCluster::NoRoom)),
            (a(1, 1, 65, 1), Health::Online, Err(NoCluster::NoRoom)),
            (a(1, 1, 1, 1001), Health::Online, Err(NoCluster::NoRoom)),
            (a(1, 1, 1, 1), Health::Degraded, Err(NoCluster::NoneHealthy)),
            (a(1, 1, 1, 1), Health::Offline, Err(NoCluster::NoneHealthy)),
        ];
        for (need, health, want) in cases {
            assert_eq!(room(need, health), want, "{need:?} on a {health:?} cluster");
        }
    }
}
