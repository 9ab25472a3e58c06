//! Loom model of the PostgreSQL store's wake-ups (`postgres.rs`): a node
//! that sleeps on an empty queue must not miss a job another node enqueues
//! while its listener (re)connects. PostgreSQL delivers a `NOTIFY` sent by
//! a transaction to the sessions that were `LISTEN`ing when it committed;
//! the database is a mutex here (a commit and the set of listeners it
//! notifies are one atomic step). The listener LISTENs first and then
//! scans the pending queues: in every interleaving with an enqueue, the
//! queue is woken at least once (by the scan, the notification, or both).
//!
//! ```text
//! cargo test -p ember-jobs --lib --release --features loom-models \
//!     -- loom_wake --test-threads=1
//! ```

use loom::sync::{Arc, Mutex};
use loom::thread;

#[derive(Default)]
struct Db {
    /// Queues with pending jobs.
    pending: Vec<&'static str>,
    /// Whether the listener's session is LISTENing.
    listening: bool,
    /// Notifications delivered to the listener's session, not yet read.
    notes: Vec<&'static str>,
}

/// The enqueue transaction: insert, and notify the current listeners at
/// commit.
fn enqueue(db: &Mutex<Db>, queue: &'static str) {
    let mut d = db.lock().unwrap();
    d.pending.push(queue);
    if d.listening {
        d.notes.push(queue);
    }
}

/// The listener after a (re)connection: LISTEN, scan, then read
/// notifications. Returns the queues it woke.
fn listen(db: &Mutex<Db>) -> Vec<&'static str> {
    db.lock().unwrap().listening = true;
    let mut woken = db.lock().unwrap().pending.clone();
    woken.append(&mut db.lock().unwrap().notes);
    woken
}

#[test]
fn loom_wake_an_enqueue_racing_the_listener_start_is_never_missed() {
    loom::model(|| {
        let db = Arc::new(Mutex::new(Db::default()));
        let other = db.clone();
        let producer = thread::spawn(move || enqueue(&other, "q"));
        let mut woken = listen(&db);
        producer.join().unwrap();
        // Whatever arrives after the first read is read on the next turn.
        woken.append(&mut db.lock().unwrap().notes);
        assert!(woken.contains(&"q"), "the enqueue was missed");
    });
}
