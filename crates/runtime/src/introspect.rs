//! Introspection: what the live console and `top` read.
//!
//! Everything here is a snapshot taken without stopping anything. Per-runtime
//! figures cost O(schedulers); per-process listings cost O(processes) and are
//! meant for sampling about once a second.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::context;
use crate::pid::{MonitorRef, Pid};
use crate::process::{Priority, Process, Status};
use crate::runtime::{Handle, Shared};

/// Everything known about one process (Erlang's `process_info/1`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProcessInfo {
    /// The process.
    pub pid: Pid,
    /// Waiting, runnable, running or exiting.
    pub status: Status,
    /// What it was spawned as: its label, or the type name of its body.
    pub spawned_as: String,
    /// Its registered name.
    pub name: Option<Arc<str>>,
    /// What it says it is doing now ([`set_label`]), if it said.
    pub label: Option<String>,
    /// Reductions consumed so far, counted at runtime operations (send,
    /// receive, spawn, `yield_point`) and added when each poll returns:
    /// native code that never awaits does not add any.
    pub reductions: u64,
    /// Time spent being polled (wall time of its polls), including the poll
    /// in progress: a process running natively is charged as it runs.
    pub cpu_time: Duration,
    /// Messages in its mailbox.
    pub mailbox_len: usize,
    /// Estimated bytes it owns (control block, body, queued messages, relations).
    pub memory_bytes: usize,
    /// Its memory limit ([`Spawn::memory_limit`](crate::Spawn::memory_limit)),
    /// if it has one.
    pub memory_limit: Option<usize>,
    /// Bytes attributed to it under its limit: allocated during its polls
    /// less what it freed there, never below zero (docs/semantics.md §9.5).
    /// Counted only for a process with a limit.
    pub memory_attributed_bytes: Option<usize>,
    /// Linked processes.
    pub links: Vec<Pid>,
    /// Processes it monitors, with the monitor references.
    pub monitors: Vec<(MonitorRef, Pid)>,
    /// Processes that monitor it.
    pub monitored_by: Vec<Pid>,
    /// Scheduling priority.
    pub priority: Priority,
    /// Whether it traps exits.
    pub trap_exit: bool,
    /// The poll it is inside right now, if it is running.
    pub current_poll: Option<PollInfo>,
    /// Times the watchdog took a scheduler away from one of its polls.
    pub offenses: u8,
    /// Its group leader (`crate::io`): where its output goes.
    pub group_leader: Pid,
}

/// A poll in progress, as the watchdog sees it: how long a process has been
/// running without awaiting, and where.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PollInfo {
    /// Time since the poll started.
    pub running_for: Duration,
    /// The poll's thread was handed off and demoted: it runs in the background.
    pub on_background_thread: bool,
    /// Nice value of that thread.
    pub nice: i32,
    /// Kernel id of that thread.
    pub tid: i32,
    /// The process was killed: it is dead for everyone else and its body is
    /// dropped when this poll returns.
    pub kill_pending: bool,
}

impl std::fmt::Display for PollInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.running_for.as_secs_f64();
        let duration = if secs >= 1.0 {
            format!("{secs:.1} s")
        } else {
            format!("{:.1} ms", secs * 1e3)
        };
        if self.on_background_thread {
            write!(f, "running natively on a background thread for {duration}")?;
        } else {
            write!(f, "running on a scheduler thread for {duration}")?;
        }
        if self.kill_pending {
            f.write_str(", kill pending")?;
        }
        Ok(())
    }
}

