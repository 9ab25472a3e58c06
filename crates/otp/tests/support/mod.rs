//! Helpers shared by the integration tests: a runtime, test children that
//! report to the test process (OTP's `supervisor_1`), and event waits.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_otp::gen::StartError;
use ember_otp::supervisor::{ChildInfo, SupervisorRef};
use ember_runtime::{
    exit, monitor, receive, self_pid, send, sleep, spawn_link, trap_exit, Down, Exit, ExitReason,
    Pid, Runtime, Spawn,
};

/// How long a test waits for an event before it fails.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Receives the first message of type `M`, failing after [`WAIT`].
pub(crate) async fn recv<M: Send + 'static>() -> M {
    receive::<M>()
        .timeout(WAIT)
        .await
        .unwrap_or_else(|| panic!("no {} within {WAIT:?}", std::any::type_name::<M>()))
}

/// Every test's own runtime.
pub(crate) fn runtime() -> Runtime {
    Runtime::builder().schedulers(2).build().unwrap()
}

/// A test child tells the test process it (re)started.
#[derive(Debug, Clone)]
pub(crate) struct Started {
    pub(crate) id: &'static str,
    pub(crate) pid: Pid,
}

/// A test child tells the test process it is stopping on its supervisor's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stopped {
    pub(crate) id: &'static str,
}

/// What a test child is told to do.
#[derive(Debug, Clone)]
pub(crate) enum Cmd {
    /// Exit with this reason.
    Die(ExitReason),
}

/// How a test child reacts to its supervisor's `shutdown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Does not trap exits: dies at once.
    Plain,
    /// Traps exits: reports [`Stopped`] to the test, then exits `shutdown`.
    Reporting,
    /// Traps exits and ignores `shutdown`: only `kill` ends it.
    Stubborn,
}

/// A child process: reports [`Started`], then obeys [`Cmd`]s.
pub(crate) async fn child_body(test: Pid, id: &'static str, kind: Kind) -> ExitReason {
    if kind != Kind::Plain {
        trap_exit(true);
    }
    send(
        test,
        Started {
            id,
            pid: self_pid(),
        },
    );
    loop {
        let message = ember_runtime::receive_any(|m| m.is::<Cmd>() || m.is::<Exit>()).await;
        match message.downcast::<Cmd>() {
            Ok(Cmd::Die(reason)) => return reason,
            Err(message) => {
                let exit = message.downcast::<Exit>().unwrap();
                match kind {
                    Kind::Stubborn => continue,
                    _ => {
                        send(test, Stopped { id });
                        return exit.reason;
                    }
                }
            }
        }
    }
}

/// A start function for a test child linked to its supervisor. A trapping
/// kind traps exits from birth (as a `proc_lib` child does by acknowledging
/// only after its init): a shutdown that arrives before its first poll is
/// still reported.
pub(crate) fn child(
    test: Pid,
    id: &'static str,
    kind: Kind,
) -> impl Fn() -> std::future::Ready<Result<Pid, StartError>> + Send + Sync + Clone + 'static {
    move || {
        let spawned = Spawn::new()
            .link()
            .trap_exit(kind != Kind::Plain)
            .spawn(child_body(test, id, kind))
            .expect("an unnamed spawn cannot fail");
        std::future::ready(Ok(spawned.pid))
    }
}

/// A start function that works the first time and fails every later time
/// (OTP's `supervisor_1:start_child(error)`).
pub(crate) fn child_failing_restarts(
    test: Pid,
    id: &'static str,
) -> impl Fn() -> std::future::Ready<Result<Pid, StartError>> + Send + Sync + Clone + 'static {
    let starts = Arc::new(AtomicUsize::new(0));
    move || {
        if starts.fetch_add(1, Ordering::SeqCst) == 0 {
            std::future::ready(Ok(spawn_link(child_body(test, id, Kind::Plain))))
        } else {
            std::future::ready(Err(StartError::Failed(ExitReason::error(
                "restart refused",
            ))))
        }
    }
}

/// Waits for the next [`Started`] from child `id`.
pub(crate) async fn started(id: &'static str) -> Pid {
    receive::<Started>()
        .matching(move |s| s.id == id)
        .timeout(WAIT)
        .await
        .unwrap_or_else(|| panic!("child {id} did not start"))
        .pid
}

/// Whether no [`Started`] from `id` is already in the mailbox. Looks, does
/// not wait. A test proves that a child was not (re)started by the
/// supervisor's own answer: a supervisor starts children inside the
/// handling of the event that starts them, so its answer to a later call
/// lists any child it started. This adds that no earlier start slipped by.
pub(crate) async fn no_start_of(id: &'static str) -> bool {
    receive::<Started>()
        .matching(move |s| s.id == id)
        .timeout(Duration::ZERO)
        .await
        .is_none()
}

/// How a test ends a child (OTP's `supervisor_SUITE:terminate/4`).
#[derive(Debug, Clone)]
pub(crate) enum How {
    Normal,
    Shutdown,
    ShutdownWith,
    Abnormal,
    Kill,
}

