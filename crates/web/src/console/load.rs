//! The load demo: up to a million worker processes, each doing a small job
//! every second, crashing at a chosen rate and restarted by their
//! supervisors.
//!
//! # Workers and slots
//!
//! Worker `i` runs under shard supervisor `i % SHARDS` (a dynamic
//! supervisor, restart transient: a crash is restarted, a normal exit is
//! not). `slots[i]` says whether worker `i` exists (1) or not (0):
//!
//! * to grow to `n`, a starter stores `target = n`, then for each `i < n`
//!   swaps `slots[i]` 0 → 1 and starts worker `i` if it won;
//! * a worker that wakes up with `i >= target` retires: it stores
//!   `slots[i] = 0`, then reads `target` again, and if the target came back
//!   above `i` meanwhile it tries 0 → 1 itself and goes on if it won.
//!
//! All of it SeqCst, so a grow racing a retirement ends with exactly one
//! worker `i`. Shrinking never waits: workers retire at their next tick
//! (within a second), each in its own process.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ember_otp::dynamic_supervisor::{DynamicSupervisorRef, DynamicSupervisorSpec};
use ember_otp::gen::StartOptions;
use ember_otp::supervisor::{ChildSpec, Flags, Restart, Shutdown, SupervisorSpec};
use ember_runtime::{self_pid, sleep, ExitReason, Spawn};

use super::Console;

/// At most this many workers.
pub(crate) const MAX_WORKERS: usize = 1_000_000;

/// Shard supervisors.
const SHARDS: usize = 16;

/// A starter checks whether its request is still current every this many
/// workers.
const BATCH: usize = 1_000;

/// The load demo's counters and settings, shared by workers, starters and
/// the sampler.
pub(crate) struct LoadShared {
    /// Workers wanted.
    pub(crate) target: AtomicUsize,
    /// Workers alive now.
    pub(crate) live: AtomicUsize,
    /// Jobs done since start.
    pub(crate) jobs: AtomicU64,
    /// Injected crashes since start.
    pub(crate) failures: AtomicU64,
    /// Failure rate in basis points (1/100 of a percent).
    pub(crate) failure_bp: AtomicU32,
    /// Starter processes still running.
    pub(crate) starters: AtomicUsize,
    /// Bumped by every change of the target; starters of an older one stop.
    generation: AtomicU64,
    /// Whether worker `i` exists; allocated on first use.
    slots: OnceLock<Box<[AtomicU8]>>,
}

impl LoadShared {
    pub(crate) fn new() -> LoadShared {
        LoadShared {
            target: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            jobs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            failure_bp: AtomicU32::new(0),
            starters: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            slots: OnceLock::new(),
        }
    }

    fn slots(&self) -> &[AtomicU8] {
        self.slots
            .get_or_init(|| (0..MAX_WORKERS).map(|_| AtomicU8::new(0)).collect())
    }

    /// Worker `i` wants to stop: true if it must, false if the target came
    /// back above it meanwhile and it goes on.
    fn retire(&self, i: usize) -> bool {
        let slot = &self.slots()[i];
        slot.store(0, SeqCst);
        !(i < self.target.load(SeqCst) && slot.compare_exchange(0, 1, SeqCst, SeqCst).is_ok())
    }

    /// Clears the slots of `shard`'s workers: they are gone (their
    /// supervisor was restarted).
    fn forget_workers(&self, shard: usize) {
        if let Some(slots) = self.slots.get() {
            for slot in slots.iter().skip(shard).step_by(SHARDS) {
                slot.store(0, SeqCst);
            }
        }
    }

    /// The failure rate as a percentage.
    pub(crate) fn failure_rate(&self) -> f64 {
        f64::from(self.failure_bp.load(Relaxed)) / 100.0
    }

    /// Sets the failure rate, a percentage from 0 to 100.
    pub(crate) fn set_failure_rate(&self, percent: f64) {
        self.failure_bp
            .store((percent.clamp(0.0, 100.0) * 100.0).round() as u32, Relaxed);
    }
}

/// What a worker starts with; cloned by its supervisor for each restart.
#[derive(Clone)]
struct WorkerArgs {
    index: usize,
    load: Arc<LoadShared>,
}

fn shard_name(console: &Console, shard: usize) -> String {
    console.name(&format!("load_shard_{shard}"))
}

