//! A worker's clock: nanoseconds since the scheduler started, read once per
//! poll, so it must be cheap.
//!
//! The OS clock (`Instant::now`, `clock_gettime` in the vDSO) costs ~30-35 ns
//! on the virtual machines Ember is measured on: a tenth of a message's
//! round trip between two processes. Where the kernel itself keeps time with
//! the CPU's time-stamp counter (its clocksource is `tsc`: the counter is
//! invariant and synchronised across CPUs), a worker reads the counter
//! (`rdtsc`, ~10 ns) and extrapolates from its last reading of the OS clock,
//! its *anchor*, which it takes again whenever the extrapolation would span
//! more than [`WINDOW_NS`] (and so after every sleep). The counter's rate is
//! measured against the OS clock over the whole run so far (the first
//! anchor any worker took, to the newest), so its error shrinks as the run
//! goes on; until that span is a millisecond, every read is an OS read.
//!
//! What the extrapolation can be off by: the rate's error times the window,
//! nanoseconds. A timer is never fired by this clock alone: the worker
//! confirms with the OS clock before it fires one (`worker::serve_slot`), so
//! a timer still never fires early. Elsewhere (the poll's CPU time, the
//! start of a poll the watchdog compares with its own OS reading) a few
//! nanoseconds do not matter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// The longest span a worker extrapolates over before it reads the OS clock
/// again.
pub(crate) const WINDOW_NS: u64 = 200_000;
/// The span of OS time the counter's rate must be measured over before it is
/// used.
const CALIBRATED_AFTER_NS: u128 = 1_000_000;

/// A worker's clock; see the module docs.
pub(crate) struct WorkerClock {
    origin: Instant,
    /// The counter's rate, if this machine's counter is usable.
    tsc: Option<&'static Rate>,
    /// The last OS reading, in nanoseconds since `origin`, and the counter
    /// then.
    anchor_ns: u64,
    anchor_tsc: u64,
    /// Nanoseconds per tick in 32.32 fixed point, as of the anchor (0: not
    /// calibrated yet), and the ticks the window spans at that rate.
    mult: u64,
    window_ticks: u64,
}

/// The counter's rate against the OS clock, shared by every worker of the
/// program.
struct Rate {
    /// The first anchor of the program: the start of the measured span.
    base: Instant,
    base_tsc: u64,
    /// Nanoseconds per tick, 32.32 fixed point; 0 until measured.
    mult: AtomicU64,
}

impl WorkerClock {
    /// A clock counting from `origin` (the scheduler's start).
    pub(crate) fn new(origin: Instant) -> WorkerClock {
        WorkerClock {
            origin,
            tsc: rate(),
            anchor_ns: 0,
            anchor_tsc: 0,
            mult: 0,
            window_ticks: 0,
        }
    }

    /// Nanoseconds since the origin, now.
    #[inline]
    pub(crate) fn now(&mut self) -> u64 {
        let Some(rate) = self.tsc else {
            return nanos_since(self.origin, Instant::now());
        };
        let ticks = read_tsc().wrapping_sub(self.anchor_tsc);
        if ticks < self.window_ticks {
            // `ticks * mult` fits: `window_ticks` keeps it under WINDOW_NS << 32.
            return self.anchor_ns + ((ticks * self.mult) >> 32);
        }
        self.anchor(rate)
    }

    /// Reads the OS clock: the new anchor, and a new measure of the rate.
    #[cold]
    fn anchor(&mut self, rate: &Rate) -> u64 {
        let now = Instant::now();
        let tsc = read_tsc();
        self.anchor_ns = nanos_since(self.origin, now);
        self.anchor_tsc = tsc;
        self.mult = rate.measure(now, tsc);
        self.window_ticks = match self.mult {
            0 => 0,
            mult => ((u128::from(WINDOW_NS) << 32) / u128::from(mult)) as u64,
        };
        self.anchor_ns
    }
}

impl Rate {
    /// The rate measured from the base to (`now`, `tsc`), stored for every
    /// worker; 0 while the span is too short (or the counter went back,
    /// which an invariant counter does not).
    fn measure(&self, now: Instant, tsc: u64) -> u64 {
        let ns = now.saturating_duration_since(self.base).as_nanos();
        let ticks = tsc.saturating_sub(self.base_tsc);
        if ns < CALIBRATED_AFTER_NS || ticks == 0 {
            return self.mult.load(Ordering::Relaxed);
        }
        let mult = u64::try_from((ns << 32) / u128::from(ticks)).unwrap_or(0);
        self.mult.store(mult, Ordering::Relaxed);
        mult
    }
}

fn nanos_since(origin: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(origin).as_nanos() as u64
}

/// The program's counter rate, if the counter is usable here (first call:
/// looks at the kernel's clocksource and takes the base).
fn rate() -> Option<&'static Rate> {
    static RATE: OnceLock<Option<Rate>> = OnceLock::new();
    RATE.get_or_init(|| {
        tsc_is_the_kernels_clock().then(|| Rate {
            base: Instant::now(),
            base_tsc: read_tsc(),
            mult: AtomicU64::new(0),
        })
    })
    .as_ref()
}

/// Whether the kernel keeps time with the time-stamp counter (it checked it
/// is invariant and synchronised across CPUs, and would have switched
/// clocksource otherwise).
fn tsc_is_the_kernels_clock() -> bool {
    cfg!(all(target_arch = "x86_64", target_os = "linux"))
        && std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|s| s.trim() == "tsc")
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn read_tsc() -> u64 {
    // SAFETY: `rdtsc` has no preconditions; x86_64 always has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn read_tsc() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The clock follows the OS clock, whichever way it reads: over a span
    /// of busy waiting, its readings advance with `Instant`'s to within a
    /// microsecond or two, and never go backwards by more than that.
    #[test]
    fn the_worker_clock_follows_the_os_clock() {
        let origin = Instant::now();
        let mut clock = WorkerClock::new(origin);
        let until = Instant::now() + Duration::from_millis(30);
        let mut last = 0;
        let mut reads = 0u64;
        // At least a thousand reads, however long a busy machine keeps this
        // thread off its core.
        while Instant::now() < until || reads < 1000 {
            let before = nanos_since(origin, Instant::now());
            let ours = clock.now();
            let after = nanos_since(origin, Instant::now());
            assert!(
                ours + 2_000 >= before && ours <= after + 2_000,
                "clock read {ours} ns outside the OS readings {before}..{after} ns"
            );
            assert!(
                ours + 2_000 >= last,
                "clock went back from {last} to {ours} ns"
            );
            last = last.max(ours);
            reads += 1;
        }
    }
}
