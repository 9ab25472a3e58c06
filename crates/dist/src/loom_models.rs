//! A loom model of the connection's send queue (`connection::SendQueue`),
//! step for step on loom's types: senders encode under the queue's lock,
//! add to the queued-bytes counter and wake the writer (`work`, a stored
//! permit as tokio's `notify_one`); the writer swaps the buffer out under
//! the lock, waits for `work` only when it found nothing, writes, and
//! subtracts what it wrote. Checked in every interleaving: no message is
//! lost or reordered per sender, the writer never sleeps on queued bytes,
//! a `try_send` that sees the queue busy queues nothing, and the counter
//! returns to zero.
//!
//! ```text
//! cargo test -p ember-dist --lib --release --features loom-models \
//!     -- loom_models --test-threads=1
//! ```
//!
//! (A cfg of its own rather than `loom`: tokio built with `--cfg loom`
//! has no `net`, which this crate needs.)
//!
//! A second model checks the lane in front of the queue
//! (`procs::Lane`, `busy_dist_port` for processes): senders push under
//! the lane's lock and suspend themselves when that made it busy; the
//! forwarder pops under the same lock and resumes every suspended sender
//! once the lane is below half its limit. Checked: no sender is left
//! suspended, nothing is lost or reordered per sender, and the lane never
//! holds more than the limit plus one message per sender.
//!
//! A message from outside any process cannot be suspended: the lane
//! queues it while it holds less than twice its limit and drops it beyond
//! (`Lane::push` with no sender). Checked beside a suspending process: the
//! lane never holds more than twice the limit plus one message, the
//! outside sender's queued messages arrive in order, and the process is
//! still resumed.
//!
//! And the connection numbers of relation signals (`ember_runtime::dist`,
//! `Incoming::link` on a connection, `Incoming::connection_down`): a
//! reader still handing on a `LINK` from connection 1 races that
//! connection going down and connection 2 coming up. The link is made only
//! if connection 1 is live, checked under the interest lock in the same
//! critical section that records the process in the node's interest set;
//! the down marks it not live and takes the set under that lock. Checked:
//! the link is either never made or fired by the down; it never outlives
//! connection 1.
//!
//! (The waiting of async senders for room uses tokio's `Notify` with
//! `enable()` before the check, tokio's documented pattern; loom has no
//! model of `notify_waiters`, so it is not part of this model.)
//!
//! Also a model of a connect waiting for a pending connection (`node.rs`,
//! `Inner::wait_up`): the waiter leaves a sender in the pending slot under
//! the lock; replacing or removing the slot drops it, which wakes the
//! waiter (a oneshot's closed state, modelled by a stored permit). Checked:
//! the waiter always wakes and finds the connection up.
//!
//! And a model of a remote spawn's pending request
//! (`ember_runtime::dist::spawn_opt`, `Incoming::spawn_reply`,
//! `node_down`): the requester, at its deadline, the reader applying the
//! `SPAWN_REPLY`, and a lost connection each try to take the request from
//! the table under its lock; whoever takes it owns the outcome (the
//! requester: `Timeout`; the reply: the pid in the mailbox; the lost
//! connection: `noconnection` in the mailbox), and a reply that finds it
//! gone undoes the new process's link (`abandoned`). Checked: the
//! requester always ends with exactly one outcome, never returns a pid
//! whose link was undone, and leaves no stray reply in its mailbox.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex, Notify};
use loom::thread;

struct Queue {
    pending: Mutex<Vec<u8>>,
    queued: AtomicUsize,
    limit: usize,
    work: Notify,
}

impl Queue {
    fn new(limit: usize) -> Arc<Queue> {
        Arc::new(Queue {
            pending: Mutex::new(Vec::new()),
            queued: AtomicUsize::new(0),
            limit,
            work: Notify::new(),
        })
    }

