//! A hierarchical hashed timing wheel: the data structure behind the timer
//! thread (`erlang:send_after/3`, `receive ... after`, and friends).
//!
//! The wheel is pure data: no threads, no clock, no I/O. The caller feeds it
//! the current time in milliseconds (any monotonic epoch) through [`Wheel::new`]
//! and [`Wheel::advance`]; the wheel hands back the timers that became due.
//!
//! # Storage
//!
//! Timers live in a slab (`Vec` of entries). A free slot is chained into a
//! free list through its `next` field and reused by the next insert. Every slot
//! carries a generation that is bumped when the slot is freed, so a
//! [`TimerKey`] (index + generation) of a timer that has fired or been removed
//! is recognised as stale. A slot whose generation would wrap is retired
//! instead of being reused, so stale keys can never alias a newer timer.
//!
//! Each *bucket* (a wheel slot, the overflow list or the due list) is an
//! intrusive doubly-linked list threaded through the slab by `u32` indices;
//! an entry records which bucket it is in, so `remove` unlinks it in O(1).
//! Per timer that costs 24 bytes (deadline, two links, generation, bucket)
//! plus the `Option<T>` holding the value; the buckets themselves are a fixed
//! 386 list headers.
//!
//! # Levels and slot math
//!
//! There are `LEVELS` = 6 levels of `SLOTS` = 64 slots. Viewing a time as a
//! number in base 64, level `l` is indexed by digit `l` of the deadline:
//! `slot = (deadline >> (6 * l)) & 63`, so a level-`l` slot spans `64^l` ms
//! and a whole level spans `64^(l + 1)` ms; level 0 has 1 ms resolution and
//! the six levels together cover `2^36` ms (about 2.2 years).
//!
//! With `elapsed` the wheel's current time, a timer whose deadline is
//! `> elapsed` lives at the level of the most significant base-64 digit in
//! which its deadline differs from `elapsed`:
//! `level = msb(deadline ^ elapsed) / 6`. If that is 6 or more the timer goes
//! into the *overflow* list. A timer whose deadline is `<= elapsed` when it is
//! inserted goes into the *due* list and fires on the next `advance`.
//!
//! # Invariants
//!
//! 1. A timer in level `l` has a deadline that agrees with `elapsed` in every
//!    digit above `l` and is strictly greater than `elapsed` in digit `l`.
//!    Hence in every level, the slots at or before `elapsed`'s own digit are
//!    empty, and the next slot to expire in a level is simply its lowest
//!    occupied slot.
//! 2. Consequently every timer in level `l` is earlier than every timer in
//!    level `l + 1`, and every timer in the wheel is earlier than any timer in
//!    the overflow list (whose deadlines lie in a later `2^36` ms block than
//!    `elapsed`). Due timers are earlier than all of them.
//! 3. A level-0 slot holds timers with exactly one deadline.
//! 4. Every level keeps a `u64` occupancy bitmap (bit `s` set iff slot `s` is
//!    non-empty).
//! 5. Outside a method call, the earliest bucket's cached minimum is exact
//!    (see below).
//!
//! # Advancing and cascading
//!
//! `advance(now)` first fires the due list, then repeatedly takes the earliest
//! expiring bucket: the lowest occupied slot of the lowest non-empty level
//! (found with `trailing_zeros` on the bitmaps), or, if the wheel is empty, the
//! overflow list, which "expires" at the start of the `2^36` ms block holding
//! its earliest timer. While that bucket's start time is `<= now`, `elapsed`
//! jumps to that start time and the bucket is emptied: timers whose deadline
//! equals the start fire, the rest are re-inserted relative to the new
//! `elapsed`, which puts them in a strictly lower level (or, from overflow,
//! into the wheel if they lie in the new block). This is cascading.
//! When the next bucket starts after `now`, `elapsed` is set to `now`; this
//! preserves invariant 1 because `now` lies between the old `elapsed` and the
//! start of every remaining bucket. Empty slots are never visited, so a jump of
//! any size costs O(levels) plus the work of moving each timer, and a timer is
//! moved at most once per level before it fires (overflow timers are also
//! revisited once per distinct `2^36` ms block that holds an overflow timer,
//! which for real millisecond clocks means at most every couple of years).
//! Timers come out in non-decreasing deadline order.
//!
//! # Earliest deadline
//!
//! `next_deadline` is the minimum of the *earliest bucket*: the due list if it
//! is non-empty, else the bucket `advance` would expire next (by invariant 2).
//! Each bucket caches its minimum deadline, which is kept exact cheaply:
//!
//! * A bucket also tracks whether its list is sorted by deadline. An insert
//!   goes to the front if it is a new minimum of a sorted list, else to the
//!   back, where it keeps the list sorted unless it is earlier than the tail.
//!   So timers armed with one fixed timeout, or cascaded from a sorted bucket,
//!   keep their buckets sorted, and removing from a sorted list keeps it
//!   sorted with the head as the minimum.
//! * Removing the minimum of an unsorted list marks its cached minimum stale.
//! * After every `remove` and `advance`, if the earliest bucket is stale it is
//!   sorted (O(k log k) for k timers in it, reusing a scratch buffer). Inserts
//!   never make the earliest bucket stale.
//!
//! Hence `next_deadline` is O(levels). `insert` is O(1); `remove` is O(1)
//! except when it takes the minimum of the earliest bucket while that bucket
//! is unsorted, which for removals at random costs amortised O(log k).

