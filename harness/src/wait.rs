//! Waiting for a condition, with a timeout.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

/// Polls `f` every `interval` until it returns `Ok(Some(_))` or `timeout` passes. Errors from
/// `f` are remembered and reported on timeout (they do not stop the polling).
pub fn wait_for_every<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last_err: Option<anyhow::Error> = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() >= timeout {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        std::thread::sleep(interval);
    }
}

/// [`wait_for_every`] with a 200 ms poll interval.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    wait_for_every(what, timeout, Duration::from_millis(200), f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_carries_the_last_error() {
        let err = wait_for_every(
            "nothing",
            Duration::ZERO,
            Duration::ZERO,
            || -> Result<Option<()>> { Err(anyhow!("still broken")) },
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("waiting for nothing"), "{text}");
        assert!(text.contains("still broken"), "{text}");
    }

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let v = wait_for_every(
            "n to reach 3",
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                n += 1;
                Ok((n == 3).then_some(n))
            },
        )
        .unwrap();
        assert_eq!(v, 3);
    }
}
