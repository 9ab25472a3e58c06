//! Per-process memory limits (BEAM's `max_heap_size`, for native Rust
//! allocations): the API, and the kill of a process over its limit.
//!
//! The accounting itself is in `crate::alloc` (the counting allocator and
//! [`MemoryAccount`](crate::alloc::MemoryAccount)); the worker
//! (`scheduler::worker::run`) points the thread at a limited process's
//! account for each poll and kills it when the poll returns marked; the
//! watchdog kills a marked process still inside a poll. `docs/semantics.md`
//! §9.5 states the guarantees.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::alloc;
use crate::context;
use crate::pid::Pid;
use crate::process::Process;
use crate::reason::ExitReason;
use crate::runtime::{Handle, Shared};
use crate::signal;

/// The exit reason of a process killed over its memory limit, as an atom.
pub(crate) const MEMORY_LIMIT: &str = "memory_limit";

/// How many [`MemoryKill`] records a runtime keeps.
const KILLS_KEPT: usize = 256;

/// A memory limit was asked for but no counting allocator is installed: the
/// limit could never be enforced. Install [`CountingAlloc`](crate::alloc::CountingAlloc)
/// or [`Counting`](crate::alloc::Counting) as the `#[global_allocator]` (the
/// `ember` binary does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimitUnsupported;

impl fmt::Display for MemoryLimitUnsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "memory limits need a counting global allocator \
             (ember_runtime::alloc::CountingAlloc or ember_runtime::alloc::Counting<A>)",
        )
    }
}

impl std::error::Error for MemoryLimitUnsupported {}

/// A process killed for going over its memory limit, as the runtime
/// remembers it (the last 256 per runtime): what a supervisor or the jobs
/// system reports beyond the reason `memory_limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryKill {
    /// The process.
    pub pid: Pid,
    /// Bytes attributed to it when it was killed.
    pub used_bytes: usize,
    /// Its limit.
    pub limit_bytes: usize,
}

/// Sets (or with `None` removes) the calling process's memory limit, in
/// bytes; returns the previous limit (Erlang's `process_flag(max_heap_size,
/// _)`). From now on, allocations made while it is polled are attributed to
/// it; going over the limit kills it with reason `memory_limit`
/// (docs/semantics.md §9.5). A limit set where there was none counts from
/// zero; changing a limit keeps the count, and a count already over the new
/// limit kills the process when this poll returns.
///
/// # Errors
///
/// [`MemoryLimitUnsupported`] when a limit is asked for and no counting
/// allocator is installed (removing a limit always succeeds).
///
/// # Panics
///
/// Outside an Ember process.
pub fn set_memory_limit(limit: Option<usize>) -> Result<Option<usize>, MemoryLimitUnsupported> {
    if limit.is_some() && !alloc::installed() {
        return Err(MemoryLimitUnsupported);
    }
    Ok(context::with_current("set_memory_limit", |me| {
        // Removing a limit never set creates no account.
        let account = match limit {
            Some(_) => me.memory_account(),
            None => me.memory()?,
        };
        let previous = account.set_limit(limit);
        // SAFETY: `me` is the current process of this thread: the context
        // holds its `Arc` until the poll returns, and the worker (or
        // `Running::exit`, for a destructor running in a dying process's
        // context) puts its own pointer back before letting it go.
        unsafe {
            alloc::enter_account(limit.map(|_| account));
        }
        previous
    }))
}

/// The calling process's memory limit and the bytes attributed to it under
/// that limit: `None` if it has no limit.
///
/// # Panics
///
/// Outside an Ember process.
pub fn memory_limit() -> Option<(usize, usize)> {
    context::with_current("memory_limit", |me| {
        let account = me.limited_memory()?;
        account.limit().map(|limit| (limit, account.used()))
    })
}

/// How the runtime remembers why `pid` died, if it was killed over its
/// memory limit recently (the last 256 such kills of this runtime).
///
/// # Panics
///
/// Outside an Ember runtime (use [`Handle::memory_kill`]).
pub fn memory_kill(pid: Pid) -> Option<MemoryKill> {
    context::with_runtime("memory_kill", |rt| rt.memory_kill(pid))
}

impl Handle {
    /// See [`memory_kill`].
    pub fn memory_kill(&self, pid: Pid) -> Option<MemoryKill> {
        self.shared.memory_kill(pid)
    }
}

/// The kills a runtime remembers.
#[derive(Default)]
pub(crate) struct MemoryKills(parking_lot::Mutex<VecDeque<MemoryKill>>);

impl Shared {
    fn memory_kill(&self, pid: Pid) -> Option<MemoryKill> {
        let kills = self.memory_kills.0.lock();
        kills.iter().rev().find(|k| k.pid == pid).cloned()
    }
}

/// Kills `process` if its account is marked over its limit and nobody has
/// acted on the mark yet; true if this call killed it. Called by the worker
/// after a poll and by the watchdog during one; never from the allocator,
/// and with no account installed on this thread (it allocates).
pub(crate) fn kill_if_over(process: &Arc<Process>) -> bool {
    let Some((used, limit)) = process.memory().and_then(|m| m.claim()) else {
        return false;
    };
    // Killed for another reason meanwhile: that reason stands.
    if process.is_exiting() {
        return false;
    }
    record(process, used, limit);
    signal::terminate(process, ExitReason::memory_limit());
    true
}

/// Takes the mark of a process whose poll just returned (the worker), if
/// it is marked: the caller ends it with `memory_limit`.
pub(crate) fn claim_after_poll(process: &Arc<Process>) -> bool {
    if !process.is_over_memory_limit() {
        return false;
    }
    let Some((used, limit)) = process.memory().and_then(|m| m.claim()) else {
        return false;
    };
    // Killed for another reason during the poll: that reason stands.
    if process.is_exiting() {
        return false;
    }
    record(process, used, limit);
    true
}

/// Logs the kill and remembers it for [`memory_kill`].
fn record(process: &Process, used: usize, limit: usize) {
    tracing::warn!(
        pid = %process.pid,
        spawned_as = %process.spawned_as,
        used_bytes = used,
        limit_bytes = limit,
        "ember: process {} killed: memory_limit (used {used} bytes over its limit of {limit})",
        process.pid,
    );
    let mut kills = process.rt.memory_kills.0.lock();
    if kills.len() == KILLS_KEPT {
        kills.pop_front();
    }
    kills.push_back(MemoryKill {
        pid: process.pid,
        used_bytes: used,
        limit_bytes: limit,
    });
}
