//! The thread-local context: which runtime, slot and process this thread is
//! serving right now. Process-facing functions (`send`, `receive`, `spawn`…)
//! find their runtime and their own process through it.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use crate::process::{Process, Running};
use crate::runtime::Shared;

/// Reductions in one slice: a process that uses them up yields (BEAM's `CONTEXT_REDS`).
pub(crate) const REDUCTIONS_PER_SLICE: u32 = 4000;

thread_local! {
    /// The runtime whose scheduler runs on this thread, if any.
    static RUNTIME: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
    /// `RUNTIME`'s address (null: none), for the hot path's identity check
    /// without a borrow.
    static RUNTIME_ADDR: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
    /// The slot index this thread serves, if it is a scheduler thread.
    static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
    /// The id of the worker running on this thread.
    static WORKER: Cell<usize> = const { Cell::new(usize::MAX) };
    /// The `RUNNING` guard of the process being polled on this thread (or
    /// being dropped: `Running::exit`), null if none. Set only by
    /// [`enter`], for the duration of a call that borrows the guard.
    static CURRENT: Cell<*const Running> = const { Cell::new(std::ptr::null()) };
    /// Reductions left in the current slice.
    static BUDGET: Cell<u32> = const { Cell::new(REDUCTIONS_PER_SLICE) };
    /// `BUDGET` at or below which the next yield point checks the slice's
    /// time and preemption requests.
    static CHECKED_AT: Cell<u32> = const { Cell::new(FIRST_CHECK_AT) };
    /// The current process gave up the rest of its slice (budget or preemption).
    static YIELDED: Cell<bool> = const { Cell::new(false) };
    /// When the current poll's slice ends: the scheduler's start, and the
    /// end in nanoseconds after it (`start_slice`).
    static SLICE: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// How often (in reductions) a running process checks whether interactive
/// work asked it to cut its slice short.
const PREEMPT_CHECK_INTERVAL: u32 = 32;
/// `CHECKED_AT` at the start of a slice: the first check comes a few
/// reductions in, so that the short polls of message passing (a receive, a
/// send, the next receive) do not read the clock; a process doing heavy
/// work between yield points is checked by its ninth.
const FIRST_CHECK_AT: u32 = REDUCTIONS_PER_SLICE - PREEMPT_CHECK_INTERVAL / 4;

/// Marks this thread as worker `worker` of `rt`.
pub(crate) fn enter_runtime(rt: Arc<Shared>, worker: usize) {
    RUNTIME_ADDR.with(|a| a.set(Arc::as_ptr(&rt)));
    RUNTIME.with(|r| *r.borrow_mut() = Some(rt));
    WORKER.with(|w| w.set(worker));
}

/// The id of the worker running on this thread (`usize::MAX` if none).
pub(crate) fn current_worker() -> usize {
    WORKER.with(Cell::get)
}

/// Clears the worker marks (thread exit).
pub(crate) fn leave_runtime() {
    RUNTIME_ADDR.with(|a| a.set(std::ptr::null()));
    RUNTIME.with(|r| r.borrow_mut().take());
    SLOT.with(|s| s.set(None));
}

/// Records which slot this worker serves now (`None`: none, or background).
pub(crate) fn set_slot(slot: Option<usize>) {
    SLOT.with(|s| s.set(slot));
}

/// The slot this thread serves, if `rt` is its runtime.
pub(crate) fn current_slot(rt: &Shared) -> Option<usize> {
    let slot = SLOT.with(Cell::get)?;
    std::ptr::eq(RUNTIME_ADDR.with(Cell::get), rt).then_some(slot)
}

/// Whether this thread is polling (or dropping) a process now.
pub(crate) fn in_process() -> bool {
    !CURRENT.with(Cell::get).is_null()
}

/// Runs `f` with `running` as the current process, then puts back the one
/// before (also if `f` unwinds). The slice (budget, time, yield mark) stays
/// the caller's: a worker starts one with [`start_slice`]; a dying process's
/// destructors run in its own context inside another's slice.
///
/// The guard stays where it is: the context holds only its address, so a
/// poll moves nothing in or out of the thread-local.
pub(crate) fn enter<R>(running: &Running, f: impl FnOnce() -> R) -> R {
    /// Puts the previous current process back when dropped.
    struct Restore(*const Running);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(running)));
    f()
}

/// Runs `f` with the current process's guard, if any.
#[inline]
fn with_current_guard<R>(f: impl FnOnce(Option<&Running>) -> R) -> R {
    let current = CURRENT.with(Cell::get);
    // SAFETY: `CURRENT` is non-null only inside `enter`, which borrows the
    // guard it points to for as long as the pointer is set and puts the
    // previous pointer back (itself valid, by the same argument) before it
    // returns or unwinds. `f` cannot keep the reference: its lifetime is
    // this call's. The guard is only ever reached by shared references.
    f(unsafe { current.as_ref() })
}

/// Starts a new slice for the next poll: a full budget, and a time limit
/// `ends_ns` nanoseconds after `origin` (the scheduler's start, which its
/// workers' clocks count from).
pub(crate) fn start_slice(origin: Instant, ends_ns: u64) {
    BUDGET.with(|b| b.set(REDUCTIONS_PER_SLICE));
    CHECKED_AT.with(|c| c.set(FIRST_CHECK_AT));
    SLICE.with(|s| s.set(Some((origin, ends_ns))));
}

/// Runs `f` with the current process, if this thread is polling one.
pub(crate) fn try_with_current<R>(f: impl FnOnce(&Arc<Process>) -> R) -> Option<R> {
    with_current_guard(|running| running.map(|running| f(running.process())))
}

