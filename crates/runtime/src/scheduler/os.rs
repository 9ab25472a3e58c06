//! The few OS calls the scheduler needs (Linux): thread ids, per-thread CPU
//! clocks, per-thread priority and EEVDF time slice, and timer slack. Each is
//! a thin, checked wrapper; failures are reported, never fatal.

use std::io;
use std::time::Duration;

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

/// Whether thread `tid` of this process is runnable — on a CPU or waiting
/// for one — rather than asleep in a system call or on a lock (the state
/// field of `/proc/self/task/<tid>/stat`).
pub(crate) fn is_runnable(tid: i32) -> io::Result<bool> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))?;
    // The command name, in parentheses, may itself hold spaces or ')'.
    let (_, fields) = stat
        .rsplit_once(')')
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))?;
    Ok(fields.trim_start().starts_with('R'))
}

/// The nice value of the calling thread (Linux nice is per thread; a new
/// thread starts with its creator's).
pub(crate) fn current_nice() -> i32 {
    // `getpriority` may return -1 as a valid value, so errno tells errors
    // apart; it cannot fail for the calling thread, and 0 is the fallback.
    // SAFETY: `__errno_location` always points at the calling thread's errno.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain syscall on integer arguments.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, current_tid() as libc::id_t) };
    if nice == -1 && io::Error::last_os_error().raw_os_error() != Some(0) {
        0
    } else {
        nice
    }
}

/// Whether the calling thread runs as the runtime's own threads start:
/// SCHED_OTHER at nice `nice`. A thread it creates inherits both; one
/// created by a demoted thread (nice 19 or SCHED_IDLE) would stay demoted,
/// since raising it back needs a privilege the node may not have.
pub(crate) fn runs_at_nice(nice: i32) -> bool {
    // SAFETY: plain syscall; 0 is the calling thread.
    let policy = unsafe { libc::sched_getscheduler(0) };
    policy == libc::SCHED_OTHER && current_nice() == nice
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

/// Moves thread `tid` back to SCHED_OTHER at nice `nice`, from SCHED_IDLE or
/// a higher nice value, keeping its EEVDF slice (`sched_setattr(2)`, one
/// call). Lowering a nice value (or leaving SCHED_IDLE, which counts as nice
/// 20) needs CAP_SYS_NICE or an RLIMIT_NICE of at least `20 - nice`
/// (EPERM otherwise): see [`can_restore_priority`].
pub(crate) fn set_normal(tid: i32, nice: i32) -> io::Result<()> {
    let mut attr = sched_getattr(tid)?;
    attr.sched_policy = libc::SCHED_OTHER as u32;
    attr.sched_nice = nice;
    attr.sched_priority = 0;
    attr.sched_flags = 0;
    sched_setattr(tid, &mut attr)
}

/// Whether this process may move a thread back from SCHED_IDLE at nice 19
/// to SCHED_OTHER at `nice`: tried on a short-lived thread of its own, so
/// capabilities, RLIMIT_NICE and any security policy all have their say.
/// Cached per value for the life of the process.
pub(crate) fn can_restore_priority(nice: i32) -> bool {
    static KNOWN: std::sync::Mutex<Vec<(i32, bool)>> = std::sync::Mutex::new(Vec::new());
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, answer)) = known.iter().find(|(n, _)| *n == nice) {
        return answer;
    }
    let answer = std::thread::Builder::new()
        .name("ember-nice-probe".into())
        .spawn(move || {
            let tid = current_tid();
            set_nice(tid, 19).is_ok()
                && set_sched_idle(tid).is_ok()
                && set_normal(tid, nice).is_ok()
        })
        .ok()
        .and_then(|probe| probe.join().ok())
        .unwrap_or(false);
    known.push((nice, answer));
    answer
}

fn sched_getattr(tid: i32) -> io::Result<libc::sched_attr> {
    // SAFETY: `sched_attr` is plain integers, for which all zeroes is valid.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::sched_attr>() as libc::c_uint;
    // SAFETY: `attr` is a valid, writable `sched_attr` of `size` bytes for the
    // duration of the call; a bad `tid` is reported through the return value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut attr as *mut libc::sched_attr,
            size,
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(attr)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sched_setattr(tid: i32, attr: &mut libc::sched_attr) -> io::Result<()> {
    attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
    // SAFETY: `attr` is a valid `sched_attr` of `attr.size` bytes, read by the
    // kernel during the call only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            tid,
            attr as *const libc::sched_attr,
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to give thread `tid` (0: the calling thread) EEVDF time
/// slices of `slice`, keeping its policy and nice value (`sched_setattr(2)`
/// with `sched_runtime`; Linux 6.12 and later honour it for SCHED_OTHER and
/// SCHED_BATCH, clamped to 0.1-100 ms, and earlier kernels ignore it). The
/// slice does not change a thread's share of the CPU, only how soon others
/// may preempt it: a waking thread whose slice is shorter than the running
/// thread's ignores that thread's slice protection, and a shorter slice also
/// means an earlier virtual deadline. No privilege is needed. A SCHED_IDLE
/// thread keeps the slice it had, so set the slice before that demotion.
pub(crate) fn set_slice(tid: i32, slice: Duration) -> io::Result<()> {
    let mut attr = sched_getattr(tid)?;
    attr.sched_runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    sched_setattr(tid, &mut attr)
}

/// Sets the calling thread's timer slack: how late the kernel may fire its
/// timed sleeps to batch wake-ups (50 us by default).
pub(crate) fn set_timer_slack(slack: Duration) -> io::Result<()> {
    let ns = libc::c_ulong::try_from(slack.as_nanos().max(1)).unwrap_or(libc::c_ulong::MAX);
    // SAFETY: PR_SET_TIMERSLACK takes an integer and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks for EEVDF slices of `slice` for thread `tid` (0: the calling thread;
/// zero `slice`: leave it). A failure (an old kernel, a thread gone) is
/// logged as a warning once, then at debug level: it costs latency, nothing
/// else.
pub(crate) fn request_slice(tid: i32, slice: Duration) {
    use std::sync::atomic::{AtomicBool, Ordering};

    static WARNED: AtomicBool = AtomicBool::new(false);
    if slice.is_zero() {
        return;
    }
    if let Err(e) = set_slice(tid, slice) {
        if WARNED.swap(true, Ordering::Relaxed) {
            tracing::debug!(tid, error = %e, "ember: cannot set a thread's scheduler slice");
        } else {
            tracing::warn!(tid, error = %e, "ember: cannot set a thread's scheduler slice; wake-ups may wait for the next tick");
        }
    }
}
