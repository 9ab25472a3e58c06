//! The process control block.
//!
//! Its scheduling state machine lives in [`state`]; the guard of its
//! `RUNNING` bit, the only way to its body and its mailbox's saved queue,
//! and the one way a process ends, in [`running`] ([`Running`],
//! [`Running::exit`]); links, monitors and the name in [`Relations`]; the
//! mailbox in [`crate::mailbox`].

mod group_leader;
mod running;
mod small_map;
mod state;
mod waker;

pub(crate) use running::{schedule, tear_down, End, Parked, Picked, Running};
pub(crate) use small_map::{PidSet, SmallMap};
pub(crate) use state::State;
#[cfg(all(test, feature = "loom-models"))]
pub(crate) use state::{TransitionToIdle, TransitionToRunning, TransitionToScheduled};
pub(crate) use waker::{clone_quietly, keep_quietly, poll_quietly, same_waker, waker_ref};

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::alloc::MemoryAccount;
use crate::loom::sync::atomic::{AtomicU32, AtomicU8};
use crate::loom::sync::Mutex;
use crate::mailbox::Mailbox;
use crate::pid::{MonitorRef, Pid};
use crate::reason::ExitReason;
use crate::runtime::Shared;
use crate::timer::TimerKey;

/// The boxed body of a process.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ExitReason> + Send + 'static>>;

/// Flag bit: exit signals arrive as [`Exit`](crate::Exit) messages.
const TRAP_EXIT: u8 = 1 << 0;
/// Flag bits 1-2: the [`Priority`].
const PRIORITY_SHIFT: u8 = 1;
const PRIORITY_MASK: u8 = 0b11 << PRIORITY_SHIFT;
// Flag bit 3: the process has a group leader of its own (`group_leader`).

/// Scheduling priority of a process, as in BEAM.
///
/// `High` processes run before any `Normal` or `Low` one; `Low` processes run
/// once for every eight `Normal` picks when both are waiting, so they never
/// starve (BEAM's `RESCHEDULE_LOW`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Priority {
    /// Served before everything else.
    High,
    /// The default.
    #[default]
    Normal,
    /// Background work with a guaranteed small share.
    Low,
}

impl Priority {
    fn to_bits(self) -> u8 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    fn from_bits(bits: u8) -> Priority {
        match bits {
            0 => Priority::High,
            2 => Priority::Low,
            _ => Priority::Normal,
        }
    }
}

/// What a process is doing right now, as introspection reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Waiting for a message, a timer or I/O.
    Waiting,
    /// In a run queue.
    Runnable,
    /// Being polled by a scheduler.
    Running,
    /// Dead for everyone else; its future has not been dropped yet.
    Exiting,
}

/// Links, monitors and name: the parts of a process other processes change.
/// Allocated on first use, so a process that has none costs one pointer; a
/// process with links only (most of them: a worker linked to its
/// supervisor) holds up to two inline, in 40 bytes.
#[derive(Default)]
pub(crate) struct Relations {
    /// Processes linked to this one.
    pub(crate) links: PidSet,
    /// Everything else, allocated on first use.
    rest: Option<Box<MoreRelations>>,
}

/// The relations a process is less likely to have than a link.
#[derive(Default)]
pub(crate) struct MoreRelations {
    /// Monitors this process holds on others: reference → target.
    pub(crate) monitoring: MonitorMap,
    /// Monitors others hold on this process: reference → watcher.
    pub(crate) monitored_by: MonitorMap,
    /// The registered name, if any.
    pub(crate) name: Option<Arc<str>>,
    /// What the process says it is doing now (`set_label`).
    pub(crate) label: Option<Cow<'static, str>>,
    /// Timers armed with this process as their target (`send_after`), some
    /// perhaps already fired; cancelled when it exits.
    pub(crate) timers: Vec<TimerKey>,
    /// `timers` length at which fired timers are pruned from it.
    pub(crate) timers_prune_at: usize,
    /// Its group leader, if not the node's default (`crate::io`).
    pub(crate) group_leader: Option<Pid>,
    /// Ids of the process aliases it holds (`crate::alias`), removed from
    /// the runtime's alias table when it exits.
    pub(crate) aliases: Vec<u64>,
}

/// Monitors by reference: the other process of each.
pub(crate) type MonitorMap = SmallMap<MonitorRef, Pid, 1>;