use std::fmt;

/// Number of wheel levels below the overflow list.
const LEVELS: usize = 6;
/// log2 of the number of slots per level.
const SLOT_BITS: u32 = 6;
/// Number of slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Mask selecting one base-64 digit.
const SLOT_MASK: u64 = SLOTS as u64 - 1;
/// Number of low bits covered by all levels together (`2^36` ms).
const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;

/// Bucket index of the overflow list (deadlines beyond the top level).
const OVERFLOW: u16 = (LEVELS * SLOTS) as u16;
/// Bucket index of the due list (deadlines not after the current time).
const DUE: u16 = OVERFLOW + 1;
/// Total number of buckets.
const BUCKETS: usize = DUE as usize + 1;
/// Bucket marker of a slab slot that holds no timer.
const NO_BUCKET: u16 = u16::MAX;
/// Null link.
const NIL: u32 = u32::MAX;

/// Identifies one timer inside a [`Wheel`]; stale keys (removed or fired) are
/// detected by generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey {
    index: u32,
    generation: u32,
}

impl TimerKey {
    /// A key that names no timer in any wheel (slab indices stop below it).
    pub(crate) const STALE: TimerKey = TimerKey {
        index: NIL,
        generation: u32::MAX,
    };

    /// Packs the key into one integer (generation in the high half), e.g. to
    /// embed it in a timer reference.
    pub(crate) fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// Unpacks a key made by [`TimerKey::to_u64`]. Any value is accepted; a
    /// value that names no live timer is simply a stale key.
    pub(crate) fn from_u64(v: u64) -> Self {
        TimerKey {
            index: v as u32,
            generation: (v >> 32) as u32,
        }
    }
}

/// One slab slot: a pending timer, or a free slot chained through `next`.
struct Entry<T> {
    /// Absolute deadline in ms.
    deadline: u64,
    /// Previous entry in the bucket list (or `NIL`).
    prev: u32,
    /// Next entry in the bucket list, or in the free list for a free slot.
    next: u32,
    /// Bumped whenever the slot is freed.
    generation: u32,
    /// Bucket holding this entry, or `NO_BUCKET` when free.
    bucket: u16,
    /// The timer's payload; `None` exactly when the slot is free.
    value: Option<T>,
}

/// One intrusive list plus its cached minimum deadline.
#[derive(Clone, Copy)]
struct Bucket {
    /// First entry, or `NIL` when empty.
    head: u32,
    /// Last entry, or `NIL` when empty.
    tail: u32,
    /// Minimum deadline in the bucket; exact when non-empty and not `stale`.
    min: u64,
    /// The list is in non-decreasing deadline order (so `min` is the head's).
    sorted: bool,
    /// The minimum timer of an unsorted list was removed; `min` may be too
    /// small until the list is sorted.
    stale: bool,
}

const EMPTY_BUCKET: Bucket = Bucket {
    head: NIL,
    tail: NIL,
    min: u64::MAX,
    sorted: true,
    stale: false,
};

/// A hierarchical hashed timing wheel of timers carrying values of type `T`,
/// with millisecond resolution. See the module documentation.
pub(crate) struct Wheel<T> {
    /// Timer storage; buckets link through it.
    slab: Vec<Entry<T>>,
    /// First free slab slot, or `NIL`.
    free_head: u32,
    /// Number of pending timers.
    len: usize,
    /// The wheel's current time in ms.
    elapsed: u64,
    /// `LEVELS * SLOTS` wheel slots, then the overflow and due lists.
    buckets: Box<[Bucket]>,
    /// Per-level bitmap of non-empty slots.
    occupied: [u64; LEVELS],
    /// Reusable buffer for sorting bucket lists.
    scratch: Vec<(u64, u32)>,
}

impl<T> fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wheel")
            .field("elapsed", &self.elapsed)
            .field("len", &self.len)
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

