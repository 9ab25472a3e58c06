//! The watchdog ("sysmon", as Go calls it): its loop, what it observes of
//! each worker's poll, how it judges a poll stuck and the node starved, and
//! the hand-off of a stuck slot with the demotion of a hog's thread. The
//! threads it hands slots to are kept by [`threads`](super::threads); the
//! OS calls (slices, priorities, thread clocks) are in [`os`](super::os).
//!
//! Every [`Preemption::watchdog_period`] while polls run (backing off to
//! 10 ms once no poll has started for [`ACTIVE_WINDOW`], and dozing while
//! every worker is parked until one leaves its park: `park::Doze`), and exactly when a
//! running poll will reach the threshold if that is sooner, the watchdog looks
//! at each worker's current poll:
//!
//! * a poll that has consumed [`Preemption::cpu_threshold`] of **CPU time**
//!   (read from the worker thread's CPU clock; wall time misjudges healthy
//!   polls on a loaded machine), and still burning at two more looks
//!   ([`HOG_CONFIRMATION`]: a thread's clock can leap), loses its slot to a
//!   spare worker, and the hog's thread is demoted to the first nice step,
//!   with a long EEVDF slice ([`Preemption::demoted_slice`]);
//! * a poll stuck [`Preemption::blocked_threshold`] of wall time while using
//!   less than a quarter of it on the CPU, with its thread asleep (a blocking
//!   syscall, a lock), loses its slot without demotion; a thread that only
//!   waits for a CPU on a busy machine keeps it;
//! * a poll that has consumed [`Preemption::contended_threshold`] of CPU
//!   time (past its cooperative slice) while other processes wait for its
//!   slot (its queues, `next` included, or the injector) loses its slot
//!   without demotion, so they run at once instead of after the CPU
//!   threshold; with one scheduler, nothing else could run them;
//! * a demoted worker's nice value keeps rising along
//!   [`Preemption::demotion`] as its poll's CPU time grows; a demoted
//!   worker stays in the background pool for good;
//! * when the node's workers together got less than
//!   [`Preemption::starvation_floor`] of CPU over a
//!   [`Preemption::starvation_window`] while a demoted thread wanted it,
//!   demoted threads are raised to [`Preemption::relief_nice`] until a
//!   window in which the node's normal workers were busy (the starvation
//!   floor: other OS processes cannot starve a hog without bound;
//!   [`judge_window`]).
//!
//! The hog keeps running on its old thread; when its poll returns, the
//! process goes back to the shared queues and the thread joins the background
//! pool, which serves repeat offenders (processes retaken twice) until it has
//! been idle for [`Preemption::background_idle`]. Spare workers are kept
//! ready so a hand-off never waits for a thread to start; thread growth past
//! [`Preemption::soft_thread_limit`] is slowed down and logged, and stops at
//! [`Preemption::hard_thread_limit`].
//!
//! # Why the slices
//!
//! Linux's EEVDF scheduler (6.6+) runs the eligible thread with the earliest
//! virtual deadline (eligible time plus slice over weight), and a thread that
//! wakes does not preempt one still inside its protected slice ("run to
//! parity"); nothing looks again before the next tick (4 ms at HZ=250). With
//! the kernel's default slices, measured on a 2-vCPU VM with ten demoted hogs
//! on the server's core, the watchdog, the spare taking over and the socket
//! wake-ups waited up to a tick behind a hog, and a demoted hog kept winning
//! deadline races with the deadline it got at nice 0: `/ping` p99 was
//! 6-10 ms. A waking thread whose slice is shorter than the running one's
//! ignores that protection, and a short slice makes an early deadline. So
//! the watchdog and the workers ask for short slices
//! ([`Preemption::thread_slice`]) and demoted threads for long ones
//! ([`Preemption::demoted_slice`]). The slice changes no thread's share of
//! the CPU, which the nice value alone sets; SCHED_IDLE, the last step, is
//! preempted by any other thread that wakes.

use std::collections::HashMap;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::config::Preemption;
use super::os;
use super::park;
use super::slot::Slot;
use super::worker::{Worker, NO_SLOT};
use crate::pid::Pid;
use crate::runtime::Shared;

/// What the watchdog leaves for others to read: its last hand-off.
#[derive(Default)]
pub(crate) struct Sysmon {
    /// The watchdog's last hand-off, for introspection.
    last_handoff: Mutex<Option<Handoff>>,
}

impl Sysmon {
    /// The watchdog's last hand-off, if any.
    pub(crate) fn last_handoff(&self) -> Option<Handoff> {
        self.last_handoff.lock().clone()
    }
}

/// How long the watchdog keeps looking every [`Preemption::watchdog_period`]
/// after the last poll it saw start, before backing off: a server between
/// requests is not idle, and a backed-off watchdog would notice a hog up to
/// 10 ms late.
const ACTIVE_WINDOW: Duration = Duration::from_millis(100);

