//! The load demo: up to a million worker processes, each doing a small job
//! every second, crashing at a chosen rate and restarted by their
//! supervisors.
//!
//! # Workers, shards and slots
//!
//! Worker `i` runs under shard supervisor `i % SHARDS` (a dynamic
//! supervisor, restart transient: a crash is restarted, a normal exit is
//! not). Each start of a shard supervisor is an *epoch* of that shard
//! (1, 2, ...). `slots[i]` says which epoch's worker `i` holds the slot: 0
//! for none, `e` for a worker started under epoch `e` of its shard. An
//! epoch other than the shard's current one is *stale*: its supervisor is
//! gone, and so are its workers.
//!
//! * To grow to `n`, [`set_workers`] stores `target = n`, bumps the
//!   generation and spawns one starter per shard. A starter, for each `i <
//!   n` of its shard, takes `slots[i]` from 0 or a stale epoch to its epoch
//!   (compare-and-swap) and starts worker `i` if it won. A failed start
//!   gives the slot back (epoch → 0, only if still its own).
//! * A worker that wakes up with `i >= target` retires: it takes its slot
//!   from its epoch to 0 (if that fails, the slot is no longer its own and
//!   it just stops), then reads `target` again, and if the target came back
//!   above `i` meanwhile it takes 0 → its epoch again and goes on if it
//!   won.
//! * A crashed worker keeps its slot: its supervisor restarts it with the
//!   same arguments (same index, same epoch).
//! * When a shard supervisor (re)starts, its start bumps the shard's epoch,
//!   clears the shard's slots (the previous instance's workers died with
//!   it) and spawns a starter for the shard, so a killed shard refills
//!   itself to the target.
//!
//! All of it SeqCst, so a grow racing a retirement ends with exactly one
//! worker `i`. `live` counts the slots held (a worker is live from its
//! start until it retires, including while its supervisor restarts it
//! after a crash: OTP's `count_children` `workers`); `running` counts the
//! worker processes alive at this instant (`active`).
//!
//! # Why the starters and shard supervisors run at high priority
//!
//! A start is a call to the shard supervisor: two trips through the run
//! queue. At a million workers ticking every second the queue holds
//! thousands of runnable workers, so at normal priority each call waited
//! behind them and 62,500 calls in a row per shard took minutes: the live
//! count crawled towards the target and `starting` stayed true. The same
//! wait delayed every restart. Starters and shard supervisors are served
//! first, as high-priority processes are; they only run when there is
//! starting or restarting to do.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use ember_otp::dynamic_supervisor::{DynamicSupervisorRef, DynamicSupervisorSpec};
use ember_otp::gen::StartOptions;
use ember_otp::supervisor::{ChildSpec, Flags, Restart, Shutdown, SupervisorError, SupervisorSpec};
use ember_runtime::{self_pid, set_priority, sleep, ExitReason, Pid, Priority, Spawn};

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
    /// Workers that exist: slots held (running, or being restarted).
    pub(crate) live: AtomicUsize,
    /// Worker processes alive now.
    pub(crate) running: AtomicUsize,
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
    /// Each shard's running supervisor and its epoch (0: none yet).
    shards: Mutex<[(Option<Pid>, u32); SHARDS]>,
    /// Which epoch's worker `i` holds slot `i` (0: none); allocated on
    /// first use.
    slots: OnceLock<Box<[AtomicU32]>>,
}

impl LoadShared {
    pub(crate) fn new() -> LoadShared {
        LoadShared {
            target: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            jobs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            failure_bp: AtomicU32::new(0),
            starters: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            shards: Mutex::new([(None, 0); SHARDS]),
            slots: OnceLock::new(),
        }
    }

    fn slots(&self) -> &[AtomicU32] {
        self.slots
            .get_or_init(|| (0..MAX_WORKERS).map(|_| AtomicU32::new(0)).collect())
    }

    fn shard(&self, shard: usize) -> (Option<Pid>, u32) {
        self.shards.lock().unwrap_or_else(PoisonError::into_inner)[shard]
    }

