//! Login throttling, per user and per source address.
//!
//! Each key counts its failed logins. Past a free allowance every further
//! failure makes the key wait, doubling from [`LOGIN_BACKOFF_MS`] up to
//! [`MAX_LOGIN_BACKOFF_MS`], and a key that has not failed for
//! [`LOGIN_FAILURE_MEMORY_MS`] starts afresh. Attempts still in progress
//! count too: a key has at most as many at once as it has failures left
//! (and at least one), so a flood of concurrent guesses is refused before
//! any of it reaches the password hashing. A refused attempt costs nothing
//! and counts nothing. A successful login clears its user's failures, not
//! its address's (one valid account must not launder guesses at others).
//!
//! At most [`MAX_THROTTLED_KEYS`] keys are remembered; past that the one
//! touched longest ago is forgotten.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::bounded::BoundedMap;
use crate::Error;
use crate::ids::Id;
use crate::limits::{
    LOGIN_BACKOFF_MS, LOGIN_FAILURE_MEMORY_MS, LOGIN_FAILURES_PER_ADDRESS, LOGIN_FAILURES_PER_USER,
    MAX_LOGIN_BACKOFF_MS,
};

/// What logins are counted by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    User(String),
    /// An IPv4 address, or an IPv6 /64 (one subscriber's network).
    Address(IpAddr),
}

impl Key {
    pub fn user(id: &Id) -> Self {
        Key::User(id.to_string())
    }

