//! gen_server calls: replies, timeouts, deferred replies, late replies,
//! dead and unregistered servers.
//!
//! Ported from OTP's `lib/stdlib/test/gen_server_SUITE.erl`: `call`
//! (delayed answers, call timeouts, `call_within`), `crash` (stop reasons
//! seen by the caller), `start` (calls to a stopped server exit with
//! `noproc`), and the late-reply guarantee of `gen:call` with aliases
//! (OTP 24). See `docs/semantics.md`, "OTP behaviours / GenServer".

mod support;

use std::time::{Duration, Instant};

use ember_otp::gen::{self, CallError, ReplyTo, StartOptions};
use ember_otp::gen_server::{
    self, CallReturn, GenServer, GenServerRef, Init, Return, Then, Timeout,
};
use ember_runtime::{
    exit, receive, receive_any, self_pid, send, sleep, spawn, trap_exit, Envelope, ExitReason, Pid,
};

/// The server of these tests, after gen_server_SUITE's callback module.
#[derive(Default)]
struct Suite {
    /// A call waiting for its delayed answer.
    pending: Option<ReplyTo<Answer>>,
    call_within: bool,
    /// Who hears of the expiry of the `call_within` timeout.
    tell_timeout: Option<Pid>,
}

#[derive(Debug)]
enum Req {
    StartedP,
    /// Reply `Delayed` after this long, from `handle_info(timeout)`.
    DelayedAnswer(Duration),
    /// Reply `Ok`; a `NextCall` within the time answers `Bool(true)`.
    CallWithin(Duration),
    NextCall,
    /// Hand the reply to another process, which answers after this long
    /// and tells `Pid` whether its reply was delivered.
    ReplyFromElsewhere(Duration, Pid),
    /// Hand the reply to another process, which sends its pid to `Pid`,
    /// answers when it receives [`Go`], then tells `Pid` whether its reply
    /// was delivered.
    ReplyWhenTold(Pid),
    /// Reply twice; tell `Pid` whether each was delivered.
    ReplyTwice(Pid),
    Stop,
    ShutdownReason,
    Crash,
    /// Never answer.
    Silence,
    /// Never answer, and tell `Pid` the call is being handled.
    Hold(Pid),
    /// Reply `Ok`, with a server timeout (like `CallWithin`) whose expiry
    /// is reported to `Pid` as [`TimedOut`].
    CallWithinTell(Duration, Pid),
}

/// Tells the helper of `ReplyWhenTold` to answer.
struct Go;

/// The server is handling a `Hold` call.
#[derive(Debug, PartialEq, Eq)]
struct Holding;

/// The server's timeout set by `CallWithinTell` expired.
#[derive(Debug, PartialEq, Eq)]
struct TimedOut;

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Delayed,
    Bool(bool),
    Value(u32),
}

/// What the helper that replied from elsewhere reports.
#[derive(Debug, PartialEq, Eq)]
struct Delivered(bool);

impl GenServer for Suite {
    type Args = ();
    type Call = Req;
    type Reply = Answer;
    type Cast = Pid;
    type Continue = ();

    async fn init(_: ()) -> Init<Self> {
        Init::Ok(Suite::default())
    }