/// Shortest sleep between two looks.
const MIN_SLEEP: Duration = Duration::from_micros(50);

/// When the watchdog looks again after a hand-off. The demoted thread may
/// keep the CPU until its current EEVDF deadline, which was set while it ran
/// at nice 0 with a short slice; by then the kernel has given it a deadline
/// from its long demoted slice, and the watchdog's short slice preempts it,
/// so the successor runs. Spares are topped up at that look, not before: a
/// thread start takes the watchdog 0.1 ms that the successor would wait.
const AFTER_HANDOFF: Duration = Duration::from_micros(200);

/// CPU time a poll charged [`Preemption::cpu_threshold`] must still use,
/// in the same poll, before its thread is demoted as a hog.
///
/// A thread's CPU clock is not always its own work: on a virtual machine
/// whose host takes the vCPU away unannounced (no steal-time accounting),
/// the stolen time counts as the running thread's, and a thread's clock has
/// been measured leaping by 1 to 15 ms with no wall time passing. A healthy
/// poll caught by such a leap near its slice's end is at a yield point
/// microseconds later and returns; a hog goes on burning CPU. Waiting for a
/// little more of it costs a real hog's demotion a fraction of a
/// millisecond, and tells the two apart.
///
/// A leap is also a single step: the poll must be seen burning CPU at two
/// looks after it went over the threshold ([`BURNING_STEP`] or more each).
const HOG_CONFIRMATION: Duration = Duration::from_micros(250);

/// CPU time a suspected hog must have been charged between two looks for
/// the later one to count as seeing it burn.
const BURNING_STEP: Duration = Duration::from_micros(100);

/// What the watchdog knew of a worker at its last look.
#[derive(Clone, Copy)]
struct Observation {
    /// The worker's poll epoch then.
    epoch: u64,
    /// The worker thread's CPU time then (ns).
    cpu: u64,
    /// When that look read the worker (ns since the scheduler started),
    /// taken just before its CPU clock was read.
    at: u64,
    /// CPU time charged to the current poll so far (ns): see "What a poll
    /// is charged" at [`watchdog_main`].
    charged: u64,
    /// Of the poll's charge, the part from before the watchdog's first look
    /// at it (ns), bounded as `watchdog_main` explains.
    before_first_look: u64,
    /// Looks that saw the current poll.
    looks: u32,
    /// Set once a look found the current poll charged
    /// [`Preemption::cpu_threshold`]: a suspected hog, not yet confirmed.
    suspect: Option<Suspect>,
    /// The look that wrote this entry (entries of exited workers go stale).
    look: u64,
}

/// A poll charged the CPU threshold, watched until it is confirmed a hog
/// (see [`HOG_CONFIRMATION`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Suspect {
    /// Its charge (ns) when a look first found it over the threshold.
    charged_at: u64,
    /// Later looks that found it had burned at least [`BURNING_STEP`].
    burning_looks: u32,
}

/// The node's starvation window: CPU counters where it started.
#[derive(Clone, Copy, Debug)]
struct Window {
    /// Wall time then (ns since the scheduler started).
    at: u64,
    /// CPU time all the node's workers had used, as the looks saw it (ns).
    total_cpu: u64,
    /// Of which, its normal (not demoted) workers' (ns).
    normal_cpu: u64,
}

/// Judges the node's starvation window at wall time `now` (ns), given the
/// CPU counters then, whether a demoted thread has been inside one poll for
/// a whole window (it wants the CPU), and whether demoted threads are
/// relieved now. `None`: the window is not over; otherwise whether they are
/// relieved for the next one:
///
/// * the node as a whole got less than the floor while a demoted thread
///   wanted the CPU: other processes starve it, relieve;
/// * the node's normal workers used at least the floor: there is something
///   in the node to protect, demote again;
/// * otherwise nothing changes (an idle node keeps its hogs relieved).
fn judge_window(
    window: &Window,
    now: u64,
    total_cpu: u64,
    normal_cpu: u64,
    hog_waiting: bool,
    relieved: bool,
    config: &Preemption,
) -> Option<bool> {
    let elapsed = now.saturating_sub(window.at);
    let length = (config.starvation_window.as_nanos() as u64).max(1);
    if elapsed < length {
        return None;
    }
    // The floor, scaled to the window's actual length (a late look).
    let floor = (config.starvation_floor.as_nanos() as u64).saturating_mul(elapsed) / length;
    if hog_waiting && total_cpu.saturating_sub(window.total_cpu) < floor {
        Some(true)
    } else if normal_cpu.saturating_sub(window.normal_cpu) >= floor {
        Some(false)
    } else {
        Some(relieved)
    }
}

/// One consistent reading of a worker: all of it within one poll, or
/// between two polls.
#[derive(Clone, Copy)]
struct Sample {
    epoch: u64,
    pid_key: u64,
    started_ns: u64,
    cpu: u64,
    /// The slot it served then.
    slot: usize,
    /// When its thread last came back from a park (ns since the scheduler
    /// started; `u64::MAX`: never) and its CPU time then
    /// (`Worker::stamp_unpark`).
    unparked_ns: u64,
    unparked_cpu: u64,
}

