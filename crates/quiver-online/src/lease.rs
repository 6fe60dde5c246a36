//! Leases of a store that one process holds: kept in memory, with the same expiry rules as a
//! shared store's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Named leases, each held by one holder until it expires or is released.
#[derive(Debug, Default)]
pub struct LocalLeases(Mutex<HashMap<String, (String, Instant)>>);

impl LocalLeases {
    /// Takes `name` for `holder` for `ttl` (or extends it); `false` while another holder's
    /// lease has not expired.
    pub fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> bool {
        let mut leases = self.lock();
        let now = Instant::now();
        if let Some((other, until)) = leases.get(name)
            && other != holder
            && *until > now
        {
            return false;
        }
        leases.insert(name.to_owned(), (holder.to_owned(), now + ttl));
        true
    }

    /// Gives up `name` if `holder` has it.
    pub fn release(&self, name: &str, holder: &str) {
        let mut leases = self.lock();
        if leases.get(name).is_some_and(|(h, _)| h == holder) {
            leases.remove(name);
        }
    }

    /// The holder of `name`, if its lease has not expired.
    pub fn holder(&self, name: &str) -> Option<String> {
        self.lock()
            .get(name)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(h, _)| h.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_exclusive_until_released_or_expired() {
        let leases = LocalLeases::default();
        let long = Duration::from_secs(60);
        assert!(leases.acquire("l", "a", long));
        assert!(!leases.acquire("l", "b", long));
        assert!(leases.acquire("l", "a", long), "the holder extends it");
        assert_eq!(leases.holder("l").as_deref(), Some("a"));
        leases.release("l", "b");
        assert_eq!(
            leases.holder("l").as_deref(),
            Some("a"),
            "only the holder releases"
        );
        leases.release("l", "a");
        assert!(leases.acquire("l", "b", Duration::ZERO));
        assert_eq!(leases.holder("l"), None, "expired");
        assert!(leases.acquire("l", "a", long));
    }
}