    async fn handle_call(&mut self, request: Req, from: &ReplyTo<Answer>) -> CallReturn<Self> {
        match request {
            Req::StartedP => CallReturn::Reply(Answer::Ok),
            Req::DelayedAnswer(after) => {
                self.pending = Some(from.clone());
                CallReturn::NoReplyThen(Then::Timeout(after))
            }
            Req::CallWithin(within) => {
                self.call_within = true;
                CallReturn::ReplyThen(Answer::Ok, Then::Timeout(within))
            }
            Req::NextCall => {
                let within = std::mem::take(&mut self.call_within);
                CallReturn::Reply(Answer::Bool(within))
            }
            Req::ReplyFromElsewhere(after, tell) => {
                let from = from.clone();
                spawn(async move {
                    sleep(after).await;
                    send(tell, Delivered(from.reply(Answer::Value(7))));
                });
                CallReturn::NoReply
            }
            Req::ReplyWhenTold(tell) => {
                let from = from.clone();
                spawn(async move {
                    send(tell, self_pid());
                    let go = receive::<Go>().timeout(support::WAIT).await;
                    assert!(go.is_some(), "the helper was never told to answer");
                    send(tell, Delivered(from.reply(Answer::Value(7))));
                });
                CallReturn::NoReply
            }
            Req::ReplyTwice(tell) => {
                send(tell, Delivered(gen::reply(from, Answer::Value(1))));
                send(tell, Delivered(gen::reply(from, Answer::Value(2))));
                CallReturn::NoReply
            }
            Req::Stop => CallReturn::StopReply(ExitReason::error("stopped"), Answer::Ok),
            Req::ShutdownReason => CallReturn::Stop(ExitReason::ShutdownWith("reason".into())),
            Req::Crash => panic!("crashed"),
            Req::Silence => CallReturn::NoReply,
            Req::Hold(tell) => {
                send(tell, Holding);
                CallReturn::NoReply
            }
            Req::CallWithinTell(within, tell) => {
                self.call_within = true;
                self.tell_timeout = Some(tell);
                CallReturn::ReplyThen(Answer::Ok, Then::Timeout(within))
            }
        }
    }

    async fn handle_cast(&mut self, to: Pid) -> Return<Self> {
        send(to, "cast_ok");
        Return::NoReply
    }

    async fn handle_info(&mut self, message: Envelope) -> Return<Self> {
        if message.is::<Timeout>() {
            if let Some(from) = self.pending.take() {
                from.reply(Answer::Delayed);
            }
            self.call_within = false;
            if let Some(tell) = self.tell_timeout.take() {
                send(tell, TimedOut);
            }
        } else if let Ok(to) = message.downcast::<Pid>() {
            send(to, "info_ok");
        }
        Return::NoReply
    }
}

/// Whether the caller's mailbox is empty: no late reply, no stray `Down`.
async fn mailbox_is_empty() -> bool {
    receive_any(|_| true)
        .timeout(Duration::ZERO)
        .await
        .is_none()
}

/// gen_server_SUITE:call — replies, including one delivered later from
/// `handle_info(timeout)` (`delayed_answer`).
#[test]
fn a_call_gets_its_reply_even_when_the_server_answers_later() {
    support::runtime().block_on(async {
        let server = gen_server::start::<Suite>(()).await.unwrap();
        assert_eq!(server.call(Req::StartedP).await, Ok(Answer::Ok));
        assert_eq!(
            server
                .call(Req::DelayedAnswer(Duration::from_millis(1)))
                .await,
            Ok(Answer::Delayed)
        );
        assert_eq!(
            server
                .call_timeout(
                    Req::DelayedAnswer(Duration::from_millis(1)),
                    Duration::from_millis(500)
                )
                .await,
            Ok(Answer::Delayed)
        );
        assert!(mailbox_is_empty().await);
    });
}

/// gen_server_SUITE:call (timeout call) — `{'EXIT',{timeout,_}} =
/// (catch gen_server:call(my_test_name, {delayed_answer,30}, 1))`.
#[test]
fn a_call_that_is_not_answered_in_time_returns_timeout() {
    support::runtime().block_on(async {
        let server = gen_server::start::<Suite>(()).await.unwrap();
        let t0 = Instant::now();
        assert_eq!(
            server
                .call_timeout(Req::Silence, Duration::from_millis(20))
                .await,
            Err(CallError::Timeout)
        );
        assert!(t0.elapsed() >= Duration::from_millis(20));
        // The server is fine and the caller's mailbox clean.
        assert_eq!(server.call(Req::StartedP).await, Ok(Answer::Ok));
        assert!(mailbox_is_empty().await);
    });
}