    /// The loop of `write_loop`: swaps the buffer out under the lock,
    /// waits for `work` only when it found nothing, until it has written
    /// `total` messages. A lost wake-up would leave it waiting for ever:
    /// loom reports the deadlock.
    fn write(&self, total: usize) -> Vec<u8> {
        let mut written = Vec::new();
        while written.len() < total {
            let out = std::mem::take(&mut *self.pending.lock().unwrap());
            if out.is_empty() {
                self.work.wait();
                continue;
            }
            written.extend_from_slice(&out);
            self.queued.fetch_sub(out.len(), Ordering::AcqRel);
        }
        written
    }

    /// `SendQueue::push`: one byte stands for one encoded message.
    fn push(&self, message: u8) {
        let mut p = self.pending.lock().unwrap();
        p.push(message);
        self.queued.fetch_add(1, Ordering::AcqRel);
        drop(p);
        self.work.notify();
    }

    /// `SendQueue::try_send`.
    fn try_send(&self, message: u8) -> bool {
        if self.queued.load(Ordering::Acquire) >= self.limit {
            return false;
        }
        self.push(message);
        true
    }
}

#[test]
fn loom_models_send_queue_loses_nothing_and_wakes_the_writer() {
    loom::model(|| {
        let q = Queue::new(2);
        // Two senders: one queues unconditionally (force/send with room),
        // one tries twice (try_send).
        let a = {
            let q = q.clone();
            thread::spawn(move || {
                q.push(1);
                q.push(2);
                2
            })
        };
        let b = {
            let q = q.clone();
            thread::spawn(move || {
                let mut sent = 0;
                for m in [11, 12] {
                    if q.try_send(m) {
                        sent += 1;
                    }
                }
                sent
            })
        };
        // The writer: the loop of `write_loop`, until it has written what
        // the senders say they queued.
        let expected_a = a.join().unwrap();
        let expected_b = b.join().unwrap();
        let written = q.write(expected_a + expected_b);
        assert_eq!(q.queued.load(Ordering::Acquire), 0);
        let from_a: Vec<u8> = written.iter().copied().filter(|m| *m < 10).collect();
        let from_b: Vec<u8> = written.iter().copied().filter(|m| *m > 10).collect();
        assert_eq!(from_a, vec![1, 2]);
        assert_eq!(from_b.len(), expected_b);
        assert!(from_b.windows(2).all(|w| w[0] < w[1]));
    });
}

#[test]
fn loom_models_writer_running_beside_senders_never_sleeps_on_queued_bytes() {
    loom::model(|| {
        let q = Queue::new(8);
        let writer = {
            let q = q.clone();
            thread::spawn(move || q.write(2))
        };
        q.push(1);
        q.push(2);
        assert_eq!(writer.join().unwrap(), vec![1, 2]);
        assert_eq!(q.queued.load(Ordering::Acquire), 0);
    });
}

/// `procs::Lane`, one unit per message, with the runtime's side of a
/// suspension: a counter per process (`Process::busy_dist`) and its
/// wake-up (`scheduler::wake`, a stored permit here).
struct Lane {
    state: Mutex<LaneState>,
    limit: usize,
    /// Senders → forwarder (tokio's `notify_one`: a stored permit).
    work: Notify,
}

struct LaneState {
    queue: std::collections::VecDeque<(usize, u8)>,
    bytes: usize,
    most: usize,
    waiting: Vec<usize>,
}

/// A sending process: its suspension count and its wake-up.
struct Proc {
    busy: AtomicUsize,
    wake: Notify,
}

impl Lane {
    /// `Lane::push` and `Sender::suspend`.
    fn push(&self, id: usize, message: u8, me: &Proc) {
        let mut s = self.state.lock().unwrap();
        s.queue.push_back((id, message));
        s.bytes += 1;
        s.most = s.most.max(s.bytes);
        if s.bytes >= self.limit && !s.waiting.contains(&id) {
            me.busy.fetch_add(1, Ordering::AcqRel);
            s.waiting.push(id);
        }
        drop(s);
        self.work.notify();
    }

