//! Token buckets, shared by both front ends: [`TokenBucket`] is one
//! client's allowance (a WebSocket session owns its buckets, so they need no
//! atomics or locks), and [`KeyedBuckets`] holds one bucket per key (a user
//! or a client address) for requests that have no session, such as REST
//! `POST`s.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::UserName;

/// Tokens refill at `rate` per second up to `burst`; each send takes one.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Tokens per second; zero disables the limit.
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes a token if one is available at `now`.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True when the bucket would be full at `now`: forgetting it loses
    /// nothing, since a new bucket starts full.
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.rate == 0.0 || self.tokens + elapsed.as_secs_f64() * self.rate >= self.burst
    }

    /// How long until the next token, for the error message.
    pub(crate) fn retry_after(&self) -> Duration {
        if self.rate == 0.0 || self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }
}

/// Most keys a [`KeyedBuckets`] tracks. An entry is about 100 bytes (key,
/// bucket, map overhead), so this is about 10 MB at worst. Only keys whose
/// bucket is not full count, and a bucket refills in `burst / rate` seconds
/// (2 s at the defaults), so filling the map takes 100 000 clients each
/// sending at least every two seconds: a flood, during which new keys are
/// refused rather than let in unmetered.
pub(crate) const MAX_KEYS: usize = 100_000;
/// The map is not pruned below this size: a small map costs nothing, and
/// pruning it on every new key would.
const PRUNE_FLOOR: usize = 1024;
/// At most one prune per this interval once the map is at [`MAX_KEYS`], so
/// a flood of new keys cannot make every request walk the whole map.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);
/// The retry hint for a key refused because the map is full.
const FULL_RETRY: Duration = Duration::from_secs(1);

/// One token bucket per key, all at the same rate and burst, bounded in
/// memory: idle keys (full buckets) are dropped when the map grows, and at
/// most [`MAX_KEYS`] are held.
#[derive(Debug)]
pub(crate) struct KeyedBuckets<K> {
    rate: u32,
    burst: u32,
    max_keys: usize,
    state: Mutex<Keyed<K>>,
}

#[derive(Debug)]
struct Keyed<K> {
    buckets: HashMap<K, TokenBucket>,
    /// Prune when the map reaches this size: twice what the last prune
    /// left, so pruning costs O(1) per new key, amortised.
    prune_at: usize,
    last_prune: Option<Instant>,
}

impl<K: Hash + Eq> KeyedBuckets<K> {
    /// `rate` per second with bursts of `burst` per key; a `rate` of 0
    /// allows everything and tracks nothing.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self::with_max_keys(rate, burst, MAX_KEYS)
    }

    fn with_max_keys(rate: u32, burst: u32, max_keys: usize) -> Self {
        Self {
            rate,
            burst,
            max_keys,
            state: Mutex::new(Keyed {
                buckets: HashMap::new(),
                prune_at: PRUNE_FLOOR.min(max_keys),
                last_prune: None,
            }),
        }
    }

    /// Takes a token from `key`'s bucket at `now`, or says how long until
    /// one is there.
    pub(crate) fn try_take(&self, key: K, now: Instant) -> Result<(), Duration> {
        if self.rate == 0 {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = state.buckets.get_mut(&key) {
            return take(bucket, now);
        }
        if state.buckets.len() >= state.prune_at {
            state.prune(now, self.max_keys);
        }
        if state.buckets.len() >= self.max_keys {
            return Err(FULL_RETRY);
        }
        let mut bucket = TokenBucket::new(self.rate, self.burst, now);
        let taken = take(&mut bucket, now);
        state.buckets.insert(key, bucket);
        taken
    }

    /// Keys tracked now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .buckets
            .len()
    }
}