/// Worker threads and what the preemption machinery has done.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ThreadsInfo {
    /// Worker threads alive (serving slots, spares, background).
    pub workers: usize,
    /// Normal-priority workers waiting to take over a stuck slot.
    pub spares: usize,
    /// Demoted workers (running or waiting for background work).
    pub background: usize,
    /// Processes waiting for a background worker (repeat offenders).
    pub background_queue: usize,
    /// Slots handed off from a stuck worker since start.
    pub handoffs: u64,
    /// Of those, hand-offs of a blocked (not CPU-bound) poll.
    pub blocked_handoffs: u64,
    /// Of those, hand-offs of a poll that overran its slice while other
    /// processes waited for its scheduler (`Preemption::contended_threshold`;
    /// its thread is not demoted).
    pub contended_handoffs: u64,
    /// Priority demotions applied since start.
    pub demotions: u64,
    /// Starvation reliefs since start: demoted threads raised to
    /// `Preemption::relief_nice` after a window below the CPU floor.
    pub reliefs: u64,
    /// Worker threads started since start.
    pub threads_started: u64,
    /// The watchdog's last hand-off: which poll, and on what evidence.
    pub last_handoff: Option<crate::Handoff>,
    /// Whether tokio's driver thread (`ember-io`) runs: it starts when a
    /// process first needs it (a tokio socket, timer or task), not before.
    pub tokio_driver: bool,
}

/// A cheap per-process sample for `top`: diff two samples to get CPU use over
/// an interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessSample {
    /// The process.
    pub pid: Pid,
    /// Reductions so far (added when each poll returns).
    pub reductions: u64,
    /// Nanoseconds polled so far, including the poll in progress.
    pub cpu_ns: u64,
}

/// One scheduler's counters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SchedulerInfo {
    /// Index, from 0.
    pub index: usize,
    /// Whether it takes work.
    pub online: bool,
    /// Total time spent polling processes since start.
    pub busy: Duration,
    /// Processes waiting in its run queue.
    pub run_queue: usize,
    /// Polls done since start.
    pub polls: u64,
    /// Reductions executed since start.
    pub reductions: u64,
}

/// Runtime-wide figures (Erlang's `statistics/1` and `system_info/1`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RuntimeInfo {
    /// Live processes.
    pub process_count: usize,
    /// Time since the runtime started.
    pub uptime: Duration,
    /// Every scheduler, online or not.
    pub schedulers: Vec<SchedulerInfo>,
    /// Processes waiting in the global queue.
    pub global_queue: usize,
    /// Pending timers.
    pub timers: usize,
    /// Resident memory of the OS process, in bytes (0 where unknown).
    pub memory_rss_bytes: usize,
    /// Bytes allocated through [`CountingAlloc`](crate::alloc::CountingAlloc), if the
    /// program installed it as its global allocator.
    pub memory_allocated_bytes: Option<usize>,
    /// Worker threads and the preemption machinery's counters.
    pub threads: ThreadsInfo,
}

impl RuntimeInfo {
    /// Utilisation of each scheduler between an earlier snapshot and this one,
    /// from 0.0 to 1.0 (like `scheduler_wall_time`).
    pub fn utilization_since(&self, earlier: &RuntimeInfo) -> Vec<f64> {
        let wall = self.uptime.saturating_sub(earlier.uptime).as_secs_f64();
        self.schedulers
            .iter()
            .zip(&earlier.schedulers)
            .map(|(now, then)| {
                if wall <= 0.0 {
                    0.0
                } else {
                    (now.busy.saturating_sub(then.busy).as_secs_f64() / wall).clamp(0.0, 1.0)
                }
            })
            .collect()
    }
}

impl Shared {
    pub(crate) fn process_info(&self, pid: Pid) -> Option<ProcessInfo> {
        let process = self.lookup(pid).or_else(|| {
            pid.is_local()
                .then(|| self.zombies.get(&pid.key()).map(|p| p.value().clone()))
                .flatten()
        })?;
        // The counters first, then the poll: a poll that ends in between
        // is missed (until the next look), never counted twice.
        let mut info = info_of(&process);
        info.current_poll = self.current_poll(&process);
        if let Some(poll) = &info.current_poll {
            info.cpu_time += poll.running_for;
        }
        Some(info)
    }

