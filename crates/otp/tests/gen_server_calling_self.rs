//! A server that calls (or stops) itself fails at once with `calling_self`
//! instead of waiting out the call's timeout, and leaves no stray request
//! behind. OTP's `gen:call/4` exits the caller with `calling_self` (and
//! `proc_lib:stop/3` too); Ember returns the error. See
//! `docs/semantics.md`, "OTP behaviours / GenServer".

mod support;

use std::time::{Duration, Instant};

use ember_otp::gen::{CallError, ReplyTo};
use ember_otp::gen_server::{self, CallReturn, GenServer, GenServerRef, Init};

/// Counts the calls it handles.
struct Loopback {
    calls: usize,
}

#[derive(Debug)]
enum Req {
    /// Call itself with this timeout and report what happened.
    CallYourself(Duration),
    /// Stop itself through `stop_with` and report what happened.
    StopYourself(Duration),
    /// How many calls were handled so far, this one included.
    Count,
}

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// The result of the self-call and how long it took.
    Tried(Result<(), CallError>, Duration),
    Count(usize),
}

impl GenServer for Loopback {
    type Args = ();
    type Call = Req;
    type Reply = Answer;
    type Cast = ();
    type Continue = ();

    async fn init(_: ()) -> Init<Self> {
        Init::Ok(Loopback { calls: 0 })
    }

    async fn handle_call(&mut self, request: Req, _: &ReplyTo<Answer>) -> CallReturn<Self> {
        self.calls += 1;
        let me = GenServerRef::<Loopback>::myself();
        let started = Instant::now();
        match request {
            Req::CallYourself(timeout) => {
                let result = me.call_timeout(Req::Count, timeout).await.map(|_| ());
                CallReturn::Reply(Answer::Tried(result, started.elapsed()))
            }
            Req::StopYourself(timeout) => {
                let result = me
                    .stop_with(ember_runtime::ExitReason::Normal, timeout)
                    .await;
                CallReturn::Reply(Answer::Tried(result, started.elapsed()))
            }
            Req::Count => CallReturn::Reply(Answer::Count(self.calls)),
        }
    }
}

const LONG: Duration = Duration::from_secs(30);

#[test]
fn a_server_calling_itself_fails_at_once_with_calling_self() {
    support::runtime().block_on(async {
        let server = gen_server::start::<Loopback>(()).await.unwrap();
        let answer = server.call(Req::CallYourself(LONG)).await.unwrap();
        let Answer::Tried(result, took) = answer else {
            panic!("unexpected answer {answer:?}");
        };
        assert_eq!(result, Err(CallError::CallingSelf));
        assert!(took < Duration::from_secs(5), "the self-call took {took:?}");
        // No stray `Count` request was left in its mailbox: the next call
        // is the second one it handles.
        assert_eq!(server.call(Req::Count).await, Ok(Answer::Count(2)));
        assert_eq!(
            CallError::CallingSelf.to_string(),
            "calling_self: a process called itself"
        );
    });
}

#[test]
fn a_server_stopping_itself_through_stop_fails_at_once_with_calling_self() {
    support::runtime().block_on(async {
        let server = gen_server::start::<Loopback>(()).await.unwrap();
        let answer = server.call(Req::StopYourself(LONG)).await.unwrap();
        let Answer::Tried(result, took) = answer else {
            panic!("unexpected answer {answer:?}");
        };
        assert_eq!(result, Err(CallError::CallingSelf));
        assert!(took < Duration::from_secs(5), "the self-stop took {took:?}");
        assert_eq!(server.call(Req::Count).await, Ok(Answer::Count(2)));
    });
}
