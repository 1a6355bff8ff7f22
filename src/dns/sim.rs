//! The simulated DNS provider of the embedded default (SQLite and the simulated cloud). It
//! behaves like a cloud's DNS API, not a stub: every call takes time (`delay_ms` of the
//! simulated cloud's settings) and may fail with a transient error (`failure_rate`, from a
//! seeded random generator, so a run can be repeated); the zones live in the database
//! (`sim_dns_records`), so a restart or a crash cannot make it forget what was published.
//!
//! Zones are created implicitly: publishing into a zone the simulator has never seen creates
//! it, and a zone with nothing published in it answers lookups with nothing (and removing
//! from it succeeds). Otherwise it does what the PowerDNS provider does: records are added
//! beside whatever the record set holds (one transaction per publish), a record already there
//! with the same content is not added twice nor returned, a second SPF- or DMARC-style record
//! is refused with nothing written, and removing takes away exactly the given records. Record
//! sets share one TTL: the last publish into a set sets it. Contents are kept as `Published`
//! has them (TXT as quoted strings) and compared without surrounding whitespace.

use super::{singleton_conflict, DnsError, DnsProvider, Published};
use crate::clock::SharedClock;
use crate::config::SimConfig;
use crate::domain::records::PlannedRecord;
use crate::store::{SimDnsNew, SimDnsRecord, Store, StoreError};
use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;
use std::time::Duration;

pub const NAME: &str = "sim";

/// Mixed into the simulated cloud's seed, so DNS calls fail on a sequence of their own rather
/// than in step with the instance calls made from the same seed.
const SEED_SALT: u64 = 0x646e_735f_7369_6d00;

/// What a flaky DNS API says when it fails.
const FAILURES: [&str; 5] = [
    "503 Service Unavailable: the DNS API is overloaded, try again",
    "504 Gateway Timeout: the zone's primary did not answer in time",
    "429 Too Many Requests: rate limit of 4 zone changes/s exceeded",
    "500 Internal Server Error: zone update could not be serialised",
    "connection reset by peer",
];

pub struct SimDns {
    store: Store,
    cfg: SimConfig,
    clock: SharedClock,
    rng: Mutex<StdRng>,
}

impl std::fmt::Debug for SimDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDns").field("cfg", &self.cfg).finish()
    }
}

/// A zone's name as kept: lowercase, with the trailing dot.
fn zone_name(zone: &str) -> String {
    format!("{}.", zone.trim_end_matches('.').to_ascii_lowercase())
}

fn same(a: &str, b: &str) -> bool {
    a.trim() == b.trim()
}

fn published(r: &SimDnsRecord) -> Published {
    Published {
        name: r.name.clone(),
        rtype: r.rtype.clone(),
        ttl: r.ttl,
        content: r.content.clone(),
    }
}

impl SimDns {
    /// Takes the simulated cloud's settings (`[providers.sim]`): `seed`, `failure_rate` and
    /// `delay_ms` apply to every DNS call as they do to the cloud's.
    pub fn new(store: Store, cfg: SimConfig, clock: SharedClock) -> Self {
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(cfg.seed ^ SEED_SALT)),
            store,
            cfg,
            clock,
        }
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, StdRng> {
        self.rng.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call: the API takes its time, and sometimes fails (before it changes anything).
    async fn call(&self, what: &str) -> Result<(), DnsError> {
        let [lo, hi] = self.cfg.delay_ms;
        let (ms, fail, pick) = {
            let mut rng = self.rng();
            let ms = if hi <= lo { lo } else { rng.gen_range(lo..=hi) };
            (
                ms,
                rng.gen::<f64>() < self.cfg.failure_rate,
                rng.gen_range(0..FAILURES.len()),
            )
        };
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if fail {
            return Err(DnsError::Transient(format!(
                "{NAME} dns: {what}: {}",
                FAILURES[pick]
            )));
        }
        Ok(())
    }

    fn store_err(e: StoreError) -> DnsError {
        DnsError::Transient(format!("{NAME} dns: zone storage unavailable: {e}"))
    }
}