    /// The poll `process` is inside, if any.
    fn current_poll(&self, process: &Process) -> Option<PollInfo> {
        if process.status() != Status::Running && !process.is_exiting() {
            return None;
        }
        let key = process.pid.key();
        let now = self.sched.nanos_since_start(std::time::Instant::now());
        self.sched.workers.snapshot().into_iter().find_map(|w| {
            let epoch = w.poll_epoch.load(Ordering::Acquire);
            (epoch % 2 == 1 && w.poll_pid.load(Ordering::Relaxed) == key).then(|| PollInfo {
                running_for: Duration::from_nanos(
                    now.saturating_sub(w.poll_started_ns.load(Ordering::Relaxed)),
                ),
                on_background_thread: w.background.load(Ordering::Relaxed),
                nice: self.sched.os_nice(w.nice.load(Ordering::Relaxed)),
                tid: w.tid.load(Ordering::Relaxed),
                kill_pending: process.is_exiting(),
            })
        })
    }

    pub(crate) fn runtime_info(&self) -> RuntimeInfo {
        let polls = self.polls_in_progress();
        RuntimeInfo {
            process_count: self.table.len(),
            uptime: self.sched.started.elapsed(),
            schedulers: self
                .sched
                .slots
                .iter()
                .map(|s| SchedulerInfo {
                    index: s.index,
                    online: s.is_online(),
                    // Counted when each poll ends, plus the one in progress.
                    busy: Duration::from_nanos(
                        s.core.busy_ns.load(Ordering::Relaxed)
                            + polls
                                .iter()
                                .find(|(worker, _, _)| {
                                    *worker == s.remote.owner.load(Ordering::Relaxed)
                                })
                                .map_or(0, |(_, _, ns)| *ns),
                    ),
                    run_queue: s.queue_len(),
                    polls: s.core.polls.load(Ordering::Relaxed),
                    reductions: s.core.reductions.load(Ordering::Relaxed),
                })
                .collect(),
            global_queue: self.sched.injector_len(),
            timers: self.timers.pending(),
            memory_rss_bytes: rss_bytes(),
            memory_allocated_bytes: crate::alloc::allocated_bytes(),
            threads: {
                let population = self.sched.workers.population();
                let counters = &self.sched.counters;
                ThreadsInfo {
                    workers: population.live,
                    spares: population.spares,
                    background: population.background,
                    background_queue: self.sched.background_len(),
                    handoffs: counters.handoffs.load(Ordering::Relaxed),
                    blocked_handoffs: counters.blocked_handoffs.load(Ordering::Relaxed),
                    contended_handoffs: counters.contended_handoffs.load(Ordering::Relaxed),
                    demotions: counters.demotions.load(Ordering::Relaxed),
                    reliefs: counters.reliefs.load(Ordering::Relaxed),
                    threads_started: counters.threads_started.load(Ordering::Relaxed),
                    last_handoff: self.sched.sysmon.last_handoff(),
                    tokio_driver: self.tokio.as_ref().is_some_and(|d| d.is_started()),
                }
            },
        }
    }

    pub(crate) fn processes(&self) -> Vec<Pid> {
        self.table.collect(|p| p.pid)
    }

    /// Polls in progress: pid key → nanoseconds so far, per worker.
    fn polls_in_progress(&self) -> Vec<(usize, u64, u64)> {
        let now = self.sched.nanos_since_start(std::time::Instant::now());
        self.sched
            .workers
            .snapshot()
            .iter()
            .filter(|w| w.poll_epoch.load(Ordering::Acquire) % 2 == 1)
            .map(|w| {
                let started = w.poll_started_ns.load(Ordering::Relaxed);
                (
                    w.id,
                    w.poll_pid.load(Ordering::Relaxed),
                    now.saturating_sub(started),
                )
            })
            .collect()
    }

