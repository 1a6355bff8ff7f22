//! How fast the blocklist client asks: when to send an unanswered query again, and how
//! many queries to keep in flight. A query lost on the way (a resolver's receive buffer
//! overflows at a few hundred queries in flight) used to cost the whole timeout; it is now
//! sent again after a retransmission timeout learnt from the round trips seen, as TCP does
//! (RFC 6298: smoothed RTT plus four times its variation, with a floor), and each loss
//! halves the window of queries in flight, which then grows back by one per window of
//! answers (additive increase, multiplicative decrease). Pure state: no I/O, no clock of its
//! own; the caller passes durations and instants.

use std::time::{Duration, Instant};

/// The least retransmission timeout: below it, a busy server's queueing would look like
/// loss. A resolver on the same network answers in well under a millisecond, and a loaded
/// one queues a few milliseconds (256 in flight at 100k queries/s is 2.5 ms); a floor of
/// 100 ms made every lost query cost more than a whole 6,000-check run.
pub const MIN_RTO: Duration = Duration::from_millis(20);

/// The retransmission timeout before any round trip was measured.
pub const INITIAL_RTO: Duration = Duration::from_millis(400);

/// The fewest queries kept in flight however lossy the path.
pub const MIN_WINDOW: usize = 4;

/// Round-trip estimate and the congestion window, for one resolver.
#[derive(Debug, Clone)]
pub struct Pacing {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// The longest the RTO may be (half the query timeout: at least one resend fits).
    max_rto: Duration,
    /// Queries allowed in flight now, and the most ever allowed.
    window: usize,
    max_window: usize,
    /// Answers counted towards the next +1 of the window.
    grown: usize,
    /// When the window was last cut: losses within one RTT of it are one event.
    last_cut: Option<Instant>,
    pub losses: u64,
    pub cuts: u64,
    pub smallest_window: usize,
}

impl Pacing {
    pub fn new(max_window: usize, timeout: Duration) -> Pacing {
        let max_window = max_window.max(MIN_WINDOW);
        Pacing {
            srtt: None,
            rttvar: Duration::ZERO,
            max_rto: (timeout / 2).max(MIN_RTO),
            window: max_window,
            max_window,
            grown: 0,
            last_cut: None,
            losses: 0,
            cuts: 0,
            smallest_window: max_window,
        }
    }

    /// How long to wait for an answer before sending the query again.
    pub fn rto(&self) -> Duration {
        let rto = match self.srtt {
            None => INITIAL_RTO,
            Some(srtt) => srtt + 4 * self.rttvar,
        };
        rto.clamp(MIN_RTO, self.max_rto)
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// An answer to a query sent once (Karn: an answer to a resent query says nothing
    /// certain about the round trip, so it is not measured): learns the RTT and grows the
    /// window by one for every window of answers.
    pub fn answered(&mut self, rtt: Option<Duration>) {
        if let Some(rtt) = rtt {
            match self.srtt {
                None => {
                    self.srtt = Some(rtt);
                    self.rttvar = rtt / 2;
                }
                Some(srtt) => {
                    let diff = srtt.abs_diff(rtt);
                    self.rttvar = (self.rttvar * 3 + diff) / 4;
                    self.srtt = Some((srtt * 7 + rtt) / 8);
                }
            }
        }
        if self.window < self.max_window {
            self.grown += 1;
            if self.grown >= self.window {
                self.grown = 0;
                self.window += 1;
            }
        }
    }

    /// A query went unanswered for an RTO: it is sent again, and the window halves (once
    /// per round trip, however many queries the same burst lost).
    pub fn lost(&mut self, now: Instant) {
        self.losses += 1;
        let recent = self
            .last_cut
            .is_some_and(|at| now.saturating_duration_since(at) < self.rto());
        if recent {
            return;
        }
        self.last_cut = Some(now);
        self.cuts += 1;
        self.window = (self.window / 2).max(MIN_WINDOW);
        self.grown = 0;
        self.smallest_window = self.smallest_window.min(self.window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_rto_starts_cautious_then_follows_the_measured_round_trips_within_bounds() {
        let mut p = Pacing::new(64, Duration::from_secs(2));
        assert_eq!(p.rto(), INITIAL_RTO);
        for _ in 0..20 {
            p.answered(Some(MS / 2));
        }
        assert_eq!(p.rto(), MIN_RTO, "a loopback RTT still waits the floor");
        for _ in 0..50 {
            p.answered(Some(300 * MS));
        }
        let rto = p.rto();
        assert!(rto >= 300 * MS && rto < 600 * MS, "{rto:?}");
        for _ in 0..50 {
            p.answered(Some(Duration::from_secs(5)));
        }
        assert_eq!(
            p.rto(),
            Duration::from_secs(1),
            "never past half the timeout"
        );
    }

    #[test]
    fn an_answer_to_a_resent_query_is_not_measured() {
        let mut p = Pacing::new(64, Duration::from_secs(2));
        p.answered(None);
        assert_eq!(p.rto(), INITIAL_RTO);
    }

    #[test]
    fn a_loss_halves_the_window_once_per_round_trip_and_answers_grow_it_back() {
        let mut p = Pacing::new(256, Duration::from_secs(2));
        let t0 = Instant::now();
        p.lost(t0);
        assert_eq!(p.window(), 128);
        // The same burst: within one RTO of the cut.
        p.lost(t0 + 10 * MS);
        p.lost(t0 + 20 * MS);
        assert_eq!(p.window(), 128);
        assert_eq!((p.losses, p.cuts), (3, 1));
        // A later loss is another event.
        p.lost(t0 + Duration::from_secs(1));
        assert_eq!(p.window(), 64);
        // One window of answers grows it by one.
        for _ in 0..64 {
            p.answered(Some(MS));
        }
        assert_eq!(p.window(), 65);
        for _ in 0..100_000 {
            p.answered(Some(MS));
        }
        assert_eq!(p.window(), 256, "never past the configured concurrency");
        assert_eq!(p.smallest_window, 64);
    }

    #[test]
    fn the_window_never_falls_below_its_floor() {
        let mut p = Pacing::new(16, Duration::from_secs(2));
        let mut t = Instant::now();
        for _ in 0..10 {
            t += Duration::from_secs(1);
            p.lost(t);
        }
        assert_eq!(p.window(), MIN_WINDOW);
    }
}