impl Relations {
    /// Monitors, name, label and timers, if any was ever set.
    pub(crate) fn more(&self) -> Option<&MoreRelations> {
        self.rest.as_deref()
    }

    /// Monitors, name, label and timers, allocated on first use.
    pub(crate) fn more_mut(&mut self) -> &mut MoreRelations {
        self.rest.get_or_insert_with(Box::default)
    }

    /// Monitors, name, label and timers, if any was ever set, to change.
    pub(crate) fn more_if_any_mut(&mut self) -> Option<&mut MoreRelations> {
        self.rest.as_deref_mut()
    }

    /// Takes the parts out, to act on them once the process is exiting.
    pub(crate) fn into_parts(self) -> (PidSet, Option<Box<MoreRelations>>) {
        (self.links, self.rest)
    }

    /// Bytes of the record and what it owns.
    fn memory_estimate(&self) -> usize {
        let more = self.more().map_or(0, |m| {
            std::mem::size_of::<MoreRelations>()
                + m.monitoring.heap_bytes()
                + m.monitored_by.heap_bytes()
                + m.timers.capacity() * std::mem::size_of::<TimerKey>()
        });
        std::mem::size_of::<Relations>() + self.links.heap_bytes() + more
    }
}

/// A process control block.
pub(crate) struct Process {
    pub(crate) pid: Pid,
    /// Scheduling state; see [`state`].
    pub(crate) state: State,
    /// `TRAP_EXIT` and the priority.
    flags: AtomicU8,
    pub(crate) mailbox: Mailbox,
    /// The body; empty once it finished or was dropped. Reached only
    /// through a [`Running`] guard.
    body: running::Body,
    /// The process it sent to last, maybe kept (`crate::message`, "Kept
    /// targets"). Reached only through a [`Running`] guard.
    last_sent: running::LastSent,
    /// Links, monitors, name: the relations lock of `crate::signal`'s link
    /// protocol (at most two held at once, in ascending pid order).
    pub(crate) relations: Mutex<Option<Box<Relations>>>,
    /// Reductions consumed so far.
    pub(crate) reductions: AtomicU64,
    /// Nanoseconds spent being polled.
    pub(crate) cpu_ns: AtomicU64,
    /// What the process was spawned as: its label or the body's type name.
    pub(crate) spawned_as: Cow<'static, str>,
    /// Times the watchdog took a slot away from one of its polls (saturating).
    offenses: AtomicU8,
    /// Suspensions on busy distribution connections not yet resumed
    /// (`crate::dist::Suspension`): while above zero the process is not
    /// polled.
    pub(crate) busy_dist: AtomicU32,
    /// Size of the body's state machine, for the memory estimate.
    pub(crate) future_size: u32,
    /// Its memory account (`crate::memory`), boxed on the first limit so a
    /// process without one pays 16 bytes.
    memory: OnceLock<Box<MemoryAccount>>,
    pub(crate) rt: Arc<Shared>,
}

impl Process {
    pub(crate) fn new(
        pid: Pid,
        rt: Arc<Shared>,
        future: BoxFuture,
        future_size: usize,
        spawned_as: Cow<'static, str>,
        priority: Priority,
        trap_exit: bool,
    ) -> Process {
        let flags = (priority.to_bits() << PRIORITY_SHIFT) | if trap_exit { TRAP_EXIT } else { 0 };
        Process {
            pid,
            // Born runnable: the spawner queues it at once.
            state: State::new_scheduled(),
            flags: AtomicU8::new(flags),
            mailbox: Mailbox::default(),
            body: running::Body::new(future),
            last_sent: running::LastSent::default(),
            relations: Mutex::new(None),
            reductions: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(0),
            spawned_as,
            offenses: AtomicU8::new(0),
            busy_dist: AtomicU32::new(0),
            future_size: u32::try_from(future_size).unwrap_or(u32::MAX),
            memory: OnceLock::new(),
            rt,
        }
    }

    /// Its memory account, if a limit was ever set.
    pub(crate) fn memory(&self) -> Option<&MemoryAccount> {
        self.memory.get().map(|account| &**account)
    }

    /// Its memory account, created without a limit if it has none: only
    /// the process itself (or its spawner, before it is published) calls
    /// this, to set a limit.
    pub(crate) fn memory_account(&self) -> &MemoryAccount {
        self.memory.get_or_init(|| Box::new(MemoryAccount::new()))
    }