    pub(crate) fn sample_processes(&self) -> Vec<ProcessSample> {
        // A process inside a long poll is charged for it so far, so `top`
        // sees a hog before its poll returns. The counters are read first,
        // then the polls: a poll that ends in between is missed (until the
        // next sample), never counted twice: a worker marks its poll ended
        // before it adds the poll to the counters. (The accesses are
        // relaxed: that order is what x86 guarantees; elsewhere a reader
        // could rarely count a poll twice, or miss one.)
        let mut samples: Vec<ProcessSample> = self.table.collect(|p| ProcessSample {
            pid: p.pid,
            reductions: p.reductions.load(Ordering::Relaxed),
            cpu_ns: p.cpu_ns.load(Ordering::Relaxed),
        });
        let running: std::collections::HashMap<u64, u64> = self
            .polls_in_progress()
            .into_iter()
            .map(|(_, pid, ns)| (pid, ns))
            .collect();
        if !running.is_empty() {
            for sample in &mut samples {
                if let Some(ns) = running.get(&sample.pid.key()) {
                    sample.cpu_ns += ns;
                }
            }
        }
        samples
    }
}

fn info_of(process: &Process) -> ProcessInfo {
    let (name, label, links, monitors, monitored_by) = match &*process.relations.lock() {
        Some(r) => {
            let more = r.more();
            (
                more.and_then(|m| m.name.clone()),
                more.and_then(|m| m.label.as_ref().map(|l| l.to_string())),
                r.links.iter().copied().collect(),
                more.map_or_else(Vec::new, |m| {
                    m.monitoring.iter().map(|(m, p)| (*m, *p)).collect()
                }),
                more.map_or_else(Vec::new, |m| m.monitored_by.values().copied().collect()),
            )
        }
        None => (None, None, Vec::new(), Vec::new(), Vec::new()),
    };
    ProcessInfo {
        pid: process.pid,
        status: process.status(),
        spawned_as: process.spawned_as.to_string(),
        name,
        label,
        reductions: process.reductions.load(Ordering::Relaxed),
        cpu_time: Duration::from_nanos(process.cpu_ns.load(Ordering::Relaxed)),
        mailbox_len: process.mailbox.len(),
        memory_bytes: process.memory_estimate(),
        memory_limit: process.limited_memory().and_then(|m| m.limit()),
        memory_attributed_bytes: process.limited_memory().map(|m| m.used()),
        links,
        monitors,
        monitored_by,
        priority: process.priority(),
        trap_exit: process.trap_exit(),
        current_poll: None,
        offenses: process.offenses(),
        group_leader: crate::io::group_leader_of(&process.rt, process),
    }
}

/// Resident set size of this OS process, from `/proc/self/statm` (Linux).
fn rss_bytes() -> usize {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

impl Handle {
    /// Everything known about `pid`, or `None` if it is not alive.
    pub fn process_info(&self, pid: Pid) -> Option<ProcessInfo> {
        self.shared.process_info(pid)
    }

    /// Runtime-wide figures.
    pub fn runtime_info(&self) -> RuntimeInfo {
        self.shared.runtime_info()
    }

    /// Every live process.
    pub fn processes(&self) -> Vec<Pid> {
        self.shared.processes()
    }

    /// CPU and reduction counters of every live process.
    pub fn sample_processes(&self) -> Vec<ProcessSample> {
        self.shared.sample_processes()
    }
}

/// Everything known about `pid` (from inside a process).
pub fn process_info(pid: Pid) -> Option<ProcessInfo> {
    context::with_runtime("process_info", |rt| rt.process_info(pid))
}

/// Every live process (from inside a process).
pub fn processes() -> Vec<Pid> {
    context::with_runtime("processes", |rt| rt.processes())
}

/// Says what the calling process is doing now, for introspection (the
/// console's top and info): OTP 27's `proc_lib:set_label/1`. Unlike the
/// spawn-time label (`spawned_as`) it can change, e.g. per request served.
pub fn set_label(label: impl Into<Cow<'static, str>>) {
    let label = label.into();
    context::with_current("set_label", |me| {
        me.with_live_relations(|r| r.more_mut().label = Some(label));
    });
}

/// Sets the calling process's priority; returns the previous one.
pub fn set_priority(priority: Priority) -> Priority {
    context::with_current("set_priority", |me| me.set_priority(priority))
}