/// The alias guarantee of OTP 24's `gen:call`: a reply sent after the
/// caller timed out is dropped, never delivered to the caller's mailbox.
#[test]
fn a_late_reply_never_reaches_the_caller_mailbox() {
    support::runtime().block_on(async {
        let me = self_pid();
        let server = gen_server::start::<Suite>(()).await.unwrap();
        assert_eq!(
            server
                .call_timeout(Req::ReplyWhenTold(me), Duration::from_millis(5))
                .await,
            Err(CallError::Timeout)
        );
        // Only now, after the timeout, does the helper reply: too late, so
        // its reply is not delivered (and it tells us so, after replying).
        let helper: Pid = support::recv().await;
        send(helper, Go);
        assert_eq!(support::recv::<Delivered>().await, Delivered(false));
        assert!(mailbox_is_empty().await);
    });
}

/// gen_server:reply/2 from another process (a deferred reply).
#[test]
fn a_reply_can_come_from_another_process() {
    support::runtime().block_on(async {
        let me = self_pid();
        let server = gen_server::start::<Suite>(()).await.unwrap();
        assert_eq!(
            server
                .call(Req::ReplyFromElsewhere(Duration::from_millis(1), me))
                .await,
            Ok(Answer::Value(7))
        );
        assert_eq!(support::recv::<Delivered>().await, Delivered(true));
        assert!(mailbox_is_empty().await);
    });
}

/// Only the first reply to a call is delivered.
#[test]
fn only_the_first_reply_to_a_call_is_delivered() {
    support::runtime().block_on(async {
        let me = self_pid();
        let server = gen_server::start::<Suite>(()).await.unwrap();
        assert_eq!(server.call(Req::ReplyTwice(me)).await, Ok(Answer::Value(1)));
        assert_eq!(support::recv::<Delivered>().await, Delivered(true));
        assert_eq!(support::recv::<Delivered>().await, Delivered(false));
        assert!(mailbox_is_empty().await);
    });
}

/// gen_server_SUITE:call (`call_within`) — a server timeout set by a reply
/// is cancelled by the next message.
#[test]
fn a_server_timeout_is_cancelled_by_the_next_message() {
    support::runtime().block_on(async {
        let me = self_pid();
        let server = gen_server::start::<Suite>(()).await.unwrap();
        // A timeout far longer than the test: the next call comes first,
        // however slow the machine.
        let within = Duration::from_secs(60);
        assert_eq!(server.call(Req::CallWithin(within)).await, Ok(Answer::Ok));
        assert_eq!(server.call(Req::NextCall).await, Ok(Answer::Bool(true)));
        assert_eq!(
            server
                .call(Req::CallWithinTell(Duration::from_millis(10), me))
                .await,
            Ok(Answer::Ok)
        );
        // Nothing arrives: the timeout fires, and the server says so.
        assert_eq!(support::recv::<TimedOut>().await, TimedOut);
        assert_eq!(server.call(Req::NextCall).await, Ok(Answer::Bool(false)));
    });
}

/// gen_server_SUITE:start — `{'EXIT', {noproc,_}} = (catch
/// gen_server:call(Pid0, started_p, 1))` after the server stopped.
#[test]
fn calling_a_dead_server_returns_noproc_at_once() {
    support::runtime().block_on(async {
        trap_exit(true);
        let server = gen_server::start::<Suite>(()).await.unwrap();
        server.stop().await.unwrap();
        let t0 = Instant::now();
        assert_eq!(
            server.call_timeout(Req::StartedP, gen::INFINITY).await,
            Err(CallError::NoProc)
        );
        // At once: the call's timeout is infinite; seconds of slack for a
        // busy machine.
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(mailbox_is_empty().await);
    });
}

/// A call to a name nobody holds returns noproc, never hangs.
#[test]
fn calling_an_unregistered_name_returns_noproc() {
    support::runtime().block_on(async {
        let nobody = GenServerRef::<Suite>::from_name("nobody");
        assert_eq!(
            nobody.call_timeout(Req::StartedP, gen::INFINITY).await,
            Err(CallError::NoProc)
        );
        nobody.cast(self_pid()); // dropped, like OTP's cast
        assert!(mailbox_is_empty().await);
    });
}