    /// `Lane::pop` and `Suspension::resume`.
    fn pop(&self, procs: &[Arc<Proc>]) -> Option<(usize, u8)> {
        let mut s = self.state.lock().unwrap();
        let m = s.queue.pop_front()?;
        s.bytes -= 1;
        let resumed = if s.bytes < (self.limit / 2).max(1) {
            std::mem::take(&mut s.waiting)
        } else {
            Vec::new()
        };
        drop(s);
        for id in resumed {
            if procs[id].busy.fetch_sub(1, Ordering::AcqRel) == 1 {
                procs[id].wake.notify();
            }
        }
        Some(m)
    }
}

impl Lane {
    /// `Lane::push` with no sender: a message from outside any process,
    /// dropped when the lane holds twice its limit. Whether it was queued.
    fn push_outside(&self, id: usize, message: u8) -> bool {
        let mut s = self.state.lock().unwrap();
        if s.bytes >= 2 * self.limit {
            return false;
        }
        s.queue.push_back((id, message));
        s.bytes += 1;
        s.most = s.most.max(s.bytes);
        drop(s);
        self.work.notify();
        true
    }
}

/// `node.rs`'s connection slot for one peer, reduced to what `wait_up`
/// touches.
enum Slot {
    /// A handshake in progress, with the waiters' wake-ups (`Resolved`).
    Pending(Vec<Arc<Notify>>),
    Up,
}

/// Replaces the slot under the lock if `when` holds for it; the old one's
/// waiters are woken, as dropping their senders does.
fn replace(slot: &Mutex<Option<Slot>>, when: fn(&Option<Slot>) -> bool, new: Slot) {
    let mut guard = slot.lock().unwrap();
    if !when(&guard) {
        return;
    }
    if let Some(Slot::Pending(waiters)) = guard.replace(new) {
        waiters.iter().for_each(|w| w.notify());
    }
}

/// `Inner::wait_up`, without the deadline: whether the connection came up.
fn wait_up(slot: &Mutex<Option<Slot>>) -> bool {
    loop {
        let resolved = match &mut *slot.lock().unwrap() {
            Some(Slot::Up) => return true,
            None => return false,
            Some(Slot::Pending(waiters)) => {
                let w = Arc::new(Notify::new());
                waiters.push(w.clone());
                w
            }
        };
        resolved.wait();
    }
}

