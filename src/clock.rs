//! Every clock read goes through a `Clock`, so tests can fix or advance time.

use chrono::{DateTime, SecondsFormat, Utc};
use std::sync::Arc;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time anchored at creation, advanced by tokio's clock: under `tokio::time::pause()`
/// it moves only when tokio's time does, so backoff and timeouts can be tested without
/// waiting.
#[derive(Debug, Clone)]
pub struct TokioClock {
    anchor_wall: DateTime<Utc>,
    anchor: tokio::time::Instant,
}

impl TokioClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            anchor_wall: start,
            anchor: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.anchor);
        self.anchor_wall + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::zero())
    }
}

/// The one text form of a timestamp in the store: RFC 3339, UTC, microseconds, `Z`. Fixed
/// width, so text order is time order and SQL can compare them as strings.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// "3s", "4m", "2h", "5d": how long ago, for lists.
pub fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_as_text() {
        let a = Utc::now();
        let b = a + chrono::Duration::microseconds(1);
        let c = a + chrono::Duration::days(400);
        assert!(ts(a) < ts(b) && ts(b) < ts(c));
        assert_eq!(ts(a).len(), ts(c).len());
        assert_eq!(parse_ts(&ts(a)), Some(a.with_nanosecond_micros()));
    }

    trait Micros {
        fn with_nanosecond_micros(self) -> Self;
    }
    impl Micros for DateTime<Utc> {
        fn with_nanosecond_micros(self) -> Self {
            use chrono::Timelike;
            let n = self.nanosecond() / 1000 * 1000;
            self.with_nanosecond(n).unwrap_or(self)
        }
    }

    #[test]
    fn ages_are_short() {
        let now = Utc::now();
        assert_eq!(age(now, now - chrono::Duration::seconds(5)), "5s");
        assert_eq!(age(now, now - chrono::Duration::minutes(3)), "3m");
        assert_eq!(age(now, now - chrono::Duration::hours(2)), "2h");
        assert_eq!(age(now, now - chrono::Duration::days(9)), "9d");
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let start = Utc::now();
        let c = TokioClock::new(start);
        tokio::time::sleep(std::time::Duration::from_secs(90)).await;
        assert_eq!((c.now() - start).num_seconds(), 90);
    }
}
