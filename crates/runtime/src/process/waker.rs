//! The waker of a process: waking it schedules it (`scheduler::wake`).
//!
//! A vtable of its own rather than `futures_task::ArcWake`, for one reason:
//! its `clone` is the moment code outside Ember keeps a way to wake the
//! process later (a tokio socket or timer registering, a channel's waiter),
//! which is when tokio's driver thread may be needed; a clone starts it
//! (`crate::tokio_driver`). Ember's own timers, reactor and channels, which
//! need no tokio driver, keep theirs with [`clone_quietly`]; a future that
//! only they wake can be polled with the waker made quiet
//! ([`poll_quietly`]: a second vtable whose `clone` does not count).
//!
//! The data pointer is an `Arc<Process>`'s: a clone is one strong count,
//! dropping it gives the count back.

use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::pin::Pin;
use std::ptr;
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use super::Process;

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

/// The same waker, made quiet: its clones do not count as kept by code
/// outside Ember ([`poll_quietly`]).
static QUIET_VTABLE: RawWakerVTable =
    RawWakerVTable::new(clone_quiet, wake, wake_by_ref, drop_waker);

/// A process's waker borrowed for one poll: no reference count is taken
/// unless the polled code clones it.
pub(crate) struct WakerRef<'a> {
    waker: ManuallyDrop<Waker>,
    _process: PhantomData<&'a Process>,
}

impl Deref for WakerRef<'_> {
    type Target = Waker;

    fn deref(&self) -> &Waker {
        &self.waker
    }
}

/// The waker of `process`, borrowed for as long as `process` is.
pub(crate) fn waker_ref(process: &Arc<Process>) -> WakerRef<'_> {
    let data = Arc::as_ptr(process).cast::<()>();
    // SAFETY: `data` is an `Arc<Process>`'s pointer, which is what the
    // vtable's functions take. The borrowed `Arc` keeps it alive for the
    // `WakerRef`'s life, and the `WakerRef` never drops its waker, so the
    // count it did not take is never given back.
    let waker = unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) };
    WakerRef {
        waker: ManuallyDrop::new(waker),
        _process: PhantomData,
    }
}

/// A clone of `waker` that does not count as kept by code outside Ember:
/// for Ember's own timers and reactor, whose wake-ups need no tokio driver.
/// Any other waker is cloned as usual.
pub(crate) fn clone_quietly(waker: &Waker) -> Waker {
    if !is_process_waker(waker) {
        return waker.clone();
    }
    let data = waker.data();
    // SAFETY: a waker with this vtable holds one strong count of the
    // `Arc<Process>` at `data` (or borrows one, `waker_ref`), so the
    // process is alive; the new waker owns the count taken here.
    unsafe {
        Arc::increment_strong_count(data.cast::<Process>());
        Waker::from_raw(RawWaker::new(data, &VTABLE))
    }
}

/// Whether `waker` is a process's (quiet or not).
fn is_process_waker(waker: &Waker) -> bool {
    ptr::eq(waker.vtable(), &VTABLE) || ptr::eq(waker.vtable(), &QUIET_VTABLE)
}

/// Whether a waker kept earlier (`kept`, from [`clone_quietly`]) wakes what
/// `waker` wakes, so need not be replaced: for a process's wakers, quiet or
/// not, the same process (`Waker::will_wake` also compares the vtables, so
/// a quiet waker never matches the kept one); otherwise `will_wake`.
pub(crate) fn same_waker(kept: &Waker, waker: &Waker) -> bool {
    if is_process_waker(kept) && is_process_waker(waker) {
        kept.data() == waker.data()
    } else {
        kept.will_wake(waker)
    }
}

/// Keeps a quiet clone of `waker` in `slot` unless `slot` already wakes
/// the same ([`same_waker`]): how Ember's timers, sockets and channels keep
/// their waiters' wakers. Returns the waker it replaced, for the caller to
/// drop once its lock is released (a process's last reference may go with
/// it).
#[must_use = "the replaced waker is to be dropped after the lock"]
pub(crate) fn keep_quietly(slot: &mut Option<Waker>, waker: &Waker) -> Option<Waker> {
    match slot {
        Some(kept) if same_waker(kept, waker) => None,
        _ => slot.replace(clone_quietly(waker)),
    }
}

/// Polls `future` with `cx`'s waker made quiet if it is a process's: clones
/// made inside do not start tokio's driver (`crate::sync::woken_by_ember`).
pub(crate) fn poll_quietly<F: Future + ?Sized>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    if !ptr::eq(cx.waker().vtable(), &VTABLE) {
        return future.poll(cx);
    }
    // SAFETY: the same data pointer under a vtable whose functions take the
    // same `Arc<Process>` pointer. It borrows `cx`'s waker's count for this
    // poll and is never dropped (`ManuallyDrop`), as `waker_ref`'s is.
    let quiet = ManuallyDrop::new(unsafe {
        Waker::from_raw(RawWaker::new(cx.waker().data(), &QUIET_VTABLE))
    });
    future.poll(&mut Context::from_waker(&quiet))
}

/// # Safety
/// `data` is a live `Arc<Process>`'s pointer (every waker of this vtable's).
unsafe fn clone(data: *const ()) -> RawWaker {
    let process = data.cast::<Process>();
    // SAFETY: the caller's waker keeps the process alive.
    unsafe {
        Arc::increment_strong_count(process);
        (*process).rt.waker_kept();
    }
    RawWaker::new(data, &VTABLE)
}

/// # Safety
/// As `clone`.
unsafe fn clone_quiet(data: *const ()) -> RawWaker {
    // SAFETY: the caller's waker keeps the process alive.
    unsafe { Arc::increment_strong_count(data.cast::<Process>()) };
    RawWaker::new(data, &QUIET_VTABLE)
}

/// # Safety
/// As `clone`; the waker's count is consumed.
unsafe fn wake(data: *const ()) {
    // SAFETY: the waker owned this count, which ends with it.
    let process = unsafe { Arc::from_raw(data.cast::<Process>()) };
    crate::scheduler::wake(&process);
}

/// # Safety
/// As `clone`.
unsafe fn wake_by_ref(data: *const ()) {
    // SAFETY: borrowed: the count stays with the waker.
    let process = ManuallyDrop::new(unsafe { Arc::from_raw(data.cast::<Process>()) });
    crate::scheduler::wake(&process);
}

/// # Safety
/// As `clone`; the waker's count is consumed.
unsafe fn drop_waker(data: *const ()) {
    // SAFETY: the waker owned this count.
    drop(unsafe { Arc::from_raw(data.cast::<Process>()) });
}
