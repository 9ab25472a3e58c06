//! The few OS calls the scheduler needs (Linux): thread ids, per-thread CPU
//! clocks, and per-thread priority. Each is a thin, checked wrapper; failures
//! are reported, never fatal.

use std::io;

/// A thread's CPU-time clock, readable from any thread while it lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ThreadClock(libc::clockid_t);

impl ThreadClock {
    /// The calling thread's clock.
    pub(crate) fn current() -> io::Result<ThreadClock> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: `pthread_self` is always valid for the calling thread and
        // `clock` is a valid out-pointer for the duration of the call.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        if rc == 0 {
            Ok(ThreadClock(clock))
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    }

    /// CPU time the thread has consumed, in nanoseconds (0 if unreadable,
    /// e.g. once the thread has exited).
    pub(crate) fn cpu_ns(self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer; an invalid clock id is reported
        // through the return value, not undefined behaviour.
        let rc = unsafe { libc::clock_gettime(self.0, &mut ts) };
        if rc != 0 {
            return 0;
        }
        (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
    }
}

/// The kernel id of the calling thread.
pub(crate) fn current_tid() -> i32 {
    // SAFETY: `gettid` has no preconditions.
    unsafe { libc::gettid() }
}

/// Sets the nice value of thread `tid` (Linux nice is per thread). Raising
/// it needs no privilege; lowering it again usually does (EACCES).
pub(crate) fn set_nice(tid: i32, nice: i32) -> io::Result<()> {
    // SAFETY: plain syscall on integer arguments.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves thread `tid` to SCHED_IDLE (runs only when nothing else wants the CPU).
pub(crate) fn set_sched_idle(tid: i32) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid pointer for the duration of the call.
    let rc = unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
