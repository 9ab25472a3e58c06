//! Races between link operations and deaths, each made to happen: a
//! process (on a scheduler thread) and a killer (a plain thread sending exit
//! signals through a `Handle`) meet at a spin gate and act at the same
//! instant, 2,000 times per race. One side is delayed by an offset that
//! follows the outcomes ([`Seesaw`]), so that most rounds land where the two
//! operations collide and each side wins about half of them. Each test
//! prints how often each side won (`--nocapture`), so a pass shows that the
//! race was exercised, and asserts the Erlang outcome in every round. See
//! `docs/semantics.md` §2.2, §7.1, §7.2 and the link protocol in
//! `crates/runtime/src/signal.rs`.
//!
//! Against the code before the protocol (debug build, on a 2-core machine
//! at load about 20), 14 of these 15 test runs failed (3 runs of the 5
//! tests; the trapping `unlink` one passed once), most within a few hundred
//! rounds, though the windows are a few hundred nanoseconds wide.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use ember_runtime::introspect::process_info;
use ember_runtime::{
    exit, is_alive, link, monitor, receive, self_pid, send, sleep, spawn, spawn_link, trap_exit,
    try_receive, unlink, Exit, ExitReason, Handle, Pid,
};
use support::{down_of, recv, runtime, wait_for_stop, wait_forever, Stop, WAIT};

/// Rounds per race, at least.
const ROUNDS: usize = 2_000;

/// Longest a race runs on past [`ROUNDS`] while one side has never won.
const MORE_ROUNDS_FOR: Duration = Duration::from_secs(60);

/// Numbers a race's rounds: [`ROUNDS`] of them, then more while one side has
/// never won, for up to [`MORE_ROUNDS_FOR`] in all: a busy machine can keep
/// one side late for stretches longer than the [`Seesaw`] can follow, and
/// the races must show both outcomes.
struct Rounds {
    next: usize,
    started: Instant,
}

impl Rounds {
    fn new() -> Rounds {
        Rounds {
            next: 0,
            started: Instant::now(),
        }
    }

    /// The next round's number; `None` once the race is run.
    fn next(&mut self, both_won: bool) -> Option<usize> {
        let more = self.next < ROUNDS || (!both_won && self.started.elapsed() < MORE_ROUNDS_FOR);
        more.then(|| {
            self.next += 1;
            self.next - 1
        })
    }
}

/// The tests of this file, one at a time: each needs both cores for its two
/// sides to meet at the gate.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serialized() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where two sides meet before they act: the acting process and the killer
/// thread. The killer sleeps until the process arrives and wakes it, so that
/// it is not a thread that has spun for a long time (and is about to be
/// preempted) when the gate opens.
#[derive(Default)]
struct Gate {
    arrived: AtomicUsize,
    /// The killer thread, asleep until the process arrives.
    sleeper: Mutex<Option<thread::Thread>>,
}

impl Gate {
    /// Spins until both sides have arrived, then a further `delay` spins
    /// ([`Seesaw`]). False if the other side did not come within a second
    /// (the machine was busy): the round still runs, but does not count as
    /// simultaneous.
    fn meet(&self, delay: usize) -> bool {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        if let Some(sleeper) = &*self.sleeper.lock().unwrap() {
            sleeper.unpark();
        }
        self.wait_for_both(delay)
    }

    /// The killer's side: registers itself as the sleeper, calls `ready`,
    /// sleeps until the process arrives, then meets it as [`Gate::meet`].
    fn sleep_then_meet(&self, delay: usize, ready: impl FnOnce()) -> bool {
        *self.sleeper.lock().unwrap() = Some(thread::current());
        ready();
        let deadline = Instant::now() + WAIT;
        while self.arrived.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            thread::park_timeout(Duration::from_millis(10));
        }
        self.arrived.fetch_add(1, Ordering::SeqCst);
        self.wait_for_both(delay)
    }

    /// Spins until both have arrived, then `delay` spins more.
    fn wait_for_both(&self, delay: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.arrived.load(Ordering::SeqCst) < 2 {
            if Instant::now() > deadline {
                return false;
            }
            std::hint::spin_loop();
        }
        for _ in 0..delay {
            std::hint::spin_loop();
        }
        true
    }
}

