//! The starvation floor (docs/semantics.md, "Preemption"): a process that
//! computes natively has its thread demoted, but other busy OS processes
//! cannot starve it without bound. Beside one busy loop per core, work that
//! takes a fraction of a second alone must finish within a deadline that the
//! floor meets many times over and SCHED_IDLE (0.3 % of a CPU: minutes) does
//! not.

use std::hint::black_box;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ember_runtime::Runtime;

/// CPU time the native work takes, about (0.3 s alone on an idle CPU).
const ALONE: Duration = Duration::from_millis(300);

/// The deadline beside the busy loops. At the relief level (nice 5 against
/// two busy nice-0 processes per CPU: about 14 % of a CPU) the work took
/// 1-6 s on a 2-core machine at load 6-17; at SCHED_IDLE (the policy
/// without the floor; 0.15 % in theory) it did not finish within 15-20 s in
/// any of four tries.
const DEADLINE: Duration = Duration::from_secs(20);

/// Busy OS processes (`sh -c 'while :; do :; done'`), killed when dropped.
struct BusyLoops(Vec<Child>);

impl BusyLoops {
    fn start(n: usize) -> BusyLoops {
        BusyLoops(
            (0..n)
                .map(|_| {
                    let mut command = Command::new("sh");
                    command
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    // SAFETY: `prctl` is async-signal-safe and touches no
                    // memory. The loop dies with the thread that started it,
                    // even if this test process is killed before the drop.
                    unsafe {
                        command.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                                Ok(())
                            } else {
                                Err(std::io::Error::last_os_error())
                            }
                        });
                    }
                    command.spawn().expect("sh runs")
                })
                .collect(),
        )
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Native work that cannot be optimised away: `rounds` steps of xorshift.
fn work(rounds: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = black_box(x);
    }
    x
}

/// CPU time the calling thread has used. Calibrating on it, not on wall
/// time, keeps the work the same on a machine loaded by other work.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "the thread CPU clock is readable");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Rounds of [`work`] that take about `ALONE` of CPU time.
fn calibrate() -> u64 {
    let mut rounds: u64 = 1 << 20;
    loop {
        let start = thread_cpu();
        black_box(work(rounds));
        let took = thread_cpu() - start;
        if took >= Duration::from_millis(50) {
            return (rounds as f64 * ALONE.as_secs_f64() / took.as_secs_f64()) as u64;
        }
        rounds *= 2;
    }
}

#[test]
fn a_demoted_hog_beside_busy_os_processes_still_finishes_in_time() {
    let rounds = calibrate();
    let cores = thread::available_parallelism().map_or(2, |n| n.get());
    let rt = Runtime::builder().schedulers(2).build().expect("a runtime");
    let loops = 2 * cores;
    let _busy = BusyLoops::start(loops);
    let (done, finished) = mpsc::channel();
    let started = Instant::now();
    rt.handle().spawn(async move {
        let result = work(rounds);
        let _ = done.send(result);
    });
    let outcome = finished.recv_timeout(DEADLINE);
    let took = started.elapsed();
    let threads = rt.handle().runtime_info().threads;
    assert!(
        outcome.is_ok(),
        "work of about {ALONE:?} alone did not finish within {DEADLINE:?} beside {loops} busy \
         loops: its demoted thread starved ({threads:?})"
    );
    // The work ran on a demoted thread, and was starved and relieved: the
    // floor, not luck, got it done.
    assert!(threads.demotions >= 1, "{threads:?}");
    assert!(threads.reliefs >= 1, "{threads:?}");
    eprintln!(
        "work of about {ALONE:?} alone took {took:?} beside {loops} busy loops ({threads:?})"
    );
}
