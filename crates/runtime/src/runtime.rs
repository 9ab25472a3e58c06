//! The runtime: its threads, its shared state, and the [`Handle`] through
//! which code outside processes talks to it.
//!
//! A runtime runs one scheduler thread per slot (one per core by default),
//! which also service their slot's timers (`crate::timer`) and poll the
//! reactor (`crate::net`). Processes can await tokio-based futures (sockets,
//! tokio timers, hyper) unchanged: every scheduler thread has entered a tokio
//! runtime's context, tokio's wake-ups arrive through the process's waker
//! like any other, and tokio's driver thread starts when a process first
//! needs it ([`tokio_driver`]).

use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::context;
use crate::mailbox::Envelope;
use crate::net::reactor::Reactor;
use crate::pid::{Pid, Ref};
use crate::process::Process;
use crate::reason::{ExitReason, IntoExitReason};
use crate::scheduler::{self, Preemption, Scheduler};
use crate::spawn::{Spawn, SpawnError, Spawned};
use crate::timer::Timers;

/// Hashes process-table keys (sequential integers), and the pids and
/// references of link sets and monitor maps, by Fibonacci multiplication.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

mod pid_table;
pub(crate) mod tokio_driver;

/// The process table: local pid key → process (`pid_table`).
pub(crate) type ProcessTable = pid_table::PidTable<Arc<Process>>;

/// Processes killed inside a poll, by pid key, until that poll returns.
pub(crate) type ZombieTable = DashMap<u64, Arc<Process>, BuildHasherDefault<KeyHasher>>;

/// State shared by every thread and process of one runtime.
pub(crate) struct Shared {
    pub(crate) table: ProcessTable,
    pub(crate) names: DashMap<Arc<str>, Pid>,
    next_pid: AtomicU64,
    next_ref: AtomicU64,
    pub(crate) sched: Scheduler,
    /// Processes killed while inside a poll, until that poll returns.
    pub(crate) zombies: ZombieTable,
    /// Entries in `zombies`, so that dropping a body (`forget_zombie`)
    /// costs one load when there are none, rather than a look at every
    /// shard of the map.
    pub(crate) zombie_count: AtomicUsize,
    pub(crate) timers: Timers,
    /// tokio's runtime, driven once a process needs it (`tokio_driver`).
    pub(crate) tokio: Option<tokio_driver::TokioDriver>,
    /// The default group leader and its stdout thread (`crate::io`).
    pub(crate) io: crate::io::NodeIo,
    /// Process aliases by reference id (`crate::alias`).
    pub(crate) aliases: DashMap<u64, crate::alias::AliasEntry>,
    /// The distribution state, once the runtime is a node (`crate::dist`).
    pub(crate) dist: parking_lot::RwLock<Option<Arc<crate::dist::DistState>>>,
    /// The last processes killed over their memory limit (`crate::memory`).
    pub(crate) memory_kills: crate::memory::MemoryKills,
}

impl Shared {
    /// The live local process behind `pid`.
    pub(crate) fn lookup(&self, pid: Pid) -> Option<Arc<Process>> {
        if !pid.is_local() {
            return None;
        }
        self.table.with(pid.key(), Arc::clone)
    }

    pub(crate) fn next_pid(&self) -> Pid {
        Pid::local(self.next_pid.fetch_add(1, Ordering::Relaxed))
    }

    /// Forgets a process killed inside a poll, once its body is dropped.
    pub(crate) fn forget_zombie(&self, process: &Process) {
        if self.zombie_count.load(Ordering::SeqCst) > 0
            && self.zombies.remove(&process.pid.key()).is_some()
        {
            self.zombie_count.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A process's waker was cloned: code outside Ember may wake it later,
    /// perhaps from tokio's driver, which must then run (`tokio_driver`).
    /// One load once it runs.
    pub(crate) fn waker_kept(&self) {
        if let Some(driver) = self.tokio.as_ref().filter(|d| !d.is_started()) {
            self.start_tokio(driver);
        }
    }

    /// Starts tokio's driver thread from this thread if it runs at the
    /// runtime's own priority (the new thread inherits it); else, from a
    /// demoted worker, asks the watchdog to, at its next look.
    #[cold]
    fn start_tokio(&self, driver: &tokio_driver::TokioDriver) {
        if self.at_base_priority() {
            driver.start();
        } else if driver.request_start() {
            self.sched.doze.wake_if_dozing();
        }
    }

    /// Starts tokio's driver if it was asked for from a demoted thread or if
    /// tokio tasks wait for it (`tokio_driver`): when a slot's worker is
    /// about to park, if it runs at the runtime's own priority, and at the
    /// watchdog's looks (`from_watchdog`: whatever its priority, the last
    /// resort).
    pub(crate) fn start_tokio_if_needed(&self, from_watchdog: bool) {
        if let Some(driver) = &self.tokio {
            if driver.needs_start() && (from_watchdog || self.at_base_priority()) {
                driver.start();
            }
        }
    }

    /// Whether the calling thread runs at the runtime's own priority (a
    /// thread it creates inherits it).
    fn at_base_priority(&self) -> bool {
        scheduler::os::runs_at_nice(self.sched.base_nice)
    }

    pub(crate) fn make_ref(&self) -> Ref {
        Ref::local(self.next_ref.fetch_add(1, Ordering::Relaxed))
    }
}

/// Configures and builds a [`Runtime`].
#[derive(Clone, Debug)]
pub struct Builder {
    schedulers: usize,
    tokio: bool,
    preemption: Preemption,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            schedulers: thread::available_parallelism().map_or(1, |n| n.get()),
            tokio: true,
            preemption: Preemption::default(),
        }
    }
}

