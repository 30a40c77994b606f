//! The one retry policy of the node's retry loops: exponential backoff with
//! jitter, a cap, and an optional limit on retries.
//!
//! Retry `n` (from 0) waits `initial · 2ⁿ`, capped at `max`, less a random
//! part of up to half of it ("equal jitter"): nodes that failed together (Kafka
//! went away) do not all come back at the same instant, and each wait is still
//! at least half its step, so waits keep growing.
//!
//! A leaf: uses nothing of the crate.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The step of the first retry.
    pub initial: Duration,
    /// No step is longer.
    pub max: Duration,
    /// How many retries a [`Backoff`] allows; `None`: no limit.
    pub retries: Option<u32>,
}

impl Policy {
    /// Retries without limit, the step doubling from `initial` up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            retries: None,
        }
    }

    /// At most `retries` retries.
    pub const fn limit(self, retries: u32) -> Self {
        Self {
            retries: Some(retries),
            ..self
        }
    }

    /// The step of retry `n` (from 0), before jitter: `initial · 2ⁿ`, capped.
    pub fn step(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry `n` (from 0): its step, less up to half of it.
    pub fn delay(&self, n: u32) -> Duration {
        jitter(self.step(n), getrandom::u32().unwrap_or(0))
    }

    /// A fresh sequence of waits for one loop.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            retries: 0,
        }
    }
}

/// `step` less a part of its half chosen by `random` (0: none, `u32::MAX`:
/// all of it).
fn jitter(step: Duration, random: u32) -> Duration {
    step - (step / 2).mul_f64(f64::from(random) / f64::from(u32::MAX))
}

/// The waits of one retry loop: each [`Iterator::next`] is the wait before
/// the next retry, `None` once the policy's retries are spent.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    retries: u32,
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self
            .policy
            .retries
            .is_some_and(|limit| self.retries >= limit)
        {
            return None;
        }
        let delay = self.policy.delay(self.retries);
        self.retries = self.retries.saturating_add(1);
        Some(delay)
    }
}

impl Backoff {
    /// Sleeps before the next retry; false, at once, if the retries are spent.
    pub async fn sleep(&mut self) -> bool {
        match self.next() {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
    }

    /// Like [`Backoff::sleep`], but false as soon as `cancel` fires.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            _ = cancel.cancelled() => false,
            more = self.sleep() => more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const SECOND: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn steps_double_up_to_the_cap() {
        let policy = Policy::new(SECOND / 2, 5 * SECOND);
        let steps: Vec<_> = (0..7).map(|n| policy.step(n)).collect();
        let ms = |s: &[Duration]| s.iter().map(Duration::as_millis).collect::<Vec<_>>();
        assert_eq!(ms(&steps), [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        // Far past the cap, still the cap (no overflow).
        assert_eq!(policy.step(40), 5 * SECOND);
        assert_eq!(policy.step(u32::MAX), 5 * SECOND);
    }

    #[test]
    fn jitter_takes_at_most_half_a_step() {
        let step = 3 * SECOND;
        assert_eq!(jitter(step, 0), step);
        assert_eq!(jitter(step, u32::MAX), step / 2);
        assert_eq!(jitter(step, u32::MAX / 2), step * 3 / 4);
    }

    #[test]
    fn delays_stay_within_their_step_and_grow() {
        let policy = Policy::new(SECOND / 10, 10 * SECOND);
        for n in 0..12 {
            let step = policy.step(n);
            let delays: HashSet<Duration> = (0..50).map(|_| policy.delay(n)).collect();
            for &delay in &delays {
                assert!(
                    step / 2 <= delay && delay <= step,
                    "{n}: {delay:?} of {step:?}"
                );
            }
            // Jittered: 50 draws are not all the same.
            assert!(delays.len() > 1, "{n}: {delays:?}");
        }
        // Each wait is at least the whole previous step: the backoff grows
        // whatever the jitter, until the cap.
        let waits: Vec<_> = policy.backoff().take(7).collect();
        for (n, pair) in waits.windows(2).enumerate() {
            assert!(pair[1] >= policy.step(n as u32), "{waits:?}");
        }
    }

    #[test]
    fn a_limit_ends_the_retries() {
        let policy = Policy::new(SECOND, 4 * SECOND).limit(3);
        assert_eq!(policy.backoff().take(10).count(), 3);
        assert_eq!(
            Policy::new(SECOND, SECOND).backoff().take(1000).count(),
            1000
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_the_delay_and_stops_when_spent() {
        let mut backoff = Policy::new(SECOND, 60 * SECOND).limit(2).backoff();
        let cancel = CancellationToken::new();
        let start = tokio::time::Instant::now();
        assert!(backoff.wait(&cancel).await);
        let first = start.elapsed();
        // The paused clock jumps to the timer's millisecond.
        assert!(SECOND / 2 <= first && first <= SECOND + MS, "{first:?}");
        assert!(backoff.wait(&cancel).await);
        assert!(start.elapsed() >= first + SECOND, "{:?}", start.elapsed());
        let spent = tokio::time::Instant::now();
        assert!(!backoff.wait(&cancel).await);
        assert_eq!(spent.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_ends_when_cancelled() {
        let mut backoff = Policy::new(60 * SECOND, 60 * SECOND).backoff();
        let cancel = CancellationToken::new();
        let start = tokio::time::Instant::now();
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SECOND).await;
            canceller.cancel();
        });
        assert!(!backoff.wait(&cancel).await);
        assert!(start.elapsed() <= SECOND + MS, "{:?}", start.elapsed());
    }
}
