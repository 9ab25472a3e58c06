//! An optional counting global allocator, so programs (benchmarks, the
//! console) can report exactly how many bytes are allocated, and processes
//! can be given a memory limit.
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: ember_runtime::alloc::CountingAlloc = ember_runtime::alloc::CountingAlloc;
//! ```
//!
//! # Per-process accounts (memory limits)
//!
//! A process with a memory limit ([`Spawn::memory_limit`](crate::Spawn),
//! [`set_memory_limit`](crate::set_memory_limit)) has a
//! `MemoryAccount`. While a worker polls it, the worker thread's
//! `ACCOUNT` thread-local points at that account, and the counting
//! allocator adds every allocation made on the thread to it and subtracts
//! every free (never below zero). A process without a limit leaves the
//! pointer null: the allocator's extra cost is one thread-local read and a
//! branch.
//!
//! The allocator never allocates, locks or panics for an account. When an
//! allocation takes an account over its limit, it marks the account
//! `OVER` (once) and bumps `OVER_EPOCH`; the process is
//! terminated with reason `memory_limit` by whoever claims the mark first
//! (`MemoryAccount::claim`): the worker when the poll returns, or the
//! watchdog, which looks at the processes inside a poll whenever the epoch
//! moved (`scheduler::watchdog`). The mark is written only by the polling
//! thread, and the epoch's release/acquire pair makes it visible to the
//! watchdog; `loom_models` below checks that exactly one party claims it and
//! that a watchdog which saw the epoch move sees the mark.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::loom::sync::atomic::{
    AtomicU8, AtomicUsize as AccountUsize, Ordering as AccountOrdering,
};

/// The count of live bytes, in shards: each thread adds to and subtracts
/// from its own shard (one relaxed add on a line no other thread writes,
/// while there are no more threads than shards), and a reading sums them.
/// One counter for all threads cost a cache-line transfer per allocation
/// whenever two cores allocated at once: a third of the time of a spawn
/// storm on two schedulers. A shard can go below zero (memory freed on
/// another thread than the one that allocated it); the sum is exact.
static ALLOCATED: [Shard; SHARDS] = [const { Shard(AtomicUsize::new(0)) }; SHARDS];
const SHARDS: usize = 32;
/// Threads take shards in turn.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// One shard of the count, alone on its cache lines (two, against the
/// adjacent-line prefetcher).
#[repr(align(128))]
struct Shard(AtomicUsize);

thread_local! {
    /// This thread's shard, `SHARDS` until its first allocation. Const
    /// initialised and without a destructor: usable in the allocator, even
    /// while the thread's other thread-locals are destroyed.
    static SHARD: Cell<usize> = const { Cell::new(SHARDS) };
}

/// This thread's shard of the count (the first shard if thread-locals are
/// gone).
#[inline(always)]
fn shard() -> &'static AtomicUsize {
    let index = SHARD
        .try_with(|s| {
            let mut index = s.get();
            if index == SHARDS {
                index = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
                s.set(index);
            }
            index
        })
        .unwrap_or(0);
    &ALLOCATED[index].0
}
static INSTALLED: AtomicBool = AtomicBool::new(false);
static PAUSED: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting live bytes. Install it with
/// `#[global_allocator]`; [`RuntimeInfo::memory_allocated_bytes`](crate::introspect::RuntimeInfo)
/// then reports the count. It costs one relaxed atomic add per allocation,
/// on a counter of the thread's own.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

impl CountingAlloc {
    /// Stops (or resumes) counting, for code that must not pay the atomic add
    /// per allocation. While paused, [`allocated_bytes`] is meaningless; after
    /// resuming, only differences between two readings are.
    pub fn pause(paused: bool) {
        PAUSED.store(paused, Ordering::Relaxed);
    }
}

fn counting() -> bool {
    !PAUSED.load(Ordering::Relaxed)
}

// SAFETY: every method forwards to `Counting(System)`, which forwards to
// `System` unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { Counting(System).alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from this allocator with `layout`.
        unsafe { Counting(System).dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        unsafe { Counting(System).alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        unsafe { Counting(System).realloc(ptr, layout, new_size) }
    }
}