impl<K> Keyed<K> {
    /// Drops every key whose bucket is full again.
    fn prune(&mut self, now: Instant, max_keys: usize) {
        let at_cap = self.buckets.len() >= max_keys;
        if at_cap
            && self
                .last_prune
                .is_some_and(|last| now.saturating_duration_since(last) < PRUNE_INTERVAL)
        {
            return;
        }
        self.buckets.retain(|_, bucket| !bucket.is_full(now));
        self.last_prune = Some(now);
        self.prune_at = self
            .buckets
            .len()
            .saturating_mul(2)
            .clamp(PRUNE_FLOOR.min(max_keys), max_keys);
    }
}

/// Whose bucket a request without a session takes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RateKey {
    /// An authenticated user, wherever it connects from.
    User(UserName),
    /// An anonymous client's address, grouped as the per-address
    /// connection limit groups it (an IPv6 client by its /64).
    Address(IpAddr),
}

/// The buckets of every REST `POST` caller on this node.
pub(crate) type PostLimiter = KeyedBuckets<RateKey>;

fn take(bucket: &mut TokenBucket, now: Instant) -> Result<(), Duration> {
    if bucket.try_take(now) {
        Ok(())
    } else {
        Err(bucket.retry_after())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, t0);
        assert!((0..3).all(|_| bucket.try_take(t0)));
        assert!(!bucket.try_take(t0));
        assert!(bucket.retry_after() > Duration::ZERO);
        // 100 ms at 10/s is one token.
        assert!(bucket.try_take(t0 + Duration::from_millis(100)));
        assert!(!bucket.try_take(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 2, t0);
        let later = t0 + Duration::from_secs(60);
        assert!(bucket.try_take(later) && bucket.try_take(later));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(0, 1, t0);
        assert!((0..10_000).all(|_| bucket.try_take(t0)));
    }

    #[test]
    fn a_bucket_is_full_again_after_burst_over_rate_seconds() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 2, t0);
        assert!(bucket.is_full(t0));
        assert!(bucket.try_take(t0));
        assert!(!bucket.is_full(t0 + Duration::from_millis(50)));
        assert!(bucket.is_full(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn keys_have_buckets_of_their_own() {
        let t0 = Instant::now();
        let keyed = KeyedBuckets::new(1, 2);
        assert!(keyed.try_take("a", t0).is_ok() && keyed.try_take("a", t0).is_ok());
        let wait = keyed.try_take("a", t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(keyed.try_take("b", t0).is_ok());
        assert!(keyed.try_take("a", t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn a_zero_rate_tracks_no_keys() {
        let t0 = Instant::now();
        let keyed = KeyedBuckets::new(0, 1);
        assert!((0..10_000u32).all(|k| keyed.try_take(k, t0).is_ok()));
        assert_eq!(keyed.len(), 0);
    }

    #[test]
    fn idle_keys_are_dropped_when_the_map_grows() {
        let t0 = Instant::now();
        let keyed = KeyedBuckets::new(10, 1);
        for k in 0..PRUNE_FLOOR {
            assert!(keyed.try_take(k, t0).is_ok());
        }
        assert_eq!(keyed.len(), PRUNE_FLOOR);
        // 200 ms later every bucket is full again: the next new key prunes.
        let later = t0 + Duration::from_millis(200);
        assert!(keyed.try_take(usize::MAX, later).is_ok());
        assert_eq!(keyed.len(), 1);
    }

    #[test]
    fn at_the_cap_new_keys_are_refused_while_known_keys_keep_their_buckets() {
        let t0 = Instant::now();
        let keyed = KeyedBuckets::with_max_keys(1, 2, 3);
        for k in 0..3 {
            assert!(keyed.try_take(k, t0).is_ok());
        }
        assert_eq!(keyed.try_take(99, t0), Err(FULL_RETRY), "all three busy");
        assert!(
            keyed.try_take(0, t0).is_ok(),
            "a known key still has a token"
        );
        assert_eq!(keyed.len(), 3);
        // Once they are idle again, a new key gets in.
        assert!(keyed.try_take(99, t0 + Duration::from_secs(5)).is_ok());
        assert_eq!(keyed.len(), 1);
    }
}
