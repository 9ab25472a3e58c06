//! A map that keeps up to `N` entries inline and moves to a hash table
//! when it grows past them: most processes have a link or two and a
//! monitor or none, a supervisor may have a hundred thousand children.
//!
//! Inline, every operation scans the `N` slots (2 for links, 1 for
//! monitors). Once
//! hashed, insert, remove and lookup are O(1) as in `HashMap`; a hashed map
//! goes back inline when it becomes empty, so a map that shrinks to
//! nothing gives its table back, and the `N` inserts between the two
//! changes keep both amortised O(1).
//!
//! The table hashes with [`KeyHasher`] (a multiplicative hash, no random
//! seed): the keys here are pids and monitor references, which the runtime
//! hands out in sequence and nobody chooses.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash};

use crate::runtime::KeyHasher;

/// The hash table a map moves to past `N` entries.
type Table<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// Up to `N` entries inline, more in a boxed hash table.
pub(crate) enum SmallMap<K, V, const N: usize> {
    /// The entries in the first slots, in insertion order (removal moves
    /// the last one into the gap).
    Inline([Option<(K, V)>; N]),
    /// More than `N` entries at some point since it was last empty.
    Hashed(Box<Table<K, V>>),
}

impl<K, V, const N: usize> Default for SmallMap<K, V, N> {
    fn default() -> Self {
        SmallMap::Inline([const { None }; N])
    }
}

impl<K: Copy + Eq + Hash, V, const N: usize> SmallMap<K, V, N> {
    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            SmallMap::Inline(slots) => slots.iter().take_while(|s| s.is_some()).count(),
            SmallMap::Hashed(table) => table.len(),
        }
    }

    /// Whether there are no entries.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            SmallMap::Inline(slots) => N == 0 || slots[0].is_none(),
            SmallMap::Hashed(table) => table.is_empty(),
        }
    }

    /// Whether `key` has an entry.
    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        match self {
            SmallMap::Inline(slots) => slots
                .iter()
                .map_while(Option::as_ref)
                .find(|(k, _)| k == key)
                .map(|(_, v)| v),
            SmallMap::Hashed(table) => table.get(key),
        }
    }

    /// Sets `key` to `value`, returning the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let slots = match self {
            SmallMap::Hashed(table) => return table.insert(key, value),
            SmallMap::Inline(slots) => slots,
        };
        for slot in slots.iter_mut() {
            match slot {
                Some((k, v)) if *k == key => return Some(std::mem::replace(v, value)),
                Some(_) => {}
                None => {
                    *slot = Some((key, value));
                    return None;
                }
            }
        }
        // Full: move to a table.
        let mut table = Table::with_capacity_and_hasher(2 * N + 1, Default::default());
        table.extend(slots.iter_mut().filter_map(Option::take));
        table.insert(key, value);
        *self = SmallMap::Hashed(Box::new(table));
        None
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            SmallMap::Inline(slots) => {
                let at = slots
                    .iter()
                    .map_while(Option::as_ref)
                    .position(|(k, _)| k == key)?;
                let last = slots.iter().take_while(|s| s.is_some()).count() - 1;
                slots.swap(at, last);
                slots[last].take().map(|(_, v)| v)
            }
            SmallMap::Hashed(table) => {
                let removed = table.remove(key);
                if table.is_empty() {
                    *self = SmallMap::default();
                }
                removed
            }
        }
    }

    /// The entries, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (inline, hashed) = match self {
            SmallMap::Inline(slots) => (Some(slots.iter().map_while(Option::as_ref)), None),
            SmallMap::Hashed(table) => (None, Some(table.iter())),
        };
        inline
            .into_iter()
            .flatten()
            .map(|(k, v)| (k, v))
            .chain(hashed.into_iter().flatten())
    }

    /// The keys, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    /// The values, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Bytes allocated outside the map itself (the table, when hashed).
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            SmallMap::Inline(_) => 0,
            SmallMap::Hashed(table) => {
                std::mem::size_of::<Table<K, V>>()
                    + table.capacity() * (std::mem::size_of::<(K, V)>() + 1)
            }
        }
    }
}

impl<K, V, const N: usize> IntoIterator for SmallMap<K, V, N> {
    type Item = (K, V);
    type IntoIter = std::iter::Chain<
        std::iter::Flatten<std::array::IntoIter<Option<(K, V)>, N>>,
        std::iter::Flatten<std::option::IntoIter<std::collections::hash_map::IntoIter<K, V>>>,
    >;

    /// The entries, in no particular order.
    fn into_iter(self) -> Self::IntoIter {
        let (inline, hashed) = match self {
            SmallMap::Inline(slots) => (slots, None),
            SmallMap::Hashed(table) => ([const { None }; N], Some((*table).into_iter())),
        };
        inline
            .into_iter()
            .flatten()
            .chain(hashed.into_iter().flatten())
    }
}

/// A set of pids: a [`SmallMap`] to nothing.
#[derive(Default)]
pub(crate) struct PidSet(SmallMap<crate::Pid, (), 2>);

impl PidSet {
    /// Adds `pid`; true if it was not there.
    pub(crate) fn insert(&mut self, pid: crate::Pid) -> bool {
        self.0.insert(pid, ()).is_none()
    }