/// [`CountingAlloc`] over another allocator `A` (mimalloc, jemalloc...):
/// the same exact count of live bytes, reported by
/// [`allocated_bytes`] and `runtime_info`.
///
/// ```ignore
/// #[global_allocator]
/// static ALLOC: ember_runtime::alloc::Counting<mimalloc::MiMalloc> =
///     ember_runtime::alloc::Counting(mimalloc::MiMalloc);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Counting<A>(pub A);

// SAFETY: every method forwards to `A` with the caller's arguments
// unchanged, so `A`'s guarantees carry over; the counters have no effect on
// the memory handed out.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let ptr = unsafe { self.0.alloc(layout) };
        if !ptr.is_null() {
            allocated(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from this allocator with `layout`.
        unsafe { self.0.dealloc(ptr, layout) };
        if counting() {
            shard().fetch_sub(layout.size(), Ordering::Relaxed);
        }
        with_account(|account| account.credit(layout.size()));
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { self.0.alloc_zeroed(layout) };
        if !ptr.is_null() {
            allocated(layout.size());
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let new = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if counting() {
                let shard = shard();
                shard.fetch_sub(layout.size(), Ordering::Relaxed);
                shard.fetch_add(new_size, Ordering::Relaxed);
            }
            let old_size = layout.size();
            with_account(|account| {
                if new_size >= old_size {
                    account.charge(new_size - old_size);
                } else {
                    account.credit(old_size - new_size);
                }
            });
        }
        new
    }
}

/// An allocation of `size` bytes succeeded: count it.
#[inline]
fn allocated(size: usize) {
    if counting() {
        shard().fetch_add(size, Ordering::Relaxed);
    }
    // A load first: a store per allocation would keep the line bouncing
    // between cores.
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
    with_account(|account| account.charge(size));
}

/// Live bytes allocated through [`CountingAlloc`], if it is installed and
/// counting. After a pause it may be off by what was allocated or freed
/// meanwhile (never below zero).
pub fn allocated_bytes() -> Option<usize> {
    (INSTALLED.load(Ordering::Relaxed) && counting()).then(|| {
        // The shards are read one after another, so a free counted on one
        // thread can be seen without the allocation another counted just
        // before: a sum below zero is read again.
        for _ in 0..3 {
            let sum = ALLOCATED.iter().fold(0usize, |sum, s| {
                sum.wrapping_add(s.0.load(Ordering::Relaxed))
            });
            if isize::try_from(sum).is_ok() {
                return sum;
            }
        }
        0
    })
}

/// Whether a counting allocator ([`CountingAlloc`] or [`Counting`]) is the
/// global allocator: it has counted an allocation (even while paused). Memory
/// limits need it.
pub(crate) fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Bumped (release) each time an account goes over its limit; the watchdog
/// looks for marked processes when it moved (acquire).
pub(crate) static OVER_EPOCH: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The account of the process being polled on this thread, if it has a
    /// limit; null otherwise. A const-initialised `Cell` of a raw pointer
    /// has no destructor, so it is readable even while the thread's other
    /// thread-locals are being destroyed.
    static ACCOUNT: Cell<*const MemoryAccount> = const { Cell::new(ptr::null()) };
}

/// Runs `f` on the account allocations on this thread are charged to, if
/// any. The allocator's fast path: one thread-local read and a branch.
#[inline(always)]
fn with_account(f: impl FnOnce(&MemoryAccount)) {
    let account = ACCOUNT.try_with(Cell::get).unwrap_or(ptr::null());
    if !account.is_null() {
        // SAFETY: whoever installed the pointer (`enter_account`) keeps the
        // account alive until it installs another one; see its contract.
        f(unsafe { &*account });
    }
}

/// Charges allocations on this thread to `account` from now on (`None`:
/// to nobody); returns the previous pointer, to restore with
/// [`restore_account`].
///
/// # Safety
///
/// The account must stay alive (its process's `Arc` held) until this
/// thread installs another account or null, which the caller must do before
/// dropping that `Arc`.
pub(crate) unsafe fn enter_account(account: Option<&MemoryAccount>) -> *const MemoryAccount {
    let new = account.map_or(ptr::null(), |a| a as *const MemoryAccount);
    ACCOUNT.try_with(|c| c.replace(new)).unwrap_or(ptr::null())
}