    /// Takes slot `i` for `epoch` (of shard `i % SHARDS`) if it is free or
    /// stale: true if won.
    fn take(&self, i: usize, epoch: u32) -> bool {
        let slot = &self.slots()[i];
        let mut seen = slot.load(SeqCst);
        loop {
            if seen == epoch || (seen != 0 && seen == self.shard(i % SHARDS).1) {
                return false; // held by a worker of this or a newer epoch
            }
            match slot.compare_exchange(seen, epoch, SeqCst, SeqCst) {
                Ok(_) => {
                    if seen == 0 {
                        self.live.fetch_add(1, SeqCst);
                    }
                    return true;
                }
                Err(now) => seen = now,
            }
        }
    }

    /// Gives slot `i` back if `epoch` still holds it.
    fn release(&self, i: usize, epoch: u32) -> bool {
        let released = self.slots()[i]
            .compare_exchange(epoch, 0, SeqCst, SeqCst)
            .is_ok();
        if released {
            self.live.fetch_sub(1, SeqCst);
        }
        released
    }

    /// Worker `i` of `epoch` wants to stop: true if it must, false if the
    /// target came back above it meanwhile and it goes on.
    fn retire(&self, i: usize, epoch: u32) -> bool {
        if !self.release(i, epoch) {
            return true; // no longer its slot
        }
        if i < self.target.load(SeqCst)
            && self.slots()[i]
                .compare_exchange(0, epoch, SeqCst, SeqCst)
                .is_ok()
        {
            self.live.fetch_add(1, SeqCst);
            return false;
        }
        true
    }

