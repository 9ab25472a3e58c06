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
//! RUSTFLAGS="--cfg ember_dist_loom" cargo test -p ember-dist --lib \
//!     --release --target-dir target/loom-dist -- loom_models --test-threads=1
//! ```
//!
//! (A cfg of its own rather than `loom`: tokio built with `--cfg loom`
//! has no `net`, which this crate needs.)
//!
//! (The waiting of async senders for room uses tokio's `Notify` with
//! `enable()` before the check, tokio's documented pattern; loom has no
//! model of `notify_waiters`, so it is not part of this model.)

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
        let q = Arc::new(Queue {
            pending: Mutex::new(Vec::new()),
            queued: AtomicUsize::new(0),
            limit: 2,
            work: Notify::new(),
        });
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
        let total = expected_a + expected_b;
        let mut written = Vec::new();
        while written.len() < total {
            let out = std::mem::take(&mut *q.pending.lock().unwrap());
            if out.is_empty() {
                q.work.wait();
                continue;
            }
            written.extend_from_slice(&out);
            q.queued.fetch_sub(out.len(), Ordering::AcqRel);
        }
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
        let q = Arc::new(Queue {
            pending: Mutex::new(Vec::new()),
            queued: AtomicUsize::new(0),
            limit: 8,
            work: Notify::new(),
        });
        let writer = {
            let q = q.clone();
            thread::spawn(move || {
                let mut written = Vec::new();
                while written.len() < 2 {
                    let out = std::mem::take(&mut *q.pending.lock().unwrap());
                    if out.is_empty() {
                        // A lost wake-up would leave this waiting for ever:
                        // loom reports the deadlock.
                        q.work.wait();
                        continue;
                    }
                    written.extend_from_slice(&out);
                    q.queued.fetch_sub(out.len(), Ordering::AcqRel);
                }
                written
            })
        };
        q.push(1);
        q.push(2);
        assert_eq!(writer.join().unwrap(), vec![1, 2]);
        assert_eq!(q.queued.load(Ordering::Acquire), 0);
    });
}