    pub fn address(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !(u64::MAX as u128)).into()),
            },
            v4 => v4,
        };
        Key::Address(ip)
    }

    fn free_failures(&self) -> u32 {
        match self {
            Key::User(_) => LOGIN_FAILURES_PER_USER,
            Key::Address(_) => LOGIN_FAILURES_PER_ADDRESS,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::User(user) => write!(f, "for {user}"),
            Key::Address(IpAddr::V6(v6)) => write!(f, "from {v6}/64"),
            Key::Address(ip) => write!(f, "from {ip}"),
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Record {
    failures: u32,
    in_progress: u32,
    blocked_until_ms: i64,
    last_failure_ms: i64,
}

impl Record {
    fn is_clear(&self) -> bool {
        self.failures == 0 && self.in_progress == 0
    }
}

#[derive(Clone)]
pub(super) struct LoginThrottle {
    keys: Arc<Mutex<BoundedMap<Key, Record>>>,
}

impl LoginThrottle {
    /// A throttle remembering at most `max_keys` users and addresses.
    pub fn new(max_keys: usize) -> Self {
        Self {
            keys: Arc::new(Mutex::new(BoundedMap::new(max_keys))),
        }
    }

    /// Starts a login attempt counted by every one of `keys`, or refuses it
    /// (`RESOURCE_EXHAUSTED`) when any of them is over its limit.
    pub fn begin(&self, keys: Vec<Key>, now_ms: i64) -> Result<Attempt, Error> {
        let mut map = self.keys.lock().expect("login throttle");
        let mut records = Vec::with_capacity(keys.len());
        for key in &keys {
            let record = current(&map, key, now_ms);
            if now_ms < record.blocked_until_ms {
                let wait_s = (record.blocked_until_ms - now_ms + 999) / 1000;
                return Err(Error::ResourceExhausted(format!(
                    "too many failed logins {key}; try again in {wait_s} s"
                )));
            }
            let allowed = key.free_failures().saturating_sub(record.failures).max(1);
            if record.in_progress >= allowed {
                return Err(Error::ResourceExhausted(format!(
                    "too many logins {key} in progress; try again in a moment"
                )));
            }
            records.push(record);
        }
        for (key, mut record) in keys.iter().zip(records) {
            record.in_progress += 1;
            map.insert(key.clone(), record);
        }
        Ok(Attempt {
            throttle: self.clone(),
            keys,
            settled: false,
        })
    }

    fn settle(&self, keys: &[Key], outcome: Outcome) {
        let mut map = self.keys.lock().expect("login throttle");
        for key in keys {
            let Some(mut record) = map.get(key).copied() else {
                continue; // forgotten meanwhile
            };
            record.in_progress = record.in_progress.saturating_sub(1);
            match outcome {
                Outcome::Failed(now_ms) => {
                    record.failures = record.failures.saturating_add(1);
                    record.last_failure_ms = now_ms;
                    if let Some(over) = record.failures.checked_sub(key.free_failures()) {
                        let wait = LOGIN_BACKOFF_MS
                            .saturating_mul(1 << over.min(30))
                            .min(MAX_LOGIN_BACKOFF_MS);
                        record.blocked_until_ms = now_ms + wait;
                    }
                }
                Outcome::Succeeded if matches!(key, Key::User(_)) => {
                    record.failures = 0;
                    record.blocked_until_ms = 0;
                }
                Outcome::Succeeded | Outcome::Neither => {}
            }
            if record.is_clear() {
                map.remove(key);
            } else {
                map.insert(key.clone(), record);
            }
        }
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.keys.lock().expect("login throttle").len()
    }
}

/// The record of `key` as of `now_ms`: failures long past are forgotten.
fn current(map: &BoundedMap<Key, Record>, key: &Key, now_ms: i64) -> Record {
    match map.get(key) {
        Some(record)
            if record.in_progress > 0
                || now_ms - record.last_failure_ms < LOGIN_FAILURE_MEMORY_MS =>
        {
            *record
        }
        Some(record) => Record {
            in_progress: record.in_progress,
            ..Record::default()
        },
        None => Record::default(),
    }
}

#[derive(Clone, Copy)]
enum Outcome {
    Succeeded,
    Failed(i64),
    /// Neither: the login could not be decided (a region unreachable, the
    /// hashing pool busy, the caller gone).
    Neither,
}

/// A login in progress. Dropping it without an outcome counts nothing.
pub(super) struct Attempt {
    throttle: LoginThrottle,
    keys: Vec<Key>,
    settled: bool,
}

impl Attempt {
    pub fn succeeded(mut self) {
        self.finish(Outcome::Succeeded);
    }

    /// The credentials were wrong (or the user unknown).
    pub fn failed(mut self, now_ms: i64) {
        self.finish(Outcome::Failed(now_ms));
    }

    fn finish(&mut self, outcome: Outcome) {
        if !self.settled {
            self.settled = true;
            self.throttle.settle(&self.keys, outcome);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.finish(Outcome::Neither);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann() -> Key {
        Key::User("ann@eu".into())
    }

    fn addr(text: &str) -> Key {
        Key::address(text.parse().unwrap())
    }

    fn exhausted(result: Result<Attempt, Error>) -> String {
        match result {
            Err(Error::ResourceExhausted(message)) => message,
            Err(other) => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
            Ok(_) => panic!("expected RESOURCE_EXHAUSTED, the attempt was let through"),
        }
    }

    #[test]
    fn failures_past_the_allowance_wait_doubling_and_success_clears_the_user() {
        let throttle = LoginThrottle::new(100);
        let mut now = 1_000_000;
        for _ in 0..LOGIN_FAILURES_PER_USER {
            throttle.begin(vec![ann()], now).unwrap().failed(now);
        }
        let message = exhausted(throttle.begin(vec![ann()], now));
        assert_eq!(
            message,
            "too many failed logins for ann@eu; try again in 1 s"
        );
        now += LOGIN_BACKOFF_MS;
        throttle.begin(vec![ann()], now).unwrap().failed(now);
        let message = exhausted(throttle.begin(vec![ann()], now + LOGIN_BACKOFF_MS));
        assert!(message.ends_with("try again in 1 s"), "{message}");
        now += 2 * LOGIN_BACKOFF_MS;
        throttle.begin(vec![ann()], now).unwrap().succeeded();
        assert_eq!(throttle.tracked(), 0, "a success clears the user");
        throttle.begin(vec![ann()], now).unwrap().failed(now);
        assert!(throttle.begin(vec![ann()], now).is_ok());
    }

    #[test]
    fn the_wait_is_capped_and_failures_are_forgotten_after_a_quiet_hour() {
        let throttle = LoginThrottle::new(100);
        let mut now = 0;
        for _ in 0..60 {
            let attempt = throttle.begin(vec![ann()], now).unwrap();
            attempt.failed(now);
            now += MAX_LOGIN_BACKOFF_MS;
        }
        let message = exhausted(throttle.begin(vec![ann()], now - MAX_LOGIN_BACKOFF_MS + 1));
        assert!(message.ends_with("try again in 900 s"), "{message}");
        now += LOGIN_FAILURE_MEMORY_MS;
        for _ in 0..LOGIN_FAILURES_PER_USER {
            throttle.begin(vec![ann()], now).unwrap().failed(now);
        }
    }

    #[test]
    fn concurrent_attempts_are_limited_before_any_is_decided() {
        let throttle = LoginThrottle::new(100);
        let source = addr("203.0.113.7");
        let attempts: Vec<Attempt> = (0..LOGIN_FAILURES_PER_USER)
            .map(|_| throttle.begin(vec![ann(), source.clone()], 0).unwrap())
            .collect();
        let message = exhausted(throttle.begin(vec![ann(), source.clone()], 0));
        assert_eq!(
            message,
            "too many logins for ann@eu in progress; try again in a moment"
        );
        // Another user from the same address still gets through.
        let bob = Key::User("bob@eu".into());
        throttle
            .begin(vec![bob, source.clone()], 0)
            .unwrap()
            .succeeded();
        // Dropped attempts (a caller gone) count nothing.
        drop(attempts);
        assert_eq!(throttle.tracked(), 0);
    }

    #[test]
    fn an_address_is_throttled_across_users_and_ipv6_by_its_64() {
        let throttle = LoginThrottle::new(100);
        for i in 0..LOGIN_FAILURES_PER_ADDRESS {
            if i == 3 {
                // A success from the address does not clear it.
                let source = addr("2001:db8:1:2::abc");
                throttle.begin(vec![ann(), source], 5).unwrap().succeeded();
            }
            let user = Key::User(format!("u{i}@eu"));
            let source = addr(&format!("2001:db8:1:2::{i:x}"));
            throttle.begin(vec![user, source], 5).unwrap().failed(5);
        }
        let message = exhausted(throttle.begin(vec![ann(), addr("2001:db8:1:2:ffff::1")], 5));
        assert_eq!(
            message,
            "too many failed logins from 2001:db8:1:2::/64; try again in 1 s"
        );
        assert!(
            throttle
                .begin(vec![ann(), addr("2001:db8:1:3::1")], 5)
                .is_ok()
        );
        assert_eq!(addr("::ffff:192.0.2.1"), addr("192.0.2.1"));
    }

    #[test]
    fn the_keys_remembered_are_bounded() {
        let throttle = LoginThrottle::new(8);
        for i in 0..1000 {
            let source = addr(&format!("198.51.100.{}", i % 250));
            let user = Key::User(format!("u{i}@eu"));
            throttle.begin(vec![user, source], i).unwrap().failed(i);
            assert!(throttle.tracked() <= 8);
        }
    }
}
