//! The process table: local pid key → process, indexed by the key itself.
//!
//! Pid keys are handed out in increasing order (`Shared::next_pid`), so the
//! processes spawned one after another have consecutive keys. A hash table
//! scatters them: every insert, lookup and removal of a million fresh
//! processes touched a cache line of its own, twice (control bytes, then
//! the bucket). Here a key finds its slot by arithmetic, and consecutive
//! keys sit in consecutive slots, as in BEAM's process table.
//!
//! # Layout
//!
//! The keys are dealt to [`SHARDS`] shards in runs of [`RUN`] consecutive
//! keys (key bits 3..9 pick the shard): a run's slots fill one cache line,
//! so a burst of spawns writes each shard's slots in order, while the
//! processes of one burst (a pool of workers, say) spread over every shard
//! and two threads working on neighbouring pids rarely take the same lock. Within a shard a key's
//! *index* (its key with the shard bits taken out) is dense: each shard
//! keeps a window of slots, `slots[i]` holding index `base + i`, from about
//! its oldest live process to its newest.
//!
//! Keys are never reused, so one long-lived process would hold the window
//! open behind it while the keys run on. A window allowed to grow sparse
//! (more than twice its live entries, plus [`SLACK`]) evicts entries from
//! its front into the shard's `overflow` hash map, where such old processes
//! then live; the window closes up behind them. Each entry moves to the
//! overflow at most once, and an insert far past the window (a shard that
//! saw no spawn for a while, its window kept open by one old process) moves
//! the window's entries there instead of filling the gap, so every
//! operation costs O(1) amortized and the memory stays proportional to the
//! live processes.
//!
//! # Concurrency
//!
//! Each shard is behind its own read-write lock, as `DashMap`'s shards were:
//! a lookup takes the read side, an insert or removal the write side, and
//! no operation holds two shard locks. There is no other protocol.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use crossbeam_utils::CachePadded;
use parking_lot::RwLock;

use super::KeyHasher;

/// Consecutive keys per shard run (8: one cache line of slots).
const RUN_BITS: u32 = 3;
/// Keys per run.
pub(crate) const RUN: u64 = 1 << RUN_BITS;
/// Shard-number bits.
const SHARD_BITS: u32 = 6;
/// Number of shards.
pub(crate) const SHARDS: usize = 1 << SHARD_BITS;
/// Empty slots a window may hold beyond twice its live entries.
const SLACK: usize = 1024;
/// How far before its window's start a late insert (a key handed out
/// before others that were inserted first) still extends the window.
const BACK_REACH: u64 = RUN;

/// Local pid key → `V` (an `Arc<Process>` in the runtime); see the module
/// docs.
pub(crate) struct PidTable<V> {
    shards: Box<[CachePadded<RwLock<Shard<V>>>]>,
}

struct Shard<V> {
    /// The index held by `slots[0]`.
    base: u64,
    slots: VecDeque<Option<V>>,
    /// `Some` entries in `slots`.
    in_window: usize,
    /// Entries whose index is not in the window (evicted from its front, or
    /// inserted behind it).
    overflow: HashMap<u64, V, BuildHasherDefault<KeyHasher>>,
}

/// The shard of `key` and its index there.
fn locate(key: u64) -> (usize, u64) {
    let shard = ((key >> RUN_BITS) as usize) & (SHARDS - 1);
    let index = ((key >> (RUN_BITS + SHARD_BITS)) << RUN_BITS) | (key & (RUN - 1));
    (shard, index)
}

impl<V> Default for PidTable<V> {
    fn default() -> Self {
        PidTable {
            shards: (0..SHARDS)
                .map(|_| {
                    CachePadded::new(RwLock::new(Shard {
                        base: 0,
                        slots: VecDeque::new(),
                        in_window: 0,
                        overflow: HashMap::default(),
                    }))
                })
                .collect(),
        }
    }
}

impl<V> Shard<V> {
    /// The window slot of `index`, if the window covers it.
    fn slot(&self, index: u64) -> Option<usize> {
        let offset = index.checked_sub(self.base)?;
        (offset < self.slots.len() as u64).then_some(offset as usize)
    }

