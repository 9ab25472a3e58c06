//! An optional counting global allocator, so programs (benchmarks, the
//! console) can report exactly how many bytes are allocated.
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: ember_runtime::CountingAlloc = ember_runtime::CountingAlloc;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);
static PAUSED: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting live bytes. Install it with
/// `#[global_allocator]`; [`RuntimeInfo::memory_allocated_bytes`](crate::RuntimeInfo)
/// then reports the count. It costs one relaxed atomic add per allocation.
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
/// static ALLOC: ember_runtime::Counting<mimalloc::MiMalloc> =
///     ember_runtime::Counting(mimalloc::MiMalloc);
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
        if !ptr.is_null() && counting() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
            INSTALLED.store(true, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from this allocator with `layout`.
        unsafe { self.0.dealloc(ptr, layout) };
        if counting() {
            ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { self.0.alloc_zeroed(layout) };
        if !ptr.is_null() && counting() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
            INSTALLED.store(true, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let new = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !new.is_null() && counting() {
            ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
            ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        }
        new
    }
}

/// Live bytes allocated through [`CountingAlloc`], if it is installed and
/// counting. The count wraps rather than fail if it was paused meanwhile.
pub fn allocated_bytes() -> Option<usize> {
    (INSTALLED.load(Ordering::Relaxed) && counting()).then(|| ALLOCATED.load(Ordering::Relaxed))
}
