//! A per-user token bucket: each user may make `burst` requests at once and `rate` per second
//! after that. Over the limit, the request is answered 429 with the seconds until the next
//! token as `Retry-After`.
//!
//! By default the buckets live in this process's memory ([`RateLimiter`]), so with several
//! server processes each applies its own limit; idle users' buckets (full again) are dropped
//! when the map grows, so memory stays proportional to the users active in the last few
//! seconds. With `FERRY_RATE_LIMIT_SHARED` they live in PostgreSQL ([`SharedBuckets`],
//! `ferry_rate_buckets`, an unlogged table): every process over the database takes from the
//! same bucket, at the cost of one statement per authenticated request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::db::DbError;
use crate::error_chain;
use crate::http::error::ApiError;

/// The per-user limit, wherever its buckets are kept.
#[derive(Debug)]
pub enum Limiter {
    /// In this process's memory.
    Local(RateLimiter),
    /// In PostgreSQL, shared by every process over the database.
    Shared(SharedBuckets),
}

impl Limiter {
    /// The limiter of `rate_per_sec` sustained and `burst` at once, shared across processes
    /// or not; `None` when `rate_per_sec` is not positive (no limit).
    pub fn new(rate_per_sec: f64, burst: u32, shared: bool) -> Option<Self> {
        let local = RateLimiter::new(rate_per_sec, burst)?;
        Some(if shared {
            Self::Shared(SharedBuckets {
                rate_per_sec: local.rate_per_sec,
                burst: local.burst,
            })
        } else {
            Self::Local(local)
        })
    }

    /// Takes one token of `user`'s bucket now, or says how long until one is available. Only
    /// the shared buckets can fail (the database).
    pub async fn check(&self, pool: &Pool, user: Uuid) -> Result<Result<(), Duration>, ApiError> {
        match self {
            Self::Local(limiter) => Ok(limiter.check(user, Instant::now())),
            Self::Shared(buckets) => buckets.check(pool, user).await,
        }
    }
}

/// Token buckets in `ferry_rate_buckets`: refilled, tested and taken in one statement, under
/// the row's lock, with the database's clock (the same for every process).
#[derive(Debug)]
pub struct SharedBuckets {
    rate_per_sec: f64,
    burst: f64,
}

/// `$1` user, `$2` burst, `$3` rate: the bucket refilled since its last use (at most the
/// burst), a token taken when there is one; answers whether one was, and what is left.
const TAKE: &str = "INSERT INTO ferry_rate_buckets AS b (user_id, tokens, taken, updated_at)
     VALUES ($1, $2 - 1, true, clock_timestamp())
     ON CONFLICT (user_id) DO UPDATE SET
       taken = least($2, b.tokens + extract(epoch FROM clock_timestamp() - b.updated_at)::float8 * $3) >= 1,
       tokens = least($2, b.tokens + extract(epoch FROM clock_timestamp() - b.updated_at)::float8 * $3)
              - CASE WHEN least($2, b.tokens + extract(epoch FROM clock_timestamp() - b.updated_at)::float8 * $3) >= 1
                     THEN 1 ELSE 0 END,
       updated_at = clock_timestamp()
     RETURNING taken, tokens";

impl SharedBuckets {
    async fn check(&self, pool: &Pool, user: Uuid) -> Result<Result<(), Duration>, ApiError> {
        let client = pool
            .get()
            .await
            .map_err(|e| ApiError::from(DbError::Pool(error_chain(&e))))?;
        let row = client
            .query_typed_one(
                TAKE,
                &[
                    (&user, Type::UUID),
                    (&self.burst, Type::FLOAT8),
                    (&self.rate_per_sec, Type::FLOAT8),
                ],
            )
            .await
            .map_err(|e| ApiError::from(DbError::query("take a rate limit token", &e)))?;
        let taken: bool = row
            .try_get(0)
            .map_err(|e| ApiError::from(DbError::query("read the rate limit bucket", &e)))?;
        let tokens: f64 = row
            .try_get(1)
            .map_err(|e| ApiError::from(DbError::query("read the rate limit bucket", &e)))?;
        Ok(if taken {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - tokens) / self.rate_per_sec).max(0.0),
            ))
        })
    }
}

/// Buckets kept before full (idle) ones are swept.
const SWEEP_ABOVE: usize = 10_000;

/// The limiter for every user.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter of `rate_per_sec` sustained and `burst` at once; `None` when `rate_per_sec`
    /// is not positive (no limit).
    pub fn new(rate_per_sec: f64, burst: u32) -> Option<Self> {
        (rate_per_sec > 0.0 && rate_per_sec.is_finite()).then(|| Self {
            rate_per_sec,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one token of `user`'s bucket at `now`, or says how long until one is available.
    pub fn check(&self, user: Uuid, now: Instant) -> Result<(), Duration> {
        // A panic while holding the lock leaves the map consistent (plain numbers): keep going.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, b| self.refilled(*b, now) < self.burst);
        }
        let bucket = buckets.entry(user).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let tokens = self.refilled(*bucket, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                updated: now,
            };
            Ok(())
        } else {
            *bucket = Bucket {
                tokens,
                updated: now,
            };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate_per_sec))
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.rate_per_sec).min(self.burst)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let limiter = RateLimiter::new(2.0, 3).unwrap();
        let user = Uuid::from_u128(1);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(user, t0).is_ok());
        }
        let wait = limiter.check(user, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.check(user, t1).is_ok());
        assert!(limiter.check(user, t1).is_err());
    }

    #[test]
    fn users_have_separate_buckets() {
        let limiter = RateLimiter::new(1.0, 1).unwrap();
        let t0 = Instant::now();
        assert!(limiter.check(Uuid::from_u128(1), t0).is_ok());
        assert!(limiter.check(Uuid::from_u128(1), t0).is_err());
        assert!(limiter.check(Uuid::from_u128(2), t0).is_ok());
    }

    #[test]
    fn a_bucket_never_holds_more_than_the_burst() {
        let limiter = RateLimiter::new(100.0, 2).unwrap();
        let user = Uuid::from_u128(1);
        let t0 = Instant::now();
        assert!(limiter.check(user, t0).is_ok());
        let later = t0 + Duration::from_secs(3600);
        assert!(limiter.check(user, later).is_ok());
        assert!(limiter.check(user, later).is_ok());
        assert!(limiter.check(user, later).is_err());
    }

    #[test]
    fn zero_rate_means_no_limiter() {
        assert!(RateLimiter::new(0.0, 10).is_none());
        assert!(RateLimiter::new(f64::NAN, 10).is_none());
    }
}