impl Sample {
    /// Reads `worker`, or `None` if a poll started or ended during every
    /// try: its CPU time would then belong to several polls.
    fn take(worker: &Worker) -> Option<Sample> {
        for _ in 0..3 {
            let epoch = worker.poll_epoch.load(Ordering::Acquire);
            let pid_key = worker.poll_pid.load(Ordering::Relaxed);
            let started_ns = worker.poll_started_ns.load(Ordering::Relaxed);
            let unparked_ns = worker.unparked_ns.load(Ordering::Acquire);
            let unparked_cpu = worker.unparked_cpu.load(Ordering::Acquire);
            let cpu = worker.cpu_ns();
            let slot = worker.slot.load(Ordering::Acquire);
            // A seqlock's check: a park stamp stored after this poll ended
            // (release), if read above, makes the epoch below the newer one.
            fence(Ordering::Acquire);
            if worker.poll_epoch.load(Ordering::Relaxed) == epoch {
                return Some(Sample {
                    epoch,
                    pid_key,
                    started_ns,
                    cpu,
                    slot,
                    unparked_ns,
                    unparked_cpu,
                });
            }
        }
        None
    }
}

/// The watchdog thread.
///
/// # What a poll is charged
///
/// The worker publishes when each poll started (wall clock) but not its
/// thread's CPU time then: reading a thread CPU clock is a system call, too
/// dear for every poll. The watchdog reads each worker's CPU clock at every
/// look, so a poll it has already seen is charged the CPU time since that
/// look plus an estimate of what came before. That estimate must never
/// exceed the truth, or a healthy process is taken for a hog and its thread
/// demoted for good. Between the previous look (at wall time `at`, with CPU
/// time `cpu`) and the poll's start the thread can have used at most the
/// wall time in between, so of the CPU time used since that look, at least
/// `used - (started - at)` is the poll's. (The former estimate, all CPU time
/// since the last look capped by the poll's wall-clock age, charged a
/// healthy poll the CPU time of the polls before it whenever the watchdog
/// was late and the worker was descheduled mid-poll: exactly what a loaded
/// machine does.)
///
/// Every step is also capped by the wall time it spans: a thread's CPU clock
/// can leap ([`HOG_CONFIRMATION`]), and no thread uses more CPU than the time
/// that passed.
pub(crate) fn watchdog_main(rt: Arc<Shared>) {
    let sched = &rt.sched;
    let config = &sched.config;
    os::request_slice(0, config.thread_slice);
    // Sleeps aimed at a poll's threshold should end on time.
    if let Err(e) = os::set_timer_slack(Duration::from_micros(1)) {
        tracing::debug!(error = %e, "ember: cannot set the watchdog's timer slack");
    }
    let mut observed: HashMap<usize, Observation> = HashMap::new();
    let mut look: u64 = 0;
    let mut period = config.watchdog_period;
    let idle_period = Duration::from_millis(10).max(config.watchdog_period);
    let mut last_activity = Instant::now();
    let mut handoffs_seen = sched.counters.handoffs.load(Ordering::Relaxed);
    // CPU time the node's workers (all, and the normal ones) have used, as
    // the looks saw it (ns), and the starvation floor's window over them.
    let (mut total_cpu, mut normal_cpu) = (0u64, 0u64);
    let floor_on = !config.starvation_floor.is_zero() && sched.priorities_restorable;
    let mut window = Window {
        at: 0,
        total_cpu: 0,
        normal_cpu: 0,
    };
    let mut relieved = false;
    // The epoch of the last look; none yet, so the first look checks every
    // poll in progress: an account may have gone over before this thread
    // first ran (a process spawned at once on a new runtime), and an epoch
    // read here would count that crossing as seen (it was, in 7 of 20 runs
    // of a test alone in its process: the process spun on unkilled).
    let mut memory_epoch: Option<usize> = None;
    // Scratch space for the timers it fires.
    let mut fired = Vec::new();
    while !sched.is_shut_down() {
        sched.doze.sleep(period);
        look += 1;
        // tokio tasks left to run by a process that keeps its worker busy,
        // or a driver asked for by a demoted thread.
        rt.start_tokio_if_needed(true);
        // A process went over its memory limit since the last look (acquire:
        // its account's mark is visible): the polls in progress are looked
        // at below; a poll that has returned was handled by its worker.
        let epoch = crate::alloc::OVER_EPOCH.load(Ordering::Acquire);
        let check_memory = memory_epoch != Some(epoch);
        memory_epoch = Some(epoch);
        let mut active = false;
        // Until the soonest moment a running poll could reach the threshold.
        let mut next_look = config.watchdog_period;
        // A demoted thread inside one poll for a whole starvation window.
        let mut hog_waiting = false;
        for worker in sched.workers.snapshot() {
            let before = observed.get(&worker.id).copied();
            let now_ns = sched.nanos_since_start(Instant::now());
            let Some(sample) = Sample::take(&worker) else {
                // Polls come and go fast on this worker: it is not stuck.
                if let Some(seen) = before {
                    observed.insert(worker.id, Observation { look, ..seen });
                }
                active = true;
                continue;
            };
            if let Some(seen) = before {
                let used = sample.cpu.saturating_sub(seen.cpu);
                total_cpu += used;
                if !worker.background.load(Ordering::Acquire) {
                    normal_cpu += used;
                }
            }
            let seen = observe(before.as_ref(), &sample, now_ns, look, config.cpu_threshold);
            observed.insert(worker.id, seen);
            if before.is_none_or(|seen| seen.epoch != sample.epoch) {
                active = true;
            }
            if sample.epoch % 2 == 0 {
                continue;
            }
            active = true;
            if check_memory {
                kill_over_limit(&rt, sample.pid_key);
            }
            let poll = PollSeen {
                pid_key: sample.pid_key,
                cpu: Duration::from_nanos(seen.charged),
                before_first_look: Duration::from_nanos(seen.before_first_look),
                wall: Duration::from_nanos(now_ns.saturating_sub(sample.started_ns)),
                looks: seen.looks,
            };
            let confirmed_hog = seen.confirms_hog();
            match sched.slots.get(sample.slot) {
                Some(slot) if slot.remote.owner.load(Ordering::Acquire) == worker.id => {
                    let contended = config.contended_threshold < config.cpu_threshold
                        && (sched.work_waits_for(slot)
                            || (poll.cpu >= config.contended_threshold
                                && sched.poll_io_for_waiting_work(slot)));
                    if confirmed_hog {
                        retake(&rt, slot, &worker, Why::Hog, &poll);
                    } else if poll.cpu >= config.cpu_threshold && !contended {
                        // Look again soon: two burning looks confirm it.
                        next_look = next_look.min(HOG_CONFIRMATION / 2);
                    } else if poll.wall >= config.blocked_threshold
                        && poll.cpu * 4 < poll.wall
                        && !waits_for_a_cpu(&worker)
                    {
                        retake(&rt, slot, &worker, Why::Blocked, &poll);
                    } else if contended && poll.cpu >= config.contended_threshold {
                        retake(&rt, slot, &worker, Why::Contended, &poll);
                    } else {
                        next_look = next_look.min(config.cpu_threshold - poll.cpu);
                        // Also when nothing is seen waiting yet: at that
                        // look the watchdog polls the sockets, whose events
                        // (a connection accepted behind this poll) nobody
                        // else reads while a lone slot's worker is inside
                        // it. Looking only at the CPU threshold made such
                        // a request wait up to 0.75 ms longer.
                        if poll.cpu < config.contended_threshold
                            && config.contended_threshold < config.cpu_threshold
                        {
                            next_look = next_look.min(config.contended_threshold - poll.cpu);
                        }
                    }
                }
                Some(_) => {}
                None => {
                    // Handed off as blocked (or starved by a loaded machine)
                    // or contended, but it turns out to burn CPU: it is a
                    // hog after all.
                    if confirmed_hog && !worker.background.load(Ordering::Acquire) {
                        worker.background.store(true, Ordering::Release);
                        request_demoted_slice(&worker, config);
                    }
                }
            }
            if worker.background.load(Ordering::Acquire) {
                sched.demote_to(&worker, config.nice_for(poll.cpu));
                hog_waiting |= poll.wall >= config.starvation_window;
                // Only inside a poll: the worker's own start-up demotion
                // (`worker_main`) happened before it, so the watchdog is
                // then the only one changing this thread's priority.
                if floor_on {
                    sched.relieve(&worker, relieved);
                }
            }
        }
        if floor_on {
            let now_ns = sched.nanos_since_start(Instant::now());
            if let Some(verdict) = judge_window(
                &window,
                now_ns,
                total_cpu,
                normal_cpu,
                hog_waiting,
                relieved,
                config,
            ) {
                relieved = verdict;
                window = Window {
                    at: now_ns,
                    total_cpu,
                    normal_cpu,
                };
            }
        }
        // A worker stuck in one poll does not fire its slot's timers: fire
        // them for it (`crate::timer`).
        rt.timers.fire_overdue(&rt, &mut fired);
        observed.retain(|_, seen| seen.look == look);
        let handoffs = sched.counters.handoffs.load(Ordering::Relaxed);
        if handoffs != handoffs_seen {
            handoffs_seen = handoffs;
            next_look = next_look.min(AFTER_HANDOFF);
        } else {
            sched.workers.top_up_spares(&rt);
        }
        if active {
            last_activity = Instant::now();
        }
        period = if last_activity.elapsed() < ACTIVE_WINDOW {
            next_look.max(MIN_SLEEP)
        } else {
            (period * 2).min(idle_period)
        };
        // Nothing moved since the last look and every worker is parked:
        // nothing can need a look until a worker leaves its park, which
        // wakes this thread.
        if !active
            && sched.background_len() == 0
            && !sched.is_shut_down()
            && sched.doze.doze(|| sched.all_online_parked(), park::DOZE)
        {
            // Woken by a worker: a poll may start now.
            period = config.watchdog_period;
        }
    }
}

