//! Schedules: the readiness self-test at start and then every `selftest_interval_secs`
//! (6 h by default), each report sent to the collector.

use super::{release_freed_memory, Agent};
use crate::transport::backoff::Backoff;
use cairn_protocol::readiness::CheckStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The readiness self-test at start and then every `selftest_interval_secs`, each report sent
/// to the collector; reports it could not take are retried with backoff (5 s → 15 min).
pub async fn readiness(agent: Arc<Agent>) {
    let opts = agent.selftest_options(None);
    let interval = Duration::from_secs(agent.cfg.selftest_interval_secs);
    loop {
        let report = crate::selftest::run(&opts).await;
        release_freed_memory();
        let (p, w, f) = report.counts();
        tracing::info!(
            "readiness self-test: {} ({p} pass, {w} warn, {f} fail) in {} ms",
            report.status.as_str(),
            report.duration_ms
        );
        for c in report
            .checks
            .iter()
            .filter(|c| c.status != CheckStatus::Pass)
        {
            tracing::warn!(
                "self-test {} {}: {} → {}",
                c.id,
                c.status.as_str(),
                c.measured,
                c.remediation
            );
        }
        let mut outcome =
            crate::selftest::collector::report(&opts, Some(&agent.connector), Some(&report)).await;
        let next = Instant::now() + interval;
        let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(15 * 60));
        while let Err(e) = &outcome {
            let wait = backoff.next_delay();
            tracing::warn!(
                "readiness report not delivered (kept for later, next try in {:.0}s): {e:#}",
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
            outcome = crate::selftest::collector::report(&opts, Some(&agent.connector), None).await;
        }
        if interval.is_zero() {
            return;
        }
        tokio::time::sleep_until(next.into()).await;
    }
}