/// Puts back what [`enter_account`] returned.
///
/// # Safety
///
/// As for [`enter_account`]: the account `previous` points to (if any) is
/// still alive and stays so until it is replaced.
pub(crate) unsafe fn restore_account(previous: *const MemoryAccount) {
    let _ = ACCOUNT.try_with(|c| c.set(previous));
}

/// `MemoryAccount::state`: under the limit.
const UNDER: u8 = 0;
/// `MemoryAccount::state`: an allocation took it over; not yet acted on.
const OVER: u8 = 1;
/// `MemoryAccount::state`: someone took the mark and kills the process.
const CLAIMED: u8 = 2;

/// `MemoryAccount::limit` of a process without a limit.
const NO_LIMIT: usize = usize::MAX;

/// The memory account of a process: bytes attributed to it and its limit.
///
/// `used` and `limit` are written only by the thread polling the process
/// (the holder of its `RUNNING` bit), so a relaxed load and store suffice;
/// other threads (introspection, the watchdog) only read them. `state` goes
/// `UNDER` → `OVER` on the polling thread (the allocator) and `OVER` →
/// `CLAIMED` by a compare-and-swap of the worker or the watchdog.
#[derive(Debug)]
pub(crate) struct MemoryAccount {
    limit: AccountUsize,
    used: AccountUsize,
    state: AtomicU8,
}

impl MemoryAccount {
    /// An account without a limit, at zero.
    pub(crate) fn new() -> MemoryAccount {
        MemoryAccount {
            limit: AccountUsize::new(NO_LIMIT),
            used: AccountUsize::new(0),
            state: AtomicU8::new(UNDER),
        }
    }

    /// The limit, if there is one.
    pub(crate) fn limit(&self) -> Option<usize> {
        let limit = self.limit.load(AccountOrdering::Relaxed);
        (limit != NO_LIMIT).then_some(limit)
    }

    /// Bytes attributed so far (since the limit was set).
    pub(crate) fn used(&self) -> usize {
        self.used.load(AccountOrdering::Relaxed)
    }

    /// Sets the limit (on the polling thread only); returns the previous one.
    /// A limit set where there was none counts from zero; a changed limit
    /// keeps the count, and a count already over the new limit marks the
    /// account now. A mark is never taken back.
    pub(crate) fn set_limit(&self, limit: Option<usize>) -> Option<usize> {
        let previous = self.limit();
        if previous.is_none() {
            self.used.store(0, AccountOrdering::Relaxed);
        }
        // `NO_LIMIT` itself would mean none: the largest limit is one less.
        let stored = limit.map_or(NO_LIMIT, |l| l.min(NO_LIMIT - 1));
        self.limit.store(stored, AccountOrdering::Relaxed);
        if self.used() > stored && self.mark() {
            OVER_EPOCH.fetch_add(1, Ordering::Release);
        }
        previous
    }

    /// An allocation of `n` bytes on the polling thread. Returns true if it
    /// took the account over its limit for the first time; the caller then
    /// bumps `OVER_EPOCH` ([`MemoryAccount::charge`]).
    #[inline]
    fn add(&self, n: usize) -> bool {
        let used = self.used.load(AccountOrdering::Relaxed).saturating_add(n);
        self.used.store(used, AccountOrdering::Relaxed);
        used > self.limit.load(AccountOrdering::Relaxed) && self.mark()
    }

    /// Marks the account over its limit; true for the one call that did.
    #[cold]
    fn mark(&self) -> bool {
        self.state
            .compare_exchange(
                UNDER,
                OVER,
                AccountOrdering::Release,
                AccountOrdering::Relaxed,
            )
            .is_ok()
    }

    /// An allocation of `n` bytes: counts it, and announces a first crossing
    /// of the limit to the watchdog.
    #[inline]
    pub(crate) fn charge(&self, n: usize) {
        if self.add(n) {
            OVER_EPOCH.fetch_add(1, Ordering::Release);
        }
    }