/// Kills the process of a poll in progress if it went over its memory limit
/// (`crate::memory`): it is dead for everyone at once, and `should_stop()`
/// turns true for its native loop.
fn kill_over_limit(rt: &Shared, pid_key: u64) {
    if let Some(process) = rt.lookup(Pid::local(pid_key)) {
        if process.is_over_memory_limit() {
            crate::memory::kill_if_over(&process);
        }
    }
}

/// What a look at `sample` (at `now_ns`, look number `look`) knows of its
/// worker, given what the previous look knew (`before`). Its `charged` is
/// the CPU time charged to the poll in progress (see "What a poll is
/// charged" at [`watchdog_main`]).
fn observe(
    before: Option<&Observation>,
    sample: &Sample,
    now_ns: u64,
    look: u64,
    cpu_threshold: Duration,
) -> Observation {
    let (step, charged, before_first_look, looks, suspect) = match before {
        // The same poll: what its thread used since, never more than the
        // wall time since (a thread's clock can leap: `HOG_CONFIRMATION`).
        Some(seen) if seen.epoch == sample.epoch => {
            let used = sample.cpu.saturating_sub(seen.cpu);
            let used = used.min(now_ns.saturating_sub(seen.at));
            let (looks, first) = (seen.looks + 1, seen.before_first_look);
            (used, seen.charged + used, first, looks, seen.suspect)
        }
        // A poll seen for the first time.
        Some(seen) => {
            let used = sample.cpu - first_look_base(seen, sample);
            let used = used.max(since_unpark(sample));
            let used = used.min(now_ns.saturating_sub(sample.started_ns));
            (used, used, used, 1, None)
        }
        None => {
            let used = since_unpark(sample).min(now_ns.saturating_sub(sample.started_ns));
            (used, used, used, 1, None)
        }
    };
    let burning = step >= BURNING_STEP.as_nanos() as u64;
    let suspect = match suspect {
        Some(suspect) => Some(Suspect {
            burning_looks: suspect.burning_looks + u32::from(burning),
            ..suspect
        }),
        None if sample.epoch % 2 == 1 && charged >= cpu_threshold.as_nanos() as u64 => {
            Some(Suspect {
                charged_at: charged,
                burning_looks: 0,
            })
        }
        None => None,
    };
    Observation {
        epoch: sample.epoch,
        cpu: sample.cpu,
        at: now_ns,
        charged,
        before_first_look,
        looks,
        suspect,
        look,
    }
}