/// How the killer thread waits at the gate. Each has its own bias (who
/// the OS runs first), so the rounds alternate between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arrival {
    /// Asleep until the acting process arrives and wakes it: a fresh
    /// thread when the gate opens, but often on the process's core.
    Sleeping,
    /// Spinning before the process arrives: already on the other core,
    /// but a thread that has spun a while may be preempted.
    Spinning,
}

/// Keeps the two sides of a race at the point where they collide, where
/// the race windows are: the acting side is delayed more after each round it
/// won and less after each it lost (the killer is delayed instead when the
/// offset goes negative), with a little noise on both sides. One offset per
/// [`Arrival`]; rounds alternate between them.
#[derive(Default)]
struct Seesaw {
    modes: [Offset; 2],
    round: usize,
}

struct Offset {
    /// Spins the acting side waits more than the killer (negative: less).
    offset: isize,
    step: isize,
    last: Option<bool>,
}

impl Default for Offset {
    fn default() -> Offset {
        Offset {
            offset: 0,
            step: 8,
            last: None,
        }
    }
}

impl Seesaw {
    /// The spins of the acting side and of the killer for the next round,
    /// and how the killer waits.
    fn delays(&mut self) -> (usize, usize, Arrival) {
        self.round += 1;
        let noise = |salt: usize| {
            (self
                .round
                .wrapping_mul(2_654_435_761)
                .wrapping_add(salt * 40_503)
                >> 7)
                % 8
        };
        let (actor, killer) = (noise(1), noise(2));
        let arrival = if self.round % 2 == 0 {
            Arrival::Sleeping
        } else {
            Arrival::Spinning
        };
        let offset = self.modes[self.round % 2].offset;
        if offset >= 0 {
            (actor + offset.unsigned_abs(), killer, arrival)
        } else {
            (actor, killer + offset.unsigned_abs(), arrival)
        }
    }

    /// After a round: whether the sides met at the gate (only then does the
    /// round say anything about the offset) and whether the acting side
    /// won. The step doubles while the same side keeps winning and halves
    /// when the winner changes, so the offset finds the boundary fast and
    /// then stays close to it.
    fn actor_won(&mut self, met: bool, won: bool) {
        if !met {
            return;
        }
        let mode = &mut self.modes[self.round % 2];
        mode.step = if mode.last == Some(won) {
            (mode.step * 2).min(512)
        } else {
            (mode.step / 2).max(1)
        };
        mode.last = Some(won);
        // Bounded (about 1 ms in a debug build, half the watchdog's
        // hand-off delay): far enough to follow a side that is usually
        // late because the OS runs the other one first.
        mode.offset =
            (mode.offset + if won { mode.step } else { -mode.step }).clamp(-32_768, 32_768);
    }
}

/// Waits (with [`WAIT`] as the limit) until a process that may be dead by
/// then, and so cannot send, stores a non-zero value in `slot`; returns it.
async fn until_stored(slot: &AtomicU8, what: &str) -> u8 {
    let started = Instant::now();
    let deadline = started + WAIT;
    loop {
        let value = slot.load(Ordering::SeqCst);
        if value != 0 {
            return value;
        }
        // Usually a matter of microseconds (the other side runs on the
        // other thread): look again for a little while before sleeping,
        // since a sleep lasts at least the timer's 1 ms tick.
        if started.elapsed() < Duration::from_micros(50) {
            std::hint::spin_loop();
            continue;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {WAIT:?}"
        );
        sleep(Duration::from_micros(200)).await;
    }
}

/// The killer's side of every round: a plain OS thread (not a scheduler
/// thread, so that no process has to spin while another waits for its
/// scheduler) that sends exit signals from outside (§6.7) through a
/// [`Handle`].
struct Killer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// One round's kill.
struct Job {
    gate: Arc<Gate>,
    arrival: Arrival,
    delay: usize,
    target: Pid,
    reason: ExitReason,
    tester: Pid,
}

