//! gen_server lifecycle: init results, start timeout, handle_continue,
//! server timeouts, and when terminate runs.
//!
//! Ported from OTP's `lib/stdlib/test/gen_server_SUITE.erl`: `start`
//! (ignore, stop, start timeout), `stop1`..`stop4` (stop with reason,
//! registered names), `crash`, and the `continue` cases of later OTP
//! releases. See `docs/semantics.md`, "OTP behaviours / GenServer".

mod support;

use std::time::Duration;

use ember_otp::gen::{self, CallError, ReplyTo, StartError, StartOptions};
use ember_otp::gen_server::{self, CallReturn, GenServer, Init, Return, Then, Timeout};
use ember_runtime::{
    exit, is_alive, receive, self_pid, send, sleep, spawn, trap_exit, Envelope, ExitReason, Pid,
};

/// How `init` behaves.
#[derive(Clone, Copy)]
enum Start {
    Ok,
    Ignore,
    Stop,
    Panic,
    Sleep,
    /// Trap exits, then Ok.
    Trap,
    /// Ask for `handle_continue` before the first message.
    Continue,
    /// Ask for a `Timeout` info if nothing arrives.
    IdleTimeout,
}

/// Reports sent to the test process.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Continued(&'static str),
    TimedOut,
    Terminated(ExitReason),
}

struct Life {
    test: Pid,
    log: Vec<&'static str>,
}

enum Req {
    Log,
    ContinueThen,
    Crash,
}

impl GenServer for Life {
    type Args = (Pid, Start);
    type Call = Req;
    type Reply = Vec<&'static str>;
    type Cast = ();
    type Continue = &'static str;

    async fn init((test, how): Self::Args) -> Init<Self> {
        let state = Life {
            test,
            log: vec!["init"],
        };
        match how {
            Start::Ok => Init::Ok(state),
            Start::Ignore => Init::Ignore,
            Start::Stop => Init::Stop(ExitReason::error("no way")),
            Start::Panic => panic!("init exploded"),
            Start::Sleep => {
                sleep(Duration::from_secs(10)).await;
                Init::Ok(state)
            }
            Start::Trap => {
                trap_exit(true);
                Init::Ok(state)
            }
            Start::Continue => Init::OkThen(state, Then::Continue("from init")),
            Start::IdleTimeout => Init::OkThen(state, Then::Timeout(Duration::from_millis(5))),
        }
    }

    async fn handle_call(&mut self, req: Req, _from: &ReplyTo<Self::Reply>) -> CallReturn<Self> {
        match req {
            Req::Log => CallReturn::Reply(self.log.clone()),
            Req::ContinueThen => {
                CallReturn::ReplyThen(self.log.clone(), Then::Continue("from call"))
            }
            Req::Crash => {
                self.log.push("crashing");
                panic!("handle_call exploded")
            }
        }
    }

    async fn handle_continue(&mut self, from: &'static str) -> Return<Self> {
        self.log.push(from);
        send(self.test, Event::Continued(from));
        Return::NoReply
    }

    async fn handle_info(&mut self, message: Envelope) -> Return<Self> {
        if message.is::<Timeout>() {
            send(self.test, Event::TimedOut);
        } else if message.is::<ember_runtime::Exit>() {
            self.log.push("exit");
        }
        Return::NoReply
    }

    async fn terminate(&mut self, reason: &ExitReason) {
        assert!(!self.log.is_empty());
        send(self.test, Event::Terminated(reason.clone()));
    }
}

async fn event() -> Event {
    receive::<Event>()
        .timeout(Duration::from_secs(5))
        .await
        .expect("an event")
}

/// Whether no [`Event`] is in the mailbox. Looks, does not wait: the tests
/// call it once the server has answered a later call or is dead (its
/// `Down` is queued after everything it sent, `docs/semantics.md` §3.4), so
/// an event it had sent would already be here.
async fn no_event() -> bool {
    receive::<Event>().timeout(Duration::ZERO).await.is_none()
}

/// gen_server_SUITE:start — "anonymous with ignore" and "anonymous with
/// stop": the start returns the error and the process is gone.
#[test]
fn init_that_ignores_or_stops_makes_start_return_the_error() {
    support::runtime().block_on(async {
        let me = self_pid();
        assert_eq!(
            gen_server::start::<Life>((me, Start::Ignore)).await,
            Err(StartError::Ignore)
        );
        assert_eq!(
            gen_server::start_link::<Life>((me, Start::Stop)).await,
            Err(StartError::Failed(ExitReason::error("no way")))
        );
        // The linked caller was not taken down (it does not trap exits).
        assert!(is_alive(me));
    });
}

/// An init that panics is a failed start, and its caller lives on.
#[test]
fn init_that_panics_makes_start_return_failed() {
    support::runtime().block_on(async {
        let me = self_pid();
        let result = gen_server::start_link::<Life>((me, Start::Panic)).await;
        let Err(StartError::Failed(ExitReason::Panic(message))) = result else {
            panic!("unexpected {result:?}");
        };
        assert!(message.contains("init exploded"));
    });
}

/// gen_server_SUITE:start — "anonymous with timeout": `{error, timeout} =
/// gen_server:start(gen_server_SUITE, sleep, [{timeout,100}])`, and the
/// sleeping process is killed; its name is free again.
#[test]
fn init_that_outlasts_the_start_timeout_is_killed() {
    support::runtime().block_on(async {
        let me = self_pid();
        let options = StartOptions::new()
            .name("sleepy")
            .timeout(Duration::from_millis(20));
        assert_eq!(
            gen_server::start_link_with::<Life>((me, Start::Sleep), options).await,
            Err(StartError::Timeout)
        );
        assert_eq!(ember_runtime::whereis("sleepy"), None);
    });
}