    /// A free of `n` bytes on the polling thread: the count never goes below
    /// zero.
    #[inline]
    pub(crate) fn credit(&self, n: usize) {
        let used = self.used.load(AccountOrdering::Relaxed).saturating_sub(n);
        self.used.store(used, AccountOrdering::Relaxed);
    }

    /// Whether the account was marked over its limit (claimed or not).
    pub(crate) fn is_over(&self) -> bool {
        self.state.load(AccountOrdering::Acquire) != UNDER
    }

    /// Takes the mark: `Some((used, limit))` for the one caller that turns a
    /// marked account into a claimed one; it terminates the process.
    pub(crate) fn claim(&self) -> Option<(usize, usize)> {
        self.state
            .compare_exchange(
                OVER,
                CLAIMED,
                AccountOrdering::AcqRel,
                AccountOrdering::Acquire,
            )
            .ok()
            .map(|_| (self.used(), self.limit().unwrap_or(0)))
    }
}

#[cfg(all(test, not(feature = "loom-models")))]
mod tests {
    use super::*;

    /// The count of live bytes is kept per thread and summed: blocks
    /// allocated through [`Counting`] on one thread and freed on another
    /// move it by exactly their size, then back. (This test binary's global
    /// allocator is the system's: only these calls are counted.)
    #[test]
    fn the_count_of_live_bytes_is_exact_across_threads() {
        const BLOCK: usize = 4096;
        const BLOCKS: usize = 64;
        let layout = Layout::from_size_align(BLOCK, 8).unwrap();
        let counting = Counting(System);
        // Marks the allocator installed, and reads the count before.
        // SAFETY: a valid layout; the block is freed with it just below.
        unsafe { counting.dealloc(counting.alloc(layout), layout) };
        let before = allocated_bytes().expect("counted");
        // Raw pointers are not `Send`: the blocks cross threads as addresses.
        let blocks: Vec<usize> = std::thread::spawn(move || {
            // SAFETY: a valid layout; each block is freed with it below.
            (0..BLOCKS)
                .map(|_| unsafe { counting.alloc(layout) } as usize)
                .collect()
        })
        .join()
        .unwrap();
        assert_eq!(allocated_bytes(), Some(before + BLOCK * BLOCKS));
        std::thread::spawn(move || {
            for block in blocks {
                // SAFETY: allocated above with this layout, freed once.
                unsafe { counting.dealloc(block as *mut u8, layout) };
            }
        })
        .join()
        .unwrap();
        assert_eq!(allocated_bytes(), Some(before));
    }
}

#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;
    use loom::thread;

    use super::*;

    /// The polling thread's allocations take an account over its limit
    /// while the watchdog looks: exactly one of the worker (after the poll)
    /// and the watchdog claims the mark, the claimer reads the bytes of the
    /// crossing allocation, and a watchdog that saw the epoch move sees the
    /// mark.
    #[test]
    fn over_limit_mark_is_claimed_once_and_visible_with_the_epoch() {
        crate::loom::model("memory limit mark", None, || {
            let account = Arc::new(MemoryAccount::new());
            account.set_limit(Some(10));
            // `OVER_EPOCH`, as a loom atomic.
            let epoch = Arc::new(AtomicUsize::new(0));
            let watchdog = {
                let (account, epoch) = (account.clone(), epoch.clone());
                thread::spawn(move || {
                    if epoch.load(AccountOrdering::Acquire) == 0 {
                        return None;
                    }
                    assert!(account.is_over(), "the epoch moved, the mark is unseen");
                    account.claim()
                })
            };
            // The poll: the second allocation crosses the limit.
            for _ in 0..2 {
                if account.add(6) {
                    epoch.fetch_add(1, AccountOrdering::Release);
                }
            }
            // The poll returned: the worker's check.
            let by_worker = if account.is_over() {
                account.claim()
            } else {
                None
            };
            let by_watchdog = watchdog.join().unwrap();
            assert!(account.is_over());
            match (by_worker, by_watchdog) {
                (Some(claim), None) | (None, Some(claim)) => assert_eq!(claim, (12, 10)),
                other => panic!("claimed by both or neither: {other:?}"),
            }
        });
    }
}
