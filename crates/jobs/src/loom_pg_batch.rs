//! Loom model of the PostgreSQL store's group commit (`postgres.rs`):
//! two writers share the queue of writes (each holds the receiver's lock
//! only while it takes a batch), do a batch in one transaction (the
//! database is a mutex here: PostgreSQL's row locks and commit make each
//! batch atomic and ordered with the other writer's), then answer each
//! write, in batch order, through the reply its caller gave. The batch's
//! steps use the store's own splitting ([`unique_leaders`] for enqueues of
//! one unique key, [`next_round`] for several writes of one job), and each
//! success checks its own token as the multi-row `UPDATE`'s `WHERE` does.
//! Checked in every interleaving of two callers, each sending a success
//! and an enqueue with the same unique key before awaiting both answers —
//! batched together, apart, or across the two writers:
//!
//! * every answer reaches the caller of its write, once, and only after
//!   the write is committed;
//! * the fenced success (a stale token) is refused alone; the other one is
//!   recorded exactly once;
//! * the two enqueues of one key get one id, and one job has that key.
//!
//! ```text
//! cargo test -p ember-jobs --lib --release --features loom-models \
//!     -- loom_pg_batch --test-threads=1
//! ```

use loom::sync::mpsc;
use loom::sync::{Arc, Mutex};
use loom::thread;

use crate::postgres::{next_round, unique_leaders};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    Succeeded,
    Queued,
}

