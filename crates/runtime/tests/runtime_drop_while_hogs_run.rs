//! Dropping a runtime while processes run native code that never awaits
//! (docs/semantics.md §16; docs/architecture.md, "Who drops a body"): a body
//! still inside a poll on a thread the drop gave up on is left to that
//! thread, which drops it when the poll returns; every other body is dropped
//! by the runtime. No body is dropped while it runs, none twice, none lost.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ember_runtime::{receive, self_pid, send, spawn, Runtime};

use support::{CpuLoad, Never};

/// What the bodies of one round report.
#[derive(Default)]
struct Probe {
    /// Hogs inside their poll right now.
    inside: AtomicUsize,
    /// Bodies dropped while their hog was inside its poll (must stay 0).
    dropped_while_running: AtomicUsize,
    /// Bodies dropped, of every kind.
    drops: AtomicUsize,
    /// Hog bodies dropped.
    hog_drops: AtomicUsize,
    /// Parked bodies dropped.
    parked_drops: AtomicUsize,
    /// Polls the parked processes started (each polls once, then waits).
    parked_polls: AtomicUsize,
    /// Hogs spin until this is set.
    release: AtomicBool,
}

/// Lives in a body; counts its drop, and whether its hog was still running.
struct Canary {
    probe: Arc<Probe>,
    hog: Option<Arc<AtomicBool>>,
    parked: bool,
}