/// Ends `pid` as `how` says and waits until it is dead. Returns the reason.
pub(crate) async fn end_child(pid: Pid, how: How) -> ExitReason {
    let mref = monitor(pid);
    match how {
        How::Normal => send(pid, Cmd::Die(ExitReason::Normal)),
        How::Shutdown => send(pid, Cmd::Die(ExitReason::Shutdown)),
        How::ShutdownWith => send(pid, Cmd::Die(ExitReason::ShutdownWith("some_info".into()))),
        How::Abnormal => send(pid, Cmd::Die(ExitReason::error("died"))),
        How::Kill => exit(pid, ExitReason::Kill),
    }
    receive::<Down>()
        .matching(move |d| d.monitor == mref)
        .timeout(WAIT)
        .await
        .unwrap_or_else(|| panic!("{pid} did not exit"))
        .reason
}

/// Waits for the `Down` of a monitor on `pid`, taken now.
pub(crate) async fn await_exit(pid: Pid) -> ExitReason {
    let mref = monitor(pid);
    receive::<Down>()
        .matching(move |d| d.monitor == mref)
        .timeout(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("{pid} did not exit"))
        .reason
}

/// Polls `probe` (with a 1 ms pause between tries, up to [`WAIT`]) until it
/// returns `Some`. For states with no event to wait on, such as "the
/// supervisor has processed the exit of a child it will not restart".
pub(crate) async fn eventually<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached in {WAIT:?}"
        );
        sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until the supervisor's children satisfy `check`; returns them.
pub(crate) async fn children_where(
    sup: &SupervisorRef,
    check: impl Fn(&[ChildInfo]) -> bool,
) -> Vec<ChildInfo> {
    eventually(|| async {
        let children = sup.which_children().await.unwrap();
        check(&children).then_some(children)
    })
    .await
}

/// The pid of child `id`, if it runs.
pub(crate) fn pid_of(children: &[ChildInfo], id: &str) -> Option<Pid> {
    children
        .iter()
        .find(|c| c.id.as_deref() == Some(id))
        .and_then(|c| c.status.pid())
}

/// Takes every pending [`Started`] message (after a test, to check none leaked).
pub(crate) async fn drain_started() -> usize {
    let mut n = 0;
    while receive::<Started>().timeout(Duration::ZERO).await.is_some() {
        n += 1;
    }
    n
}

/// Waits for the `Exit` message of a process linked to the (trapping) test.
pub(crate) async fn exit_of(pid: Pid) -> ExitReason {
    receive::<Exit>()
        .matching(move |e| e.from == pid)
        .timeout(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("{pid} did not exit"))
        .reason
}

/// A start function whose `n`th start (from 1) fails, once.
pub(crate) fn child_failing_start(
    test: Pid,
    id: &'static str,
    n: usize,
) -> impl Fn() -> std::future::Ready<Result<Pid, StartError>> + Send + Sync + Clone + 'static {
    let starts = Arc::new(AtomicUsize::new(0));
    move || {
        if starts.fetch_add(1, Ordering::SeqCst) + 1 == n {
            send(test, StartRefused { id });
            std::future::ready(Err(StartError::Failed(ExitReason::error("start refused"))))
        } else {
            std::future::ready(Ok(spawn_link(child_body(test, id, Kind::Plain))))
        }
    }
}

/// A test child's start was refused on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartRefused {
    pub(crate) id: &'static str,
}

/// A start function for a child that traps exits from its creation, so that
/// even when its supervisor terminates it before it first runs, it reports
/// [`Started`] and then [`Stopped`].
pub(crate) fn child_trapping(
    test: Pid,
    id: &'static str,
) -> impl Fn() -> std::future::Ready<Result<Pid, StartError>> + Send + Sync + Clone + 'static {
    move || {
        let spawned = ember_runtime::Spawn::new()
            .link()
            .trap_exit(true)
            .spawn(child_body(test, id, Kind::Reporting))
            .unwrap();
        std::future::ready(Ok(spawned.pid))
    }
}

/// How a [`Probe`] server's `init` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeInit {
    Ok,
    Ignore,
    Fail,
}

/// A gen_server child whose `init` reports [`Started`] (so starts are
/// observed in order), and that reports [`Stopped`] from `terminate`.
pub(crate) struct Probe {
    test: Pid,
    id: &'static str,
}

impl ember_otp::gen_server::GenServer for Probe {
    type Args = (Pid, &'static str, ProbeInit);
    type Call = ();
    type Reply = ();
    type Cast = ();
    type Continue = ();

    async fn init((test, id, how): Self::Args) -> ember_otp::gen_server::Init<Self> {
        trap_exit(true);
        send(
            test,
            Started {
                id,
                pid: self_pid(),
            },
        );
        match how {
            ProbeInit::Ok => ember_otp::gen_server::Init::Ok(Probe { test, id }),
            ProbeInit::Ignore => ember_otp::gen_server::Init::Ignore,
            ProbeInit::Fail => ember_otp::gen_server::Init::Stop(ExitReason::error("init failed")),
        }
    }

    async fn terminate(&mut self, _reason: &ExitReason) {
        send(self.test, Stopped { id: self.id });
    }
}

/// The future of a [`Probe`] start.
pub(crate) type ProbeStart = std::pin::Pin<
    Box<dyn Future<Output = Result<ember_otp::gen_server::GenServerRef<Probe>, StartError>> + Send>,
>;

/// A start function for a [`Probe`] child.
pub(crate) fn probe(
    test: Pid,
    id: &'static str,
    how: ProbeInit,
) -> impl Fn() -> ProbeStart + Send + Sync + Clone + 'static {
    move || Box::pin(ember_otp::gen_server::start_link::<Probe>((test, id, how)))
}