    fn get(&self, index: u64) -> Option<&V> {
        if let Some(Some(value)) = self.slot(index).map(|i| &self.slots[i]) {
            return Some(value);
        }
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow.get(&index)
    }

    fn insert(&mut self, index: u64, value: V) {
        if self.slots.is_empty() {
            self.base = index;
        } else if index < self.base {
            if self.base - index > BACK_REACH {
                self.overflow.insert(index, value);
                return;
            }
            while self.base > index {
                self.slots.push_front(None);
                self.base -= 1;
            }
        } else {
            let end = self.base + self.slots.len() as u64;
            if index >= end {
                let gap = index - end;
                if gap > (2 * self.in_window + SLACK) as u64 {
                    // Far past the window: move what it holds aside rather
                    // than fill the gap.
                    self.evict_front(self.slots.len());
                    self.base = index;
                } else {
                    for _ in 0..gap {
                        self.slots.push_back(None);
                    }
                }
            }
        }
        match self.slot(index) {
            Some(i) => {
                debug_assert!(self.slots[i].is_none(), "a pid key inserted twice");
                self.slots[i] = Some(value);
            }
            None => {
                debug_assert_eq!(index, self.base + self.slots.len() as u64);
                self.slots.push_back(Some(value));
            }
        }
        self.in_window += 1;
        self.keep_dense();
    }

    fn remove(&mut self, index: u64) -> Option<V> {
        let Some(i) = self.slot(index) else {
            return self.overflow.remove(&index);
        };
        let Some(value) = self.slots[i].take() else {
            if self.overflow.is_empty() {
                return None;
            }
            return self.overflow.remove(&index);
        };
        self.in_window -= 1;
        while let Some(None) = self.slots.back() {
            self.slots.pop_back();
        }
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        self.keep_dense();
        Some(value)
    }

    /// Moves the first `n` window slots' entries to the overflow.
    fn evict_front(&mut self, n: usize) {
        for _ in 0..n {
            match self.slots.pop_front() {
                Some(Some(value)) => {
                    self.in_window -= 1;
                    self.overflow.insert(self.base, value);
                }
                Some(None) => {}
                None => break,
            }
            self.base += 1;
        }
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    /// Evicts from the front while the window is too sparse.
    fn keep_dense(&mut self) {
        while self.slots.len() > 2 * self.in_window + SLACK {
            self.evict_front(1);
        }
        if self.slots.capacity() > 4 * self.slots.len() + SLACK {
            self.slots.shrink_to(2 * self.slots.len());
        }
    }

    fn len(&self) -> usize {
        self.in_window + self.overflow.len()
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.overflow.values().chain(self.slots.iter().flatten())
    }
}

impl<V> PidTable<V> {
    /// Inserts the entry of a key that is not in the table.
    pub(crate) fn insert(&self, key: u64, value: V) {
        let (shard, index) = locate(key);
        self.shards[shard].write().insert(index, value);
    }

    /// Removes and returns the entry of `key`.
    pub(crate) fn remove(&self, key: u64) -> Option<V> {
        let (shard, index) = locate(key);
        self.shards[shard].write().remove(index)
    }

    /// Runs `f` on the entry of `key` under its shard's read lock.
    pub(crate) fn with<R>(&self, key: u64, f: impl FnOnce(&V) -> R) -> Option<R> {
        let (shard, index) = locate(key);
        self.shards[shard].read().get(index).map(f)
    }

    /// Number of entries (each shard counted under its lock in turn).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Applies `f` to every entry, one shard at a time, and collects the
    /// results.
    pub(crate) fn collect<R>(&self, mut f: impl FnMut(&V) -> R) -> Vec<R> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.read().values().map(&mut f));
        }
        out
    }

    /// Removes every entry.
    pub(crate) fn take_all(&self) -> Vec<V> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            out.extend(shard.overflow.drain().map(|(_, v)| v));
            out.extend(shard.slots.drain(..).flatten());
            shard.in_window = 0;
        }
        out
    }
}

