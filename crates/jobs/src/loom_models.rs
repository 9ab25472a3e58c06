//! Loom models of the lease and fencing protocol, step for step on loom's
//! types: the store's row is a mutex (each SQLite transaction in
//! `sqlite.rs` holds the store's one connection, so transactions are
//! atomic and ordered like these critical sections), and each transition
//! is the SQL statement's logic. Checked in every interleaving:
//!
//! * a worker cut off by a take-back and a new claim that both finish
//!   record one completion: the job ends `succeeded` once, by the claim
//!   that still held the token;
//! * a cancel racing the job's own completion leaves exactly one final
//!   outcome (`succeeded` or `cancelled`), never both, and the loser's
//!   write is refused;
//! * a dispatcher killed while its claim is on the way to the store
//!   (the rest of its poll still runs) cannot strand a job its successor
//!   took back: the claim asks inside its transaction whether its
//!   dispatcher lives ([`crate::Claimer`]).
//!
//! ```text
//! cargo test -p ember-jobs --lib --release --features loom-models \
//!     -- loom_models --test-threads=1
//! ```

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Cancelled,
}

#[derive(Debug)]
struct Row {
    state: State,
    token: u64,
    owner: u8,
    lease_until: u64,
    cancel_requested: bool,
    completions: u32,
    events_succeeded: u32,
}

type Store = Arc<Mutex<Row>>;

fn store() -> Store {
    Arc::new(Mutex::new(Row {
        state: State::Queued,
        token: 0,
        owner: 0,
        lease_until: 0,
        cancel_requested: false,
        completions: 0,
        events_succeeded: 0,
    }))
}

/// `claim`: a due job becomes running under a new token.
fn claim(s: &Store, owner: u8, lease_until: u64) -> Option<u64> {
    let mut r = s.lock().unwrap();
    if matches!(r.state, State::Queued | State::Retrying) {
        r.state = State::Running;
        r.token += 1;
        r.owner = owner;
        r.lease_until = lease_until;
        Some(r.token)
    } else {
        None
    }
}

/// `fenced` + `succeed`.
fn succeed(s: &Store, token: u64) -> bool {
    let mut r = s.lock().unwrap();
    if r.state == State::Running && r.token == token {
        r.state = State::Succeeded;
        r.completions += 1;
        r.events_succeeded += 1;
        true
    } else {
        false
    }
}

/// `fenced` + `finish_cancelled`.
fn finish_cancelled(s: &Store, token: u64) -> bool {
    let mut r = s.lock().unwrap();
    if r.state == State::Running && r.token == token {
        r.state = State::Cancelled;
        true
    } else {
        false
    }
}

/// `cancel` of a running job: marked for its dispatcher.
fn cancel(s: &Store) {
    let mut r = s.lock().unwrap();
    if r.state == State::Running {
        r.cancel_requested = true;
    } else if matches!(r.state, State::Queued | State::Retrying) {
        r.state = State::Cancelled;
    }
}

/// `recover` at time `now`: an expired lease is taken back and the token
/// moves on.
fn recover(s: &Store, now: u64) {
    let mut r = s.lock().unwrap();
    if r.state == State::Running && r.lease_until < now {
        r.state = if r.cancel_requested {
            State::Cancelled
        } else {
            State::Retrying
        };
        r.token += 1;
    }
}

#[test]
fn loom_models_a_cut_off_worker_cannot_complete_after_a_take_back() {
    loom::model(|| {
        let s = store();
        // Node 1 claims with a lease that expires at t = 10.
        let t1 = claim(&s, 1, 10).expect("due");
        let old = {
            let s = s.clone();
            // Node 1, cut off, finishes late.
            thread::spawn(move || succeed(&s, t1))
        };
        // Node 2 at t = 20: takes the job back, claims it, runs it.
        recover(&s, 20);
        let new = claim(&s, 2, 40).map(|t2| succeed(&s, t2));
        let old = old.join().unwrap();
        let r = s.lock().unwrap();
        assert_eq!(r.state, State::Succeeded);
        assert_eq!(r.completions, 1, "{r:?}");
        assert_eq!(r.events_succeeded, 1);
        // Exactly one of the two completions counted.
        assert!(old ^ (new == Some(true)), "old {old}, new {new:?}");
    });
}

#[test]
fn loom_models_a_cancel_racing_completion_has_one_outcome() {
    loom::model(|| {
        let s = store();
        let t = claim(&s, 1, 100).expect("due");
        // The job's process finishes on its own...
        let job = {
            let s = s.clone();
            thread::spawn(move || succeed(&s, t))
        };
        // ...while a cancel is asked and the dispatcher, having killed the
        // process, records the cancel.
        let dispatcher = {
            let s = s.clone();
            thread::spawn(move || {
                cancel(&s);
                finish_cancelled(&s, t)
            })
        };
        let done = job.join().unwrap();
        let cancelled = dispatcher.join().unwrap();
        let r = s.lock().unwrap();
        assert!(done ^ cancelled, "exactly one outcome: {r:?}");
        assert_eq!(
            r.state,
            if done {
                State::Succeeded
            } else {
                State::Cancelled
            }
        );
        assert_eq!(r.completions, u32::from(done));
    });
}

