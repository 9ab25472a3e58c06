//! The registry of worker threads: every live worker, the spares kept
//! ready for hand-offs, the idle background workers, and the thread
//! ceilings ([`Preemption::soft_thread_limit`],
//! [`Preemption::hard_thread_limit`]).
//!
//! Everything that decides who serves a slot happens under the registry's
//! lock: the watchdog's hand-over of a stuck slot to a spare
//! ([`Workers::hand_over`]) and a spare's registration or exit
//! ([`Workers::wait_as_spare`]), so a worker is never both a listed spare
//! and a slot's owner, and never exits once chosen. The watchdog's loop
//! itself is in [`sysmon`](super::sysmon); the threads' bodies are in
//! [`worker`](super::worker).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::config::Preemption;
use super::os;
use super::slot::Slot;
use super::worker::{worker_main, Worker, NO_SLOT};
use super::Scheduler;
use crate::runtime::Shared;

/// The registry of worker threads.
#[derive(Default)]
pub(crate) struct Workers {
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    next_id: usize,
    live: Vec<Arc<Worker>>,
    handles: Vec<JoinHandle<()>>,
    spares: Vec<Arc<Worker>>,
    idle_background: Vec<Arc<Worker>>,
    last_spawn: Option<Instant>,
    warned_soft: bool,
    warned_hard: bool,
}

/// A snapshot of the thread population, for introspection.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Population {
    pub(crate) live: usize,
    pub(crate) spares: usize,
    pub(crate) background: usize,
}

impl Workers {
    /// Starts a worker thread serving `slot` (or none).
    pub(crate) fn spawn(
        &self,
        rt: &Arc<Shared>,
        slot: usize,
        background: bool,
    ) -> io::Result<Arc<Worker>> {
        spawn_locked(&mut self.inner.lock(), rt, slot, background)
    }

    /// Whether one more thread may start now (soft and hard ceilings).
    fn may_spawn(&self, config: &Preemption) -> bool {
        may_spawn_locked(&mut self.inner.lock(), config)
    }

    /// Gives `slot`, still held by the stuck `hog`, to a spare (or a new
    /// thread) and returns it; `None` if no thread may start or the slot
    /// changed hands meanwhile.
    ///
    /// All of it happens under the registry lock, as does every check a
    /// spare makes before it registers itself or exits (`wait_as_spare`):
    /// a worker is thus never both a spare and a slot's owner, and never
    /// exits once chosen.
    pub(crate) fn hand_over(
        &self,
        rt: &Arc<Shared>,
        slot: &Slot,
        hog: &Worker,
    ) -> Option<Arc<Worker>> {
        let mut inner = self.inner.lock();
        // A spare the watchdog found burning CPU in a poll it had been
        // handed off from (see `watchdog_main`) is a background thread now.
        inner
            .spares
            .retain(|w| !w.background.load(Ordering::Acquire));
        let successor = match inner.spares.pop() {
            Some(spare) => spare,
            None => {
                if !may_spawn_locked(&mut inner, &rt.sched.config) {
                    return None;
                }
                let worker = spawn_locked(&mut inner, rt, NO_SLOT, false).ok()?;
                inner.spares.retain(|w| w.id != worker.id);
                worker
            }
        };
        if slot
            .remote
            .owner
            .compare_exchange(hog.id, successor.id, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            inner.spares.push(successor);
            return None;
        }
        successor.slot.store(slot.index, Ordering::Release);
        Some(successor)
    }

    /// Starts spares until the configured number wait.
    pub(crate) fn top_up_spares(&self, rt: &Arc<Shared>) {
        while self.inner.lock().spares.len() < rt.sched.config.spare_threads {
            if !self.may_spawn(&rt.sched.config) || self.spawn(rt, NO_SLOT, false).is_err() {
                return;
            }
        }
    }

    /// A spare waits to be given a slot. Returns false if it should exit (a
    /// surplus spare idle for long, or shutdown).
    pub(crate) fn wait_as_spare(&self, me: &Arc<Worker>, sched: &Scheduler) -> bool {
        {
            let mut inner = self.inner.lock();
            // Chosen already (`hand_over` sets the slot under this lock).
            if me.slot.load(Ordering::Acquire) != NO_SLOT {
                return true;
            }
            if !inner.spares.iter().any(|w| w.id == me.id) {
                inner.spares.push(me.clone());
            }
        }
        let since = Instant::now();
        while me.slot.load(Ordering::Acquire) == NO_SLOT {
            if sched.is_shut_down() {
                return false;
            }
            if me.background.load(Ordering::Acquire) {
                // Found to be a hog after its slot was handed off, once its
                // poll had ended: a background thread now, never a spare.
                let mut inner = self.inner.lock();
                if me.slot.load(Ordering::Acquire) == NO_SLOT {
                    inner.spares.retain(|w| w.id != me.id);
                    return true;
                }
                break;
            }
            thread::park_timeout(Duration::from_millis(100));
            if since.elapsed() >= sched.config.background_idle {
                let mut inner = self.inner.lock();
                if me.slot.load(Ordering::Acquire) == NO_SLOT
                    && inner.spares.len() > sched.config.spare_threads
                {
                    inner.spares.retain(|w| w.id != me.id);
                    return false;
                }
            }
        }
        true
    }

