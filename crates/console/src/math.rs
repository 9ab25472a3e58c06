//! The math demo: each job computes ∑(1..n) or n! naively, without a single
//! await, in a worker process of the console's math pool (ppool: at most
//! `limit` at once; `run` answers busy at once, `sync_queue` waits for a
//! slot). `n = 13` panics on purpose: its row shows "error" and nothing
//! else notices. A huge `n` runs for minutes on one thread while the
//! watchdog keeps every other process responsive.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ember_otp::gen::StartError;
use ember_otp::pool::PoolError;
use ember_otp::supervisor::ChildSpec;
use ember_runtime::sync::watch;
use ember_runtime::{self_pid, should_stop, ExitReason, Pid, Spawn};
use serde_json::{json, Value};

use super::Console;

/// Rows kept on the board; older finished rows are forgotten.
const MAX_ROWS: usize = 200;

/// Most jobs waiting for a slot of the pool; past it a queued job is
/// refused as busy too.
pub(crate) const MAX_QUEUED: usize = 16;

/// The one `n` that crashes, as in the classic demo.
pub(crate) const UNLUCKY: u64 = 13;

/// What to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// ∑(1..n).
    Sum,
    /// n!, reported by its number of digits and leading digits.
    Factorial,
}

impl Op {
    pub(crate) fn parse(s: &str) -> Option<Op> {
        match s {
            "sum" => Some(Op::Sum),
            "factorial" | "fact" => Some(Op::Factorial),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Sum => "sum",
            Op::Factorial => "factorial",
        }
    }
}

/// A finished computation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The value (a sum), or the leading digits of n! followed by "…".
    pub(crate) text: String,
    /// Number of decimal digits of the result.
    pub(crate) digits: usize,
}

#[derive(Clone, Debug)]
enum State {
    Queued,
    Calculating,
    Done(Outcome),
    Error(String),
}

#[derive(Clone, Debug)]
struct Row {
    id: u64,
    n: u64,
    op: Op,
    pid: Option<Pid>,
    state: State,
    submitted_ms: u64,
    started: Instant,
    took: Option<Duration>,
}

impl Row {
    fn to_json(&self) -> Value {
        let (state, result, digits, error) = match &self.state {
            State::Queued => ("queued", None, None, None),
            State::Calculating => ("calculating", None, None, None),
            State::Done(o) => ("done", Some(o.text.as_str()), Some(o.digits), None),
            State::Error(e) => ("error", None, None, Some(e.as_str())),
        };
        let elapsed = self.took.unwrap_or_else(|| self.started.elapsed());
        json!({
            "id": self.id,
            "n": self.n,
            "op": self.op.as_str(),
            "pid": self.pid.map(|p| p.to_string()),
            "state": state,
            "result": result,
            "digits": digits,
            "error": error,
            "submitted_ms": self.submitted_ms,
            "elapsed_ms": elapsed.as_millis() as u64,
        })
    }
}

/// The jobs and their states; every change bumps a version that event
/// streams wait on.
pub(crate) struct MathBoard {
    rows: Mutex<VecDeque<Row>>,
    next_id: AtomicU64,
    version: watch::Sender<u64>,
}

impl MathBoard {
    pub(crate) fn new() -> MathBoard {
        MathBoard {
            rows: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(1),
            version: watch::channel(0).0,
        }
    }