#[test]
fn loom_models_lane_resumes_every_suspended_sender_and_keeps_order() {
    // Four threads: every interleaving within three preemptions per
    // thread (loom's advice for models of this size; the full space takes
    // hours). `LOOM_MAX_PREEMPTIONS` overrides it.
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(|| {
        let lane = Arc::new(Lane {
            state: Mutex::new(LaneState {
                queue: std::collections::VecDeque::new(),
                bytes: 0,
                most: 0,
                waiting: Vec::new(),
            }),
            limit: 2,
            work: Notify::new(),
        });
        let procs: Vec<Arc<Proc>> = (0..2)
            .map(|_| {
                Arc::new(Proc {
                    busy: AtomicUsize::new(0),
                    wake: Notify::new(),
                })
            })
            .collect();
        let senders: Vec<_> = (0..2)
            .map(|id| {
                let (lane, me) = (lane.clone(), procs[id].clone());
                thread::spawn(move || {
                    for m in 1..=2u8 {
                        lane.push(id, m, &me);
                        // The next yield point: the scheduler does not run
                        // a suspended process until it is resumed.
                        while me.busy.load(Ordering::Acquire) > 0 {
                            me.wake.wait();
                        }
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 4 {
            match lane.pop(&procs) {
                Some(m) => got.push(m),
                // A lost wake-up would leave this waiting for ever.
                None => lane.work.wait(),
            }
        }
        for s in senders {
            s.join().unwrap();
        }
        for id in 0..2 {
            let mine: Vec<u8> = got.iter().filter(|m| m.0 == id).map(|m| m.1).collect();
            assert_eq!(mine, vec![1, 2], "sender {id}'s messages");
            assert_eq!(procs[id].busy.load(Ordering::Acquire), 0);
        }
        let s = lane.state.lock().unwrap();
        assert!(s.waiting.is_empty());
        assert!(s.most <= lane.limit + 1, "{} queued", s.most);
    });
}

#[test]
fn loom_models_lane_bounds_messages_from_outside_any_process() {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(|| {
        let lane = Arc::new(Lane {
            state: Mutex::new(LaneState {
                queue: std::collections::VecDeque::new(),
                bytes: 0,
                most: 0,
                waiting: Vec::new(),
            }),
            limit: 1,
            work: Notify::new(),
        });
        let procs: Vec<Arc<Proc>> = (0..1)
            .map(|_| {
                Arc::new(Proc {
                    busy: AtomicUsize::new(0),
                    wake: Notify::new(),
                })
            })
            .collect();
        let sender = {
            let (lane, me) = (lane.clone(), procs[0].clone());
            thread::spawn(move || {
                for m in 1..=2u8 {
                    lane.push(0, m, &me);
                    while me.busy.load(Ordering::Acquire) > 0 {
                        me.wake.wait();
                    }
                }
            })
        };
        let outside = {
            let lane = lane.clone();
            thread::spawn(move || {
                (1..=3u8)
                    .filter(|m| lane.push_outside(1, *m))
                    .collect::<Vec<u8>>()
            })
        };
        let queued_outside = outside.join().unwrap();
        let mut got = Vec::new();
        while got.len() < 2 + queued_outside.len() {
            match lane.pop(&procs) {
                Some(m) => got.push(m),
                None => lane.work.wait(),
            }
        }
        sender.join().unwrap();
        let mine: Vec<u8> = got.iter().filter(|m| m.0 == 0).map(|m| m.1).collect();
        assert_eq!(mine, vec![1, 2]);
        let theirs: Vec<u8> = got.iter().filter(|m| m.0 == 1).map(|m| m.1).collect();
        assert_eq!(theirs, queued_outside, "outside messages lost or reordered");
        assert!(
            !queued_outside.is_empty(),
            "an outside message refused on an empty lane"
        );
        assert_eq!(procs[0].busy.load(Ordering::Acquire), 0);
        let s = lane.state.lock().unwrap();
        assert!(s.most <= 2 * lane.limit + 1, "{} queued", s.most);
    });
}

/// The runtime's interest set and live connection for one node, and one
/// local process's links (`ember_runtime::dist`).
struct Relations {
    /// Under the interest lock: the live connection, and whether the
    /// process is in the node's interest set.
    interest: Mutex<(Option<u64>, bool)>,
    /// The process's relations lock: whether it holds the link.
    linked: Mutex<bool>,
    /// Links fired with `noconnection`.
    fired: AtomicUsize,
}

impl Relations {
    /// `Incoming::link` on `connection` (`add_remote_relation_on`): the
    /// relations lock, then the interest lock.
    fn link_on(&self, connection: u64) {
        let mut linked = self.linked.lock().unwrap();
        let mut interest = self.interest.lock().unwrap();
        if interest.0 != Some(connection) {
            return;
        }
        *linked = true;
        interest.1 = true;
    }

    /// `Incoming::connection_down`, then `node_down`'s severing.
    fn connection_down(&self, connection: u64) {
        let was_in_set = {
            let mut interest = self.interest.lock().unwrap();
            if interest.0 != Some(connection) {
                return;
            }
            interest.0 = None;
            std::mem::replace(&mut interest.1, false)
        };
        if was_in_set && std::mem::replace(&mut *self.linked.lock().unwrap(), false) {
            self.fired.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// `Incoming::node_up`.
    fn node_up(&self, connection: u64) {
        self.interest.lock().unwrap().0 = Some(connection);
    }
}

#[test]
fn loom_models_a_link_from_a_lost_connection_never_outlives_it() {
    loom::model(|| {
        let r = Arc::new(Relations {
            interest: Mutex::new((Some(1), false)),
            linked: Mutex::new(false),
            fired: AtomicUsize::new(0),
        });
        // The old connection's reader, finishing a LINK.
        let reader = {
            let r = r.clone();
            thread::spawn(move || r.link_on(1))
        };
        // The connection is replaced.
        r.connection_down(1);
        r.node_up(2);
        reader.join().unwrap();
        // Made and fired, or never made: no link held for connection 1.
        assert!(
            !*r.linked.lock().unwrap(),
            "a link of a lost connection is held"
        );
        assert!(r.fired.load(Ordering::Acquire) <= 1);
    });
}

#[test]
fn loom_models_a_connect_waiting_for_a_pending_connection_wakes_when_it_is_up() {
    loom::model(|| {
        let slot = Arc::new(Mutex::new(Some(Slot::Pending(Vec::new()))));
        // The peer's simultaneous attempt replaces the pending slot with
        // its own (`decide`: OkSimultaneous; `alive` once it is up).
        let simultaneous = {
            let slot = slot.clone();
            thread::spawn(move || {
                replace(
                    &slot,
                    |s| matches!(s, Some(Slot::Pending(_))),
                    Slot::Pending(Vec::new()),
                )
            })
        };
        // A handshake finishes: `install`.
        let install = {
            let slot = slot.clone();
            thread::spawn(move || replace(&slot, |_| true, Slot::Up))
        };
        // A lost wake-up would leave the waiter waiting for ever: loom
        // reports the deadlock.
        assert!(wait_up(&slot), "the waiter found no connection");
        simultaneous.join().unwrap();
        install.join().unwrap();
    });
}

/// What reaches a remote spawn's requester.
#[derive(Clone, Copy, Debug, PartialEq)]
enum SpawnOutcome {
    Pid,
    NoConnection,
    Timeout,
}

struct SpawnModel {
    /// The pending request (`Table::spawns`): present until taken.
    pending: Mutex<bool>,
    /// The requester's mailbox: replies for the request.
    mailbox: Mutex<Vec<SpawnOutcome>>,
    /// Exit signals `abandoned` sent to the new process.
    undone: AtomicUsize,
}

impl SpawnModel {
    fn take(&self) -> bool {
        std::mem::replace(&mut *self.pending.lock().unwrap(), false)
    }

    /// `spawn_opt` past its deadline: abandons the request if it can take
    /// it, else waits for the reply that whoever took it delivers.
    fn requester(&self) -> SpawnOutcome {
        if self.take() {
            return SpawnOutcome::Timeout;
        }
        loop {
            if let Some(reply) = self.mailbox.lock().unwrap().pop() {
                return reply;
            }
            thread::yield_now();
        }
    }

    /// `Incoming::spawn_reply` with a pid and the link flag.
    fn reply(&self) {
        if self.take() {
            self.mailbox.lock().unwrap().push(SpawnOutcome::Pid);
        } else {
            self.undone.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// `Incoming::node_down` (`fail_spawns`).
    fn node_down(&self) {
        if self.take() {
            self.mailbox
                .lock()
                .unwrap()
                .push(SpawnOutcome::NoConnection);
        }
    }
}

#[test]
fn loom_models_a_remote_spawn_has_one_outcome_and_no_stray_reply() {
    loom::model(|| {
        let model = Arc::new(SpawnModel {
            pending: Mutex::new(true),
            mailbox: Mutex::new(Vec::new()),
            undone: AtomicUsize::new(0),
        });
        let reply = {
            let model = model.clone();
            thread::spawn(move || model.reply())
        };
        let down = {
            let model = model.clone();
            thread::spawn(move || model.node_down())
        };
        let outcome = model.requester();
        reply.join().unwrap();
        down.join().unwrap();
        let undone = model.undone.load(Ordering::Acquire);
        assert!(model.mailbox.lock().unwrap().is_empty(), "a stray reply");
        assert!(!*model.pending.lock().unwrap(), "the request is left over");
        match outcome {
            SpawnOutcome::Pid => assert_eq!(undone, 0, "a pid whose link was undone"),
            SpawnOutcome::Timeout | SpawnOutcome::NoConnection => {
                assert_eq!(undone, 1, "a new process left linked to no one")
            }
        }
    });
}