/// The `load_shards` supervisor: `SHARDS` dynamic supervisors of workers.
/// Their restart intensity is effectively unlimited: at a 100% failure rate
/// every worker crashes every second, and that is the point of the demo.
pub(crate) fn shards_child_spec(console: Arc<Console>) -> ChildSpec {
    let shards = (0..SHARDS)
        .map(|shard| {
            let spec = DynamicSupervisorSpec::worker(|args: WorkerArgs| async move {
                Ok(Spawn::new()
                    .link()
                    .label("load worker")
                    .spawn(worker(args))
                    .expect("spawn_link from the supervisor")
                    .pid)
            })
            .restart(Restart::Transient)
            .shutdown(Shutdown::BrutalKill)
            .intensity(u32::MAX)
            .period(Duration::from_secs(1))
            .build()
            .expect("the load shard spec is valid");
            let name = shard_name(&console, shard);
            let console = console.clone();
            // A (re)started shard has no workers: forget the old ones'
            // slots, then start the wanted number of them again.
            ChildSpec::supervisor(format!("load_shard_{shard}"), move || {
                let spec = spec.clone();
                let name = name.clone();
                let console = console.clone();
                async move {
                    console.load.forget_workers(shard);
                    let sup = spec.start_link_with(StartOptions::new().name(name)).await?;
                    let wanted = console.load.target.load(SeqCst);
                    if wanted > 0 {
                        let generation = console.load.generation.load(SeqCst);
                        spawn_starter(&console, shard, wanted, generation);
                    }
                    Ok(sup)
                }
            })
            .build()
            .expect("the load shard child spec is valid")
        })
        .collect();
    SupervisorSpec::new(Flags::new().intensity(5), shards)
        .expect("the load_shards spec is valid")
        .child_spec("load_shards")
        .build()
        .expect("the load_shards child spec is valid")
}

/// Sets the number of workers. Returns at once: one starter process per
/// shard starts the missing workers in the background; surplus workers
/// retire at their next tick. Call from a process.
pub(crate) fn set_workers(console: &Arc<Console>, n: usize) {
    let load = console.load.clone();
    let n = n.min(MAX_WORKERS);
    let generation = load.generation.fetch_add(1, SeqCst) + 1;
    load.target.store(n, SeqCst);
    for shard in 0..SHARDS {
        spawn_starter(console, shard, n, generation);
    }
}

/// Starts the missing workers of `shard` below `n` in a starter process,
/// which stops early when the target's generation moves on.
fn spawn_starter(console: &Arc<Console>, shard: usize, n: usize, generation: u64) {
    let load = console.load.clone();
    let shared = load.clone();
    let sup = DynamicSupervisorRef::<WorkerArgs>::from_name(shard_name(console, shard));
    load.starters.fetch_add(1, SeqCst);
    let started = Spawn::new().label("load starter").spawn(async move {
        let load = shared;
        let _done = StarterGuard(load.clone());
        let slots = load.slots();
        for (k, index) in (shard..n).step_by(SHARDS).enumerate() {
            if k % BATCH == 0 && load.generation.load(SeqCst) != generation {
                return;
            }
            if slots[index].compare_exchange(0, 1, SeqCst, SeqCst).is_err() {
                continue;
            }
            let args = WorkerArgs {
                index,
                load: load.clone(),
            };
            if sup.start_child(args).await.is_err() {
                slots[index].store(0, SeqCst);
            }
        }
    });
    if started.is_err() {
        load.starters.fetch_sub(1, SeqCst);
    }
}

/// Counts a starter out however it ends.
struct StarterGuard(Arc<LoadShared>);

impl Drop for StarterGuard {
    fn drop(&mut self) {
        self.0.starters.fetch_sub(1, SeqCst);
    }
}

/// Counts a worker out however it ends.
struct LiveGuard(Arc<LoadShared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Relaxed);
    }
}

/// A worker: a small job every second, phases spread over the second.
async fn worker(args: WorkerArgs) -> ExitReason {
    let WorkerArgs { index, load } = args;
    load.live.fetch_add(1, Relaxed);
    let _live = LiveGuard(load.clone());
    let me = self_pid();
    let mut rng = Rng::new(((index as u64) << 20) ^ u64::from(me.number()) ^ 0x9e37_79b9);
    sleep(Duration::from_millis(rng.next() % 1000)).await;
    loop {
        if index >= load.target.load(SeqCst) && load.retire(index) {
            return ExitReason::Normal;
        }
        black_box(job(&mut rng));
        if rng.next() % 10_000 < u64::from(load.failure_bp.load(Relaxed)) {
            load.failures.fetch_add(1, Relaxed);
            return ExitReason::error("injected failure");
        }
        load.jobs.fetch_add(1, Relaxed);
        sleep(Duration::from_secs(1)).await;
    }
}

/// The small job: a few hundred rounds of arithmetic.
fn job(rng: &mut Rng) -> u64 {
    (0..256).fold(0u64, |acc, _| acc.wrapping_add(rng.next()))
}

/// xorshift64*: enough randomness for phases and failures.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