impl Builder {
    /// Default settings: one scheduler per core, tokio I/O enabled.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Number of scheduler threads (at least 1).
    pub fn schedulers(mut self, n: usize) -> Builder {
        self.schedulers = n.max(1);
        self
    }

    /// Whether processes can await tokio futures (on by default). tokio's
    /// I/O and time drivers then run on one thread, started when a process
    /// first needs them: a runtime that never uses tokio has no such
    /// thread.
    pub fn enable_tokio(mut self, on: bool) -> Builder {
        self.tokio = on;
        self
    }

    /// Settings of the watchdog and of thread demotion (see [`Preemption`]).
    pub fn preemption(mut self, preemption: Preemption) -> Builder {
        self.preemption = preemption;
        self
    }

    /// Starts the runtime's threads.
    pub fn build(self) -> io::Result<Runtime> {
        scheduler::install_panic_hook();
        let tokio = if self.tokio {
            Some(tokio_driver::TokioDriver::new()?)
        } else {
            None
        };
        let sched = Scheduler::new(self.schedulers, self.preemption, Arc::new(Reactor::new()?));
        let timers = Timers::new(self.schedulers, sched.started);
        let shared = Arc::new(Shared {
            table: ProcessTable::default(),
            names: DashMap::new(),
            next_pid: AtomicU64::new(1),
            next_ref: AtomicU64::new(1),
            sched,
            zombies: DashMap::default(),
            zombie_count: AtomicUsize::new(0),
            timers,
            tokio,
            io: crate::io::NodeIo::default(),
            aliases: DashMap::new(),
            dist: parking_lot::RwLock::new(None),
            memory_kills: Default::default(),
        });
        let threads = Scheduler::start(&shared)?;
        // The default group leader, `user`, as Erlang's kernel starts it.
        shared.io.default_group_leader(&shared);
        Ok(Runtime {
            handle: Handle { shared },
            threads,
        })
    }
}

/// An Ember runtime: schedulers, timers, I/O. Dropping it stops every process.
///
/// ```
/// let rt = ember_runtime::Runtime::new().unwrap();
/// let answer = rt.block_on(async {
///     let me = ember_runtime::self_pid();
///     ember_runtime::spawn(async move { ember_runtime::send(me, 42u64) });
///     ember_runtime::receive::<u64>().await
/// });
/// assert_eq!(answer, 42);
/// ```
pub struct Runtime {
    handle: Handle,
    threads: Vec<JoinHandle<()>>,
}

impl Runtime {
    /// A runtime with default settings.
    pub fn new() -> io::Result<Runtime> {
        Builder::new().build()
    }

