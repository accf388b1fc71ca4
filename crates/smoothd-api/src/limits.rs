//! Per-key request rate limit: a token bucket per API key, in this process. A key may burst
//! up to a minute's allowance and then gets `per_minute / 60` requests a second; a request
//! over it is answered 429 with the seconds until the next token in `Retry-After`, before it
//! does anything. The concurrency limit (waiting and running tasks per key) is counted in the
//! database instead, at submit (see `routes::task::submit`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before full ones (which mean the same as none) are dropped.
const PRUNE_ABOVE: usize = 4096;

/// The rate limiter of one API process.
#[derive(Debug)]
pub struct RateLimiter {
    /// Requests per key per minute; 0 turns the limit off.
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per key per minute (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key_id`, or says how long until one is there.
    pub fn take(&self, key_id: &str) -> Result<(), Duration> {
        self.take_at(key_id, Instant::now())
    }

    fn take_at(&self, key_id: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        // A poisoned lock only means another request panicked mid-update; the map is still
        // a valid set of buckets.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| refill(*b, now, per_second, capacity).tokens < capacity);
        }
        let bucket = buckets.entry(key_id.to_string()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        *bucket = refill(*bucket, now, per_second, capacity);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    /// Requests per key per minute (0: off).
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }
}

fn refill(b: Bucket, now: Instant, per_second: f64, capacity: f64) -> Bucket {
    let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
    Bucket {
        tokens: (b.tokens + elapsed * per_second).min(capacity),
        updated: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_minute_then_one_token_per_interval() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(limiter.take_at("k", t0).is_ok());
        }
        let wait = limiter
            .take_at("k", t0)
            .expect_err("the 61st request in the same instant");
        assert!(
            (wait.as_secs_f64() - 1.0).abs() < 0.01,
            "one token a second: {wait:?}"
        );
        // Another key has its own bucket.
        assert!(limiter.take_at("other", t0).is_ok());
        let later = t0 + Duration::from_millis(1000);
        assert!(limiter.take_at("k", later).is_ok());
        assert!(limiter.take_at("k", later).is_err());
    }

    #[test]
    fn zero_is_off() {
        let limiter = RateLimiter::new(0);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert!(limiter.take_at("k", t0).is_ok());
        }
    }

    #[test]
    fn full_buckets_are_pruned() {
        let limiter = RateLimiter::new(10);
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            assert!(limiter.take_at(&format!("k{i}"), t0).is_ok());
        }
        // A minute later every bucket is full again: the next call drops them.
        assert!(limiter.take_at("new", t0 + Duration::from_secs(61)).is_ok());
        let n = limiter.buckets.lock().map(|b| b.len()).unwrap_or(usize::MAX);
        assert_eq!(n, 1);
    }
}
