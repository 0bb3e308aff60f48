//! De-duplication of client retries: a messageId seen from the same source within the window is
//! accepted again but not routed twice.
//!
//! Memory is bounded: ids are kept as 64-bit SipHash digests of `source` and `messageId`, keyed at
//! random per process (ids come from clients: fixed keys would let one craft colliding ids), in two
//! generations. A new generation starts when the current one is `window` old or holds `max_entries`
//! ids, and the previous one is then forgotten; so an id is remembered for at least `window` (at most
//! twice that) unless more than `max_entries` ids arrive within the window, in which case the effective
//! window shrinks to the last `max_entries`–`2 × max_entries` ids (counted in `early_rotations`).
//! At 16 bytes per id, the default 1,000,000 entries per generation use at most ~40 MB.
//! Both generations are sized for `max_entries` up front and a rotation reuses the older one's
//! table: growing a set as it fills rehashes it under the lock every ingest request takes (10-20 ms
//! at 0.5-1 million ids, which stalled every request in flight).
//! Server-generated messageIds are unique and never tracked. The set is in memory only: after a restart
//! a retry can be routed again (every sink de-duplicates by messageId downstream).

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Ids per generation by default.
pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

/// Ids a generation's table is sized for at most up front (~75 MB): a larger `max_entries` grows its
/// tables past this as they fill, rather than taking their whole size (or failing) at start.
const PRESIZED_AT_MOST: usize = 4_000_000;

/// Hashes a digest to itself: digests are SipHash outputs under per-process random keys already, so
/// hashing them again (the std set's default) only costs time.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 digests are hashed; fold anything else in so the hasher stays correct.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type DigestSet = HashSet<u64, BuildHasherDefault<DigestHasher>>;

struct Generations {
    current: DigestSet,
    previous: DigestSet,
    started: Instant,
}

/// The de-duplication window.
pub struct Deduper {
    window: Duration,
    max_entries: usize,
    generations: Mutex<Generations>,
    /// Rotations forced by volume rather than time.
    pub early_rotations: AtomicU64,
    /// Duplicates found.
    pub duplicates: AtomicU64,
}

/// The random SipHash keys of this process's de-duplication digests.
static DIGEST_KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// The digest an id is remembered by: stable within the process, which is all the window needs, and
/// unpredictable from outside it, so clients cannot choose ids that pile into one bucket of the set.
pub fn digest(source: &str, message_id: &str) -> u64 {
    DIGEST_KEYS.hash_one((source, message_id))
}

/// A digest of `id` that stays the same across restarts (SipHash-1-3 with fixed keys), for audit
/// records that name a person's id without storing it.
pub fn stable_digest(scope: &str, id: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    scope.hash(&mut hasher);
    id.hash(&mut hasher);
    hasher.finish()
}

impl Deduper {
    /// A window of `window`; a zero window disables de-duplication.
    pub fn new(window: Duration, max_entries: usize) -> Deduper {
        let max_entries = max_entries.max(1);
        // ~19 MB per generation at the default 1,000,000, which a set filling up reached anyway;
        // resident once traffic has touched its pages. A disabled de-duplicator needs none.
        let sized = if window.is_zero() {
            0
        } else {
            max_entries.min(PRESIZED_AT_MOST)
        };
        let generation = || DigestSet::with_capacity_and_hasher(sized, Default::default());
        Deduper {
            window,
            max_entries,
            generations: Mutex::new(Generations {
                current: generation(),
                previous: generation(),
                started: Instant::now(),
            }),
            early_rotations: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        }
    }