impl<T> Wheel<T> {
    /// Creates an empty wheel whose current time is `now`, in milliseconds
    /// (an arbitrary monotonic epoch chosen by the caller).
    pub(crate) fn new(now: u64) -> Self {
        Wheel {
            slab: Vec::new(),
            free_head: NIL,
            len: 0,
            elapsed: now,
            buckets: vec![EMPTY_BUCKET; BUCKETS].into_boxed_slice(),
            occupied: [0; LEVELS],
            scratch: Vec::new(),
        }
    }

    /// Arms a timer in O(1). A deadline <= the wheel's current time fires on
    /// the next [`advance`](Wheel::advance).
    ///
    /// # Panics
    ///
    /// If more than `u32::MAX - 1` slab slots would be needed.
    pub(crate) fn insert(&mut self, deadline: u64, value: T) -> TimerKey {
        let index = if self.free_head != NIL {
            let index = self.free_head;
            let entry = &mut self.slab[index as usize];
            self.free_head = entry.next;
            entry.deadline = deadline;
            entry.value = Some(value);
            index
        } else {
            let index = match u32::try_from(self.slab.len()) {
                Ok(i) if i != NIL => i,
                _ => panic!("timer wheel: too many timers"),
            };
            self.slab.push(Entry {
                deadline,
                prev: NIL,
                next: NIL,
                generation: 0,
                bucket: NO_BUCKET,
                value: Some(value),
            });
            index
        };
        self.len += 1;
        let bucket = self.bucket_for(deadline);
        self.link(index, bucket);
        TimerKey {
            index,
            generation: self.slab[index as usize].generation,
        }
    }

    /// Disarms a timer; returns its deadline and value if it was still
    /// pending (`None` if the key is stale: fired, removed or bogus).
    ///
    /// O(1), except that removing the earliest timer of an unsorted earliest
    /// bucket sorts that bucket (see the module documentation).
    pub(crate) fn remove(&mut self, key: TimerKey) -> Option<(u64, T)> {
        self.live(key)?;
        let index = key.index;
        self.unlink(index);
        let deadline = self.slab[index as usize].deadline;
        let value = self.release(index)?;
        self.refresh_earliest();
        Some((deadline, value))
    }

    /// Deadline of a pending timer, or `None` if the key is stale.
    pub(crate) fn deadline(&self, key: TimerKey) -> Option<u64> {
        self.live(key).map(|entry| entry.deadline)
    }

