//! Warm-up plans: the daily sending cap of a new IP, day by day. Plans are data (the
//! built-in ones in `assets/warmup_plans.toml`, custom ones in the config), written as
//! phases that grow geometrically or as an explicit list of caps.

use serde::{Deserialize, Serialize};

/// The built-in plans, compiled in.
pub const BUILTIN_TOML: &str = include_str!("../../assets/warmup_plans.toml");

/// The plan a new node follows unless the config names another.
pub const DEFAULT_PLAN: &str = "standard";

/// One phase: `days` days growing geometrically from `from` to `to` per day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub days: u32,
    pub from: u64,
    pub to: u64,
}

/// A plan as written: phases, or caps, not both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Vec<Phase>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<u64>>,
}

/// A plan ready to use: its cap on each day, day 1 first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WarmupPlan {
    pub name: String,
    pub description: String,
    pub caps: Vec<u64>,
}

/// Longest plan accepted (a year); anything longer is a typo.
const MAX_DAYS: usize = 366;

impl PlanSpec {
    /// Expands and checks the plan. Errors name the plan and what is wrong.
    pub fn build(&self) -> Result<WarmupPlan, String> {
        let name = &self.name;
        if name.trim().is_empty() {
            return Err("a warm-up plan has an empty name".into());
        }
        let caps = match (&self.phases, &self.caps) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "warm-up plan {name:?}: give phases or caps, not both"
                ))
            }
            (None, None) => return Err(format!("warm-up plan {name:?}: needs phases or caps")),
            (None, Some(caps)) => caps.clone(),
            (Some(phases), None) => {
                let mut caps = Vec::new();
                for (n, p) in phases.iter().enumerate() {
                    if p.days == 0 || p.from == 0 || p.to < p.from {
                        return Err(format!(
                            "warm-up plan {name:?}: phase {} must have days ≥ 1 and 1 ≤ from ≤ to (got days {}, from {}, to {})",
                            n + 1,
                            p.days,
                            p.from,
                            p.to
                        ));
                    }
                    caps.extend(grow(p.from, p.to, p.days));
                }
                caps
            }
        };
        if caps.is_empty() {
            return Err(format!("warm-up plan {name:?}: has no days"));
        }
        if caps.len() > MAX_DAYS {
            return Err(format!(
                "warm-up plan {name:?}: {} days is longer than the {MAX_DAYS} allowed",
                caps.len()
            ));
        }
        if caps[0] == 0 {
            return Err(format!("warm-up plan {name:?}: day 1 has a cap of 0"));
        }
        if let Some(day) = caps.windows(2).position(|w| w[1] < w[0]) {
            return Err(format!(
                "warm-up plan {name:?}: caps must never decrease, but day {} ({}) is below day {} ({})",
                day + 2,
                caps[day + 1],
                day + 1,
                caps[day]
            ));
        }
        Ok(WarmupPlan {
            name: name.clone(),
            description: self.description.clone().unwrap_or_default(),
            caps,
        })
    }
}

/// `days` caps from `from` to `to`, each day the same factor above the one before,
/// rounded, never below the day before, the last exactly `to`.
fn grow(from: u64, to: u64, days: u32) -> Vec<u64> {
    if days == 1 {
        return vec![to];
    }
    let ratio = (to as f64 / from as f64).powf(1.0 / f64::from(days - 1));
    let mut caps: Vec<u64> = Vec::with_capacity(days as usize);
    for d in 0..days {
        let raw = if d + 1 == days {
            to
        } else {
            (from as f64 * ratio.powi(d as i32)).round() as u64
        };
        let floor = caps.last().copied().unwrap_or(0);
        caps.push(raw.clamp(floor, to));
    }
    caps
}

impl WarmupPlan {
    pub fn days(&self) -> u32 {
        self.caps.len() as u32
    }

    /// The cap on `day` (1-based); past the end, the last day's.
    pub fn cap(&self, day: u32) -> u64 {
        let i = (day.max(1) as usize - 1).min(self.caps.len().saturating_sub(1));
        self.caps.get(i).copied().unwrap_or(0)
    }
}