    fn rows(&self) -> MutexGuard<'_, VecDeque<Row>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes up on every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    fn insert(&self, n: u64, op: Op, state: State) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let submitted_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut rows = self.rows();
        rows.push_back(Row {
            id,
            n,
            op,
            pid: None,
            state,
            submitted_ms,
            started: Instant::now(),
            took: None,
        });
        while rows.len() > MAX_ROWS {
            match rows
                .iter()
                .position(|r| !matches!(r.state, State::Calculating | State::Queued))
            {
                Some(i) => {
                    rows.remove(i);
                }
                None => break,
            }
        }
        drop(rows);
        self.changed();
        id
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Row)) {
        if let Some(row) = self.rows().iter_mut().find(|r| r.id == id) {
            f(row);
        }
        self.changed();
    }

    fn forget(&self, id: u64) {
        self.rows().retain(|r| r.id != id);
        self.changed();
    }

    fn finish(&self, id: u64, state: State) {
        self.update(id, |row| {
            row.took = Some(row.started.elapsed());
            row.state = state;
        });
    }

    /// Every row, newest first.
    pub(crate) fn to_json(&self) -> Value {
        let rows = self.rows();
        Value::Array(rows.iter().rev().map(Row::to_json).collect())
    }

    /// One row.
    pub(crate) fn row_json(&self, id: u64) -> Option<Value> {
        self.rows().iter().find(|r| r.id == id).map(Row::to_json)
    }

    /// Jobs waiting for a slot.
    pub(crate) fn queued(&self) -> usize {
        self.rows()
            .iter()
            .filter(|r| matches!(r.state, State::Queued))
            .count()
    }

    /// Pids of the tasks still calculating.
    pub(crate) fn running_pids(&self) -> Vec<Pid> {
        self.rows()
            .iter()
            .filter(|r| matches!(r.state, State::Calculating))
            .filter_map(|r| r.pid)
            .collect()
    }

    /// Every task pid the board knows, dead or alive.
    pub(crate) fn known_pids(&self) -> Vec<Pid> {
        self.rows().iter().filter_map(|r| r.pid).collect()
    }
}

/// What a math worker computes: a row of the board.
#[derive(Clone)]
pub(crate) struct MathJob {
    id: u64,
    n: u64,
    op: Op,
    board: Arc<MathBoard>,
}

/// The console's math pool: at most `limit` workers at once, registered as
/// `<console>_math`.
pub(crate) fn pool_child_spec(console: &Console, limit: usize) -> ChildSpec {
    ember_otp::pool::pool_child_spec(&console.name("math"), limit, |job: MathJob| {
        let spawned = Spawn::new()
            .link()
            .label("math worker")
            .spawn(work(job))
            .map(|s| s.pid)
            .map_err(|e| StartError::Failed(ExitReason::error(e)));
        async move { spawned }
    })
    .expect("the math pool spec is valid")
}

/// How a job was refused.
pub(crate) enum Refused {
    /// Every slot is taken (and the queue is full, for a queued job).
    Busy(String),
    /// The pool is not running.
    Down(String),
}

/// Starts a job in the pool and returns its row id: with `queue` false it
/// needs a free slot now (ppool's `run`), with `queue` true it waits for
/// one in a small process of its own (`sync_queue`), at most
/// [`MAX_QUEUED`] jobs waiting. Call from a process.
pub(crate) async fn start(
    console: &Arc<Console>,
    n: u64,
    op: Op,
    queue: bool,
) -> Result<u64, Refused> {
    let board = console.math.clone();
    let pool = console.pool();
    if queue {
        if board.queued() >= MAX_QUEUED {
            return Err(Refused::Busy(format!(
                "busy: every math slot is taken and {MAX_QUEUED} jobs are queued already"
            )));
        }
        let id = board.insert(n, op, State::Queued);
        let job = MathJob {
            id,
            n,
            op,
            board: board.clone(),
        };
        let spawned = Spawn::new().label("math queue").spawn(async move {
            if let Err(e) = pool.sync_queue(job).await {
                board.finish(id, State::Error(format!("not started: {e}")));
            }
        });
        if spawned.is_err() {
            console
                .math
                .finish(id, State::Error("not started: spawn failed".into()));
        }
        return Ok(id);
    }
    let id = board.insert(n, op, State::Calculating);
    let job = MathJob {
        id,
        n,
        op,
        board: board.clone(),
    };
    match pool.run(job).await {
        Ok(pid) => {
            board.update(id, |row| {
                row.pid.get_or_insert(pid);
            });
            Ok(id)
        }
        Err(e) => {
            board.forget(id);
            Err(match e {
                PoolError::NoAlloc => Refused::Busy(
                    "busy: every math slot is taken; try again later or queue the job".into(),
                ),
                e => Refused::Down(format!("the math pool is restarting ({e})")),
            })
        }
    }
}