/// Runs `f` with the current process's `RUNNING` guard: the one accessor
/// through which a process reaches its own mailbox's saved queue (its
/// receives, `demonitor`'s flush) and the worker polls its body.
///
/// # Panics
///
/// Outside a process, as [`with_current`].
pub(crate) fn with_running<R>(what: &str, f: impl FnOnce(&Running) -> R) -> R {
    with_current_guard(|running| match running {
        Some(running) => f(running),
        None => panic!("ember: `{what}` must be called from inside an Ember process"),
    })
}

/// Runs `f` with the current process.
///
/// # Panics
///
/// Outside a process, with a message naming `what`: that is a misuse of the
/// API (like tokio's "must be called from the context of a Tokio runtime").
pub(crate) fn with_current<R>(what: &str, f: impl FnOnce(&Arc<Process>) -> R) -> R {
    try_with_current(f)
        .unwrap_or_else(|| panic!("ember: `{what}` must be called from inside an Ember process"))
}

/// Runs `f` with the runtime of this thread: the current process's, else the
/// scheduler's.
pub(crate) fn with_runtime<R>(what: &str, f: impl FnOnce(&Arc<Shared>) -> R) -> R {
    with_runtime_from(what, |rt, _| f(rt))
}

/// As [`with_runtime`], also giving `f` the current process's guard, if
/// any (one look at the thread's context for both).
pub(crate) fn with_runtime_from<R>(
    what: &str,
    f: impl FnOnce(&Arc<Shared>, Option<&Running>) -> R,
) -> R {
    with_current_guard(|running| match running {
        Some(running) => f(&running.process().rt, Some(running)),
        None => RUNTIME.with(|r| match &*r.borrow() {
            Some(rt) => f(rt, None),
            None => panic!("ember: `{what}` must be called from inside an Ember runtime"),
        }),
    })
}

/// Consumes `n` reductions; returns false once the slice is used up.
pub(crate) fn consume_reductions(n: u32) -> bool {
    BUDGET.with(|b| {
        let left = b.get();
        b.set(left.saturating_sub(n));
        left > n
    })
}

/// At an await point: whether the current process must yield now, because
/// its slice is used up or interactive work asked its slot to preempt it.
/// Records the yield so the scheduler queues the process as batch work.
pub(crate) fn should_yield() -> bool {
    // A process suspended on a busy distribution connection stops at its
    // next yield point (the scheduler then leaves it until it is resumed);
    // so does one over its memory limit (its poll returns, and the worker
    // kills it: `crate::memory`).
    let suspended = with_current_guard(|running| {
        running.map(Running::process).is_some_and(|p| {
            p.busy_dist.load(std::sync::atomic::Ordering::Acquire) > 0 || p.is_over_memory_limit()
        })
    });
    if suspended {
        YIELDED.with(|y| y.set(true));
        return true;
    }
    let left = BUDGET.with(Cell::get);
    let mut exhausted = !consume_reductions(1);
    // Check once the budget has fallen an interval below the last check (not
    // when it sits on a multiple of it: the reductions `send`, `exit` or
    // `spawn` consume between yield points could skip every multiple).
    let check = CHECKED_AT.with(|c| {
        let due = left <= c.get();
        if due {
            c.set(left.saturating_sub(PREEMPT_CHECK_INTERVAL));
        }
        due
    });
    if !exhausted && check {
        // Heavy work between reductions: the slice is also bounded in time.
        exhausted = SLICE.with(Cell::get).is_some_and(|(origin, ends_ns)| {
            Instant::now().saturating_duration_since(origin).as_nanos() >= u128::from(ends_ns)
        });
    }
    let preempted = !exhausted && check && preempt_requested();
    if exhausted || preempted {
        YIELDED.with(|y| y.set(true));
        return true;
    }
    false
}

/// Whether this thread's slot was asked to cut the current slice short.
fn preempt_requested() -> bool {
    let Some(slot) = SLOT.with(Cell::get) else {
        return false;
    };
    RUNTIME.with(|r| {
        r.borrow()
            .as_ref()
            .and_then(|rt| rt.sched.slots.get(slot))
            .is_some_and(|s| s.remote.preempt.load(std::sync::atomic::Ordering::Relaxed))
    })
}

/// Whether the process just polled yielded its slice (and clears the mark).
pub(crate) fn take_yielded() -> bool {
    YIELDED.with(|y| y.replace(false))
}

/// Reductions used in the current slice.
pub(crate) fn reductions_used() -> u32 {
    REDUCTIONS_PER_SLICE - BUDGET.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A loop that spends one reduction in a call (`send`, `exit`, `spawn`)
    /// and one at its yield point still has its slice's time checked: once
    /// the slice is over, it yields within one check interval, not only when
    /// its 4000 reductions are gone.
    #[test]
    fn a_loop_spending_reductions_between_yield_points_yields_when_its_time_is_up() {
        let long_ago = Instant::now() - Duration::from_secs(1);
        start_slice(long_ago, 1_000_000);
        // Offset the budget by one, as a call before each yield point does.
        consume_reductions(1);
        let mut yield_points = 0;
        let yielded = loop {
            yield_points += 1;
            if should_yield() {
                break true;
            }
            if yield_points > 2 * PREEMPT_CHECK_INTERVAL {
                break false;
            }
            consume_reductions(1);
        };
        assert!(
            yielded,
            "no yield after {yield_points} yield points of an expired slice"
        );
        assert!(take_yielded());
        SLICE.with(|s| s.set(None));
    }
}
