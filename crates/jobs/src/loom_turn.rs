//! Loom models of a dispatcher's turn (`dispatcher.rs`,
//! [`crate::Store::complete_and_claim`]): a job process that succeeds
//! leaves its result in a slot and ends; the dispatcher reads the slot when
//! the job's monitor fires and records the success with its next claim, in
//! one transaction (the store is a mutex here, as in `loom_models.rs`: the
//! PostgreSQL store runs the turn in one transaction of a group commit
//! under the lock of the owner's dispatching of the queue, the same lock
//! `release` takes). Checked in every interleaving:
//!
//! * a cancel whose kill races the job's last poll leaves exactly one
//!   outcome: `succeeded` if the job left its result (the kill landed after
//!   the job finished: it keeps its outcome), else `cancelled`; never both,
//!   never none;
//! * a dispatcher killed while it holds a finished job's success and sends
//!   its turn (the rest of its poll still runs) strands nothing: its
//!   successor's release and the turn are ordered, so the success is either
//!   recorded (the turn came first) or refused by fencing and the job runs
//!   again under the successor; the zombie's claim takes nothing after the
//!   release; every job completes at most once.
//!
//! ```text
//! cargo test -p ember-jobs --lib --release --features loom-models \
//!     -- loom_turn --test-threads=1
//! ```

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::mpsc;
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

#[derive(Clone, Copy, Debug)]
struct Row {
    state: State,
    token: u64,
    /// Which dispatcher's claim holds it (0: none; 1: the first; 2: its
    /// successor). Both are the same lease owner (one life of the node).
    holder: u8,
    cancel_requested: bool,
    completions: u32,
}

type Store = Arc<Mutex<Vec<Row>>>;

fn row(state: State, token: u64, holder: u8) -> Row {
    Row {
        state,
        token,
        holder,
        cancel_requested: false,
        completions: 0,
    }
}

/// The success part of a turn: refused unless the job runs under `token`.
fn complete(rows: &mut [Row], job: usize, token: u64) -> bool {
    let r = &mut rows[job];
    if r.state == State::Running && r.token == token {
        r.state = State::Succeeded;
        r.completions += 1;
        true
    } else {
        false
    }
}

/// A turn: the successes `done`, then, if the claimer still lives (asked
/// inside the transaction), a claim of every due job for `holder`; the
/// claims' `(job, token)`.
fn turn(
    s: &Store,
    done: &[(usize, u64)],
    alive: &AtomicBool,
    holder: u8,
) -> (Vec<bool>, Vec<(usize, u64)>) {
    let mut rows = s.lock().unwrap();
    let completed = done
        .iter()
        .map(|&(job, token)| complete(&mut rows, job, token))
        .collect();
    let mut claimed = Vec::new();
    if alive.load(Ordering::SeqCst) {
        for (job, r) in rows.iter_mut().enumerate() {
            if matches!(r.state, State::Queued | State::Retrying) {
                r.state = State::Running;
                r.token += 1;
                r.holder = holder;
                claimed.push((job, r.token));
            }
        }
    }
    (completed, claimed)
}

/// `release` by a restarted dispatcher: the owner's running jobs of the
/// queue are taken back (retried at once), their tokens move on.
fn release(s: &Store) {
    for r in s.lock().unwrap().iter_mut() {
        if r.state == State::Running {
            r.state = State::Retrying;
            r.token += 1;
            r.holder = 0;
        }
    }
}

#[test]
fn loom_turn_a_kill_racing_the_jobs_last_poll_leaves_one_outcome() {
    loom::model(|| {
        let s: Store = Arc::new(Mutex::new(vec![row(State::Running, 1, 1)]));
        let slot: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
        let killed = Arc::new(AtomicBool::new(false));
        let (down_tx, down) = mpsc::channel::<()>();
        // The job's process: a kill that landed before its last poll stops
        // it there; one that lands during the poll lets the poll finish
        // (dead at once for everyone, the rest of the poll still runs).
        let job = {
            let (slot, killed) = (slot.clone(), killed.clone());
            thread::spawn(move || {
                if !killed.load(Ordering::SeqCst) {
                    *slot.lock().unwrap() = Some(42);
                }
                // Down once the process is gone.
                down_tx.send(()).unwrap();
            })
        };
        // A cancel: marked in the store, then the dispatcher kills the
        // process and, when it is down, records what it finds.
        s.lock().unwrap()[0].cancel_requested = true;
        killed.store(true, Ordering::SeqCst);
        down.recv().unwrap();
        let left = slot.lock().unwrap().take();
        let never = AtomicBool::new(false);
        let (succeeded, cancelled) = match left {
            Some(_) => (turn(&s, &[(0, 1)], &never, 1).0[0], false),
            None => {
                // `finish_cancelled`, fenced.
                let mut rows = s.lock().unwrap();
                let r = &mut rows[0];
                let ok = r.state == State::Running && r.token == 1;
                if ok {
                    r.state = State::Cancelled;
                }
                (false, ok)
            }
        };
        job.join().unwrap();
        let r = s.lock().unwrap()[0];
        assert!(succeeded ^ cancelled, "exactly one outcome: {r:?}");
        assert_eq!(succeeded, left.is_some(), "the left result decides");
        assert_eq!(r.completions, u32::from(succeeded));
        assert!(matches!(r.state, State::Succeeded | State::Cancelled));
    });
}

#[test]
fn loom_turn_a_killed_dispatchers_turn_strands_nothing() {
    loom::model(|| {
        // Job 0 ran under the first dispatcher (token 1) and succeeded: its
        // success waits in that dispatcher for the next turn. Job 1 is due.
        let s: Store = Arc::new(Mutex::new(vec![
            row(State::Running, 1, 1),
            row(State::Queued, 0, 0),
        ]));
        let old_alive = Arc::new(AtomicBool::new(true));
        // The first dispatcher, killed inside a poll, still sends its turn.
        let zombie = {
            let (s, alive) = (s.clone(), old_alive.clone());
            thread::spawn(move || turn(&s, &[(0, 1)], &alive, 1))
        };
        // The kill (dead for everyone at once); its supervisor starts a
        // successor, which takes the queue's running jobs back, then claims.
        old_alive.store(false, Ordering::SeqCst);
        release(&s);
        let (_, mine) = turn(&s, &[], &AtomicBool::new(true), 2);
        let (completed, late) = zombie.join().unwrap();
        let rows = s.lock().unwrap();
        // The zombie's claims never outlive the release: every job it
        // claimed was taken back (its token moved on).
        for &(job, token) in &late {
            assert!(
                rows[job].token > token,
                "the zombie's claim survived: {rows:?}"
            );
        }
        for (job, r) in rows.iter().enumerate() {
            assert!(r.completions <= 1, "job {job} completed twice: {rows:?}");
            match r.state {
                State::Succeeded => {}
                // Running: only for the successor, which holds its token.
                State::Running => {
                    assert_eq!(r.holder, 2, "job {job} stranded: {rows:?}");
                    assert!(mine.contains(&(job, r.token)), "{rows:?}");
                }
                other => panic!("job {job} left {other:?}: {rows:?}"),
            }
        }
        // Job 0's success counted iff the zombie's turn came first; else
        // it runs again under the successor (at least once).
        assert_eq!(completed[0], rows[0].state == State::Succeeded, "{rows:?}");
        assert_eq!(rows[1].state, State::Running, "job 1 runs: {rows:?}");
    });
}