    /// Removes `pid`; true if it was there.
    pub(crate) fn remove(&mut self, pid: &crate::Pid) -> bool {
        self.0.remove(pid).is_some()
    }

    /// Whether `pid` is in the set.
    pub(crate) fn contains(&self, pid: &crate::Pid) -> bool {
        self.0.contains_key(pid)
    }

    /// Number of pids.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pids, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &crate::Pid> {
        self.0.keys()
    }

    /// Bytes allocated outside the set itself.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }
}

impl IntoIterator for PidSet {
    type Item = crate::Pid;
    type IntoIter = std::iter::Map<
        <SmallMap<crate::Pid, (), 2> as IntoIterator>::IntoIter,
        fn((crate::Pid, ())) -> crate::Pid,
    >;

    /// The pids, in no particular order.
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().map(|(pid, ())| pid)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{PidSet, SmallMap};
    use crate::Pid;

    fn pid(n: u64) -> Pid {
        Pid::local(n)
    }

    fn hashed<K, V, const N: usize>(map: &SmallMap<K, V, N>) -> bool {
        matches!(map, SmallMap::Hashed(_))
    }

    /// Inserts and removes across the inline → hashed boundary and back,
    /// checking every step against a `HashMap`.
    #[test]
    fn agrees_with_a_hash_map_across_the_inline_boundary() {
        let mut map: SmallMap<Pid, u32, 2> = SmallMap::default();
        let mut model: HashMap<Pid, u32> = HashMap::new();
        let check = |map: &SmallMap<Pid, u32, 2>, model: &HashMap<Pid, u32>| {
            assert_eq!(map.len(), model.len());
            assert_eq!(map.is_empty(), model.is_empty());
            let mut entries: Vec<(Pid, u32)> = map.iter().map(|(k, v)| (*k, *v)).collect();
            let mut expected: Vec<(Pid, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            entries.sort();
            expected.sort();
            assert_eq!(entries, expected);
            for n in 0..12 {
                assert_eq!(map.get(&pid(n)), model.get(&pid(n)), "key {n}");
            }
        };
        // A small xorshift: a fixed, varied sequence of operations on 10 keys.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut went_hashed = false;
        let mut came_back = false;
        for step in 0..5_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = pid(x % 10);
            // Phases of mostly inserts and mostly removes, so the map fills
            // past the inline slots and empties again, many times.
            let removing = (step / 200) % 2 == 1;
            if (x % 3 == 0) != removing {
                assert_eq!(map.remove(&key), model.remove(&key), "remove at {step}");
            } else {
                assert_eq!(
                    map.insert(key, step),
                    model.insert(key, step),
                    "insert at {step}"
                );
            }
            check(&map, &model);
            went_hashed |= hashed(&map);
            came_back |= went_hashed && !hashed(&map);
            assert!(
                hashed(&map) || model.len() <= 2,
                "{} entries inline",
                model.len()
            );
        }
        assert!(went_hashed, "never left the inline slots");
        assert!(came_back, "never went back inline");
        let mut drained: Vec<(Pid, u32)> = map.into_iter().collect();
        let mut expected: Vec<(Pid, u32)> = model.into_iter().collect();
        drained.sort();
        expected.sort();
        assert_eq!(drained, expected);
    }

    #[test]
    fn a_pid_set_moves_to_a_table_past_two_and_back_when_empty() {
        let mut set = PidSet::default();
        assert!(set.insert(pid(1)));
        assert!(!set.insert(pid(1)), "a duplicate is not added");
        assert!(set.insert(pid(2)));
        assert!(!hashed(&set.0));
        assert_eq!(set.heap_bytes(), 0);
        assert!(set.insert(pid(3)));
        assert!(hashed(&set.0), "a third pid moves the set to a table");
        assert!(set.heap_bytes() > 0);
        for n in 1..=3 {
            assert!(set.contains(&pid(n)), "{n} kept by the move");
        }
        assert!(!set.contains(&pid(4)));
        assert!(set.remove(&pid(2)));
        assert!(!set.remove(&pid(2)), "removed once");
        assert_eq!(set.len(), 2);
        assert!(set.remove(&pid(1)) && set.remove(&pid(3)));
        assert!(set.is_empty());
        assert!(!hashed(&set.0), "an empty set gives its table back");
        assert!(set.insert(pid(7)));
        let all: Vec<Pid> = set.into_iter().collect();
        assert_eq!(all, vec![pid(7)]);
    }

    #[test]
    fn a_large_set_holds_every_pid() {
        let mut set = PidSet::default();
        for n in 1..=100_000 {
            assert!(set.insert(pid(n)));
        }
        assert_eq!(set.len(), 100_000);
        for n in (1..=100_000).step_by(2) {
            assert!(set.remove(&pid(n)));
        }
        assert_eq!(set.len(), 50_000);
        assert!((1..=100_000).all(|n| set.contains(&pid(n)) == (n % 2 == 0)));
    }

    #[test]
    fn is_small() {
        assert_eq!(std::mem::size_of::<PidSet>(), 32);
    }
}