/// The killer tells the tester it waits at the gate.
struct AtTheGate;

impl Killer {
    fn start(handle: Handle) -> Killer {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let thread = thread::spawn(move || {
            for job in inbox {
                let ready = || handle.send(job.tester, AtTheGate);
                let met = match job.arrival {
                    Arrival::Sleeping => job.gate.sleep_then_meet(job.delay, ready),
                    Arrival::Spinning => {
                        job.gate.arrived.fetch_add(1, Ordering::SeqCst);
                        ready();
                        job.gate.wait_for_both(job.delay)
                    }
                };
                // `exit` returns once the termination and everything it
                // cascades to is done (§9.1), so when the tester hears
                // `Done`, so is that.
                handle.exit(job.target, job.reason);
                handle.send(job.tester, Done(met));
            }
        });
        Killer {
            jobs: Some(jobs),
            thread: Some(thread),
        }
    }

    /// Queues a kill of `target` behind `gate`; then wait for
    /// [`AtTheGate`], let the other side go, and wait for [`Done`].
    fn kill(
        &self,
        gate: &Arc<Gate>,
        arrival: Arrival,
        delay: usize,
        target: Pid,
        reason: ExitReason,
    ) {
        let job = Job {
            gate: gate.clone(),
            arrival,
            delay,
            target,
            reason,
            tester: self_pid(),
        };
        self.jobs
            .as_ref()
            .expect("the killer runs")
            .send(job)
            .expect("the killer thread is alive");
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The killer's report: whether the gate was met in time.
struct Done(bool);

/// What the trapping caller saw right after `unlink` returned.
#[derive(Debug)]
struct Observed {
    /// An `Exit` from the crashed process was already in the mailbox.
    exit_before: bool,
}

/// Prints the tally of a race.
fn report(race: &str, first: (&str, usize), second: (&str, usize), met: usize, seesaw: &Seesaw) {
    println!(
        "{race}: {} {}, {} {}, {met} of {} rounds met at the gate \
         (final offsets {} and {} spins)",
        first.0,
        first.1,
        second.0,
        second.1,
        seesaw.round,
        seesaw.modes[0].offset,
        seesaw.modes[1].offset
    );
}

// §7.2: after `unlink(B)` returns, B's crash has no effect on a caller that
// does not trap exits: either the crash came first (the caller is dead by the
// time `unlink` returns) or the caller survives.
#[test]
fn unlink_racing_a_crash_never_kills_a_caller_that_saw_itself_alive() {
    let _one = serialized();
    let rt = runtime();
    let killer = Killer::start(rt.handle().clone());
    rt.block_on(async move {
        let me = self_pid();
        let crash = ExitReason::error("intentional crash");
        let (mut unlink_first, mut crash_first, mut met) = (0, 0, 0);
        let mut seesaw = Seesaw::default();
        let mut rounds = Rounds::new();
        while let Some(round) = rounds.next(unlink_first > 0 && crash_first > 0) {
            let (actor_delay, killer_delay, arrival) = seesaw.delays();
            let gate = Arc::new(Gate::default());
            // Set by the caller (dead or alive, its code runs on until its
            // next await) right after `unlink` returned: 1 alive, 2 dead.
            let after_unlink = Arc::new(AtomicU8::new(0));
            let b = spawn(wait_forever());
            let (g, seen) = (gate.clone(), after_unlink.clone());
            let a = spawn(async move {
                link(b).expect("b is alive");
                send(me, ());
                receive::<Go>().await;
                g.meet(actor_delay);
                unlink(b);
                let alive = is_alive(self_pid());
                seen.store(if alive { 1 } else { 2 }, Ordering::SeqCst);
                wait_for_stop().await;
            });
            let watch = monitor(a);
            recv::<()>().await;
            killer.kill(&gate, arrival, killer_delay, b, crash.clone());
            recv::<AtTheGate>().await;
            send(a, Go);
            let Done(k_met) = recv().await;
            met += usize::from(k_met);
            // The killer is done: every effect of b's death has happened.
            let seen = until_stored(&after_unlink, "the caller's unlink").await;
            let a_alive = is_alive(a);
            if seen == 1 {
                assert!(
                    a_alive,
                    "round {round}: unlink returned to a live caller, which the \
                     crash then killed"
                );
                unlink_first += 1;
                seesaw.actor_won(k_met, true);
                send(a, Stop);
                assert_eq!(down_of(watch).await.reason, ExitReason::Normal);
            } else {
                assert!(!a_alive, "round {round}: dead after unlink, alive later");
                assert_eq!(down_of(watch).await.reason, crash);
                crash_first += 1;
                seesaw.actor_won(k_met, false);
            }
        }
        report(
            "unlink vs crash (not trapping)",
            ("unlink first", unlink_first),
            ("crash first", crash_first),
            met,
            &seesaw,
        );
        assert!(met > 0, "the two sides never met at the gate");
        assert!(unlink_first > 0 && crash_first > 0, "one side always won");
    });
}

/// Starts the acting side of a round.
struct Go;

/// Asks the trapping side to look at its mailbox again.
struct Check;

// §7.2, trapping variant: no `Exit` from the crashed process arrives after
// `unlink` returned; one that arrived before stays in the mailbox.
#[test]
fn unlink_racing_a_crash_delivers_no_exit_after_it_returns() {
    let _one = serialized();
    let rt = runtime();
    let killer = Killer::start(rt.handle().clone());
    rt.block_on(async move {
        let me = self_pid();
        let crash = ExitReason::error("intentional crash");
        let (mut unlink_first, mut crash_first, mut met) = (0, 0, 0);
        let mut seesaw = Seesaw::default();
        let mut rounds = Rounds::new();
        while let Some(round) = rounds.next(unlink_first > 0 && crash_first > 0) {
            let (actor_delay, killer_delay, arrival) = seesaw.delays();
            let gate = Arc::new(Gate::default());
            let b = spawn(wait_forever());
            let g = gate.clone();
            let a = spawn(async move {
                trap_exit(true);
                link(b).expect("b is alive");
                send(me, ());
                receive::<Go>().await;
                g.meet(actor_delay);
                unlink(b);
                let exit_before = try_receive::<Exit>().is_some();
                send(me, Observed { exit_before });
                receive::<Check>().await;
                // Everything b's death does is done by now.
                let exit_after = try_receive::<Exit>().is_some();
                send(me, exit_after);
                wait_for_stop().await;
            });
            recv::<()>().await;
            killer.kill(&gate, arrival, killer_delay, b, crash.clone());
            recv::<AtTheGate>().await;
            send(a, Go);
            let Done(k_met) = recv().await;
            met += usize::from(k_met);
            let seen: Observed = recv().await;
            send(a, Check);
            let exit_after: bool = recv().await;
            assert!(
                !exit_after,
                "round {round}: an Exit arrived after unlink returned ({seen:?})"
            );
            if seen.exit_before {
                crash_first += 1;
            } else {
                unlink_first += 1;
            }
            seesaw.actor_won(k_met, !seen.exit_before);
            send(a, Stop);
        }
        report(
            "unlink vs crash (trapping)",
            ("unlink first", unlink_first),
            ("crash first", crash_first),
            met,
            &seesaw,
        );
        assert!(met > 0, "the two sides never met at the gate");
        assert!(unlink_first > 0 && crash_first > 0, "one side always won");
    });
}

// §2.2: `spawn_link` by a parent that is being killed leaves no orphan: the
// child is never started, or it is linked and dies with the parent.
#[test]
fn spawn_link_racing_a_kill_of_the_parent_leaves_no_orphan() {
    let _one = serialized();
    let rt = runtime();
    let killer = Killer::start(rt.handle().clone());
    rt.block_on(async move {
        let me = self_pid();
        let (mut spawned_first, mut kill_first, mut met) = (0, 0, 0);
        let mut seesaw = Seesaw::default();
        let mut rounds = Rounds::new();
        while let Some(round) = rounds.next(spawned_first > 0 && kill_first > 0) {
            let (actor_delay, killer_delay, arrival) = seesaw.delays();
            let gate = Arc::new(Gate::default());
            let child: Arc<Mutex<Option<Pid>>> = Arc::default();
            let returned = Arc::new(AtomicU8::new(0));
            let probe = Probe::default();
            let (g, c, r, p) = (gate.clone(), child.clone(), returned.clone(), probe.clone());
            let parent = spawn(async move {
                send(me, ());
                receive::<Go>().await;
                g.meet(actor_delay);
                *p.parent_thread.lock().unwrap() = Some(thread::current().id());
                p.spawning.store(true, Ordering::SeqCst);
                let in_child = p.clone();
                let pid = spawn_link(async move {
                    let _dropped_with_the_body = in_child;
                    wait_forever().await;
                });
                p.spawning.store(false, Ordering::SeqCst);
                *c.lock().unwrap() = Some(pid);
                r.store(1, Ordering::SeqCst);
                wait_forever().await;
            });
            recv::<()>().await;
            killer.kill(&gate, arrival, killer_delay, parent, ExitReason::Kill);
            recv::<AtTheGate>().await;
            send(parent, Go);
            let Done(k_met) = recv().await;
            met += usize::from(k_met);
            until_stored(&returned, "the parent's spawn_link").await;
            let child = child
                .lock()
                .unwrap()
                .expect("the parent recorded its child");
            assert!(!is_alive(parent));
            assert!(
                !is_alive(child),
                "round {round}: {child} outlived its parent {parent}, linked: {:?}",
                process_info(child).map(|i| i.links)
            );
            let unstarted = probe.unstarted.load(Ordering::SeqCst);
            if unstarted {
                kill_first += 1;
            } else {
                spawned_first += 1;
            }
            seesaw.actor_won(k_met, !unstarted);
        }
        report(
            "spawn_link vs kill of the parent",
            ("spawn first", spawned_first),
            ("kill first", kill_first),
            met,
            &seesaw,
        );
        assert!(met > 0, "the two sides never met at the gate");
        assert!(spawned_first > 0 && kill_first > 0, "one side always won");
    });
}

/// Tells a child that was never started (dropped inside `spawn_link`, on
/// the parent's thread) from one that was: the child's body owns a clone,
/// and each clone's drop looks where and when it happens.
#[derive(Clone, Default)]
struct Probe(Arc<ProbeState>);

#[derive(Default)]
struct ProbeState {
    parent_thread: Mutex<Option<ThreadId>>,
    spawning: AtomicBool,
    unstarted: AtomicBool,
}

impl std::ops::Deref for Probe {
    type Target = ProbeState;
    fn deref(&self) -> &ProbeState {
        &self.0
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let here = Some(thread::current().id());
        let on_parent_thread =
            *self.parent_thread.lock().unwrap_or_else(|e| e.into_inner()) == here;
        if self.spawning.load(Ordering::SeqCst) && on_parent_thread {
            self.unstarted.store(true, Ordering::SeqCst);
        }
    }
}

// §7.1: `link` racing a kill of the caller never leaves a live process
// linked to a dead one: either the link was made first and the caller's
// death reaches the other side (here: kills it), or the caller was dead
// first and nothing was linked.
#[test]
fn link_racing_a_kill_of_the_caller_leaves_no_live_process_linked_to_a_dead_one() {
    let _one = serialized();
    let rt = runtime();
    let killer = Killer::start(rt.handle().clone());
    rt.block_on(async move {
        let me = self_pid();
        let (mut link_first, mut kill_first, mut met) = (0, 0, 0);
        let mut seesaw = Seesaw::default();
        let mut rounds = Rounds::new();
        while let Some(round) = rounds.next(link_first > 0 && kill_first > 0) {
            let (actor_delay, killer_delay, arrival) = seesaw.delays();
            let gate = Arc::new(Gate::default());
            let returned = Arc::new(AtomicU8::new(0));
            let other = spawn(wait_forever());
            let other_watch = monitor(other);
            let (g, r) = (gate.clone(), returned.clone());
            let caller = spawn(async move {
                send(me, ());
                receive::<Go>().await;
                g.meet(actor_delay);
                let _ = link(other);
                r.store(1, Ordering::SeqCst);
                wait_forever().await;
            });
            recv::<()>().await;
            killer.kill(&gate, arrival, killer_delay, caller, ExitReason::Kill);
            recv::<AtTheGate>().await;
            send(caller, Go);
            let Done(k_met) = recv().await;
            met += usize::from(k_met);
            until_stored(&returned, "the caller's link").await;
            assert!(!is_alive(caller));
            if is_alive(other) {
                let links = process_info(other).map(|i| i.links).unwrap_or_default();
                assert!(
                    !links.contains(&caller),
                    "round {round}: {other} is alive and linked to the dead {caller}"
                );
                kill_first += 1;
                seesaw.actor_won(k_met, false);
                exit(other, ExitReason::Kill);
                assert_eq!(down_of(other_watch).await.reason, ExitReason::Killed);
            } else {
                assert_eq!(down_of(other_watch).await.reason, ExitReason::Killed);
                link_first += 1;
                seesaw.actor_won(k_met, true);
            }
        }
        report(
            "link vs kill of the caller",
            ("link first", link_first),
            ("kill first", kill_first),
            met,
            &seesaw,
        );
        assert!(met > 0, "the two sides never met at the gate");
        assert!(link_first > 0 && kill_first > 0, "one side always won");
    });
}

// §8.1: `monitor` racing a kill of the caller never leaves a monitor held by
// a dead process on a live target: both sides of a monitor are written in
// one step, like a link's. (The target never sees a `Down` for it either
// way; this checks that nothing dangles.)
#[test]
fn monitor_racing_a_kill_of_the_caller_leaves_no_monitor_by_the_dead() {
    let _one = serialized();
    let rt = runtime();
    let killer = Killer::start(rt.handle().clone());
    rt.block_on(async move {
        let me = self_pid();
        let (mut monitor_first, mut kill_first, mut met) = (0, 0, 0);
        let mut seesaw = Seesaw::default();
        let target = spawn(wait_forever());
        let mut rounds = Rounds::new();
        while let Some(round) = rounds.next(monitor_first > 0 && kill_first > 0) {
            let (actor_delay, killer_delay, arrival) = seesaw.delays();
            let gate = Arc::new(Gate::default());
            let returned = Arc::new(AtomicU8::new(0));
            let (g, r) = (gate.clone(), returned.clone());
            let caller = spawn(async move {
                send(me, ());
                receive::<Go>().await;
                g.meet(actor_delay);
                monitor(target);
                // 1: the monitor was made by a live caller.
                r.store(if is_alive(self_pid()) { 1 } else { 2 }, Ordering::SeqCst);
                wait_forever().await;
            });
            recv::<()>().await;
            killer.kill(&gate, arrival, killer_delay, caller, ExitReason::Kill);
            recv::<AtTheGate>().await;
            send(caller, Go);
            let Done(k_met) = recv().await;
            met += usize::from(k_met);
            let seen = until_stored(&returned, "the caller's monitor").await;
            assert!(!is_alive(caller));
            let watchers = process_info(target)
                .map(|i| i.monitored_by)
                .expect("the target lives");
            assert!(
                !watchers.contains(&caller),
                "round {round}: {target} is monitored by the dead {caller}"
            );
            if seen == 1 {
                monitor_first += 1;
            } else {
                kill_first += 1;
            }
            seesaw.actor_won(k_met, seen == 1);
        }
        report(
            "monitor vs kill of the caller",
            ("monitor first", monitor_first),
            ("kill first", kill_first),
            met,
            &seesaw,
        );
        assert!(met > 0, "the two sides never met at the gate");
        assert!(monitor_first > 0 && kill_first > 0, "one side always won");
    });
}