#[derive(Debug)]
struct Job {
    state: State,
    token: i64,
    key: Option<&'static str>,
    completions: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Succeed { job: usize, token: i64 },
    Insert { key: &'static str },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Succeeded,
    Fenced,
    New(usize),
    Existing(usize),
}

/// A write: what, its caller's tag for it, and where to answer.
type Write = (Op, u32, mpsc::Sender<(u32, Answer)>);

type Db = Arc<Mutex<Vec<Job>>>;

/// One batch in one transaction: enqueues first (one multi-row insert of
/// the keys' first writes, the later ones getting their id), then the
/// successes round by round, each checking its own job's token.
fn run_batch(db: &mut Vec<Job>, ops: &[Op]) -> Vec<Answer> {
    let mut out: Vec<Option<Answer>> = vec![None; ops.len()];
    let inserts: Vec<usize> = (0..ops.len())
        .filter(|&i| matches!(ops[i], Op::Insert { .. }))
        .collect();
    let keys: Vec<Option<&str>> = inserts
        .iter()
        .map(|&i| match ops[i] {
            Op::Insert { key } => Some(key),
            Op::Succeed { .. } => None,
        })
        .collect();
    let (leaders, follows) = unique_leaders(&keys);
    for l in leaders {
        let Op::Insert { key } = ops[inserts[l]] else {
            unreachable!()
        };
        // ON CONFLICT on the partial unique index of pending jobs.
        let pending = db
            .iter()
            .position(|j| j.key == Some(key) && j.state != State::Succeeded);
        out[inserts[l]] = Some(match pending {
            Some(id) => Answer::Existing(id),
            None => {
                db.push(Job {
                    state: State::Queued,
                    token: 0,
                    key: Some(key),
                    completions: 0,
                });
                Answer::New(db.len() - 1)
            }
        });
    }
    for (f, l) in follows {
        out[inserts[f]] = match out[inserts[l]] {
            Some(Answer::New(id) | Answer::Existing(id)) => Some(Answer::Existing(id)),
            other => other,
        };
    }
    let succeeds: Vec<usize> = (0..ops.len())
        .filter(|&i| matches!(ops[i], Op::Succeed { .. }))
        .collect();
    let job_of = |i: usize| match ops[succeeds[i]] {
        Op::Succeed { job, .. } => job as i64,
        Op::Insert { .. } => -1,
    };
    let mut left: Vec<usize> = (0..succeeds.len()).collect();
    while !left.is_empty() {
        let (round, later) = next_round(left, job_of);
        left = later;
        for i in round {
            let Op::Succeed { job, token } = ops[succeeds[i]] else {
                unreachable!()
            };
            // UPDATE ... WHERE j.token = t.token AND j.state = 'running'.
            let row = &mut db[job];
            out[succeeds[i]] = Some(if row.state == State::Running && row.token == token {
                row.state = State::Succeeded;
                row.completions += 1;
                Answer::Succeeded
            } else {
                Answer::Fenced
            });
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}

/// The writers' queue, and how many writes they took from it (loom's
/// channels do not report a hang-up: the writers stop after `TOTAL`).
type Queue = Arc<Mutex<(mpsc::Receiver<Write>, usize)>>;

/// How many writes the callers send.
const TOTAL: usize = 4;

/// A writer: takes a batch under the receiver's lock, runs it in one
/// transaction, commits, then answers each write in batch order.
fn writer(rx: Queue, db: Db, committed: Arc<Mutex<Vec<u32>>>) {
    loop {
        let batch = {
            let mut rx = rx.lock().unwrap();
            if rx.1 == TOTAL {
                return;
            }
            let mut batch = vec![rx.0.recv().unwrap()];
            while let Ok(w) = rx.0.try_recv() {
                batch.push(w);
            }
            rx.1 += batch.len();
            batch
        };
        let ops: Vec<Op> = batch.iter().map(|w| w.0).collect();
        let answers = {
            let mut db = db.lock().unwrap();
            let answers = run_batch(&mut db, &ops);
            // The commit: what the batch wrote is visible from here on.
            committed.lock().unwrap().extend(batch.iter().map(|w| w.1));
            answers
        };
        for ((_, tag, reply), answer) in batch.into_iter().zip(answers) {
            let _ = reply.send((tag, answer));
        }
    }
}

/// A caller: sends a success of `job` with `token` (tag `base`) and an
/// enqueue with key `"k"` (tag `base + 1`), then awaits both answers.
fn caller(
    writes: mpsc::Sender<Write>,
    committed: Arc<Mutex<Vec<u32>>>,
    base: u32,
    job: usize,
    token: i64,
) -> (Answer, Answer) {
    let (reply, answers) = mpsc::channel();
    writes
        .send((Op::Succeed { job, token }, base, reply.clone()))
        .unwrap();
    writes
        .send((Op::Insert { key: "k" }, base + 1, reply))
        .unwrap();
    drop(writes);
    let mut got = [None, None];
    for _ in 0..2 {
        let (tag, answer) = answers.recv().unwrap();
        assert!(
            tag == base || tag == base + 1,
            "caller {base} got the answer to write {tag}"
        );
        assert!(
            committed.lock().unwrap().contains(&tag),
            "write {tag} answered before its commit"
        );
        let slot = &mut got[(tag - base) as usize];
        assert!(slot.is_none(), "write {tag} answered twice");
        *slot = Some(answer);
    }
    assert!(answers.try_recv().is_err(), "an extra answer");
    (got[0].unwrap(), got[1].unwrap())
}

#[test]
fn loom_pg_batch_answers_reach_their_callers_and_fencing_is_per_write() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        // Job 0 runs under token 2 (caller A holds it); job 1 was taken
        // over (token 3), and caller B still holds token 2.
        let db: Db = Arc::new(Mutex::new(vec![
            Job {
                state: State::Running,
                token: 2,
                key: None,
                completions: 0,
            },
            Job {
                state: State::Running,
                token: 3,
                key: None,
                completions: 0,
            },
        ]));
        let committed = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<Write>();
        let rx: Queue = Arc::new(Mutex::new((rx, 0)));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (rx, db, committed) = (rx.clone(), db.clone(), committed.clone());
                thread::spawn(move || writer(rx, db, committed))
            })
            .collect();
        let b = {
            let (tx, committed) = (tx.clone(), committed.clone());
            thread::spawn(move || caller(tx, committed, 10, 1, 2))
        };
        let a = caller(tx, committed, 0, 0, 2);
        let b = b.join().unwrap();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(a.0, Answer::Succeeded, "the good success was refused");
        assert_eq!(b.0, Answer::Fenced, "the stale success was not refused");
        let id = |a: Answer| match a {
            Answer::New(id) | Answer::Existing(id) => id,
            other => panic!("an enqueue answered {other:?}"),
        };
        assert_eq!(id(a.1), id(b.1), "two pending jobs with one unique key");
        assert!(
            matches!(a.1, Answer::New(_)) != matches!(b.1, Answer::New(_)),
            "exactly one enqueue inserts"
        );
        let db = db.lock().unwrap();
        assert_eq!(db.iter().filter(|j| j.key == Some("k")).count(), 1);
        assert_eq!((db[0].state, db[0].completions), (State::Succeeded, 1));
        assert_eq!((db[1].state, db[1].completions), (State::Running, 0));
    });
}