#[async_trait]
impl DnsProvider for SimDns {
    fn name(&self) -> &str {
        NAME
    }

    async fn publish(
        &self,
        zone: &str,
        records: &[PlannedRecord],
    ) -> Result<Vec<Published>, DnsError> {
        let zid = zone_name(zone);
        self.call(&format!("publish in {zid}")).await?;
        super::check_in_zone(&format!("{NAME} dns"), &zid, records)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let ours: Vec<Published> = records
            .iter()
            .map(|r| {
                let mut p = Published::of(r);
                p.name = p.name.to_ascii_lowercase();
                p
            })
            .collect();
        let mut keys: Vec<(String, String)> = ours
            .iter()
            .map(|p| (p.name.clone(), p.rtype.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        let decide = move |current: &[SimDnsRecord]| -> Result<Vec<SimDnsNew>, String> {
            let mut held: Vec<(String, String, String)> = current
                .iter()
                .map(|c| (c.name.clone(), c.rtype.clone(), c.content.clone()))
                .collect();
            let mut add = Vec::new();
            for p in ours {
                let at = |h: &&(String, String, String)| h.0 == p.name && h.1 == p.rtype;
                if held.iter().filter(at).any(|h| same(&h.2, &p.content)) {
                    continue;
                }
                singleton_conflict(
                    &format!("{NAME} dns"),
                    &p,
                    held.iter().filter(at).map(|h| h.2.as_str()),
                )?;
                held.push((p.name.clone(), p.rtype.clone(), p.content.clone()));
                add.push(SimDnsNew {
                    name: p.name,
                    rtype: p.rtype,
                    ttl: p.ttl,
                    content: p.content.trim().to_string(),
                });
            }
            Ok(add)
        };
        let added = self
            .store
            .sim_dns_publish(&zid, keys, decide, self.clock.now())
            .await
            .map_err(Self::store_err)?
            .map_err(DnsError::Rejected)?;
        Ok(added
            .into_iter()
            .map(|a| Published {
                name: a.name,
                rtype: a.rtype,
                ttl: a.ttl,
                content: a.content,
            })
            .collect())
    }

    async fn remove(&self, zone: &str, records: &[Published]) -> Result<(), DnsError> {
        let zid = zone_name(zone);
        self.call(&format!("remove from {zid}")).await?;
        if records.is_empty() {
            return Ok(());
        }
        let gone = records
            .iter()
            .map(|r| {
                (
                    r.name.to_ascii_lowercase(),
                    r.rtype.to_ascii_uppercase(),
                    r.content.clone(),
                )
            })
            .collect();
        self.store
            .sim_dns_remove(&zid, gone)
            .await
            .map_err(Self::store_err)?;
        Ok(())
    }

    async fn lookup(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Vec<Published>, DnsError> {
        let zid = zone_name(zone);
        self.call(&format!("read {rtype} records at {name}"))
            .await?;
        let rows = self
            .store
            .sim_dns_lookup(
                &zid,
                &name.to_ascii_lowercase(),
                &rtype.to_ascii_uppercase(),
            )
            .await
            .map_err(Self::store_err)?;
        Ok(rows.iter().map(published).collect())
    }

    async fn lookup_many(
        &self,
        zone: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<Vec<Published>>, DnsError> {
        let zid = zone_name(zone);
        self.call(&format!("read {} record sets", keys.len()))
            .await?;
        let keys = keys
            .iter()
            .map(|(n, t)| (n.to_ascii_lowercase(), t.to_ascii_uppercase()))
            .collect();
        let sets = self
            .store
            .sim_dns_lookup_many(&zid, keys)
            .await
            .map_err(Self::store_err)?;
        Ok(sets
            .iter()
            .map(|rows| rows.iter().map(published).collect())
            .collect())
    }
}
