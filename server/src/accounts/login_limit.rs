//! The failed-login rate limit: after [`PER_NAME`] wrong passwords for one user name, or
//! [`PER_ADDRESS`] from one client address, within [`WINDOW`], further attempts are refused
//! (before any password is checked) until the oldest failure leaves the window.
//!
//! Kept in memory, not in Postgres: one server process answers every login, so memory sees all
//! of them; a wrong guess then costs no database write (a flood of guesses cannot grow a
//! table); and a restart forgetting the counts is harmless (only the operator can restart).
//! The map is bounded: entries whose failures all left the window are swept, and past
//! [`MAX_KEYS`] the oldest keys go first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const PER_NAME: usize = 5;
/// Higher than per name: a lab behind one NAT address shares it.
pub const PER_ADDRESS: usize = 20;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
const MAX_KEYS: usize = 50_000;

#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginLimiter {
    /// `Err(message)` when this name or address is locked out now, saying for how long.
    pub fn check(&self, name: &str, address: &str) -> Result<(), String> {
        self.check_at(name, address, Instant::now())
    }

    fn check_at(&self, name: &str, address: &str, now: Instant) -> Result<(), String> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for (key, limit, what) in [
            (name_key(name), PER_NAME, "this user name"),
            (address_key(address), PER_ADDRESS, "your address"),
        ] {
            let recent: Vec<&Instant> = map
                .get(&key)
                .map(|v| {
                    v.iter()
                        .filter(|t| now.duration_since(**t) < WINDOW)
                        .collect()
                })
                .unwrap_or_default();
            if recent.len() >= limit {
                let oldest = recent.iter().min().map_or(now, |t| **t);
                let wait = WINDOW.saturating_sub(now.duration_since(oldest));
                return Err(format!(
                    "Too many failed sign-ins for {what} ({limit} in {} minutes): try again in {} minutes.",
                    WINDOW.as_secs() / 60,
                    wait.as_secs().div_ceil(60).max(1)
                ));
            }
        }
        Ok(())
    }

    pub fn record_failure(&self, name: &str, address: &str) {
        self.record_failure_at(name, address, Instant::now());
    }

    fn record_failure_at(&self, name: &str, address: &str, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS {
            map.retain(|_, v| v.iter().any(|t| now.duration_since(*t) < WINDOW));
            while map.len() >= MAX_KEYS {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, v)| v.iter().max().copied())
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => map.remove(&k),
                    None => break,
                };
            }
        }
        for key in [name_key(name), address_key(address)] {
            let v = map.entry(key).or_default();
            v.retain(|t| now.duration_since(*t) < WINDOW);
            v.push(now);
        }
    }

    /// A correct password clears the name's count (not the address's: one known password must
    /// not reset the count of guesses at other names).
    pub fn record_success(&self, name: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&name_key(name));
    }
}

fn name_key(name: &str) -> String {
    format!("name:{}", name.trim().to_lowercase())
}

fn address_key(address: &str) -> String {
    format!("addr:{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_a_name_after_five_failures_until_the_window_passes() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..PER_NAME {
            assert!(l.check_at("ana", "10.0.0.1", t0).is_ok(), "attempt {i}");
            l.record_failure_at("ana", "10.0.0.1", t0);
        }
        let refused = l.check_at("ANA", "10.0.0.2", t0).unwrap_err();
        assert!(
            refused.contains("this user name") && refused.contains("15 minutes"),
            "{refused}"
        );
        assert!(
            l.check_at("bob", "10.0.0.1", t0).is_ok(),
            "another name is not locked"
        );
        assert!(l.check_at("ana", "10.0.0.1", t0 + WINDOW).is_ok());
        l.record_success("ana");
        assert!(l.check_at("ana", "10.0.0.1", t0).is_ok());
    }

    #[test]
    fn locks_an_address_guessing_many_names() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..PER_ADDRESS {
            l.record_failure_at(&format!("user{i}"), "10.0.0.9", t0);
        }
        let refused = l.check_at("new-name", "10.0.0.9", t0).unwrap_err();
        assert!(refused.contains("your address"), "{refused}");
    }
}
