//! The scheduler's settings: [`Preemption`], the knobs of the preemption
//! machinery (cooperative slices, the watchdog's thresholds, demotion,
//! slices and thread ceilings), with their measured defaults.

use std::time::Duration;

/// Settings of the preemption machinery, with measured defaults
/// (`bench/run responsiveness`; `docs/semantics.md`, "Preemption").
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Preemption {
    /// Run the watchdog at all (default true). Without it a process that
    /// never awaits holds its scheduler until it returns.
    pub enabled: bool,
    /// How long a cooperative slice lasts at most: a process reaching an
    /// await point (`receive`, `yield_point`) after this long in one poll
    /// yields, even with reductions left (default 1 ms).
    pub slice: Duration,
    /// How often the watchdog looks while polls run and for 100 ms after the
    /// last one started (default 1 ms); it also looks when a running poll
    /// will reach [`Preemption::cpu_threshold`], if that is sooner.
    pub watchdog_period: Duration,
    /// CPU time in one poll after which its slot is handed off and its thread
    /// demoted (default 2 ms).
    pub cpu_threshold: Duration,
    /// Wall time in one poll, with little CPU and its thread asleep, after
    /// which its slot is handed off without demotion (default 15 ms).
    pub blocked_threshold: Duration,
    /// CPU time in one poll after which its slot is handed off, without
    /// demotion, if other processes wait for that slot (its own queue or
    /// the injector; default 1.25 ms: the cooperative [`Preemption::slice`]
    /// and a quarter). A process that awaits has yielded by then; one that
    /// computes natively keeps running on its thread while the waiting work
    /// runs on a spare, and is demoted only if it reaches
    /// [`Preemption::cpu_threshold`]. A value at or above `cpu_threshold`
    /// turns it off.
    pub contended_threshold: Duration,
    /// Nice value reached once a poll has used the given CPU time; the first
    /// step applies at hand-off (default: 5 at once, 19 after 20 ms of CPU).
    /// Values are steps above the nice value of the thread that built the
    /// runtime, as with `nice -n` (a node started at nice -10 demotes to
    /// -5), clamped to 19; 19 itself is the last step (SCHED_IDLE below).
    /// A request of up to 20 ms thus gets a third of a scheduler thread's
    /// weight but over 100 times a long hog's (SCHED_IDLE, below), so with
    /// hogs on its core it takes about as long as on its own.
    pub demotion: Vec<(Duration, i32)>,
    /// Use SCHED_IDLE for the last (nice 19) step (default true): any other
    /// thread that wakes preempts it at once, and it weighs 3 against 15 at
    /// nice 19. Alone it would leave a demoted thread 0.3 % of a CPU that
    /// another busy process wants; the starvation floor below bounds that.
    pub sched_idle: bool,
    /// The window over which the watchdog measures the node's CPU time (its
    /// workers' thread CPU clocks, already read at every look; default
    /// 100 ms). See [`Preemption::starvation_floor`].
    pub starvation_window: Duration,
    /// The starvation floor: CPU time the node's worker threads together
    /// must get per [`Preemption::starvation_window`] while a demoted thread
    /// has been inside one poll that long (default 5 ms, 5 % of a CPU). A
    /// node that got less is starved by other OS processes, and its demoted
    /// threads are raised to [`Preemption::relief_nice`] for the next
    /// window. They go back down their ladder after a window in which the
    /// node's normal workers used at least the floor (there is something in
    /// the node to protect); with the node otherwise idle they stay relieved.
    /// Bound: over any two consecutive windows in which a demoted thread
    /// wants the CPU, the node gets at least the floor or its demoted
    /// threads' share at the relief level, whichever is less, for one window
    /// (docs/semantics.md, "Preemption"). Hogs sharing the CPU among
    /// themselves, or with the node's own workers, are not starved. Zero
    /// disables the floor.
    pub starvation_floor: Duration,
    /// The nice value starved demoted threads are raised to (default 5, the
    /// first step; steps above the node's own nice value, as in
    /// [`Preemption::demotion`]: against one busy thread at the node's nice
    /// value on its CPU a hog gets about 25 % of that CPU instead of 0.3 %). Raising a priority needs
    /// CAP_SYS_NICE or an RLIMIT_NICE of at least `20 - relief_nice`; the
    /// runtime probes that once, and without it no demotion goes past this
    /// level (no SCHED_IDLE), so the floor holds with no raise at all.
    pub relief_nice: i32,
    /// EEVDF time slice the watchdog and the workers ask for (default 0.1 ms,
    /// the kernel's minimum; zero leaves the kernel's default, 1.4 ms on two
    /// CPUs). A waking worker then preempts a demoted or longer-sliced thread
    /// at once instead of at the next tick, and wins deadline races against a
    /// hog just demoted. The cost: next to other busy nice-0 threads on the
    /// same core, a worker's long poll is cut into shorter turns.
    pub thread_slice: Duration,
    /// EEVDF time slice demoted threads (hogs, background workers) ask for
    /// (default 10 ms; zero leaves the kernel's default). Any thread with a
    /// shorter slice that wakes preempts them at once; their share of the CPU
    /// is still set by [`Preemption::demotion`].
    pub demoted_slice: Duration,
    /// Normal-priority workers kept ready for hand-offs (default 1).
    pub spare_threads: usize,
    /// Worker count past which new threads are started slowly, with a log
    /// line (default 64).
    pub soft_thread_limit: usize,
    /// Worker count never exceeded (default 1024).
    pub hard_thread_limit: usize,
    /// How long an idle background or surplus spare worker lingers before its
    /// thread exits (default 1 s).
    pub background_idle: Duration,
}

impl Default for Preemption {
    fn default() -> Self {
        Preemption {
            enabled: true,
            slice: Duration::from_millis(1),
            watchdog_period: Duration::from_millis(1),
            cpu_threshold: Duration::from_millis(2),
            blocked_threshold: Duration::from_millis(15),
            contended_threshold: Duration::from_micros(1250),
            demotion: vec![(Duration::ZERO, 5), (Duration::from_millis(20), 19)],
            sched_idle: true,
            starvation_window: Duration::from_millis(100),
            starvation_floor: Duration::from_millis(5),
            relief_nice: 5,
            thread_slice: Duration::from_micros(100),
            demoted_slice: Duration::from_millis(10),
            spare_threads: 1,
            soft_thread_limit: 64,
            hard_thread_limit: 1024,
            background_idle: Duration::from_secs(1),
        }
    }
}

impl Preemption {
    /// The nice value for a poll that has used `cpu` so far.
    pub(crate) fn nice_for(&self, cpu: Duration) -> i32 {
        self.demotion
            .iter()
            .filter(|(after, _)| cpu >= *after)
            .map(|(_, nice)| *nice)
            .max()
            .unwrap_or(0)
    }

    /// The priority background workers start at: the last step.
    pub(crate) fn background_nice(&self) -> i32 {
        self.demotion
            .iter()
            .map(|(_, nice)| *nice)
            .max()
            .unwrap_or(19)
    }
}