/// `{ok, State, {continue, C}}` from init and `{reply, R, S, {continue, C}}`
/// from a call: handle_continue runs before any other message.
#[test]
fn handle_continue_runs_before_the_next_message() {
    support::runtime().block_on(async {
        let me = self_pid();
        let server = gen_server::start::<Life>((me, Start::Continue))
            .await
            .unwrap();
        assert_eq!(event().await, Event::Continued("from init"));
        assert_eq!(server.call(Req::Log).await.unwrap(), ["init", "from init"]);
        assert_eq!(
            server.call(Req::ContinueThen).await.unwrap(),
            ["init", "from init"]
        );
        assert_eq!(
            server.call(Req::Log).await.unwrap(),
            ["init", "from init", "from call"]
        );
        assert_eq!(event().await, Event::Continued("from call"));
    });
}

/// `{ok, State, Timeout}`: an idle server gets `timeout` as info.
#[test]
fn an_idle_server_receives_the_timeout_it_asked_for() {
    support::runtime().block_on(async {
        let me = self_pid();
        let _server = gen_server::start::<Life>((me, Start::IdleTimeout))
            .await
            .unwrap();
        assert_eq!(event().await, Event::TimedOut);
    });
}

/// gen_server_SUITE:stop1..stop4 — stop runs terminate with the reason and
/// waits until the server is gone; a second stop is noproc.
#[test]
fn stop_runs_terminate_with_the_reason_and_waits_for_the_exit() {
    support::runtime().block_on(async {
        let me = self_pid();
        let server = gen_server::start::<Life>((me, Start::Ok)).await.unwrap();
        let pid = server.pid().unwrap();
        server
            .stop_with(ExitReason::error("other_reason"), gen::INFINITY)
            .await
            .unwrap();
        assert_eq!(
            event().await,
            Event::Terminated(ExitReason::error("other_reason"))
        );
        assert!(!is_alive(pid));
        assert_eq!(server.stop().await, Err(CallError::NoProc));
    });
}

/// A callback that panics: terminate runs with the panic as its reason,
/// and the server exits with it.
#[test]
fn a_panicking_callback_runs_terminate_with_the_panic_reason() {
    support::runtime().block_on(async {
        let me = self_pid();
        let server = gen_server::start::<Life>((me, Start::Ok)).await.unwrap();
        let result = server.call(Req::Crash).await;
        assert!(matches!(
            result,
            Err(CallError::Exited(ExitReason::Panic(_)))
        ));
        let Event::Terminated(ExitReason::Panic(message)) = event().await else {
            panic!("terminate did not see the panic");
        };
        assert!(message.contains("handle_call exploded"));
    });
}

/// gen_server.erl: a server trapping exits runs terminate when its parent
/// (the process that called start_link) sends an exit signal.
#[test]
fn a_server_trapping_exits_runs_terminate_when_its_parent_exits() {
    support::runtime().block_on(async {
        let me = self_pid();
        let parent = spawn(async move {
            let server = gen_server::start_link::<Life>((me, Start::Trap))
                .await
                .unwrap();
            send(me, server.pid().unwrap());
            receive::<()>().await;
        });
        let server = support::recv::<Pid>().await;
        exit(parent, ExitReason::Shutdown);
        assert_eq!(event().await, Event::Terminated(ExitReason::Shutdown));
        let reason = support::await_exit(server).await;
        assert!(matches!(reason, ExitReason::Shutdown | ExitReason::NoProc));
    });
}

/// …and one that does not trap exits dies with its parent, without
/// terminate (as in OTP).
#[test]
fn a_server_not_trapping_exits_dies_with_its_parent_without_terminate() {
    support::runtime().block_on(async {
        let me = self_pid();
        let parent = spawn(async move {
            let server = gen_server::start_link::<Life>((me, Start::Ok))
                .await
                .unwrap();
            send(me, server.pid().unwrap());
            receive::<()>().await;
        });
        let server = support::recv::<Pid>().await;
        let mref = ember_runtime::monitor(server);
        exit(parent, ExitReason::Shutdown);
        let down = receive::<ember_runtime::Down>()
            .matching(move |d| d.monitor == mref)
            .timeout(support::WAIT)
            .await
            .expect("a Down within the wait limit");
        assert_eq!(down.reason, ExitReason::Shutdown);
        assert!(no_event().await);
    });
}

/// An exit signal from a process other than the parent is just info.
#[test]
fn an_exit_from_a_linked_stranger_is_info_not_a_stop() {
    support::runtime().block_on(async {
        let me = self_pid();
        let server = gen_server::start::<Life>((me, Start::Trap)).await.unwrap();
        let pid = server.pid().unwrap();
        spawn(async move {
            ember_runtime::link(pid).unwrap();
            ExitReason::error("stranger dies")
        });
        let log = support::eventually(|| async {
            let log = server.call(Req::Log).await.unwrap();
            (log.len() > 1).then_some(log)
        })
        .await;
        assert_eq!(log, ["init", "exit"]);
        assert!(no_event().await);
        assert!(is_alive(pid), "the stranger's exit stopped the server");
        assert!(is_alive(pid));
    });
}