    /// Work arrived on the background queue: wake an idle background worker,
    /// or start one.
    pub(crate) fn notify_background(&self, rt: &Arc<Shared>) {
        // A background poll is about to start: the watchdog looks at it.
        rt.sched.doze.wake_if_dozing();
        if let Some(worker) = self.inner.lock().idle_background.pop() {
            worker.unpark();
            return;
        }
        if self.may_spawn(&rt.sched.config) {
            if let Err(e) = self.spawn(rt, NO_SLOT, true) {
                tracing::warn!(error = %e, "ember: cannot start a background worker");
            }
        }
    }

    /// A background worker waits for work. Returns false if it stayed idle
    /// for [`Preemption::background_idle`] (then it exits), or at shutdown.
    pub(crate) fn wait_for_background_work(&self, me: &Arc<Worker>, sched: &Scheduler) -> bool {
        self.inner.lock().idle_background.push(me.clone());
        let since = Instant::now();
        loop {
            if sched.is_shut_down() {
                return false;
            }
            if sched.background_len() > 0 {
                break;
            }
            if since.elapsed() >= sched.config.background_idle {
                let mut inner = self.inner.lock();
                inner.idle_background.retain(|w| w.id != me.id);
                // Re-check under the lock: a notifier may have just popped us.
                return sched.background_len() > 0;
            }
            thread::park_timeout(Duration::from_millis(50));
        }
        self.inner.lock().idle_background.retain(|w| w.id != me.id);
        true
    }

    /// Removes an exited worker.
    pub(crate) fn retire(&self, me: &Worker) {
        let mut inner = self.inner.lock();
        inner.live.retain(|w| w.id != me.id);
        inner.spares.retain(|w| w.id != me.id);
        inner.idle_background.retain(|w| w.id != me.id);
    }

    /// Every live worker.
    pub(crate) fn snapshot(&self) -> Vec<Arc<Worker>> {
        self.inner.lock().live.clone()
    }

    pub(crate) fn population(&self) -> Population {
        let inner = self.inner.lock();
        Population {
            live: inner.live.len(),
            spares: inner.spares.len(),
            background: inner
                .live
                .iter()
                .filter(|w| w.background.load(Ordering::Relaxed))
                .count(),
        }
    }

    pub(crate) fn unpark_all(&self) {
        for worker in self.inner.lock().live.iter() {
            worker.unpark();
        }
    }

    /// Join handles of every thread started so far (runtime teardown).
    pub(crate) fn take_handles(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.inner.lock().handles)
    }
}

/// Starts a worker thread serving `slot` (or none); a spare is registered
/// as one at once.
fn spawn_locked(
    inner: &mut Registry,
    rt: &Arc<Shared>,
    slot: usize,
    background: bool,
) -> io::Result<Arc<Worker>> {
    let worker = Arc::new(Worker::new(inner.next_id, slot, background));
    inner.next_id += 1;
    let name = if background {
        format!("ember-background-{}", worker.id)
    } else {
        format!("ember-worker-{}", worker.id)
    };
    let (thread_rt, thread_worker) = (rt.clone(), worker.clone());
    // Set here, not inherited: a thread gets its creator's slice, and
    // workers are started by the main thread, the watchdog and workers.
    let slice = if background {
        rt.sched.config.demoted_slice
    } else {
        rt.sched.config.thread_slice
    };
    let handle = thread::Builder::new().name(name).spawn(move || {
        os::request_slice(0, slice);
        worker_main(thread_rt, thread_worker)
    })?;
    inner.live.push(worker.clone());
    inner.handles.push(handle);
    inner.last_spawn = Some(Instant::now());
    if slot == NO_SLOT && !background {
        inner.spares.push(worker.clone());
    }
    rt.sched
        .counters
        .threads_started
        .fetch_add(1, Ordering::Relaxed);
    Ok(worker)
}

/// Whether one more thread may start now (soft and hard ceilings).
fn may_spawn_locked(inner: &mut Registry, config: &Preemption) -> bool {
    let live = inner.live.len();
    if live >= config.hard_thread_limit {
        if !inner.warned_hard {
            inner.warned_hard = true;
            tracing::error!(
                live,
                "ember: hard worker thread limit reached; hogs now delay other processes"
            );
            eprintln!("ember: {live} worker threads: hard limit reached; processes stuck in native code now delay others");
        }
        return false;
    }
    if live < config.soft_thread_limit {
        return true;
    }
    if !inner.warned_soft {
        inner.warned_soft = true;
        tracing::warn!(
            live,
            "ember: many processes stuck in native code; starting threads slowly"
        );
        eprintln!(
            "ember: {live} worker threads (soft limit {}): many processes are stuck in native code",
            config.soft_thread_limit
        );
    }
    // Past the soft limit, one thread per 25 ms, up to 250 ms as it grows.
    let over = (live - config.soft_thread_limit) as u64;
    let delay = Duration::from_millis((25 + over * 5).min(250));
    inner.last_spawn.is_none_or(|t| t.elapsed() >= delay)
}
