//! The one retry policy of the agent: capped exponential backoff with full jitter.
//!
//! Every retry (connecting, resuming an upload, reopening the event stream, delivering a
//! readiness report, waiting for room at the collector) waits a random time between zero and
//! `base · 2^attempt`, capped. The randomness spreads a fleet that lost its collector at once,
//! so a collector coming back is not met by every agent in the same instant; the cap keeps a
//! long outage from turning into hours of waiting once it ends.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    /// Failures since the last success.
    attempt: u32,
}

impl Backoff {
    /// Waits of at most `base`, then `2·base`, `4·base`, … never more than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let base = base.max(Duration::from_millis(1));
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// 100 ms → 60 s: connections and streams.
    pub fn standard() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(60))
    }

    /// The longest the next wait may be.
    pub fn ceiling(&self) -> Duration {
        // 2^attempt overflows nothing: past 2^32 the cap has long been reached.
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Failures since the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The next wait, uniformly random in `[0, ceiling]`, with `rng`; the ceiling then doubles.
    pub fn next_delay_with(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.gen_range(0..=nanos))
    }

    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::thread_rng())
    }

    /// Sleep for the next wait; returns how long it was.
    pub async fn wait(&mut self) -> Duration {
        let d = self.next_delay();
        tokio::time::sleep(d).await;
        d
    }

    /// After a success: the next failure waits little again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap_and_reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay_with(&mut rng);
        }
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000]
        );
        for _ in 0..100 {
            b.next_delay_with(&mut rng);
        }
        assert_eq!(
            b.ceiling(),
            Duration::from_secs(60),
            "no overflow past the cap"
        );
        assert_eq!(b.attempts(), 112);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn waits_are_jittered_over_the_whole_range_and_never_past_the_ceiling() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let cap = Duration::from_secs(60);
        let mut waits = Vec::new();
        for _ in 0..2000 {
            // Always at its cap: 60 s ceilings.
            let mut b = Backoff::new(Duration::from_millis(100), cap);
            for _ in 0..20 {
                b.next_delay_with(&mut rng);
            }
            let d = b.next_delay_with(&mut rng);
            assert!(d <= cap, "{d:?}");
            waits.push(d.as_secs_f64());
        }
        let mean = waits.iter().sum::<f64>() / waits.len() as f64;
        // Full jitter: uniform on [0, 60 s], mean 30 s; agents do not retry in step.
        assert!((27.0..33.0).contains(&mean), "mean {mean}");
        assert!(waits.iter().any(|&w| w < 6.0) && waits.iter().any(|&w| w > 54.0));
        let distinct: std::collections::BTreeSet<u64> =
            waits.iter().map(|w| (w * 1000.0) as u64).collect();
        assert!(distinct.len() > 1900, "waits differ: {}", distinct.len());
    }

    #[test]
    fn a_fleet_retrying_together_spreads_out() {
        // 100 agents that lost the collector at the same instant: their fifth retries do not
        // land in the same 100 ms.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut at = Vec::new();
        for _ in 0..100 {
            let mut b = Backoff::standard();
            let t: Duration = (0..5).map(|_| b.next_delay_with(&mut rng)).sum();
            at.push(t.as_millis() / 100);
        }
        let buckets: std::collections::BTreeSet<_> = at.iter().collect();
        assert!(buckets.len() > 10, "{buckets:?}");
    }

    #[test]
    fn degenerate_settings_still_wait_something_bounded() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.ceiling(), Duration::from_millis(1));
        for _ in 0..5 {
            assert!(b.next_delay() <= Duration::from_millis(1));
        }
    }
}