impl Observation {
    /// The poll was charged the CPU threshold at an earlier look and has
    /// since been seen burning at two looks, for [`HOG_CONFIRMATION`] in all.
    fn confirms_hog(&self) -> bool {
        self.suspect.is_some_and(|suspect| {
            suspect.burning_looks >= 2
                && self.charged.saturating_sub(suspect.charged_at)
                    >= HOG_CONFIRMATION.as_nanos() as u64
        })
    }
}

/// For a poll seen for the first time in `sample`, an upper bound of its
/// thread's CPU time when it started, given the previous look `seen`: the
/// thread can have used at most the wall time from that look to the poll's
/// start (ns). See "What a poll is charged" at [`watchdog_main`].
fn first_look_base(seen: &Observation, sample: &Sample) -> u64 {
    let before_start = sample.started_ns.saturating_sub(seen.at);
    sample.cpu.min(seen.cpu.saturating_add(before_start))
}

/// For a poll seen for the first time in `sample`, a lower bound of the CPU
/// time it has used, from its thread's last return from a park: all the
/// thread used since, but the wall time from that return to the poll's
/// start (ns). Zero if the thread has not parked since before the poll's
/// start, or ever. Unlike [`first_look_base`], it does not depend on when
/// the watchdog last looked: a poll started by a thread that an event has
/// just woken (a request on an idle server, or beside demoted hogs) is
/// charged nearly all it used at the first look, even if the previous
/// look was long ago (a doze) or the thread slept through most of the time
/// since.
fn since_unpark(sample: &Sample) -> u64 {
    if sample.unparked_ns > sample.started_ns {
        return 0;
    }
    let before_start = sample.started_ns - sample.unparked_ns;
    sample
        .cpu
        .saturating_sub(sample.unparked_cpu)
        .saturating_sub(before_start)
}