/// `release` of node 1's queue by a restarted dispatcher: its running jobs
/// are retried at once.
fn release(s: &Store, owner: u8) {
    let mut r = s.lock().unwrap();
    if r.state == State::Running && r.owner == owner {
        r.state = State::Retrying;
        r.token += 1;
    }
}

/// `claim` for a dispatcher whose life `alive` tells, checked inside the
/// same critical section (the writer's transaction).
fn claim_for(s: &Store, alive: &AtomicBool, owner: u8) -> Option<u64> {
    let mut r = s.lock().unwrap();
    if !alive.load(Ordering::SeqCst) {
        return None;
    }
    if matches!(r.state, State::Queued | State::Retrying) {
        r.state = State::Running;
        r.token += 1;
        r.owner = owner;
        Some(r.token)
    } else {
        None
    }
}

#[test]
fn loom_models_a_killed_dispatchers_late_claim_cannot_strand_a_job() {
    loom::model(|| {
        let s = store();
        // The old dispatcher runs the job; a second job is due (the same
        // row stands for both: what matters is who holds it at the end).
        claim(&s, 1, 100).expect("due");
        let old_alive = Arc::new(AtomicBool::new(true));
        // The old dispatcher, killed inside a poll, still sends a claim.
        let zombie = {
            let (s, alive) = (s.clone(), old_alive.clone());
            thread::spawn(move || claim_for(&s, &alive, 1))
        };
        // The kill: dead for everyone at once; then its supervisor starts
        // a successor, which takes the node's running jobs back and claims.
        old_alive.store(false, Ordering::SeqCst);
        release(&s, 1);
        let mine = claim_for(&s, &AtomicBool::new(true), 1);
        let late = zombie.join().unwrap();
        let r = s.lock().unwrap();
        assert_eq!(r.state, State::Running, "{r:?}");
        assert!(
            late.is_none_or(|t| t < r.token),
            "the zombie's claim survived: {r:?}"
        );
        assert_eq!(mine, Some(r.token), "the successor runs the job: {r:?}");
    });
}

/// The group commit of `sqlite.rs` (`writer_loop`): callers queue writes,
/// the writer takes every queued write into one transaction (each in a
/// savepoint: a failing write is undone alone), commits, and only then
/// answers. Checked in every interleaving with two callers (one write that
/// succeeds, one that is refused), batched together or apart: a caller
/// told `Ok` finds its write committed, a refused write is never
/// committed, and every caller is answered.
mod group_commit {
    use loom::sync::mpsc;
    use loom::sync::{Arc, Mutex};
    use loom::thread;

    /// A queued write: its value, whether it fails, where to answer.
    type Op = (u32, bool, mpsc::Sender<Result<(), ()>>);

    fn writer(rx: mpsc::Receiver<Op>, disk: Arc<Mutex<Vec<u32>>>, total: usize) {
        let mut answered = 0;
        while answered < total {
            let mut batch = vec![rx.recv().unwrap()];
            while let Ok(op) = rx.try_recv() {
                batch.push(op);
            }
            // The transaction: savepoints keep what succeeded.
            let mut tx = Vec::new();
            let mut replies = Vec::new();
            for (value, fails, reply) in batch {
                if !fails {
                    tx.push(value);
                }
                replies.push((reply, !fails));
            }
            // Commit, then answer.
            disk.lock().unwrap().extend(tx);
            for (reply, ok) in replies {
                answered += 1;
                let _ = reply.send(if ok { Ok(()) } else { Err(()) });
            }
        }
    }

    fn caller(
        writes: mpsc::Sender<Op>,
        disk: Arc<Mutex<Vec<u32>>>,
        value: u32,
        fails: bool,
    ) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let (tx, rx) = mpsc::channel();
            writes.send((value, fails, tx)).unwrap();
            let answer = rx.recv().unwrap();
            let committed = disk.lock().unwrap().contains(&value);
            if fails {
                assert_eq!(answer, Err(()), "a refused write was acknowledged");
                assert!(!committed, "a refused write was committed");
            } else {
                assert_eq!(answer, Ok(()), "a good write was refused");
                assert!(committed, "acknowledged before its commit");
            }
        })
    }

    #[test]
    fn loom_models_group_commit_answers_only_after_the_commit() {
        loom::model(|| {
            let disk = Arc::new(Mutex::new(Vec::new()));
            let (tx, rx) = mpsc::channel();
            let w = {
                let disk = disk.clone();
                thread::spawn(move || writer(rx, disk, 2))
            };
            let a = caller(tx.clone(), disk.clone(), 1, false);
            let b = caller(tx, disk.clone(), 2, true);
            a.join().unwrap();
            b.join().unwrap();
            w.join().unwrap();
            assert_eq!(
                *disk.lock().unwrap(),
                vec![1],
                "exactly the good write is durable"
            );
        });
    }
}