#[cfg(all(test, not(feature = "loom-models")))]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;

    /// Checks the table against a model map, and its shards' invariants.
    fn check(table: &PidTable<u64>, model: &BTreeMap<u64, u64>) {
        assert_eq!(table.len(), model.len());
        for (&k, &v) in model {
            assert_eq!(table.with(k, |v| *v), Some(v), "key {k}");
        }
        let mut all = table.collect(|v| *v);
        all.sort_unstable();
        let mut expected: Vec<u64> = model.values().copied().collect();
        expected.sort_unstable();
        assert_eq!(all, expected);
        for shard in table.shards.iter() {
            let shard = shard.read();
            assert_eq!(
                shard.in_window,
                shard.slots.iter().filter(|s| s.is_some()).count()
            );
            assert!(shard.slots.len() <= 2 * shard.in_window + SLACK);
            assert!(!matches!(shard.slots.front(), Some(None)));
            assert!(!matches!(shard.slots.back(), Some(None)));
        }
    }

    #[test]
    fn consecutive_keys_land_in_runs_of_one_shard_with_dense_indices() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(RUN - 1), (0, RUN - 1));
        assert_eq!(locate(RUN), (1, 0));
        assert_eq!(locate(RUN * SHARDS as u64), (0, RUN));
        assert_eq!(locate(RUN * SHARDS as u64 + RUN + 1), (1, RUN + 1));
    }

    /// Spawns and kills in bursts, in and out of order, with a few
    /// long-lived entries, a late insert behind the window and a jump far
    /// past it: the table always agrees with a model map, and its windows
    /// stay dense.
    #[test]
    fn the_table_agrees_with_a_map_through_bursts_old_entries_and_jumps() {
        let table = PidTable::default();
        let mut model = BTreeMap::new();
        let mut next = 1u64;
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..40 {
            // A burst of spawns; every seventh one lives long.
            let burst: Vec<u64> = (0..3_000).map(|i| next + i).collect();
            next += 3_000;
            for &k in &burst {
                table.insert(k, k * 10);
                model.insert(k, k * 10);
            }
            // Kill most of them, last first or at random.
            for &k in burst.iter().rev() {
                if k % 7 != 0 && (round % 2 == 0 || rand() % 3 != 0) {
                    assert_eq!(table.remove(k), model.remove(&k));
                }
            }
            if round % 5 == 0 {
                // A key handed out earlier, inserted late.
                let late = next;
                next += 2;
                table.insert(late + 1, 1);
                model.insert(late + 1, 1);
                table.insert(late, 2);
                model.insert(late, 2);
            }
            if round % 9 == 0 {
                next += 5_000_000;
            }
            // Removing what is not there changes nothing.
            assert_eq!(table.remove(next + 17), None);
            check(&table, &model);
        }
        // Now every entry goes, in random order.
        let mut keys: Vec<u64> = model.keys().copied().collect();
        while !keys.is_empty() {
            let k = keys.swap_remove(rand() as usize % keys.len());
            assert_eq!(table.remove(k), model.remove(&k));
        }
        check(&table, &model);
        assert!(table.take_all().is_empty());
    }

    /// Threads insert, look up and remove their own keys, interleaved
    /// with the others' (keys handed out by one counter, as pids are):
    /// every lookup finds what its thread inserted, and the table ends
    /// empty.
    #[test]
    fn threads_inserting_and_removing_interleaved_keys_see_their_own_entries() {
        let table = Arc::new(PidTable::default());
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (table, counter) = (table.clone(), counter.clone());
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..20_000u64 {
                        let k = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        table.insert(k, k);
                        mine.push(k);
                        if i % 3 == 0 {
                            let k = mine.swap_remove((i as usize * 7919) % mine.len());
                            assert_eq!(table.remove(k), Some(k));
                        }
                        if let Some(&k) = mine.last() {
                            assert_eq!(table.with(k, |v| *v), Some(k));
                        }
                    }
                    for k in mine {
                        assert_eq!(table.remove(k), Some(k));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(table.len(), 0);
    }
}
