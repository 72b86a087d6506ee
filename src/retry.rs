//! The retry policy: exponential backoff with jitter, and `Retry-After` parsing. Pure
//! functions; the [`client`](crate::client) applies them.

use serde::{Deserialize, Serialize};

/// How transient failures (network errors, timeouts, 5xx, 429) are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RetryPolicy {
    /// The first delay, in milliseconds.
    pub base_ms: u64,
    /// The longest delay, in milliseconds.
    pub max_delay_ms: u64,
    /// Attempts per request before giving up (waiting offline does not count).
    pub max_attempts: u32,
    /// Per-request timeout, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_ms: 500,
            max_delay_ms: 30_000,
            max_attempts: 10,
            timeout_ms: 30_000,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1 for the first retry): "equal jitter", half
    /// of the exponential step plus a random part of the other half, so retries from many
    /// browsers spread out but never come back immediately. `random` is any random number.
    pub fn delay_ms(&self, attempt: u32, random: u64) -> u64 {
        let exp = attempt.saturating_sub(1).min(32);
        let step = self
            .base_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_delay_ms);
        let half = step / 2;
        half + random % (step - half + 1)
    }
}

/// The delay a `Retry-After` header asks for, in milliseconds: delay-seconds only (an
/// HTTP-date, which our server never sends, falls back to the backoff). Capped at one hour.
pub fn retry_after_ms(value: &str) -> Option<u64> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(secs.min(3600) * 1000)
}

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_jitter_bounds() {
        let p = RetryPolicy::default();
        for attempt in 1..=12 {
            let step = (500u64 << (attempt - 1).min(32)).min(30_000);
            for random in [0, 1, 7, u64::MAX / 3, u64::MAX] {
                let d = p.delay_ms(attempt, random);
                assert!(
                    d >= step / 2 && d <= step,
                    "attempt {attempt}: {d} outside [{}, {step}]",
                    step / 2
                );
            }
        }
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        assert_eq!(retry_after_ms("3"), Some(3000));
        assert_eq!(retry_after_ms(" 10 "), Some(10_000));
        assert_eq!(
            retry_after_ms("999999"),
            Some(3_600_000),
            "capped at one hour"
        );
        assert_eq!(retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after_ms("-1"), None);
    }
}