/// Where a resumed warm-up starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResumeFrom {
    /// The day it stopped on.
    Day,
    /// The first day of the week it stopped in (days 1, 8, 15, ...).
    Week,
    /// Day 1.
    Start,
}

impl ResumeFrom {
    pub fn day(self, current: u32) -> u32 {
        match self {
            ResumeFrom::Day => current.max(1),
            ResumeFrom::Week => (current.max(1) - 1) / 7 * 7 + 1,
            ResumeFrom::Start => 1,
        }
    }
}

/// Changes the pace of what is left of a schedule: the days after `day` are stretched (factor
/// above 1) or compressed (below 1) to `round(left × factor)` days (at least 1), following the
/// same curve; the days up to `day` stay as they were. Caps still never decrease, and the
/// last day still reaches the plan's target.
pub fn repace(caps: &[u64], day: u32, factor: f64) -> Result<Vec<u64>, String> {
    if !(factor.is_finite() && (0.25..=4.0).contains(&factor)) {
        return Err(format!(
            "pace: {factor} is not a factor between 0.25 (four times faster) and 4 (four times slower)"
        ));
    }
    let done = (day as usize).min(caps.len());
    let left = &caps[done..];
    if left.is_empty() {
        return Err("pace: the plan has no days left to pace".into());
    }
    let n = ((left.len() as f64 * factor).round() as usize)
        .clamp(1, MAX_DAYS.saturating_sub(done).max(1));
    let mut out: Vec<u64> = caps[..done].to_vec();
    let floor = out.last().copied().unwrap_or(0);
    let target = left[left.len() - 1];
    for i in 0..n {
        // The position on the old remaining curve that day i of the new one stands for.
        let pos = if n == 1 {
            (left.len() - 1) as f64
        } else {
            i as f64 * (left.len() - 1) as f64 / (n - 1) as f64
        };
        let lo = pos.floor() as usize;
        let hi = (lo + 1).min(left.len() - 1);
        let frac = pos - lo as f64;
        let v = (left[lo] as f64 + (left[hi] as f64 - left[lo] as f64) * frac).round() as u64;
        let prev = out.last().copied().unwrap_or(floor);
        out.push(if i + 1 == n {
            target
        } else {
            v.clamp(prev, target)
        });
    }
    Ok(out)
}

/// One day's sending counts for a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    pub sent: u64,
    pub delivered: u64,
    pub deferred: u64,
    pub bounced: u64,
    pub complaints: u64,
}

/// When a day's numbers hold a node at its cap or pause it, as fractions of what it sent.
/// The defaults follow seed 001: pause above 5% bounces or 0.1% complaints; hold above 3%
/// bounces or 10% deferrals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    pub hold_bounce_rate: f64,
    pub hold_deferral_rate: f64,
    pub pause_bounce_rate: f64,
    pub pause_complaint_rate: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            hold_bounce_rate: 0.03,
            hold_deferral_rate: 0.10,
            pause_bounce_rate: 0.05,
            pause_complaint_rate: 0.001,
        }
    }
}

/// What the day boundary does with a warming node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Healthy: the next day, with its cap.
    Advance { day: u32, cap: u64 },
    /// Healthy on the plan's last day: warm-up is over.
    Complete,
    /// Signals are soft-bad: repeat the day at the same cap.
    Hold { reason: String },
    /// Signals are bad: stop sending until an operator resumes.
    Pause { reason: String },
}

