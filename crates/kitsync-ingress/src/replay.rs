//! The replay keys this ingress process accepted, in memory.
//!
//! The key is the verified `x-sign` (the MAC covers the access key, the nonce, the timestamp
//! and the body), kept until its *signed* timestamp leaves the acceptance window: after that a
//! replay is refused as stale before it gets here. So the set holds what was accepted in the
//! last two windows at most (a timestamp may be ahead of our clock by one window), and expired
//! keys are dropped as new ones arrive.
//!
//! This is the fast path: a replay to the process that accepted the original is refused at
//! once, without a database. It is not the only one. The durable ledger is written by the
//! worker in the apply transaction (and, on the embedded queue, with the queue row), so a
//! replay that reaches another process, or this one after a restart, is still never applied.
//! That is also why the set may forget early: beyond [`ReplaySet::with_capacity`] keys it
//! drops the ones closest to expiry, and a replay of those is caught downstream.
use kitsync_domain::ReplayKey;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Keys kept at most by default: about two minutes of callbacks at 8 000 a second.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// What [`ReplaySet::claim`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not seen by this process (or seen and expired); now remembered.
    Fresh,
    /// Accepted by this process and not expired: a replay.
    Replayed,
}

#[derive(Default)]
struct Keys {
    /// Key → its expiry.
    expiry: HashMap<ReplayKey, i64>,
    /// Every remembered (expiry, key), soonest first. A key released and claimed again has
    /// two entries; the stale one is skipped when it comes up.
    order: BinaryHeap<Reverse<(i64, ReplayKey)>>,
}

impl Keys {
    /// Drops the soonest-expiring entries while `drop(expiry)` says so.
    fn drop_while(&mut self, mut drop: impl FnMut(&Self, i64) -> bool) -> u64 {
        let mut dropped = 0;
        while let Some(Reverse((at, key))) = self.order.peek().copied() {
            if !drop(self, at) {
                break;
            }
            self.order.pop();
            if self.expiry.get(&key) == Some(&at) {
                self.expiry.remove(&key);
                dropped += 1;
            }
        }
        dropped
    }
}

/// The set; shared by every request of the process.
pub struct ReplaySet {
    keys: Mutex<Keys>,
    capacity: usize,
    evicted: AtomicU64,
}

impl Default for ReplaySet {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl ReplaySet {
    /// A set that keeps at most `capacity` keys (at least one).
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            keys: Mutex::default(),
            capacity: capacity.max(1),
            evicted: AtomicU64::new(0),
        }
    }

    /// Remembers `key` until `expires_at_ms`: [`Claim::Fresh`] unless it is already held
    /// unexpired at `now_ms`. Of concurrent claims of one key, exactly one is fresh.
    pub fn claim(&self, key: &ReplayKey, now_ms: i64, expires_at_ms: i64) -> Claim {
        let mut keys = self.lock();
        keys.drop_while(|_, at| at < now_ms);
        if let Some(&at) = keys.expiry.get(key) {
            if at >= now_ms {
                return Claim::Replayed;
            }
        }
        let evicted = keys.drop_while(|k, _| k.expiry.len() >= self.capacity);
        if evicted > 0 {
            self.evicted.fetch_add(evicted, Ordering::Relaxed);
        }
        keys.expiry.insert(*key, expires_at_ms);
        keys.order.push(Reverse((expires_at_ms, *key)));
        Claim::Fresh
    }

    /// Forgets `key`, so the marketplace's retry of a callback that could not be queued is
    /// not refused as a replay.
    pub fn release(&self, key: &ReplayKey) {
        self.lock().expiry.remove(key);
    }

    /// Keys remembered now (expired ones included until the next claim drops them).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().expiry.len()
    }

    /// Whether no key is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys dropped before their expiry because the set was full.
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        // The critical sections cannot leave the maps inconsistent mid-way in a way that
        // matters: at worst a key is missing, which the durable ledger covers.
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ReplayKey {
        [n; 32]
    }

    #[test]
    fn a_key_is_a_replay_until_it_expires() {
        let set = ReplaySet::default();
        assert_eq!(set.claim(&key(1), 1_000, 2_000), Claim::Fresh);
        assert_eq!(set.claim(&key(1), 1_500, 2_000), Claim::Replayed);
        assert_eq!(set.claim(&key(1), 2_000, 2_000), Claim::Replayed);
        assert_eq!(set.claim(&key(1), 2_001, 2_000), Claim::Fresh);
        assert_eq!(set.claim(&key(2), 1_500, 2_000), Claim::Fresh);
    }

    #[test]
    fn expired_keys_are_dropped_as_new_ones_arrive() {
        let set = ReplaySet::default();
        for n in 0..10 {
            set.claim(&key(n), 0, 100 + i64::from(n));
        }
        assert_eq!(set.len(), 10);
        set.claim(&key(200), 105, 300);
        // 100..=104 expired before 105.
        assert_eq!(set.len(), 6);
    }

    #[test]
    fn a_released_key_can_be_claimed_again() {
        let set = ReplaySet::default();
        assert_eq!(set.claim(&key(1), 0, 100), Claim::Fresh);
        set.release(&key(1));
        assert_eq!(set.claim(&key(1), 1, 100), Claim::Fresh);
        assert_eq!(set.claim(&key(1), 2, 100), Claim::Replayed);
        // The stale heap entry of the first claim does not drop the second.
        set.claim(&key(9), 50, 60);
        assert_eq!(set.claim(&key(1), 55, 100), Claim::Replayed);
    }

    #[test]
    fn a_full_set_drops_the_keys_closest_to_expiry() {
        let set = ReplaySet::with_capacity(3);
        set.claim(&key(1), 0, 30);
        set.claim(&key(2), 0, 10);
        set.claim(&key(3), 0, 20);
        assert_eq!(set.claim(&key(4), 0, 40), Claim::Fresh);
        assert_eq!(set.len(), 3);
        assert_eq!(set.evicted(), 1);
        // Key 2 (expiring first) went; the others are still replays.
        assert_eq!(set.claim(&key(1), 1, 30), Claim::Replayed);
        assert_eq!(set.claim(&key(3), 1, 20), Claim::Replayed);
    }
}
