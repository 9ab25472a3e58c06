//! Run queues: per-priority FIFOs, with normal priority split into processes
//! that were woken (interactive) and processes that were preempted for using
//! their whole slice (batch).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::process::{Priority, Process};

/// Normal picks before a waiting low-priority process gets its turn (BEAM's
/// `RESCHEDULE_LOW`).
const LOW_PRIORITY_SKIPS: u32 = 8;
/// Woken picks before a waiting batch process gets its turn: batch work keeps
/// a guaranteed share of one pick in `BATCH_SKIPS + 1`.
const BATCH_SKIPS: u32 = 3;

/// Why a process is queued, which decides where it waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Spawned, or woken by a message, timer or I/O: served first.
    Woken,
    /// Preempted after using its whole slice: served after woken work, with a
    /// guaranteed share.
    Batch,
}

/// Per-priority FIFO queues.
#[derive(Default)]
pub(crate) struct RunQueue {
    high: VecDeque<Arc<Process>>,
    woken: VecDeque<Arc<Process>>,
    batch: VecDeque<Arc<Process>>,
    low: VecDeque<Arc<Process>>,
    normal_streak: u32,
    woken_streak: u32,
}

impl RunQueue {
    /// Processes waiting.
    pub(crate) fn len(&self) -> usize {
        self.high.len() + self.woken.len() + self.batch.len() + self.low.len()
    }

    /// High-priority and woken processes waiting (interactive work).
    pub(crate) fn interactive_len(&self) -> usize {
        self.high.len() + self.woken.len()
    }

    /// Whether high-priority work is waiting.
    pub(crate) fn has_high(&self) -> bool {
        !self.high.is_empty()
    }

    pub(crate) fn push(&mut self, process: Arc<Process>, class: Class) {
        match (process.priority(), class) {
            (Priority::High, _) => self.high.push_back(process),
            (Priority::Low, _) => self.low.push_back(process),
            (_, Class::Woken) => self.woken.push_back(process),
            (_, Class::Batch) => self.batch.push_back(process),
        }
    }

    /// The next process to run: high first; then normal, woken before batch
    /// with batch getting one pick in `BATCH_SKIPS + 1`; low getting one pick
    /// in `LOW_PRIORITY_SKIPS + 1` when normal work waits.
    pub(crate) fn pop(&mut self) -> Option<(Arc<Process>, Class)> {
        if let Some(p) = self.high.pop_front() {
            return Some((p, Class::Woken));
        }
        let normal_waiting = !self.woken.is_empty() || !self.batch.is_empty();
        if !self.low.is_empty() && (!normal_waiting || self.normal_streak >= LOW_PRIORITY_SKIPS) {
            self.normal_streak = 0;
            return self.low.pop_front().map(|p| (p, Class::Batch));
        }
        self.normal_streak += 1;
        if !self.batch.is_empty() && (self.woken.is_empty() || self.woken_streak >= BATCH_SKIPS) {
            self.woken_streak = 0;
            return self.batch.pop_front().map(|p| (p, Class::Batch));
        }
        self.woken_streak += 1;
        self.woken.pop_front().map(|p| (p, Class::Woken))
    }

    /// Moves about half of the processes into `into`.
    pub(crate) fn steal_half(&mut self, into: &mut RunQueue) -> usize {
        let mut moved = 0;
        for (from, to) in [
            (&mut self.high, &mut into.high),
            (&mut self.woken, &mut into.woken),
            (&mut self.batch, &mut into.batch),
            (&mut self.low, &mut into.low),
        ] {
            let n = from.len().div_ceil(2);
            to.extend(from.drain(..n));
            moved += n;
        }
        moved
    }

    /// Moves everything into `into`, keeping classes.
    pub(crate) fn drain_into(&mut self, into: &mut RunQueue) {
        into.high.append(&mut self.high);
        into.woken.append(&mut self.woken);
        into.batch.append(&mut self.batch);
        into.low.append(&mut self.low);
    }

    /// Empties the queue.
    pub(crate) fn take_all(&mut self) -> Vec<Arc<Process>> {
        let mut all: Vec<_> = self.high.drain(..).collect();
        all.extend(self.woken.drain(..));
        all.extend(self.batch.drain(..));
        all.extend(self.low.drain(..));
        all
    }
}