fn pct(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

/// Decides the day boundary for a node on `day` of `plan`, from yesterday's counts and any
/// current blocklist listing. Pauses win over holds; the reason names the figure and the
/// threshold it crossed.
pub fn decide(
    plan: &WarmupPlan,
    day: u32,
    counts: &DayCounts,
    listed_on: Option<&str>,
    th: &Thresholds,
) -> Decision {
    let sent = counts.sent;
    let rate = |n: u64| pct(n, sent);
    let show = |r: f64| format!("{:.2}%", r * 100.0);
    if let Some(zone) = listed_on {
        return Decision::Pause {
            reason: format!("IP listed on {zone}"),
        };
    }
    if rate(counts.complaints) > th.pause_complaint_rate {
        return Decision::Pause {
            reason: format!(
                "complaints {} of {sent} sent, above {}",
                show(rate(counts.complaints)),
                show(th.pause_complaint_rate)
            ),
        };
    }
    if rate(counts.bounced) > th.pause_bounce_rate {
        return Decision::Pause {
            reason: format!(
                "bounces {} of {sent} sent, above {}",
                show(rate(counts.bounced)),
                show(th.pause_bounce_rate)
            ),
        };
    }
    if sent == 0 {
        return Decision::Hold {
            reason: "nothing was sent, so the day proves nothing".into(),
        };
    }
    if rate(counts.bounced) > th.hold_bounce_rate {
        return Decision::Hold {
            reason: format!(
                "bounces {} of {sent} sent, above {}",
                show(rate(counts.bounced)),
                show(th.hold_bounce_rate)
            ),
        };
    }
    if rate(counts.deferred) > th.hold_deferral_rate {
        return Decision::Hold {
            reason: format!(
                "deferrals {} of {sent} sent, above {}",
                show(rate(counts.deferred)),
                show(th.hold_deferral_rate)
            ),
        };
    }
    if day >= plan.days() {
        return Decision::Complete;
    }
    Decision::Advance {
        day: day + 1,
        cap: plan.cap(day + 1),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    plans: Vec<PlanSpec>,
}

/// The built-in plans as written in `assets/` (parsed once).
pub fn builtin_specs() -> &'static [PlanSpec] {
    static SPECS: std::sync::OnceLock<Vec<PlanSpec>> = std::sync::OnceLock::new();
    // The file is compiled in and checked by a test, so it always parses.
    SPECS.get_or_init(|| {
        toml::from_str::<PlanFile>(BUILTIN_TOML)
            .map(|f| f.plans)
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built() -> Vec<WarmupPlan> {
        toml::from_str::<PlanFile>(BUILTIN_TOML)
            .expect("asset parses")
            .plans
            .iter()
            .map(|p| p.build().expect("builds"))
            .collect()
    }

    #[test]
    fn builtin_plans_reach_their_targets_on_their_last_day_and_never_decrease() {
        let plans = built();
        let want = [
            ("conservative", 56, 5, 300),
            ("standard", 42, 10, 500),
            ("aggressive", 28, 20, 1000),
            ("dedicated-ip", 45, 50, 50_000),
        ];
        assert_eq!(plans.len(), want.len());
        for (name, days, first, last) in want {
            let p = plans.iter().find(|p| p.name == name).expect(name);
            assert_eq!(p.days(), days, "{name}");
            assert_eq!(p.cap(1), first, "{name}");
            assert_eq!(p.cap(days), last, "{name}");
            assert!(
                p.caps.windows(2).all(|w| w[0] <= w[1]),
                "{name}: {:?}",
                p.caps
            );
            assert_eq!(p.cap(days + 10), last, "past the end stays at the target");
        }
    }

    #[test]
    fn bad_plans_are_refused_with_the_reason() {
        let spec = |phases: Option<Vec<Phase>>, caps: Option<Vec<u64>>| PlanSpec {
            name: "mine".into(),
            description: None,
            phases,
            caps,
        };
        let err = spec(Some(vec![]), Some(vec![1])).build().expect_err("both");
        assert!(err.contains("not both"), "{err}");
        let err = spec(None, None).build().expect_err("neither");
        assert!(err.contains("needs phases or caps"), "{err}");
        let err = spec(None, Some(vec![10, 20, 15]))
            .build()
            .expect_err("drop");
        assert!(err.contains("day 3 (15) is below day 2 (20)"), "{err}");
        let bad_phase = Phase {
            days: 5,
            from: 100,
            to: 50,
        };
        let err = spec(Some(vec![bad_phase]), None).build().expect_err("down");
        assert!(err.contains("phase 1"), "{err}");
        let ok = spec(None, Some(vec![5, 5, 9])).build().expect("caps list");
        assert_eq!(ok.caps, vec![5, 5, 9]);
    }

    #[test]
    fn the_day_boundary_advances_holds_pauses_and_completes_by_the_numbers() {
        let plan = PlanSpec {
            name: "p".into(),
            description: None,
            phases: None,
            caps: Some(vec![10, 20, 40]),
        }
        .build()
        .expect("plan");
        let th = Thresholds::default();
        let day = |sent, deferred, bounced, complaints| DayCounts {
            sent,
            delivered: sent - deferred - bounced,
            deferred,
            bounced,
            complaints,
        };
        assert_eq!(
            decide(&plan, 1, &day(1000, 10, 10, 0), None, &th),
            Decision::Advance { day: 2, cap: 20 }
        );
        assert_eq!(
            decide(&plan, 3, &day(1000, 0, 0, 0), None, &th),
            Decision::Complete
        );
        // Exactly at a threshold is still healthy; just above it is not.
        assert!(matches!(
            decide(&plan, 1, &day(1000, 0, 30, 0), None, &th),
            Decision::Advance { .. }
        ));
        let d = decide(&plan, 1, &day(1000, 0, 31, 0), None, &th);
        assert_eq!(
            d,
            Decision::Hold {
                reason: "bounces 3.10% of 1000 sent, above 3.00%".into()
            }
        );
        let d = decide(&plan, 2, &day(1000, 101, 0, 0), None, &th);
        assert!(
            matches!(&d, Decision::Hold { reason } if reason.starts_with("deferrals 10.10%")),
            "{d:?}"
        );
        let d = decide(&plan, 2, &day(1000, 0, 51, 0), None, &th);
        assert!(
            matches!(&d, Decision::Pause { reason } if reason.starts_with("bounces 5.10%")),
            "{d:?}"
        );
        let d = decide(&plan, 2, &day(1000, 0, 0, 2), None, &th);
        assert!(
            matches!(&d, Decision::Pause { reason } if reason.starts_with("complaints 0.20%")),
            "{d:?}"
        );
        // A listing pauses whatever the numbers; a pause wins over a hold.
        let d = decide(&plan, 2, &day(1000, 0, 0, 0), Some("zen.spamhaus.org"), &th);
        assert_eq!(
            d,
            Decision::Pause {
                reason: "IP listed on zen.spamhaus.org".into()
            }
        );
        let d = decide(&plan, 2, &day(1000, 200, 0, 2), None, &th);
        assert!(matches!(d, Decision::Pause { .. }));
        // A day with nothing sent proves nothing: hold.
        assert!(matches!(
            decide(&plan, 1, &DayCounts::default(), None, &th),
            Decision::Hold { .. }
        ));
    }

    proptest::proptest! {
        #[test]
        fn any_phase_grows_monotonically_to_its_target(from in 1u64..10_000, extra in 0u64..100_000, days in 1u32..120) {
            let to = from + extra;
            let caps = grow(from, to, days);
            proptest::prop_assert_eq!(caps.len(), days as usize);
            proptest::prop_assert_eq!(*caps.last().expect("a day"), to);
            proptest::prop_assert!(caps.windows(2).all(|w| w[0] <= w[1]));
            proptest::prop_assert!(caps[0] >= from.min(to));
        }
    }

    #[test]
    fn resume_points() {
        assert_eq!(ResumeFrom::Day.day(17), 17);
        assert_eq!(ResumeFrom::Week.day(17), 15);
        assert_eq!(ResumeFrom::Week.day(7), 1);
        assert_eq!(ResumeFrom::Week.day(8), 8);
        assert_eq!(ResumeFrom::Start.day(17), 1);
    }

    #[test]
    fn pace_keeps_the_past_stretches_the_rest_and_still_reaches_the_target() {
        let plan = built()
            .into_iter()
            .find(|p| p.name == "standard")
            .expect("standard");
        let slow = repace(&plan.caps, 10, 1.5).expect("slower");
        assert_eq!(&slow[..10], &plan.caps[..10]);
        assert_eq!(slow.len(), 10 + 48);
        assert_eq!(slow.last(), plan.caps.last());
        assert!(slow.windows(2).all(|w| w[0] <= w[1]));
        let fast = repace(&plan.caps, 10, 0.5).expect("faster");
        assert_eq!(fast.len(), 10 + 16);
        assert_eq!(fast.last(), plan.caps.last());
        assert!(fast.windows(2).all(|w| w[0] <= w[1]));
        assert!(repace(&plan.caps, 10, 0.0).is_err());
        assert!(repace(&plan.caps, 42, 1.5).is_err());
    }
}
