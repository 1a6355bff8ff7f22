//! Sending counts from the simulated cloud: realistic daily numbers per node, the same for
//! the same seed, node and date. Most nodes are healthy; some have bounce spikes, some
//! waves of deferrals, and a few draw complaints — so holds and pauses happen.

use super::SendingCounts;
use crate::domain::warmup::DayCounts;
use crate::store::WarmNode;
use async_trait::async_trait;
use chrono::NaiveDate;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// How a node tends to behave, fixed per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temper {
    Healthy,
    BounceSpikes,
    DeferralWaves,
    Complaints,
}

pub struct SimCounts {
    pub seed: u64,
}

fn mix(seed: u64, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl SimCounts {
    /// 80% healthy, 8% bounce spikes, 8% deferral waves, 4% complaints.
    pub fn temper(&self, node_id: &str) -> Temper {
        match mix(self.seed, node_id) % 100 {
            0..=79 => Temper::Healthy,
            80..=87 => Temper::BounceSpikes,
            88..=95 => Temper::DeferralWaves,
            _ => Temper::Complaints,
        }
    }

    /// The node's counts on `date` with `cap` to send.
    pub fn counts(&self, node_id: &str, date: NaiveDate, cap: u64) -> DayCounts {
        let mut rng = SmallRng::seed_from_u64(mix(self.seed, &format!("{node_id}/{date}")));
        let sent = ((cap as f64) * rng.gen_range(0.88..=1.0)).round() as u64;
        let frac = |rng: &mut SmallRng, lo: f64, hi: f64| {
            ((sent as f64) * rng.gen_range(lo..hi)).round() as u64
        };
        let bad_day = rng.gen_bool(0.25);
        let (bounce, defer, complain) = match self.temper(node_id) {
            Temper::Healthy => (
                frac(&mut rng, 0.002, 0.02),
                frac(&mut rng, 0.005, 0.05),
                frac(&mut rng, 0.0, 0.0004),
            ),
            Temper::BounceSpikes if bad_day => (
                frac(&mut rng, 0.035, 0.08),
                frac(&mut rng, 0.01, 0.05),
                frac(&mut rng, 0.0, 0.0005),
            ),
            Temper::DeferralWaves if bad_day => (
                frac(&mut rng, 0.005, 0.02),
                frac(&mut rng, 0.11, 0.25),
                frac(&mut rng, 0.0, 0.0004),
            ),
            Temper::Complaints if bad_day => (
                frac(&mut rng, 0.005, 0.02),
                frac(&mut rng, 0.01, 0.05),
                frac(&mut rng, 0.0012, 0.004),
            ),
            _ => (
                frac(&mut rng, 0.002, 0.025),
                frac(&mut rng, 0.005, 0.06),
                frac(&mut rng, 0.0, 0.0005),
            ),
        };
        let bounced = bounce.min(sent);
        let deferred = defer.min(sent - bounced);
        let delivered = sent - bounced - deferred;
        DayCounts {
            sent,
            delivered,
            deferred,
            bounced,
            complaints: complain.min(delivered),
        }
    }
}

#[async_trait]
impl SendingCounts for SimCounts {
    async fn day_counts(
        &self,
        node: &WarmNode,
        date: NaiveDate,
    ) -> Result<Option<DayCounts>, String> {
        Ok(Some(self.counts(&node.node_id, date, node.cap)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_repeat_for_the_same_day_and_tempers_differ() {
        let sim = SimCounts { seed: 7 };
        let date = NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        let mut seen = std::collections::HashSet::new();
        for n in 0..500 {
            let id = format!("node-{n}");
            let c = sim.counts(&id, date, 1000);
            assert_eq!(c.delivered + c.deferred + c.bounced, c.sent);
            assert!(c.sent <= 1000 && c.sent >= 880);
            assert!(c.complaints <= c.delivered);
            assert_eq!(c, sim.counts(&id, date, 1000));
            seen.insert(format!("{:?}", sim.temper(&id)));
        }
        assert_eq!(seen.len(), 4, "every temper occurs: {seen:?}");
    }
}