    /// A new instance of `shard`'s supervisor is starting: bumps the epoch
    /// and clears the slots of the previous one (its workers are gone).
    /// Returns the new epoch.
    fn new_epoch(&self, shard: usize) -> u32 {
        let epoch = {
            let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
            shards[shard] = (None, shards[shard].1 + 1);
            shards[shard].1
        };
        // Slots not yet allocated are all free: nothing to clear, and a
        // console whose load is never used never allocates them (a scan of
        // a million slots per shard at every start of the console).
        let Some(slots) = self.slots.get() else {
            return epoch;
        };
        for i in (shard..MAX_WORKERS).step_by(SHARDS) {
            let held = slots[i].load(SeqCst);
            if held != 0
                && held != epoch
                && slots[i].compare_exchange(held, 0, SeqCst, SeqCst).is_ok()
            {
                self.live.fetch_sub(1, SeqCst);
            }
        }
        epoch
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
    /// The worker's number, below [`MAX_WORKERS`] (u32 keeps the arguments,
    /// stored by the supervisor for every worker, at 16 bytes).
    index: u32,
    epoch: u32,
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
                // Runs in the shard supervisor: see "Why the starters and
                // shard supervisors run at high priority".
                set_priority(Priority::High);
                spawn_worker(args)
            })
            .restart(Restart::Transient)
            .shutdown(Shutdown::BrutalKill)
            .intensity(u32::MAX)
            .period(Duration::from_secs(1))
            .build()
            .expect("the load shard spec is valid");
            let name = shard_name(&console, shard);
            let load = console.load.clone();
            ChildSpec::supervisor(format!("load_shard_{shard}"), move || {
                let spec = spec.clone();
                let name = name.clone();
                let load = load.clone();
                async move {
                    let epoch = load.new_epoch(shard);
                    let sup = spec.start_link_with(StartOptions::new().name(name)).await?;
                    if let Some(pid) = sup.pid() {
                        load.shards.lock().unwrap_or_else(PoisonError::into_inner)[shard] =
                            (Some(pid), epoch);
                        let generation = load.generation.load(SeqCst);
                        let target = load.target.load(SeqCst);
                        if target > 0 {
                            spawn_starter(&load, shard, pid, epoch, generation, target);
                        }
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

/// Spawns worker `args.index`, linked to the caller (its shard
/// supervisor). It counts as running from now until its process ends,
/// even if it is killed before it first runs.
fn spawn_worker(args: WorkerArgs) -> Result<Pid, ember_otp::gen::StartError> {
    let load = args.load.clone();
    load.running.fetch_add(1, SeqCst);
    let running = RunningGuard(load);
    let spawned = Spawn::new()
        .link()
        .priority(Priority::Normal)
        .label("load worker")
        .spawn(worker(args, running));
    match spawned {
        Ok(spawned) => Ok(spawned.pid),
        Err(e) => Err(ember_otp::gen::StartError::Failed(ExitReason::error(
            e.to_string(),
        ))),
    }
}

/// Sets the number of workers. Returns at once: one starter process per
/// shard starts the missing workers in the background; surplus workers
/// retire at their next tick. Call from a process.
pub(crate) fn set_workers(console: &Arc<Console>, n: usize) {
    let load = &console.load;
    let n = n.min(MAX_WORKERS);
    let generation = load.generation.fetch_add(1, SeqCst) + 1;
    load.target.store(n, SeqCst);
    for shard in 0..SHARDS {
        // A shard that is restarting has no pid yet: its start spawns its
        // starter, with the target stored above.
        if let (Some(pid), epoch) = load.shard(shard) {
            spawn_starter(load, shard, pid, epoch, generation, n);
        }
    }
}

/// Spawns the process that starts the missing workers of `shard` (epoch
/// `epoch`, supervisor `pid`) up to `n`, until the generation changes.
fn spawn_starter(
    load: &Arc<LoadShared>,
    shard: usize,
    pid: Pid,
    epoch: u32,
    generation: u64,
    n: usize,
) {
    let load = load.clone();
    load.starters.fetch_add(1, SeqCst);
    let done = StarterGuard(load.clone());
    let started = Spawn::new()
        .priority(Priority::High)
        .label("load starter")
        .spawn(async move {
            let _done = done;
            let sup = DynamicSupervisorRef::<WorkerArgs>::from_pid(pid);
            for (k, index) in (shard..n).step_by(SHARDS).enumerate() {
                if k % BATCH == 0 && load.generation.load(SeqCst) != generation {
                    return;
                }
                if !load.take(index, epoch) {
                    continue;
                }
                let args = WorkerArgs {
                    index: index as u32,
                    epoch,
                    load: load.clone(),
                };
                match sup.start_child(args).await {
                    Ok(_) => {}
                    Err(SupervisorError::Call(_)) => {
                        // This instance of the shard is gone: its restart
                        // clears its slots and starts a starter of its own.
                        load.release(index, epoch);
                        return;
                    }
                    Err(_) => {
                        load.release(index, epoch);
                    }
                }
            }
        });
    // On a failed spawn the body (and the guard in it) is dropped.
    let _ = started;
}

/// Counts a starter out however it ends.
struct StarterGuard(Arc<LoadShared>);

impl Drop for StarterGuard {
    fn drop(&mut self) {
        self.0.starters.fetch_sub(1, SeqCst);
    }
}

/// Counts a worker process out however it ends.
struct RunningGuard(Arc<LoadShared>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

/// A worker: a small job every second, phases spread over the second.
/// `_running` counts it out when its future is dropped. Its future is kept
/// small (it is most of what a sleeping worker's body holds): the guard is
/// a parameter rather than captured by a wrapping `async` block, which
/// would store it and this future twice.
async fn worker(args: WorkerArgs, _running: RunningGuard) -> ExitReason {
    let WorkerArgs { index, epoch, load } = args;
    let index = index as usize;
    let mut rng = Rng::new(((index as u64) << 20) ^ u64::from(self_pid().number()) ^ 0x9e37_79b9);
    sleep(Duration::from_millis(rng.next() % 1000)).await;
    loop {
        if index >= load.target.load(SeqCst) && load.retire(index, epoch) {
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

#[cfg(test)]
mod tests {
    //! The slot protocol's races, each side made to act at the same moment
    //! (a spin gate on two threads), thousands of times, checking after
    //! each round that worker `I` exists exactly once and `live` agrees.

    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Two threads meet at each point `n`, both spinning.
    struct SpinGate(AtomicUsize);

    impl SpinGate {
        fn wait(&self, n: usize) {
            self.0.fetch_add(1, SeqCst);
            while self.0.load(SeqCst) < 2 * n {
                std::hint::spin_loop();
            }
        }
    }

    const ROUNDS: usize = 2_000;
    /// A worker of shard 3.
    const I: usize = 3 + SHARDS;

    fn set_epoch(load: &LoadShared, epoch: u32) {
        load.shards.lock().unwrap()[I % SHARDS] = (None, epoch);
    }

    /// Runs `rounds` rounds: `reset` then, at once, `a` on this thread and
    /// `b` on another, then `check` with both outcomes.
    fn race<A, B>(
        rounds: usize,
        load: &LoadShared,
        reset: impl Fn(&LoadShared),
        a: impl Fn(&LoadShared) -> A,
        b: impl Fn(&LoadShared) -> B + Sync,
        mut check: impl FnMut(&LoadShared, A, B),
    ) where
        B: Send,
    {
        let gate = SpinGate(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                for round in 0..rounds {
                    gate.wait(3 * round + 1);
                    gate.wait(3 * round + 2);
                    tx.send(b(load)).unwrap();
                    gate.wait(3 * round + 3);
                }
            });
            for round in 0..rounds {
                reset(load);
                gate.wait(3 * round + 1);
                gate.wait(3 * round + 2);
                let a = a(load);
                gate.wait(3 * round + 3);
                check(load, a, rx.recv().unwrap());
            }
        });
    }

    #[test]
    fn a_retiring_worker_racing_a_grow_leaves_exactly_one_worker() {
        let load = LoadShared::new();
        set_epoch(&load, 1);
        let (mut worker_went_on, mut starter_started) = (0, 0);
        race(
            ROUNDS,
            &load,
            |load| {
                // Worker I exists; the target was just lowered below it.
                load.target.store(0, SeqCst);
                load.slots()[I].store(1, SeqCst);
                load.live.store(1, SeqCst);
            },
            |load| !load.retire(I, 1),
            |load| {
                load.target.store(I + 1, SeqCst);
                load.take(I, 1)
            },
            |load, went_on, started| {
                assert_eq!(
                    usize::from(went_on) + usize::from(started),
                    1,
                    "worker went on: {went_on}, starter started one: {started}"
                );
                assert_eq!(load.slots()[I].load(SeqCst), 1);
                assert_eq!(load.live.load(SeqCst), 1);
                worker_went_on += usize::from(went_on);
                starter_started += usize::from(started);
            },
        );
        println!(
            "retire vs grow, {ROUNDS} rounds: the worker went on {worker_went_on} times, \
             the starter started it again {starter_started} times"
        );
    }

    #[test]
    fn a_stale_starter_racing_a_restarted_shard_never_takes_the_slot() {
        let load = LoadShared::new();
        let (mut stale_took, mut new_took) = (0, 0);
        // Fewer rounds: each restart sweeps the shard's 62,500 slots.
        race(
            ROUNDS / 4,
            &load,
            |load| {
                // Epoch 1 of the shard died with worker I's slot free; its
                // starter is still running.
                set_epoch(load, 1);
                load.slots()[I].store(0, SeqCst);
                load.live.store(0, SeqCst);
            },
            |load| {
                // The old starter: its start fails, it gives the slot back.
                let took = load.take(I, 1);
                if took {
                    load.release(I, 1);
                }
                took
            },
            |load| {
                // The shard's restart and its new starter.
                let epoch = load.new_epoch(I % SHARDS);
                assert_eq!(epoch, 2);
                load.take(I, epoch)
            },
            |load, stale, new| {
                assert!(new, "the new starter always gets the slot");
                assert_eq!(load.slots()[I].load(SeqCst), 2);
                assert_eq!(load.live.load(SeqCst), 1);
                stale_took += usize::from(stale);
                new_took += usize::from(new);
            },
        );
        println!(
            "stale starter vs shard restart, {} rounds: the stale starter took the \
             slot (and gave it back) {stale_took} times, the new one {new_took} times",
            ROUNDS / 4
        );
    }
}