impl Drop for Canary {
    fn drop(&mut self) {
        if self.hog.as_ref().is_some_and(|h| h.load(Ordering::SeqCst)) {
            self.probe
                .dropped_while_running
                .fetch_add(1, Ordering::SeqCst);
        }
        if self.hog.is_some() {
            self.probe.hog_drops.fetch_add(1, Ordering::SeqCst);
        }
        if self.parked {
            self.probe.parked_drops.fetch_add(1, Ordering::SeqCst);
        }
        self.probe.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Spins on the CPU for `d`, or until `release` is set when `d` is `None`.
fn spin(probe: &Probe, d: Option<Duration>) {
    let start = Instant::now();
    loop {
        match d {
            Some(d) if start.elapsed() >= d => return,
            None if probe.release.load(Ordering::SeqCst) => return,
            _ => std::hint::spin_loop(),
        }
    }
}

/// One round: `stuck` hogs that outlive the drop, `short` hogs that finish at
/// scattered moments around it, `parked` processes waiting for a message and
/// `busy` ones passing messages (queued at the drop). Drops the runtime, then
/// releases the stuck hogs and waits until every body was dropped once.
/// Returns how many hogs were still running when the drop returned.
fn round(n: usize, stuck: usize, short: usize, parked: usize) -> usize {
    let probe = Arc::new(Probe::default());
    let rt = Runtime::builder().schedulers(2).build().expect("a runtime");
    let bodies = stuck + short + parked + 2;
    rt.block_on({
        let probe = probe.clone();
        async move {
            let me = self_pid();
            for i in 0..stuck + short {
                let probe = probe.clone();
                let hog = Arc::new(AtomicBool::new(false));
                // Short hogs end between 0 and about 1.3 s: some before the
                // drop, some during its wait, some after it gave up.
                let d =
                    (i >= stuck).then(|| Duration::from_millis(((n * 7 + i * 131) % 1300) as u64));
                // Captured, not created inside: a body dropped in the middle
                // of its first poll drops its captures but not its locals.
                let canary = Canary {
                    probe: probe.clone(),
                    hog: Some(hog.clone()),
                    parked: false,
                };
                spawn(async move {
                    let _canary = &canary;
                    hog.store(true, Ordering::SeqCst);
                    probe.inside.fetch_add(1, Ordering::SeqCst);
                    send(me, ());
                    spin(&probe, d);
                    probe.inside.fetch_sub(1, Ordering::SeqCst);
                    hog.store(false, Ordering::SeqCst);
                    // Then wait like any process: the drop must reach it.
                    receive::<Never>().await;
                });
            }
            for _ in 0..parked {
                let probe = probe.clone();
                // Captured, as every canary here: a body dropped before its
                // first poll (starved schedulers) has no locals yet.
                let canary = Canary {
                    probe,
                    hog: None,
                    parked: true,
                };
                spawn(async move {
                    let canary = &canary;
                    canary.probe.parked_polls.fetch_add(1, Ordering::SeqCst);
                    receive::<Never>().await;
                });
            }
            // Two processes ping-ponging for ever: queued or running at the drop.
            let canary = Canary {
                probe: probe.clone(),
                hog: None,
                parked: false,
            };
            let a = spawn(async move {
                let _canary = &canary;
                loop {
                    let peer = receive::<ember_runtime::Pid>().await;
                    send(peer, self_pid());
                }
            });
            let canary = Canary {
                probe: probe.clone(),
                hog: None,
                parked: false,
            };
            spawn(async move {
                let _canary = &canary;
                send(a, self_pid());
                loop {
                    let peer = receive::<ember_runtime::Pid>().await;
                    send(peer, self_pid());
                }
            });
            for _ in 0..stuck + short {
                receive::<()>()
                    .timeout(Duration::from_secs(30))
                    .await
                    .expect("every hog started within 30 s");
            }
        }
    });
    let parked_polls = probe.parked_polls.load(Ordering::SeqCst);
    drop(rt);
    let running_at_drop = probe.inside.load(Ordering::SeqCst);
    probe.release.store(true, Ordering::SeqCst);
    // The stuck hogs' threads drop their bodies when their polls return.
    let deadline = Instant::now() + Duration::from_secs(60);
    while probe.drops.load(Ordering::SeqCst) < bodies && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        probe.dropped_while_running.load(Ordering::SeqCst),
        0,
        "round {n}: a body was dropped while its poll ran"
    );
    let drops = probe.drops.load(Ordering::SeqCst);
    if drops != bodies {
        // Which of the runtime's threads are still there, and how they run.
        eprintln!("round {n}: threads of this test binary now:\n{}", threads());
    }
    assert_eq!(
        drops,
        bodies,
        "round {n}: every body is dropped exactly once, within 60 s ({} of {} hogs, \
         {} of {parked} parked ones, of which {parked_polls} had started before the drop)",
        probe.hog_drops.load(Ordering::SeqCst),
        stuck + short,
        probe.parked_drops.load(Ordering::SeqCst),
    );
    running_at_drop
}

/// Every thread of this process: name, state and scheduling policy, from
/// `/proc` (for a failure's message).
fn threads() -> String {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return "(no /proc)".into();
    };
    let mut lines = Vec::new();
    for task in tasks.flatten() {
        let path = task.path();
        let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap_or_default();
        let stat = read("stat");
        // `pid (comm) state …`: the state follows the last parenthesis.
        let state = stat.rsplit_once(") ").map_or("?", |(_, rest)| &rest[..1]);
        let policy = read("sched")
            .lines()
            .find(|l| l.starts_with("policy"))
            .and_then(|l| l.split(':').nth(1))
            .map(|p| p.trim().to_string())
            .unwrap_or_default();
        lines.push(format!(
            "  {} {} state {state} policy {policy}",
            task.file_name().to_string_lossy(),
            read("comm").trim()
        ));
    }
    lines.join("\n")
}

// §16: a runtime dropped while hogs run leaves each hog's body to its thread.
#[test]
fn dropping_a_runtime_while_native_hogs_run_never_drops_a_running_body() {
    support::quiet_intentional_panics();
    let mut running = 0;
    const ROUNDS: usize = 4;
    for n in 0..ROUNDS {
        running += round(n, 2, 3, 3);
    }
    println!("{ROUNDS} rounds; hogs still running when the drop returned: {running}");
    assert!(running >= 2 * ROUNDS, "the stuck hogs outlived every drop");
}

// The same while a CPU hog outside the runtime competes for every core, so
// demoted hog threads (nice 19, SCHED_IDLE) may not run within the drop's
// wait at all.
#[test]
fn dropping_a_runtime_while_starved_hogs_run_never_drops_a_running_body() {
    let _load = CpuLoad::start(2);
    let mut running = 0;
    const ROUNDS: usize = 4;
    for n in 0..ROUNDS {
        running += round(n, 2, 3, 3);
    }
    println!("{ROUNDS} rounds under a competing load; hogs still running when the drop returned: {running}");
    assert!(running >= 2 * ROUNDS, "the stuck hogs outlived every drop");
}