    /// A [`Builder`] for custom settings.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A cloneable handle for use from any thread.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `body` as a process and blocks the calling thread until it
    /// finishes, returning its output.
    ///
    /// # Panics
    ///
    /// If that process panics or is killed before producing its output.
    pub fn block_on<F>(&self, body: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let pid = self
            .handle
            .spawn_with(Spawn::new().label("block_on"), async move {
                let _ = tx.send(body.await);
            })
            .map(|s| s.pid);
        match rx.recv() {
            Ok(output) => output,
            Err(_) => panic!(
                "ember: the block_on process {pid:?} exited before finishing (it panicked or was killed)"
            ),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let shared = &self.handle.shared;
        shared.sched.shut_down();
        shared.timers.shut_down();
        let mut threads: Vec<JoinHandle<()>> = self.threads.drain(..).collect();
        threads.extend(shared.sched.workers.take_handles());
        // A worker stuck in native code cannot be stopped: wait a little,
        // then leave it (and the process it polls) behind.
        let deadline = Instant::now() + Duration::from_secs(1);
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        // Every process dies with the runtime; bodies are dropped in their own
        // context, while tokio's drivers still run, and send nothing more.
        // Each body is dropped by exactly one party (`process::state`, "Who
        // drops the body"): here if the process is parked, by whoever holds
        // its `SCHEDULED` ticket if queued (below, the queues are drained
        // with their tickets), or by the thread still inside its poll — a
        // worker stuck in native code that the wait above gave up on — when
        // that poll returns.
        let processes: Vec<Arc<Process>> = shared.table.take_all();
        shared.names.clear();
        for process in &processes {
            process.begin_exit();
        }
        for process in &processes {
            crate::process::tear_down(process, None);
        }
        drop(processes);
        shared.sched.drop_queued();
        if let Some(driver) = &shared.tokio {
            driver.shut_down();
        }
        // What tokio's driver woke until it stopped.
        shared.sched.drop_queued();
        // `user` is gone: its stdout thread writes what is queued, then ends.
        shared.io.shut_down();
    }
}

/// A cloneable reference to a runtime, for code outside processes (a main
/// thread, a test, another runtime's thread). Inside a process use the free
/// functions ([`spawn`](crate::spawn), [`send`](crate::send), …) instead.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    /// The handle of the runtime the calling process or scheduler runs on.
    ///
    /// # Panics
    ///
    /// Outside an Ember runtime.
    pub fn current() -> Handle {
        context::with_runtime("Handle::current", |rt| Handle { shared: rt.clone() })
    }

    /// Spawns a process (no parent: it cannot be linked or monitored from here).
    pub fn spawn<F>(&self, body: F) -> Pid
    where
        F: Future + Send + 'static,
        F::Output: IntoExitReason,
    {
        match self.spawn_with(Spawn::new(), body) {
            Ok(spawned) => spawned.pid,
            Err(_) => unreachable!("a spawn without name, link or monitor cannot fail"),
        }
    }

    /// Spawns a process with options; `link` and `monitor` fail with
    /// [`SpawnError::NoParent`] from outside a process.
    pub fn spawn_with<F>(&self, options: Spawn, body: F) -> Result<Spawned, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: IntoExitReason,
    {
        self.shared.spawn_with(options, None, body)
    }

    /// Sends a message to a process (dropped if it is dead).
    pub fn send<M: Send + 'static>(&self, to: Pid, message: M) {
        self.shared.send_envelope(to, Envelope::new(message));
    }

    /// Sends an exit signal, as [`exit`](crate::exit) does from a process. It
    /// comes from [`Pid::OUTSIDE`], so `normal` is ignored unless the target
    /// traps exits, exactly as when another process sends it.
    pub fn exit(&self, pid: Pid, reason: ExitReason) {
        self.shared.exit_signal(Pid::OUTSIDE, pid, reason);
    }

    /// Whether `pid` is alive.
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.shared.lookup(pid).is_some_and(|p| !p.is_exiting())
    }

    /// The pid registered under `name`.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.shared.whereis(name)
    }

    /// Sets how many schedulers are online, from 1 to the number started;
    /// returns the previous count. Work on schedulers taken offline moves to
    /// the others.
    pub fn set_schedulers_online(&self, n: usize) -> usize {
        self.shared.sched.set_online(n)
    }

    /// Number of schedulers online.
    pub fn schedulers_online(&self) -> usize {
        self.shared.sched.online()
    }
}

/// Whether `pid` is alive (Erlang's `is_process_alive/1`).
pub fn is_alive(pid: Pid) -> bool {
    context::with_runtime("is_alive", |rt| {
        rt.lookup(pid).is_some_and(|p| !p.is_exiting())
    })
}

/// Whether the calling process has been terminated (killed, or exited) while
/// it runs: a long computation that never awaits should check this now and
/// then and return early, since a terminated process is already dead for
/// everyone else and its work is wasted (like `enif_is_current_process_alive`).
/// Outside a process it returns false.
pub fn should_stop() -> bool {
    context::try_with_current(|p| p.is_exiting()).unwrap_or(false)
}

/// Creates a runtime-unique reference (Erlang's `make_ref/0`).
pub fn make_ref() -> Ref {
    context::with_runtime("make_ref", |rt| rt.make_ref())
}

/// Ends the calling process with `reason` (Erlang's `exit/1`). The returned
/// future never completes: the process is terminated at once, its links and
/// monitors fire, and its body is dropped when this poll returns.
pub async fn exit_self(reason: ExitReason) {
    context::with_current("exit_self", |me| crate::signal::terminate(me, reason));
    std::future::pending::<()>().await;
}