/// A poll in progress as the watchdog judges it.
struct PollSeen {
    pid_key: u64,
    /// CPU time charged to it.
    cpu: Duration,
    /// Of which, the part from before the watchdog's first look at it.
    before_first_look: Duration,
    /// Wall time since it started.
    wall: Duration,
    /// Looks that saw it.
    looks: u32,
}

/// Why the watchdog hands a slot off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// The poll used [`Preemption::cpu_threshold`]: its thread is demoted.
    Hog,
    /// The poll's thread sleeps ([`Preemption::blocked_threshold`]).
    Blocked,
    /// The poll overran [`Preemption::contended_threshold`] while other
    /// processes wait for the slot: they run on the successor at once, and
    /// the poll goes on, undemoted, on its thread (demoted later if it
    /// reaches `cpu_threshold`, as a blocked one is).
    Contended,
}

/// Hands `slot` from the stuck `hog` worker to a spare.
fn retake(rt: &Arc<Shared>, slot: &Slot, hog: &Arc<Worker>, why: Why, poll: &PollSeen) {
    let sched = &rt.sched;
    let Some(successor) = sched.workers.hand_over(rt, slot, hog) else {
        return;
    };
    hog.slot.store(NO_SLOT, Ordering::Release);
    let demote = why == Why::Hog;
    match why {
        Why::Hog => {
            hog.background.store(true, Ordering::Release);
            // The slice first: SCHED_IDLE, if the first step is nice 19, keeps it.
            request_demoted_slice(hog, &sched.config);
            sched.demote_to(hog, sched.config.nice_for(Duration::ZERO));
        }
        Why::Blocked => {
            sched
                .counters
                .blocked_handoffs
                .fetch_add(1, Ordering::Relaxed);
        }
        Why::Contended => {
            sched
                .counters
                .contended_handoffs
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    sched.counters.handoffs.fetch_add(1, Ordering::Relaxed);
    successor.unpark();
    let pid = Pid::local(poll.pid_key);
    let (spawned_as, label) = rt.lookup(pid).map_or((None, None), |p| {
        // Never wait for the hog's own lock.
        let label = p
            .relations
            .try_lock()
            .and_then(|r| r.as_ref().and_then(|r| r.more()?.label.clone()));
        (Some(p.spawned_as.to_string()), label.map(|l| l.to_string()))
    });
    let record = Handoff {
        pid,
        spawned_as,
        label,
        slot: slot.index,
        cpu: poll.cpu,
        cpu_before_first_look: poll.before_first_look,
        wall: poll.wall,
        looks: poll.looks,
        demoted: demote,
        at: sched.started.elapsed(),
    };
    tracing::debug!(
        slot = slot.index,
        %pid,
        spawned_as = record.spawned_as.as_deref().unwrap_or("?"),
        cpu_us = poll.cpu.as_micros() as u64,
        before_first_look_us = poll.before_first_look.as_micros() as u64,
        wall_us = poll.wall.as_micros() as u64,
        looks = poll.looks,
        ?why,
        "ember: slot handed off from a stuck worker"
    );
    *sched.sysmon.last_handoff.lock() = Some(record);
}

/// The watchdog's last hand-off: which poll it judged stuck, and on what
/// evidence (`runtime_info().threads.last_handoff`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Handoff {
    /// The process whose poll held the slot.
    pub pid: Pid,
    /// What it was spawned as (`None`: it had exited by then).
    pub spawned_as: Option<String>,
    /// What it said it was doing (`set_label`), if anything.
    pub label: Option<String>,
    /// The scheduler slot handed to another thread.
    pub slot: usize,
    /// CPU time charged to the poll (its thread's CPU clock).
    pub cpu: Duration,
    /// Of `cpu`, the part from before the watchdog first saw the poll: a
    /// lower bound, never more than the poll can have used.
    pub cpu_before_first_look: Duration,
    /// Wall time since the poll started.
    pub wall: Duration,
    /// Watchdog looks that saw the poll (1: judged at the first).
    pub looks: u32,
    /// Whether its thread was demoted (a CPU hog) rather than only left
    /// behind (a blocked poll).
    pub demoted: bool,
    /// When it happened, since the runtime started.
    pub at: Duration,
}

/// Whether `worker`'s thread is runnable although its poll used little of
/// its wall time: on an overloaded machine it waits for a CPU, not for a
/// system call or a lock, and another thread for its slot would wait just
/// the same. Unknown (no `/proc`): false, so a blocked poll is still
/// handed off.
fn waits_for_a_cpu(worker: &Worker) -> bool {
    let tid = worker.tid.load(Ordering::Acquire);
    tid != 0 && os::is_runnable(tid).unwrap_or(false)
}

/// Asks for the demoted slice for `worker`'s thread, if it has started.
fn request_demoted_slice(worker: &Worker, config: &Preemption) {
    let tid = worker.tid.load(Ordering::Acquire);
    if tid != 0 {
        os::request_slice(tid, config.demoted_slice);
    }
}

#[cfg(test)]
mod tests {
    use super::{
        first_look_base, judge_window, observe, since_unpark, Observation, Preemption, Sample,
        Window, HOG_CONFIRMATION,
    };
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    fn seen(at: u64, cpu: u64) -> Observation {
        Observation {
            epoch: 2,
            cpu,
            at,
            charged: 0,
            before_first_look: 0,
            looks: 1,
            suspect: None,
            look: 1,
        }
    }

    fn sample(started_ns: u64, cpu: u64) -> Sample {
        Sample {
            epoch: 9,
            pid_key: 1,
            started_ns,
            cpu,
            slot: 0,
            unparked_ns: u64::MAX,
            unparked_cpu: 0,
        }
    }

    /// The loaded machine: the watchdog looked at 10 ms and then not for
    /// 6 ms; the worker ran short polls for 3 ms of CPU, started one more at
    /// 13 ms, and was preempted 0.1 ms into it. The former charge (CPU since
    /// the last look, capped by the poll's 3 ms age) was 3 ms: a hog.
    #[test]
    fn a_healthy_poll_is_not_charged_for_the_polls_before_it() {
        let seen = seen(10 * MS, 50 * MS);
        let sample = sample(13 * MS, 53 * MS + MS / 10);
        let charged = sample.cpu - first_look_base(&seen, &sample);
        assert_eq!(charged, MS / 10);
    }

    /// A hog that started 10 us after a look is charged all it used but
    /// those 10 us: detection is as fast as before.
    #[test]
    fn a_hog_first_seen_is_charged_all_it_used() {
        let seen = seen(10 * MS, 50 * MS);
        let sample = sample(10 * MS + MS / 100, 52 * MS);
        let charged = sample.cpu - first_look_base(&seen, &sample);
        assert_eq!(charged, 2 * MS - MS / 100);
    }

    /// A thread busy with other polls since the last look, and then with
    /// this one: the charge is what the poll used.
    #[test]
    fn a_hog_after_busy_polls_is_charged_its_own_time() {
        let seen = seen(10 * MS, 50 * MS);
        let sample = sample(11 * MS, 53 * MS);
        let charged = sample.cpu - first_look_base(&seen, &sample);
        assert_eq!(charged, 2 * MS);
    }

    /// A poll started by a thread just back from a park (a request on an
    /// idle server): its first look charges what it used since the park,
    /// less the wall time before it started, however long ago the previous
    /// look was (a doze).
    #[test]
    fn a_poll_after_a_park_is_charged_from_the_park() {
        let long_ago = seen(MS, 40 * MS);
        let woken = Sample {
            unparked_ns: 1000 * MS,
            unparked_cpu: 50 * MS,
            // 0.05 ms after the park's end; 0.05 ms of CPU before it, 1.4 in it.
            ..sample(1000 * MS + MS / 20, 50 * MS + MS / 20 + 14 * MS / 10)
        };
        let now = 1000 * MS + 3 * MS;
        assert_eq!(first_look_base(&long_ago, &woken), woken.cpu);
        let first = observe(Some(&long_ago), &woken, now, 2, THRESHOLD);
        assert_eq!(first.charged, 14 * MS / 10);
        // No previous look at all: the same.
        let unseen = observe(None, &woken, now, 1, THRESHOLD);
        assert_eq!(unseen.charged, 14 * MS / 10);
    }

    /// The bound from the park is a lower bound: CPU used between the park
    /// and the poll's start, up to its wall time, is not charged, and a
    /// stamp from after the poll's start (or none) is ignored.
    #[test]
    fn the_charge_from_the_park_never_exceeds_what_the_poll_used() {
        // Parked from before that look until 10 ms.
        let before = seen(5 * MS, 50 * MS);
        // 0.4 ms of other polls between the park and this poll, 1 ms in it.
        let busy = Sample {
            unparked_ns: 10 * MS,
            unparked_cpu: 50 * MS,
            ..sample(10 * MS + 4 * MS / 10, 51 * MS + 4 * MS / 10)
        };
        let first = observe(Some(&before), &busy, 12 * MS, 2, THRESHOLD);
        assert_eq!(first.charged, MS);
        let stale = Sample {
            unparked_ns: 11 * MS,
            ..busy
        };
        assert_eq!(since_unpark(&stale), 0);
        assert_eq!(since_unpark(&sample(10 * MS, 60 * MS)), 0);
    }

    const THRESHOLD: Duration = Duration::from_millis(2);

    /// A thread's CPU clock leaps 15 ms while no wall time passes (measured
    /// on a VM under load): a poll first seen 0.5 ms old is charged 0.5 ms,
    /// and one seen before is charged no more than the wall time since.
    #[test]
    fn a_leap_of_the_cpu_clock_is_charged_no_more_than_the_wall_time() {
        let before = seen(10 * MS, 50 * MS);
        let first = sample(10 * MS, 50 * MS + MS / 10);
        let young = observe(
            Some(&before),
            &sample(10 * MS, 65 * MS),
            10 * MS + MS / 2,
            2,
            THRESHOLD,
        );
        assert_eq!(young.charged, MS / 2);
        let seen_once = observe(Some(&before), &first, 10 * MS + MS / 5, 2, THRESHOLD);
        assert_eq!(seen_once.charged, MS / 10);
        let leapt = Sample {
            cpu: 65 * MS,
            ..first
        };
        let later = observe(Some(&seen_once), &leapt, 11 * MS, 3, THRESHOLD);
        assert_eq!(later.charged, MS / 10 + MS * 4 / 5);
        assert_eq!(later.suspect, None);
    }

    /// A poll charged the threshold is a hog only once it is charged
    /// `HOG_CONFIRMATION` more in the same poll; a poll that ended (a new
    /// epoch) starts over.
    #[test]
    fn a_hog_is_confirmed_only_by_cpu_used_after_it_was_seen_over_the_threshold() {
        let confirmation = HOG_CONFIRMATION.as_nanos() as u64;
        let before = seen(10 * MS, 50 * MS);
        let first = sample(10 * MS, 53 * MS);
        let over = observe(Some(&before), &first, 13 * MS, 2, THRESHOLD);
        assert!(over.charged >= 2 * MS);
        assert_eq!(over.suspect.map(|s| s.charged_at), Some(over.charged));
        assert!(!over.confirms_hog(), "confirmed at first sight");
        // Descheduled: no CPU since, still unconfirmed.
        let still = observe(Some(&over), &first, 14 * MS, 3, THRESHOLD);
        assert!(!still.confirms_hog(), "confirmed without burning CPU");
        // One leap of the clock: one look, not confirmed.
        let leapt = Sample {
            cpu: 60 * MS,
            ..first
        };
        let leap = observe(Some(&still), &leapt, 14 * MS + confirmation, 4, THRESHOLD);
        assert!(leap.charged - over.charged >= confirmation);
        assert!(!leap.confirms_hog(), "confirmed by one leap");
        // Burning on: confirmed.
        let burning = Sample {
            cpu: 60 * MS + confirmation,
            ..first
        };
        let hog = observe(
            Some(&leap),
            &burning,
            14 * MS + 2 * confirmation,
            5,
            THRESHOLD,
        );
        assert!(hog.confirms_hog(), "a hog that burns on is not confirmed");
        // The poll returned and another one runs: not the old verdict.
        let next = Sample {
            epoch: first.epoch + 2,
            started_ns: 15 * MS,
            cpu: 61 * MS,
            ..first
        };
        let fresh = observe(Some(&hog), &next, 15 * MS + MS / 10, 6, THRESHOLD);
        assert_eq!(fresh.suspect, None);
        assert!(!fresh.confirms_hog());
    }

    fn window() -> Window {
        Window {
            at: 100 * MS,
            total_cpu: 40 * MS,
            normal_cpu: 10 * MS,
        }
    }

    /// A node that got 1 ms of CPU in 100 ms while a hog wanted it is
    /// starved: its demoted threads are relieved.
    #[test]
    fn a_node_under_the_floor_with_a_hog_waiting_is_relieved() {
        let config = Preemption::default();
        let verdict = judge_window(&window(), 200 * MS, 41 * MS, 10 * MS, true, false, &config);
        assert_eq!(verdict, Some(true));
        // With no hog waiting, an idle node is not starved.
        let verdict = judge_window(&window(), 200 * MS, 41 * MS, 10 * MS, false, false, &config);
        assert_eq!(verdict, Some(false));
    }

    /// Before the window ends nothing is judged.
    #[test]
    fn a_window_is_judged_once_over() {
        let config = Preemption::default();
        let verdict = judge_window(&window(), 150 * MS, 40 * MS, 10 * MS, true, false, &config);
        assert_eq!(verdict, None);
    }

    /// Relieved hogs that got the floor go back down only when the node's
    /// normal workers were busy; ten hogs sharing the CPU among themselves
    /// are not starved.
    #[test]
    fn relief_ends_only_when_the_node_is_busy() {
        let config = Preemption::default();
        let idle = judge_window(&window(), 200 * MS, 90 * MS, 11 * MS, true, true, &config);
        assert_eq!(idle, Some(true));
        let busy = judge_window(&window(), 200 * MS, 90 * MS, 30 * MS, true, true, &config);
        assert_eq!(busy, Some(false));
        let shared = judge_window(&window(), 200 * MS, 130 * MS, 10 * MS, true, false, &config);
        assert_eq!(shared, Some(false));
    }

    /// A late look judges a longer window against a floor scaled to it.
    #[test]
    fn the_floor_scales_with_a_late_window() {
        let config = Preemption::default();
        let verdict = judge_window(&window(), 300 * MS, 49 * MS, 10 * MS, true, false, &config);
        assert_eq!(verdict, Some(true));
    }
}