    /// Whether the window is on.
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    /// Claims each digest: true when new (now remembered), false when a duplicate within the window.
    /// Claims for events that end up not stored must be given back with [`Deduper::release`].
    pub fn claim(&self, digests: &[u64]) -> Vec<bool> {
        if !self.enabled() {
            return vec![true; digests.len()];
        }
        let mut generations = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = Vec::with_capacity(digests.len());
        // One clock read per request: a request's events arrive at the same moment.
        let by_time = generations.started.elapsed() >= self.window;
        let mut rotated = false;
        for digest in digests {
            let by_time = by_time && !rotated;
            let by_volume = generations.current.len() >= self.max_entries;
            if by_time || by_volume {
                if by_volume && !by_time {
                    self.early_rotations.fetch_add(1, Ordering::Relaxed);
                }
                // The older generation's table, emptied, becomes the new one: no allocation, no
                // growth, and no freeing under the lock.
                let mut recycled = std::mem::take(&mut generations.previous);
                recycled.clear();
                generations.previous = std::mem::replace(&mut generations.current, recycled);
                generations.started = Instant::now();
                rotated = true;
            }
            let seen =
                generations.previous.contains(digest) || !generations.current.insert(*digest);
            if seen {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            fresh.push(!seen);
        }
        fresh
    }

    /// Forgets claims whose events were not stored (the append failed), so a retry is accepted.
    pub fn release(&self, digests: &[u64]) {
        if !self.enabled() {
            return;
        }
        let mut generations = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        for digest in digests {
            generations.current.remove(digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_within_the_window_are_found_per_source() {
        let deduper = Deduper::new(Duration::from_secs(600), 100);
        let a = digest("web", "m1");
        let b = digest("ios", "m1");
        assert_eq!(deduper.claim(&[a, b, a]), vec![true, true, false]);
        assert_eq!(deduper.claim(&[a]), vec![false]);
        deduper.release(&[b]);
        assert_eq!(deduper.claim(&[b]), vec![true]);
        assert_eq!(deduper.duplicates.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn memory_is_bounded_by_rotating_generations() {
        let deduper = Deduper::new(Duration::from_secs(600), 10);
        let digests: Vec<u64> = (0..35).map(|i| digest("s", &i.to_string())).collect();
        assert!(deduper.claim(&digests).iter().all(|fresh| *fresh));
        let generations = deduper.generations.lock().unwrap();
        assert!(generations.current.len() <= 10 && generations.previous.len() <= 10);
        drop(generations);
        assert_eq!(deduper.early_rotations.load(Ordering::Relaxed), 3);
        // The most recent ids are still remembered.
        assert_eq!(deduper.claim(&digests[30..]), vec![false; 5]);
    }

    #[test]
    fn the_sets_never_grow_under_the_lock() {
        let deduper = Deduper::new(Duration::from_secs(600), 1000);
        // The two tables' capacities, whichever generation each is now.
        let tables = |deduper: &Deduper| {
            let generations = deduper.generations.lock().unwrap();
            let mut tables = [
                generations.current.capacity(),
                generations.previous.capacity(),
            ];
            tables.sort_unstable();
            tables
        };
        let sized = tables(&deduper);
        assert!(sized.iter().all(|capacity| *capacity >= 1000), "{sized:?}");
        let digests: Vec<u64> = (0..3500).map(|i| digest("s", &i.to_string())).collect();
        for request in digests.chunks(100) {
            deduper.claim(request);
            assert_eq!(tables(&deduper), sized, "a set grew");
        }
        assert_eq!(deduper.early_rotations.load(Ordering::Relaxed), 3);
        // Still the most recent ids are remembered and the older ones forgotten.
        assert_eq!(deduper.claim(&digests[3400..]), vec![false; 100]);
        assert_eq!(deduper.claim(&digests[..100]), vec![true; 100]);
    }

    #[test]
    fn digests_are_keyed_per_process_and_audit_digests_are_not() {
        // The de-duplication digest must not be the fixed-key one, which anyone can compute.
        assert_ne!(digest("web", "m1"), stable_digest("web", "m1"));
        assert_eq!(digest("web", "m1"), digest("web", "m1"));
        // The source and the id stay apart: moving a character from one to the other is another id.
        assert_ne!(digest("web", "m1"), digest("webm", "1"));
        let mut fixed = std::hash::DefaultHasher::new();
        "privacy".hash(&mut fixed);
        "user-1".hash(&mut fixed);
        assert_eq!(stable_digest("privacy", "user-1"), fixed.finish());
    }

    #[test]
    fn zero_window_disables() {
        let deduper = Deduper::new(Duration::ZERO, 10);
        let a = digest("s", "m");
        assert_eq!(deduper.claim(&[a, a]), vec![true, true]);
    }
}