    /// The account allocations during its polls are charged to: its
    /// account if it has a limit now.
    pub(crate) fn limited_memory(&self) -> Option<&MemoryAccount> {
        self.memory().filter(|account| account.limit().is_some())
    }

    /// Whether it went over its memory limit (and is or will be killed).
    pub(crate) fn is_over_memory_limit(&self) -> bool {
        self.memory().is_some_and(MemoryAccount::is_over)
    }

    /// Whether exit signals are turned into messages.
    pub(crate) fn trap_exit(&self) -> bool {
        self.flags.load(Ordering::Acquire) & TRAP_EXIT != 0
    }

    /// Sets `trap_exit`, returning the previous value.
    pub(crate) fn set_trap_exit(&self, on: bool) -> bool {
        let prev = if on {
            self.flags.fetch_or(TRAP_EXIT, Ordering::AcqRel)
        } else {
            self.flags.fetch_and(!TRAP_EXIT, Ordering::AcqRel)
        };
        prev & TRAP_EXIT != 0
    }

    pub(crate) fn priority(&self) -> Priority {
        Priority::from_bits((self.flags.load(Ordering::Relaxed) & PRIORITY_MASK) >> PRIORITY_SHIFT)
    }

    /// Sets the priority, returning the previous one.
    pub(crate) fn set_priority(&self, priority: Priority) -> Priority {
        let mut current = self.flags.load(Ordering::Relaxed);
        loop {
            let next = (current & !PRIORITY_MASK) | (priority.to_bits() << PRIORITY_SHIFT);
            match self.flags.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(prev) => return Priority::from_bits((prev & PRIORITY_MASK) >> PRIORITY_SHIFT),
                Err(actual) => current = actual,
            }
        }
    }

    /// The group leader set for this process, `None` if it follows the
    /// node's default ([`group_leader`]: one flag load in that case).
    pub(crate) fn group_leader(&self) -> Option<Pid> {
        group_leader::read(&self.flags, self)
    }

    /// Sets the group leader (`None`: the node's default); false if the
    /// process is exiting.
    pub(crate) fn set_group_leader(&self, leader: Option<Pid>) -> bool {
        group_leader::write(&self.flags, self, leader)
    }

    /// Whether the process has begun exiting (is dead for everyone else).
    pub(crate) fn is_exiting(&self) -> bool {
        self.state.is_exiting()
    }

    /// What introspection reports it is doing.
    pub(crate) fn status(&self) -> Status {
        self.state.status()
    }

    /// Marks the process exiting; true for the one caller that did it.
    pub(crate) fn begin_exit(&self) -> bool {
        self.state.begin_exit()
    }

    /// A poll of this process was retaken for hogging the CPU.
    pub(crate) fn record_offense(&self) {
        let n = self.offenses.load(Ordering::Relaxed);
        self.offenses.store(n.saturating_add(1), Ordering::Relaxed);
    }

    /// Times a poll of this process was retaken for hogging the CPU.
    pub(crate) fn offenses(&self) -> u8 {
        self.offenses.load(Ordering::Relaxed)
    }

    /// A repeat offender (retaken twice): it runs on background workers only.
    pub(crate) fn is_offender(&self) -> bool {
        self.offenses() >= 2
    }

    /// Runs `f` on the relations record unless the process is exiting (then
    /// `None`): what a process adds to itself must not outlive its exit.
    pub(crate) fn with_live_relations<R>(&self, f: impl FnOnce(&mut Relations) -> R) -> Option<R> {
        // EXITING is set under the same lock (`crate::signal`, link protocol).
        crate::signal::with_live_relations(self, f)
    }

    /// Runs `f` on the relations record, allocating it on first use.
    pub(crate) fn with_relations<R>(&self, f: impl FnOnce(&mut Relations) -> R) -> R {
        let mut guard = self.relations.lock();
        f(guard.get_or_insert_with(Box::default))
    }

    /// Estimated bytes owned by this process.
    pub(crate) fn memory_estimate(&self) -> usize {
        let relations = self
            .relations
            .lock()
            .as_ref()
            .map_or(0, |r| r.memory_estimate());
        std::mem::size_of::<Process>()
            + 16
            + self.future_size as usize
            + self.mailbox.memory_estimate()
            + relations
    }
}

/// Adds `n` to a counter only the polling thread writes (no locked RMW needed).
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}