    /// The earliest pending deadline, exactly, or `None` if the wheel is
    /// empty. O(levels): bitmap lookups plus the earliest bucket's cached
    /// minimum.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.earliest_bucket().map(|bucket| self.bucket_min(bucket))
    }

    /// Moves the wheel's time to `now` (never backwards; smaller values are
    /// ignored) and appends every timer with deadline <= `now` to `fired`, in
    /// non-decreasing deadline order.
    pub(crate) fn advance(&mut self, now: u64, fired: &mut Vec<(TimerKey, T)>) {
        self.fire_due(fired);
        while let Some((bucket, start)) = self.next_expiration() {
            if start > now {
                break;
            }
            self.elapsed = start;
            let mut cursor = self.detach(bucket);
            while cursor != NIL {
                let entry = &self.slab[cursor as usize];
                let (next, deadline) = (entry.next, entry.deadline);
                if deadline <= start {
                    self.fire(cursor, fired);
                } else {
                    let target = self.bucket_for(deadline);
                    self.link(cursor, target);
                }
                cursor = next;
            }
        }
        self.elapsed = self.elapsed.max(now);
        self.refresh_earliest();
    }

    /// Number of pending timers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is pending.
    // Part of the API (the companion of `len`) even while no caller needs it.
    #[allow(dead_code)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry named by `key`, if it is a pending timer.
    fn live(&self, key: TimerKey) -> Option<&Entry<T>> {
        self.slab
            .get(key.index as usize)
            .filter(|e| e.generation == key.generation && e.value.is_some())
    }

    /// The bucket a timer with this deadline belongs in, given `elapsed`.
    fn bucket_for(&self, deadline: u64) -> u16 {
        if deadline <= self.elapsed {
            return DUE;
        }
        // `deadline != elapsed`, so the xor is non-zero.
        let msb = 63 - (deadline ^ self.elapsed).leading_zeros();
        let level = msb / SLOT_BITS;
        if level as usize >= LEVELS {
            OVERFLOW
        } else {
            let slot = (deadline >> (level * SLOT_BITS)) & SLOT_MASK;
            (level as usize * SLOTS + slot as usize) as u16
        }
    }

    /// The earliest expiring non-due bucket and the time at which it expires
    /// (the start of its time range).
    fn next_expiration(&self) -> Option<(u16, u64)> {
        for (level, &bits) in self.occupied.iter().enumerate() {
            if bits != 0 {
                let slot = u64::from(bits.trailing_zeros());
                let shift = level as u32 * SLOT_BITS;
                // Keep the digits above this level, replace this level's
                // digit by the slot and zero the digits below.
                let above = self.elapsed >> (shift + SLOT_BITS) << (shift + SLOT_BITS);
                let start = above | (slot << shift);
                return Some(((level * SLOTS) as u16 + slot as u16, start));
            }
        }
        if self.buckets[OVERFLOW as usize].head != NIL {
            // The overflow list "expires" when time reaches the 2^36 ms block
            // of its earliest timer, which is later than `elapsed`'s block.
            let min = self.bucket_min(OVERFLOW);
            return Some((OVERFLOW, min >> WHEEL_BITS << WHEEL_BITS));
        }
        None
    }

    /// The bucket holding the earliest pending timer, if any.
    fn earliest_bucket(&self) -> Option<u16> {
        if self.buckets[DUE as usize].head != NIL {
            Some(DUE)
        } else {
            self.next_expiration().map(|(bucket, _)| bucket)
        }
    }

    /// Restores the invariant that the earliest bucket's minimum is exact, by
    /// sorting that bucket if its minimum went stale.
    fn refresh_earliest(&mut self) {
        if let Some(bucket) = self.earliest_bucket() {
            if self.buckets[bucket as usize].stale {
                self.sort_bucket(bucket);
            }
        }
    }

    /// The minimum deadline of a non-empty bucket: the cached one, or, should
    /// it be stale (never for the earliest bucket), found by a scan.
    fn bucket_min(&self, bucket: u16) -> u64 {
        let b = &self.buckets[bucket as usize];
        if !b.stale {
            return b.min;
        }
        let mut min = u64::MAX;
        let mut cursor = b.head;
        while cursor != NIL {
            let entry = &self.slab[cursor as usize];
            min = min.min(entry.deadline);
            cursor = entry.next;
        }
        min
    }

    /// Sets or clears the occupancy bit of a wheel slot (no-op for the
    /// overflow and due lists).
    fn set_occupied(&mut self, bucket: u16, occupied: bool) {
        let bucket = bucket as usize;
        if bucket < LEVELS * SLOTS {
            let bit = 1u64 << (bucket % SLOTS);
            if occupied {
                self.occupied[bucket / SLOTS] |= bit;
            } else {
                self.occupied[bucket / SLOTS] &= !bit;
            }
        }
    }

    /// Adds entry `index` (not in any list) to `bucket`: at the front if that
    /// keeps a sorted list sorted, else at the back.
    fn link(&mut self, index: u32, bucket: u16) {
        let deadline = self.slab[index as usize].deadline;
        let mut b = self.buckets[bucket as usize];
        let (prev, next);
        if b.head == NIL {
            (prev, next) = (NIL, NIL);
            b = Bucket {
                head: index,
                tail: index,
                min: deadline,
                sorted: true,
                stale: false,
            };
            self.set_occupied(bucket, true);
        } else if b.sorted && deadline < b.min {
            (prev, next) = (NIL, b.head);
            self.slab[b.head as usize].prev = index;
            b.head = index;
            b.min = deadline;
        } else {
            if b.sorted && deadline < self.slab[b.tail as usize].deadline {
                b.sorted = false;
            }
            (prev, next) = (b.tail, NIL);
            self.slab[b.tail as usize].next = index;
            b.tail = index;
            b.min = b.min.min(deadline);
        }
        self.buckets[bucket as usize] = b;
        let entry = &mut self.slab[index as usize];
        entry.prev = prev;
        entry.next = next;
        entry.bucket = bucket;
    }

    /// Unlinks entry `index` from the bucket it is in.
    fn unlink(&mut self, index: u32) {
        let entry = &mut self.slab[index as usize];
        let (prev, next, bucket, deadline) = (entry.prev, entry.next, entry.bucket, entry.deadline);
        entry.prev = NIL;
        entry.next = NIL;
        entry.bucket = NO_BUCKET;
        let mut b = self.buckets[bucket as usize];
        if prev != NIL {
            self.slab[prev as usize].next = next;
        } else {
            b.head = next;
        }
        if next != NIL {
            self.slab[next as usize].prev = prev;
        } else {
            b.tail = prev;
        }
        if b.head == NIL {
            b = EMPTY_BUCKET;
            self.set_occupied(bucket, false);
        } else if b.sorted {
            b.min = self.slab[b.head as usize].deadline;
        } else if deadline <= b.min {
            b.stale = true;
        }
        self.buckets[bucket as usize] = b;
    }

    /// Empties `bucket` and returns the head of its former list; the entries
    /// keep their `next` links and must each be re-linked or fired.
    fn detach(&mut self, bucket: u16) -> u32 {
        let head = self.buckets[bucket as usize].head;
        self.buckets[bucket as usize] = EMPTY_BUCKET;
        self.set_occupied(bucket, false);
        head
    }

    /// Sorts the list of a non-empty `bucket` by deadline, which makes its
    /// minimum exact again.
    fn sort_bucket(&mut self, bucket: u16) {
        let mut order = std::mem::take(&mut self.scratch);
        let mut cursor = self.buckets[bucket as usize].head;
        while cursor != NIL {
            let entry = &self.slab[cursor as usize];
            order.push((entry.deadline, cursor));
            cursor = entry.next;
        }
        order.sort_unstable();
        let mut prev = NIL;
        for &(_, index) in &order {
            self.slab[index as usize].prev = prev;
            if prev != NIL {
                self.slab[prev as usize].next = index;
            }
            prev = index;
        }
        if let (Some(&(min, head)), Some(&(_, tail))) = (order.first(), order.last()) {
            self.slab[tail as usize].next = NIL;
            self.buckets[bucket as usize] = Bucket {
                head,
                tail,
                min,
                sorted: true,
                stale: false,
            };
        }
        order.clear();
        self.scratch = order;
    }

    /// Fires the due list in deadline order.
    fn fire_due(&mut self, fired: &mut Vec<(TimerKey, T)>) {
        if !self.buckets[DUE as usize].sorted {
            self.sort_bucket(DUE);
        }
        let mut cursor = self.detach(DUE);
        while cursor != NIL {
            let next = self.slab[cursor as usize].next;
            self.fire(cursor, fired);
            cursor = next;
        }
    }

    /// Frees entry `index` (already detached from its bucket) and appends it
    /// to `fired`.
    fn fire(&mut self, index: u32, fired: &mut Vec<(TimerKey, T)>) {
        let key = TimerKey {
            index,
            generation: self.slab[index as usize].generation,
        };
        if let Some(value) = self.release(index) {
            fired.push((key, value));
        }
    }

    /// Frees slab slot `index` (not in any bucket) and returns its value.
    fn release(&mut self, index: u32) -> Option<T> {
        let entry = &mut self.slab[index as usize];
        let value = entry.value.take()?;
        entry.bucket = NO_BUCKET;
        entry.prev = NIL;
        self.len -= 1;
        if entry.generation == u32::MAX {
            // Retire the slot: reusing it would let stale keys alias.
            entry.next = NIL;
        } else {
            entry.generation += 1;
            entry.next = self.free_head;
            self.free_head = index;
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    impl<T> Wheel<T> {
        /// Checks every structural invariant; O(n).
        fn check(&self) {
            let mut pending = 0;
            for (i, b) in self.buckets.iter().enumerate() {
                let bucket = i as u16;
                let (mut prev, mut cursor) = (NIL, b.head);
                let (mut min, mut last, mut in_order) = (u64::MAX, 0, true);
                while cursor != NIL {
                    let e = &self.slab[cursor as usize];
                    assert_eq!(e.bucket, bucket);
                    assert_eq!(e.prev, prev);
                    assert!(e.value.is_some());
                    if bucket == DUE {
                        assert!(e.deadline <= self.elapsed);
                    } else {
                        assert_eq!(self.bucket_for(e.deadline), bucket);
                    }
                    in_order &= prev == NIL || last <= e.deadline;
                    (min, last) = (min.min(e.deadline), e.deadline);
                    pending += 1;
                    (prev, cursor) = (cursor, e.next);
                }
                assert_eq!(b.tail, prev);
                if i < LEVELS * SLOTS {
                    let bit = self.occupied[i / SLOTS] >> (i % SLOTS) & 1;
                    assert_eq!(bit == 1, b.head != NIL);
                }
                if b.head != NIL {
                    assert!(!b.sorted || in_order);
                    assert!(!(b.sorted && b.stale));
                    if b.stale {
                        assert!(b.min <= min);
                    } else {
                        assert_eq!(b.min, min);
                    }
                }
            }
            assert_eq!(pending, self.len);
            if let Some(bucket) = self.earliest_bucket() {
                assert!(!self.buckets[bucket as usize].stale);
            }
            let mut free = 0;
            let mut cursor = self.free_head;
            while cursor != NIL {
                assert!(self.slab[cursor as usize].value.is_none());
                free += 1;
                cursor = self.slab[cursor as usize].next;
            }
            assert!(pending + free <= self.slab.len());
        }
    }

    fn advance<T>(wheel: &mut Wheel<T>, now: u64) -> Vec<(TimerKey, T)> {
        let mut fired = Vec::new();
        wheel.advance(now, &mut fired);
        wheel.check();
        fired
    }

    fn values<T: Copy>(fired: &[(TimerKey, T)]) -> Vec<T> {
        fired.iter().map(|&(_, v)| v).collect()
    }

    #[test]
    fn entries_are_compact() {
        use std::mem::size_of;
        assert!(size_of::<Entry<()>>() <= 24);
        assert!(size_of::<Entry<Box<u8>>>() <= 32);
        assert!(size_of::<Entry<u64>>() <= 40);
    }

    #[test]
    fn basic_insert_advance_remove() {
        let mut w = Wheel::new(1000);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
        let a = w.insert(1005, 'a');
        let b = w.insert(1100, 'b');
        let c = w.insert(1003, 'c');
        assert_eq!(w.len(), 3);
        assert_eq!(w.next_deadline(), Some(1003));
        assert_eq!(w.deadline(b), Some(1100));
        assert!(advance(&mut w, 1002).is_empty());
        assert_eq!(values(&advance(&mut w, 1003)), vec!['c']);
        assert_eq!(w.remove(a), Some((1005, 'a')));
        assert_eq!(w.next_deadline(), Some(1100));
        assert!(advance(&mut w, 1099).is_empty());
        let fired = advance(&mut w, 1100);
        assert_eq!(fired, vec![(b, 'b')]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
        assert_eq!(w.deadline(c), None);
    }

    #[test]
    fn fires_in_deadline_order() {
        let mut w = Wheel::new(0);
        for d in [70_000u64, 5, 4096, 63, 64, 1, 262_144, 4095, 65] {
            w.insert(d, d);
        }
        let fired = values(&advance(&mut w, 1_000_000));
        assert_eq!(fired, vec![1, 5, 63, 64, 65, 4095, 4096, 70_000, 262_144]);
    }

    #[test]
    fn stale_keys_after_fire_and_remove() {
        let mut w = Wheel::new(0);
        let a = w.insert(10, 1);
        let b = w.insert(20, 2);
        assert_eq!(w.remove(b), Some((20, 2)));
        assert_eq!(w.remove(b), None);
        assert_eq!(w.deadline(b), None);
        assert_eq!(values(&advance(&mut w, 10)), vec![1]);
        assert_eq!(w.remove(a), None);
        assert_eq!(w.deadline(a), None);
        // The slots are reused, but the old keys stay stale.
        let c = w.insert(30, 3);
        let d = w.insert(40, 4);
        assert_eq!(w.slab.len(), 2);
        assert!(c != a && c != b && d != a && d != b);
        assert_eq!(w.remove(a), None);
        assert_eq!(w.remove(b), None);
        assert_eq!(w.len(), 2);
        // Keys survive a round trip through u64; garbage keys are stale.
        assert_eq!(TimerKey::from_u64(c.to_u64()), c);
        assert_eq!(w.deadline(TimerKey::from_u64(d.to_u64())), Some(40));
        assert_eq!(w.deadline(TimerKey::from_u64(u64::MAX)), None);
        assert_eq!(w.remove(TimerKey::from_u64(12345 << 32 | 7)), None);
    }

    #[test]
    fn generation_exhaustion_retires_slot() {
        let mut w = Wheel::new(0);
        let k = w.insert(5, ());
        w.slab[k.index as usize].generation = u32::MAX;
        let k = TimerKey {
            index: k.index,
            generation: u32::MAX,
        };
        assert_eq!(w.remove(k), Some((5, ())));
        assert_eq!(w.remove(k), None);
        let k2 = w.insert(6, ());
        assert_ne!(k2.index, k.index);
        assert_eq!(w.deadline(k), None);
    }

    #[test]
    fn deadlines_in_the_past() {
        let mut w = Wheel::new(500);
        w.insert(100, 'x');
        w.insert(500, 'y');
        w.insert(0, 'w');
        let z = w.insert(501, 'z');
        assert_eq!(w.next_deadline(), Some(0));
        // Going backwards moves no time but still fires what is due.
        let fired = values(&advance(&mut w, 10));
        assert_eq!(fired, vec!['w', 'x', 'y']);
        assert_eq!(w.next_deadline(), Some(501));
        assert_eq!(w.deadline(z), Some(501));
        assert!(advance(&mut w, 500).is_empty());
        assert_eq!(values(&advance(&mut w, 501)), vec!['z']);
    }

    #[test]
    fn big_time_jumps() {
        let start = (1u64 << 36) - 3;
        let mut w = Wheel::new(start);
        let far = [
            start + 2,
            start + 5,
            start + (1 << 30),
            start + (1 << 36) + 17,
            start + (1 << 40),
            start + (1 << 50) + 1,
            u64::MAX - 1,
            u64::MAX,
            1 << 38,
            (1 << 38) + (1 << 36) - 1,
        ];
        for (i, &d) in far.iter().enumerate() {
            w.insert(d, i);
        }
        assert_eq!(w.next_deadline(), Some(start + 2));
        assert_eq!(values(&advance(&mut w, start + 4)), vec![0]);
        assert_eq!(w.next_deadline(), Some(start + 5));
        assert_eq!(
            values(&advance(&mut w, start + (1 << 36) + 17)),
            vec![1, 2, 3]
        );
        // Exactly at the start of an overflow block, and at its very end.
        assert_eq!(w.next_deadline(), Some(1 << 38));
        assert!(advance(&mut w, (1 << 38) - 1).is_empty());
        assert_eq!(values(&advance(&mut w, 1 << 38)), vec![8]);
        assert_eq!(w.next_deadline(), Some((1 << 38) + (1 << 36) - 1));
        assert!(advance(&mut w, (1 << 38) + (1 << 36) - 2).is_empty());
        assert_eq!(values(&advance(&mut w, (1 << 38) + (1 << 36))), vec![9]);
        assert_eq!(w.next_deadline(), Some(start + (1 << 40)));
        assert_eq!(values(&advance(&mut w, start + (1 << 50))), vec![4]);
        assert_eq!(w.next_deadline(), Some(start + (1 << 50) + 1));
        assert_eq!(values(&advance(&mut w, u64::MAX - 2)), vec![5]);
        assert_eq!(w.next_deadline(), Some(u64::MAX - 1));
        assert_eq!(values(&advance(&mut w, u64::MAX)), vec![6, 7]);
        assert!(w.is_empty());
        // At the end of time, inserts are all due.
        w.insert(u64::MAX, 10);
        assert_eq!(w.next_deadline(), Some(u64::MAX));
        assert_eq!(values(&advance(&mut w, u64::MAX)), vec![10]);
    }

    #[test]
    fn many_timers() {
        const N: u64 = 200_000;
        let mut w = Wheel::new(0);
        let mut keys = Vec::new();
        for i in 0..N {
            // A permutation of 0..N spread out in time.
            let d = (i * 7919) % N * 3;
            keys.push(w.insert(d, d));
        }
        assert_eq!(w.len(), N as usize);
        // Remove every third timer.
        for (i, &k) in keys.iter().enumerate() {
            if i % 3 == 0 {
                assert!(w.remove(k).is_some());
            }
        }
        let expect = N as usize - keys.len().div_ceil(3);
        assert_eq!(w.len(), expect);
        let mut fired = Vec::new();
        let mut now = 0;
        while let Some(next) = w.next_deadline() {
            assert!(next >= now);
            now = next + 250;
            w.advance(now, &mut fired);
        }
        assert_eq!(fired.len(), expect);
        assert!(fired.windows(2).all(|p| p[0].1 <= p[1].1));
        assert!(w.is_empty());
        // Freed slots are reused.
        let cap = w.slab.len();
        for i in 0..N {
            w.insert(now + i, i);
        }
        assert_eq!(w.slab.len(), cap);
    }

    /// A tiny xorshift64* PRNG.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Reference model: every pending key with its deadline and value.
    struct Model {
        now: u64,
        by_key: HashMap<TimerKey, (u64, u64)>,
        order: BTreeSet<(u64, u64)>,
    }

    /// Runs `ops` random operations against the wheel and the model. With
    /// `near`, all deadlines and steps stay within 20 s (dense buckets, many
    /// removals of bucket minima); otherwise they range over all of `u64`.
    fn run_model(seed: u64, start: u64, ops: usize, near: bool) {
        let mut rng = Rng(seed);
        let mut w = Wheel::new(start);
        let mut m = Model {
            now: start,
            by_key: HashMap::new(),
            order: BTreeSet::new(),
        };
        let mut keys: Vec<TimerKey> = Vec::new();
        let mut dead: Vec<TimerKey> = Vec::new();
        let mut serial = 0u64;
        let mut fired = Vec::new();
        for op in 0..ops {
            if op % 61 == 0 {
                w.check();
            }
            match rng.below(100) {
                0..=44 => {
                    let d = match rng.below(10) {
                        0 => m.now.saturating_sub(rng.below(100)),
                        1..=4 => m.now.saturating_add(rng.below(70)),
                        5..=6 => m.now.saturating_add(rng.below(5000)),
                        _ if near => m.now.saturating_add(rng.below(20_000)),
                        7 => m.now.saturating_add(rng.below(1 << 24)),
                        8 => m.now.saturating_add(rng.below(1 << 40)),
                        _ => match rng.below(4) {
                            0 => u64::MAX - rng.below(3),
                            1 => m.now.saturating_add(1 << rng.below(64)),
                            2 => {
                                // Exactly at a level or overflow boundary.
                                let shift = SLOT_BITS * (1 + rng.below(6) as u32);
                                let block = (m.now >> shift) + 1 + rng.below(3);
                                block.saturating_mul(1 << shift)
                            }
                            _ => rng.next(),
                        },
                    };
                    serial += 1;
                    let k = w.insert(d, serial);
                    assert!(m.by_key.insert(k, (d, serial)).is_none());
                    m.order.insert((d, serial));
                    keys.push(k);
                }
                45..=64 => {
                    if keys.is_empty() {
                        continue;
                    }
                    let i = rng.below(keys.len() as u64) as usize;
                    let k = keys.swap_remove(i);
                    let got = w.remove(k);
                    let want = m.by_key.remove(&k);
                    assert_eq!(got, want);
                    if let Some((d, v)) = want {
                        m.order.remove(&(d, v));
                    }
                    dead.push(k);
                }
                65..=69 => {
                    if let Some(&k) = dead.get(rng.below(dead.len() as u64 + 1) as usize) {
                        assert_eq!(w.remove(k), None);
                        assert_eq!(w.deadline(k), None);
                    }
                }
                70..=74 => {
                    if !keys.is_empty() {
                        let k = keys[rng.below(keys.len() as u64) as usize];
                        assert_eq!(w.deadline(k), m.by_key.get(&k).map(|&(d, _)| d));
                    }
                }
                _ => {
                    let now = match rng.below(10) {
                        0 => m.now.saturating_sub(rng.below(10)),
                        1..=5 => m.now.saturating_add(rng.below(64)),
                        6..=7 => m.now.saturating_add(rng.below(10_000)),
                        8 => match m.order.first() {
                            Some(&(d, _)) => d.max(m.now) - rng.below(2).min(d),
                            None => m.now,
                        },
                        _ if near => m.now.saturating_add(rng.below(20_000)),
                        _ => m.now.saturating_add(rng.below(1 << 42)),
                    };
                    m.now = m.now.max(now);
                    fired.clear();
                    w.advance(now, &mut fired);
                    let mut want = Vec::new();
                    while let Some(&(d, v)) = m.order.first() {
                        if d > m.now {
                            break;
                        }
                        m.order.pop_first();
                        want.push((d, v));
                    }
                    let mut got = Vec::new();
                    for &(k, v) in &fired {
                        let (d, mv) = m.by_key.remove(&k).expect("fired key is pending");
                        assert_eq!(v, mv);
                        got.push((d, v));
                        dead.push(k);
                    }
                    assert!(got.windows(2).all(|p| p[0].0 <= p[1].0));
                    got.sort_unstable();
                    assert_eq!(got, want);
                    keys.retain(|k| m.by_key.contains_key(k));
                }
            }
            assert_eq!(w.len(), m.order.len());
            assert_eq!(w.is_empty(), m.order.is_empty());
            assert_eq!(w.next_deadline(), m.order.first().map(|&(d, _)| d));
            if dead.len() > 10_000 {
                dead.drain(..5_000);
            }
        }
        w.check();
    }

    #[test]
    fn randomized_against_model() {
        let starts = [
            0,
            1,
            12_345,
            (1 << 36) - 100,
            (1 << 42) + 63,
            u64::MAX / 3,
            u64::MAX - (1 << 37),
            u64::MAX - 10_000,
        ];
        for (i, &start) in starts.iter().enumerate() {
            let seed = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1);
            run_model(seed, start, 30_000, false);
            run_model(seed.rotate_left(17), start, 30_000, true);
        }
    }

    #[test]
    fn randomized_dense_removals_keep_next_deadline_exact() {
        // Many timers in a few high-level slots, removed near their minimum,
        // exercises the stale-minimum rescans.
        let mut rng = Rng(0xdead_beef);
        let mut w = Wheel::new(0);
        let mut model = BTreeSet::new();
        let mut keys = Vec::new();
        for i in 0..3_000u64 {
            let d = 100_000 + rng.below(20_000);
            keys.push((w.insert(d, i), d, i));
            model.insert((d, i));
        }
        keys.sort_unstable_by_key(|&(_, d, i)| (d, i));
        for (n, &(k, d, i)) in keys.iter().enumerate() {
            if n % 4 != 3 {
                assert_eq!(w.remove(k), Some((d, i)));
                model.remove(&(d, i));
                assert_eq!(w.next_deadline(), model.first().map(|&(d, _)| d));
                if n % 97 == 0 {
                    w.check();
                }
            }
        }
        let fired = advance(&mut w, u64::MAX);
        assert_eq!(fired.len(), model.len());
        assert!(w.is_empty());
    }
}