/// A worker: computes its job and writes the outcome on its row; a panic
/// is recorded (with its message) and then ends the worker as the crash
/// it is. A worker killed meanwhile is recorded by its guard.
async fn work(job: MathJob) -> ExitReason {
    let MathJob { id, n, op, board } = job;
    let me = self_pid();
    board.update(id, |row| {
        row.pid = Some(me);
        row.state = State::Calculating;
        row.started = Instant::now();
    });
    let mut unfinished = Unfinished(Some((id, board.clone())));
    let outcome = std::panic::catch_unwind(|| compute(n, op));
    unfinished.0 = None;
    match outcome {
        Ok(Some(outcome)) => {
            board.finish(id, State::Done(outcome));
            ExitReason::Normal
        }
        Ok(None) => {
            board.finish(id, State::Error(TERMINATED.into()));
            ExitReason::Normal
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            board.finish(id, State::Error(format!("crashed: {message}")));
            ExitReason::Panic(message.into())
        }
    }
}

/// A row's error when its worker was terminated (killed from top, or shut
/// down with the console) before finishing.
const TERMINATED: &str = "exited: killed (or shut down) before finishing";

/// Marks the row of a worker that ended without finishing when dropped.
struct Unfinished(Option<(u64, Arc<MathBoard>)>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some((id, board)) = self.0.take() {
            board.finish(id, State::Error(TERMINATED.into()));
        }
    }
}

/// Computes the job; `None` if the process was killed meanwhile (it noticed
/// through [`should_stop`]). Panics for `n = 13`.
pub(crate) fn compute(n: u64, op: Op) -> Option<Outcome> {
    if n == UNLUCKY {
        panic!("{}({UNLUCKY}) crashes on purpose", op.as_str());
    }
    match op {
        Op::Sum => sum(n).map(|s| {
            let text = s.to_string();
            Outcome {
                digits: text.len(),
                text,
            }
        }),
        Op::Factorial => factorial(n),
    }
}

/// ∑(1..n) by adding one number at a time (`black_box` keeps the compiler
/// from turning the loop into n(n+1)/2).
fn sum(n: u64) -> Option<u128> {
    let mut total: u128 = 0;
    let mut i: u64 = 1;
    while i <= n {
        let end = n.min(i.saturating_add(1 << 22));
        while i <= end {
            total += u128::from(black_box(i));
            if i == u64::MAX {
                return Some(total);
            }
            i += 1;
        }
        if should_stop() {
            return None;
        }
    }
    Some(total)
}

/// Decimal limbs of a big number, least significant first.
const LIMB: u64 = 1_000_000_000_000_000_000;
const LIMB_DIGITS: usize = 18;

/// n! by multiplying one factor at a time, in base 10^18.
fn factorial(n: u64) -> Option<Outcome> {
    let mut limbs: Vec<u64> = vec![1];
    for k in 2..=n {
        let mut carry: u128 = 0;
        for limb in limbs.iter_mut() {
            let v = u128::from(*limb) * u128::from(k) + carry;
            *limb = (v % u128::from(LIMB)) as u64;
            carry = v / u128::from(LIMB);
        }
        while carry > 0 {
            limbs.push((carry % u128::from(LIMB)) as u64);
            carry /= u128::from(LIMB);
        }
        if k % 1024 == 0 && should_stop() {
            return None;
        }
    }
    let top = limbs.last().copied().unwrap_or(0);
    let digits = top.to_string().len() + (limbs.len() - 1) * LIMB_DIGITS;
    let mut text = top.to_string();
    for limb in limbs.iter().rev().skip(1).take(2) {
        text.push_str(&format!("{limb:0width$}", width = LIMB_DIGITS));
    }
    if digits > 30 {
        text.truncate(30);
        text.push('…');
    }
    Some(Outcome { text, digits })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_add_every_number() {
        assert_eq!(sum(0), Some(0));
        assert_eq!(sum(1000), Some(500_500));
        assert_eq!(sum(10_000_000), Some(50_000_005_000_000));
    }

    #[test]
    fn factorials_report_digits_and_leading_digits() {
        let f = factorial(20).unwrap();
        assert_eq!(f.text, "2432902008176640000");
        assert_eq!(f.digits, 19);
        let f = factorial(100).unwrap();
        assert_eq!(f.digits, 158);
        assert!(f.text.starts_with("933262154439441526816992388562"));
        assert_eq!(factorial(1000).unwrap().digits, 2568);
        assert_eq!(factorial(0).unwrap().text, "1");
    }

    #[test]
    #[should_panic(expected = "sum(13) crashes on purpose")]
    fn thirteen_crashes() {
        compute(13, Op::Sum);
    }
}
