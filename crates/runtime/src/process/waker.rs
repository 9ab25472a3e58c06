//! The waker of a process: waking it schedules it (`scheduler::wake`).
//!
//! A vtable of its own rather than `futures_task::ArcWake`, for one reason:
//! its `clone` is the moment code outside Ember keeps a way to wake the
//! process later (a tokio socket or timer registering, a channel's waiter),
//! which is when tokio's driver thread may be needed; a clone starts it
//! (`crate::tokio_driver`). Ember's own timers and reactor, which need no
//! tokio driver, keep theirs with [`clone_quietly`].
//!
//! The data pointer is an `Arc<Process>`'s: a clone is one strong count,
//! dropping it gives the count back.

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr;
use std::sync::Arc;
use std::task::{RawWaker, RawWakerVTable, Waker};

use super::Process;

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

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
    if !ptr::eq(waker.vtable(), &VTABLE) {
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