/// gen_server_SUITE:crash — the caller sees the stop reason of a server
/// that stops or crashes while handling its call.
#[test]
fn a_server_that_stops_or_crashes_in_a_call_returns_exited_to_the_caller() {
    support::runtime().block_on(async {
        let server = gen_server::start::<Suite>(()).await.unwrap();
        assert_eq!(
            server.call(Req::ShutdownReason).await,
            Err(CallError::Exited(ExitReason::ShutdownWith("reason".into())))
        );
        let server = gen_server::start::<Suite>(()).await.unwrap();
        match server.call(Req::Crash).await {
            Err(CallError::Exited(ExitReason::Panic(message))) => {
                assert!(message.contains("crashed"))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(mailbox_is_empty().await);
    });
}

/// A server killed while a call waits: the caller returns at once.
#[test]
fn a_server_killed_during_a_call_returns_exited_killed() {
    support::runtime().block_on(async {
        let server = gen_server::start::<Suite>(()).await.unwrap();
        let pid = server.pid().unwrap();
        // The killer strikes once the server is handling the call.
        let killer = spawn(async move {
            let holding = receive::<Holding>().timeout(support::WAIT).await;
            assert!(holding.is_some(), "the server never took the call");
            exit(pid, ExitReason::Kill);
        });
        assert_eq!(
            server.call_timeout(Req::Hold(killer), gen::INFINITY).await,
            Err(CallError::Exited(ExitReason::Killed))
        );
        assert!(mailbox_is_empty().await);
    });
}

/// `{stop, Reason, Reply, State}`: the caller gets the reply, and the
/// linked starter the exit (gen_server_SUITE:start, "anonymous linked").
#[test]
fn stop_with_a_reply_answers_the_caller_then_exits() {
    support::runtime().block_on(async {
        trap_exit(true);
        let server = gen_server::start_link::<Suite>(()).await.unwrap();
        let pid = server.pid().unwrap();
        assert_eq!(server.call(Req::Stop).await, Ok(Answer::Ok));
        let exit = receive::<ember_runtime::Exit>()
            .matching(move |e| e.from == pid)
            .timeout(support::WAIT)
            .await
            .expect("a Exit within the wait limit");
        assert_eq!(exit.reason, ExitReason::error("stopped"));
    });
}

/// gen_server_SUITE:cast and info.
#[test]
fn casts_and_info_messages_reach_their_callbacks() {
    support::runtime().block_on(async {
        let me = self_pid();
        let server = gen_server::start::<Suite>(()).await.unwrap();
        server.cast(me);
        assert_eq!(support::recv::<&str>().await, "cast_ok");
        send(server.pid().unwrap(), me);
        assert_eq!(support::recv::<&str>().await, "info_ok");
    });
}

/// Calls by registered name (gen_server_SUITE:start, "local register").
#[test]
fn a_named_server_is_called_by_name_and_cannot_be_started_twice() {
    support::runtime().block_on(async {
        let server = gen_server::start_with::<Suite>((), StartOptions::new().name("my_test_name"))
            .await
            .unwrap();
        let pid = ember_runtime::whereis("my_test_name").unwrap();
        assert_eq!(server.pid(), Some(pid));
        let by_name = GenServerRef::<Suite>::from_name("my_test_name");
        assert_eq!(by_name.call(Req::StartedP).await, Ok(Answer::Ok));
        assert_eq!(
            gen_server::start_with::<Suite>((), StartOptions::new().name("my_test_name")).await,
            Err(ember_otp::gen::StartError::AlreadyStarted(pid))
        );
        by_name.stop().await.unwrap();
        assert_eq!(by_name.call(Req::StartedP).await, Err(CallError::NoProc));
        assert_eq!(by_name.stop().await, Err(CallError::NoProc));
    });
}

/// Many callers at once each get their own reply.
#[test]
fn concurrent_callers_each_get_their_own_reply() {
    support::runtime().block_on(async {
        let me = self_pid();
        let server = gen_server::start::<Suite>(()).await.unwrap();
        for _ in 0..50 {
            let server = server.clone();
            spawn(async move {
                for _ in 0..100 {
                    assert_eq!(server.call(Req::StartedP).await, Ok(Answer::Ok));
                }
                send(me, "done");
            });
        }
        for _ in 0..50 {
            assert_eq!(support::recv::<&str>().await, "done");
        }
    });
}
