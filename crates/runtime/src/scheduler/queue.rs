//! Run queues: per-priority FIFOs, with normal priority split into processes
//! that were woken (interactive) and processes that were preempted for using
//! their whole slice (batch).

use std::collections::VecDeque;
use std::sync::Arc;

use super::ring::Ring;
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

/// The fairness counters of [`RunQueue::pop_with`]: picks since low and
/// batch work last had a turn.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Streaks {
    /// Normal picks since the last low one.
    normal: u32,
    /// Woken picks since the last batch one.
    woken: u32,
}

impl Streaks {
    /// A woken pick made while nothing but woken work waited: what
    /// [`RunQueue::pop_with`] counts for it.
    pub(crate) fn count_woken_pick(&mut self) {
        self.normal = self.normal.saturating_add(1);
        self.woken = self.woken.saturating_add(1);
    }
}

/// Per-priority FIFO queues.
#[derive(Default)]
pub(crate) struct RunQueue {
    high: VecDeque<Arc<Process>>,
    woken: VecDeque<Arc<Process>>,
    batch: VecDeque<Arc<Process>>,
    low: VecDeque<Arc<Process>>,
    /// The counters of [`RunQueue::pop`] (the injector's; a slot's worker
    /// keeps its own, as part of its woken work sits in the slot's ring).
    streaks: Streaks,
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

    /// High-priority processes waiting.
    pub(crate) fn high_len(&self) -> usize {
        self.high.len()
    }

    /// Takes the process at the front of the woken queue.
    pub(crate) fn pop_woken_front(&mut self) -> Option<Arc<Process>> {
        self.woken.pop_front()
    }

    /// Queues a process at the back of the woken queue, whatever its
    /// priority (one moved from a slot's ring, where only normal processes
    /// wait).
    pub(crate) fn push_woken(&mut self, process: Arc<Process>) {
        self.woken.push_back(process);
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
        let mut streaks = self.streaks;
        let picked = self.pop_with(&mut streaks, None);
        self.streaks = streaks;
        picked
    }

    /// [`RunQueue::pop`] with the fairness counters `streaks`, and `ring`
    /// (a slot's lock-free ring of woken processes) as the back of the woken
    /// queue: what waits in the queue's own woken FIFO was queued before
    /// what waits in the ring (`Slot::push_woken`).
    pub(crate) fn pop_with(
        &mut self,
        streaks: &mut Streaks,
        ring: Option<&Ring<Arc<Process>>>,
    ) -> Option<(Arc<Process>, Class)> {
        if let Some(p) = self.high.pop_front() {
            return Some((p, Class::Woken));
        }
        let woken_waiting = !self.woken.is_empty() || ring.is_some_and(|r| r.len() > 0);
        let normal_waiting = woken_waiting || !self.batch.is_empty();
        if !self.low.is_empty() && (!normal_waiting || streaks.normal >= LOW_PRIORITY_SKIPS) {
            streaks.normal = 0;
            return self.low.pop_front().map(|p| (p, Class::Batch));
        }
        streaks.normal = streaks.normal.saturating_add(1);
        if !self.batch.is_empty() && (!woken_waiting || streaks.woken >= BATCH_SKIPS) {
            streaks.woken = 0;
            return self.batch.pop_front().map(|p| (p, Class::Batch));
        }
        streaks.woken = streaks.woken.saturating_add(1);
        let woken = self.woken.pop_front().or_else(|| ring.and_then(Ring::pop));
        match woken {
            Some(p) => Some((p, Class::Woken)),
            // The ring's only entry is a push not yet published: what else
            // waits goes now rather than after an idle round.
            None => self
                .batch
                .pop_front()
                .or_else(|| self.low.pop_front())
                .map(|p| (p, Class::Batch)),
        }
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
