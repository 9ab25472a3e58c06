//! Sending and receiving messages.
//!
//! Any `Send + 'static` value is a message. Messages from one process to
//! another arrive in the order they were sent (`docs/semantics.md`,
//! "Message ordering"). A receive is selective: it takes the first message,
//! in arrival order, of the wanted type that satisfies a predicate, and leaves
//! every other message where it was.
//!
//! # Kept targets
//!
//! A send finds its target in the process table under a shard's read lock:
//! two read-modify-writes. A process that sends to the same pid twice in a
//! row keeps that process (`Running::note_sent`), and its later sends to it
//! go straight to its mailbox (`Running::send_to_kept`), until it sends
//! elsewhere: a reply to the same client, a stream of requests to one
//! server, a ring's next hop. A process sending to a new pid each time only
//! writes the pid down.
//!
//! A kept target may have begun to exit. The send then pushes anyway and
//! looks: if the target is exiting, its last take of the inbox may have come
//! before the push, so the sender takes the inbox back and drops what it
//! finds (`signal::deliver_kept`); a message to a dead process is dropped,
//! as through the table. The target's exit marks it exiting before that
//! take, whose swap releases it; the push's compare-exchange acquires it
//! whenever it comes after the take (`mailbox/inbox.rs`), so the sender
//! sees the mark. A kept target is let go when the sender sends elsewhere,
//! finds it exiting, or exits.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::context;
use crate::mailbox::{Cursor, Envelope, Owner as _};
use crate::pid::Pid;
use crate::process::{Process, Running};
use crate::runtime::Shared;
use crate::signal;
use crate::timer::TimerKey;

/// The error of [`send_named`]: no process has that name. Gives the message back.
#[derive(Debug, PartialEq, Eq)]
pub struct NameNotFound<M> {
    /// The name that was not registered.
    pub name: Arc<str>,
    /// The undelivered message.
    pub message: M,
}

impl<M> std::fmt::Display for NameNotFound<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no process is registered as {:?}", self.name)
    }
}

impl<M: std::fmt::Debug> std::error::Error for NameNotFound<M> {}

impl Shared {
    /// Delivers `message` to `to` if it is alive; drops it otherwise.
    pub(crate) fn send_envelope(&self, to: Pid, message: Envelope) {
        self.send_envelope_from(None, to, message);
    }

    /// [`Shared::send_envelope`] from the process `from` (its guard): a
    /// process that sends to one pid again and again keeps the target
    /// (module docs, "Kept targets").
    pub(crate) fn send_envelope_from(&self, from: Option<&Running>, to: Pid, message: Envelope) {
        if !to.is_local() {
            return self.send_remote(to, message);
        }
        let message = match from {
            Some(me) => match me.send_to_kept(to.key(), message) {
                Ok(()) => return,
                Err(message) => message,
            },
            None => message,
        };
        // Delivered under the table's read guard: saves an Arc clone per send.
        let mut message = Some(message);
        let mut no_longer_kept = None;
        self.table.with(to.key(), |process| {
            if let Some(message) = message.take() {
                signal::deliver(process, message);
            }
            no_longer_kept = from.and_then(|me| me.note_sent(to.key(), process));
        });
        // Outside the table's lock: the last reference to a process drops
        // its unread messages, whose destructors may send.
        crate::scheduler::drop_contained(no_longer_kept);
        if let Some(message) = message {
            crate::scheduler::drop_contained(message);
        }
    }
}

/// Whether the caller is a process that has been terminated (killed while
/// running): such a process sends nothing more.
pub(crate) fn sender_is_dead() -> bool {
    context::try_with_current(|p| p.is_exiting()).unwrap_or(false)
}

/// Sends `message` to `to`. Sending to a dead pid silently drops the message,
/// as in Erlang. Costs one reduction.
pub fn send<M: Send + 'static>(to: Pid, message: M) {
    context::with_runtime_from("send", |rt, me| {
        context::consume_reductions(1);
        // A terminated sender (killed while running) sends nothing more.
        if !me.is_some_and(|me| me.process().is_exiting()) {
            rt.send_envelope_from(me, to, Envelope::new(message));
        }
    });
}

/// Sends `message` to the process registered as `name`, or gives it back in
/// an error if the name is not registered (Erlang raises `badarg`).
pub fn send_named<M: Send + 'static>(name: &str, message: M) -> Result<(), NameNotFound<M>> {
    context::with_runtime_from("send_named", |rt, me| match rt.whereis(name) {
        Some(pid) => {
            context::consume_reductions(1);
            // A terminated sender (killed while running) sends nothing more.
            if !me.is_some_and(|me| me.process().is_exiting()) {
                rt.send_envelope_from(me, pid, Envelope::new(message));
            }
            Ok(())
        }
        None => Err(NameNotFound {
            name: name.into(),
            message,
        }),
    })
}

/// The pid of the calling process.
///
/// # Panics
///
/// Outside an Ember process.
pub fn self_pid() -> Pid {
    context::with_current("self_pid", |p| p.pid)
}

/// The pid of the calling process, or `None` outside a process (for code
/// such as a `Drop` impl that may run either way).
pub fn try_self_pid() -> Option<Pid> {
    context::try_with_current(|p| p.pid)
}

/// Receives the first message of type `M`, waiting as long as it takes.
///
/// Refine it with [`Receive::matching`] and [`Receive::timeout`]:
///
/// ```
/// # let rt = ember_runtime::Runtime::new().unwrap();
/// # rt.block_on(async {
/// use std::time::Duration;
/// let me = ember_runtime::self_pid();
/// ember_runtime::send(me, 7u32);
/// ember_runtime::send(me, 42u32);
/// let big = ember_runtime::receive::<u32>().matching(|n| *n > 10).await;
/// assert_eq!(big, 42);
/// let none = ember_runtime::receive::<String>().timeout(Duration::ZERO).await;
/// assert_eq!(none, None);
/// assert_eq!(ember_runtime::receive::<u32>().await, 7);
/// # });
/// ```
pub fn receive<M: Send + 'static>() -> Receive<M, fn(&M) -> bool> {
    Receive {
        predicate: |_| true,
        cursor: Cursor::default(),
        _message: PhantomData,
    }
}

/// Receives the first message of any type for which `predicate` holds.
/// The [`Envelope`] can then be downcast; this is how one receive waits for
/// several message types at once.
pub fn receive_any<F: FnMut(&Envelope) -> bool>(predicate: F) -> ReceiveAny<F> {
    ReceiveAny {
        predicate,
        cursor: Cursor::default(),
    }
}

/// Takes the first message of type `M` if there is one, without waiting
/// (Erlang's `receive ... after 0`).
pub fn try_receive<M: Send + 'static>() -> Option<M> {
    take::<M>(&mut Cursor::default(), &mut |_| true)
}

fn take<M: Send + 'static>(
    cursor: &mut Cursor,
    predicate: &mut dyn FnMut(&M) -> bool,
) -> Option<M> {
    // The current process's own saved queue, through its `RUNNING` guard.
    context::with_running("receive", |me| {
        me.take_first(cursor, &mut |m| {
            m.downcast_ref::<M>().is_some_and(&mut *predicate)
        })
        .and_then(|m| m.downcast::<M>().ok())
    })
}

/// Gives the scheduler a chance to run others once the slice is used up.
/// Returns true if the caller must yield now.
fn out_of_reductions(cx: &mut Context<'_>) -> bool {
    if context::should_yield() {
        cx.waker().wake_by_ref();
        true
    } else {
        false
    }
}

/// A pending receive of a message of type `M`; see [`receive`].
#[must_use = "a receive does nothing unless awaited"]
pub struct Receive<M, F> {
    predicate: F,
    cursor: Cursor,
    _message: PhantomData<fn() -> M>,
}

impl<M: Send + 'static, F: FnMut(&M) -> bool> Receive<M, F> {
    /// Only messages for which `predicate` holds are taken; the others stay.
    pub fn matching<G: FnMut(&M) -> bool>(self, predicate: G) -> Receive<M, G> {
        Receive {
            predicate,
            cursor: Cursor::default(),
            _message: PhantomData,
        }
    }

    /// Gives up after `timeout`, resolving to `None`. A zero timeout checks the
    /// mailbox once without waiting (Erlang's `after 0`).
    pub fn timeout(self, timeout: Duration) -> ReceiveTimeout<Self> {
        ReceiveTimeout::new(self, timeout)
    }
}

impl<M: Send + 'static, F: FnMut(&M) -> bool + Unpin> sealed::Selective for Receive<M, F> {
    type Message = M;

    fn try_take(&mut self) -> Option<M> {
        take::<M>(&mut self.cursor, &mut self.predicate)
    }
}

impl<M: Send + 'static, F: FnMut(&M) -> bool + Unpin> Future for Receive<M, F> {
    type Output = M;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<M> {
        poll_selective(self.get_mut(), cx)
    }
}

mod sealed {
    /// A receive that can look at the mailbox once without waiting.
    pub trait Selective: Unpin {
        /// What the receive resolves to.
        type Message;
        /// Takes the first matching message, if any.
        fn try_take(&mut self) -> Option<Self::Message>;
    }
}

fn poll_selective<R: sealed::Selective>(receive: &mut R, cx: &mut Context<'_>) -> Poll<R::Message> {
    if out_of_reductions(cx) {
        return Poll::Pending;
    }
    match receive.try_take() {
        Some(m) => Poll::Ready(m),
        None => Poll::Pending,
    }
}

/// A pending receive of any message; see [`receive_any`].
#[must_use = "a receive does nothing unless awaited"]
pub struct ReceiveAny<F> {
    predicate: F,
    cursor: Cursor,
}

impl<F: FnMut(&Envelope) -> bool> ReceiveAny<F> {
    /// Gives up after `timeout`, resolving to `None`.
    pub fn timeout(self, timeout: Duration) -> ReceiveTimeout<Self> {
        ReceiveTimeout::new(self, timeout)
    }
}

impl<F: FnMut(&Envelope) -> bool + Unpin> sealed::Selective for ReceiveAny<F> {
    type Message = Envelope;

    fn try_take(&mut self) -> Option<Envelope> {
        // The current process's own saved queue, through its guard.
        context::with_running("receive_any", |me| {
            me.take_first(&mut self.cursor, &mut self.predicate)
        })
    }
}

impl<F: FnMut(&Envelope) -> bool + Unpin> Future for ReceiveAny<F> {
    type Output = Envelope;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Envelope> {
        poll_selective(self.get_mut(), cx)
    }
}

/// A receive with a timeout: resolves to `Some(message)` or `None`.
#[must_use = "a receive does nothing unless awaited"]
pub struct ReceiveTimeout<R> {
    inner: R,
    deadline: Option<Instant>,
    timer: Option<(Arc<Process>, TimerKey)>,
}

impl<R> ReceiveTimeout<R> {
    fn new(inner: R, timeout: Duration) -> Self {
        ReceiveTimeout {
            inner,
            deadline: Instant::now().checked_add(timeout),
            timer: None,
        }
    }
}

impl<R: sealed::Selective> Future for ReceiveTimeout<R> {
    type Output = Option<R::Message>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(m) = poll_selective(&mut this.inner, cx) {
            return Poll::Ready(Some(m));
        }
        let Some(deadline) = this.deadline else {
            return Poll::Pending; // a timeout too large to represent: infinity
        };
        if Instant::now() >= deadline {
            // One last look, whatever the budget: `after 0` must see the mailbox.
            return Poll::Ready(this.inner.try_take());
        }
        if this.timer.is_none() {
            this.timer = context::try_with_current(|me| {
                (
                    me.clone(),
                    me.rt.timers.wake_at(&me.rt, deadline, me.clone()),
                )
            });
        }
        Poll::Pending
    }
}

impl<R> Drop for ReceiveTimeout<R> {
    fn drop(&mut self) {
        if let Some((me, key)) = self.timer.take() {
            me.rt.timers.cancel_key(key);
        }
    }
}

/// Counts one reduction and yields to other processes if the slice is used up.
/// Call it in long loops so they share the scheduler fairly.
pub fn yield_point() -> YieldPoint {
    YieldPoint { yielded: false }
}

/// The future of [`yield_point`].
#[must_use = "a yield point does nothing unless awaited"]
pub struct YieldPoint {
    yielded: bool,
}

impl Future for YieldPoint {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.yielded || !out_of_reductions(cx) {
            return Poll::Ready(());
        }
        this.yielded = true;
        Poll::Pending
    }
}

/// Suspends the calling process for `duration` (Erlang's `timer:sleep/1`).
/// Messages that arrive meanwhile stay in the mailbox.
pub fn sleep(duration: Duration) -> impl Future<Output = ()> {
    // Not an `async fn`, which would store `duration` next to the receive
    // and a state of its own: a sleeping process keeps this future for as
    // long as it sleeps. The deadline is still taken at the first poll.
    Sleep::Start(duration, no_message)
}

/// The predicate of [`sleep`]'s receive: a function item, so it takes no
/// room in the future (a `fn` pointer would).
fn no_message(message: &Never) -> bool {
    match *message {}
}

/// The future of [`sleep`] (`F` is the type of [`no_message`]).
enum Sleep<F> {
    /// Not polled yet.
    Start(Duration, F),
    /// Polled: waiting for the deadline.
    Receiving(ReceiveTimeout<Receive<Never, F>>),
}

impl<F: FnMut(&Never) -> bool + Copy + Unpin> Future for Sleep<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Sleep::Start(duration, predicate) = *this {
            *this = Sleep::Receiving(ReceiveTimeout::new(
                Receive {
                    predicate,
                    cursor: Cursor::default(),
                    _message: PhantomData,
                },
                duration,
            ));
        }
        match this {
            Sleep::Receiving(receive) => Pin::new(receive).poll(cx).map(|_| ()),
            Sleep::Start(..) => unreachable!("started above"),
        }
    }
}

/// A message type no one can construct, so `receive::<Never>()` only times out.
enum Never {}

/// Model checks under loom; see `crate::loom` for the command and bounds.
#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use ::loom::sync::Arc;
    use ::loom::thread;

    use crate::mailbox::{Envelope, Mailbox};
    use crate::process::State;

    /// Makes the sender skip its look after the push: the seeded bug.
    static SEEDED_NO_SECOND_LOOK: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    /// What a kept target's protocol touches: its state and its mailbox.
    struct Target {
        state: State,
        mailbox: Mailbox,
    }

    /// A sender that kept the target sends to it (step for step
    /// `Running::send_to_kept` and `signal::deliver_kept`) while the target
    /// exits (`signal::terminate_all`: the mark, then the last take of the
    /// inbox). Whatever the interleaving, no message is left in the dead
    /// process's inbox.
    fn a_kept_send_racing_the_exit() {
        let target = Arc::new(Target {
            state: State::new_scheduled(),
            mailbox: Mailbox::default(),
        });
        let sender = {
            let target = target.clone();
            thread::spawn(move || {
                if target.state.is_exiting() {
                    return; // let go; the table has nothing either
                }
                target.mailbox.push(Envelope::new(1u8));
                let look = !SEEDED_NO_SECOND_LOOK.load(std::sync::atomic::Ordering::Relaxed);
                if look && target.state.is_exiting() {
                    drop(target.mailbox.drain_inbox());
                }
            })
        };
        assert!(target.state.begin_exit());
        drop(target.mailbox.drain_inbox());
        sender.join().unwrap();
        assert_eq!(
            target.mailbox.len(),
            0,
            "a message stayed in the inbox of a process that exited"
        );
    }

    #[test]
    fn loom_models_a_kept_target_that_exits_keeps_no_message() {
        crate::loom::model(
            "kept target: a send racing the exit",
            None,
            a_kept_send_racing_the_exit,
        );
    }

    /// The seeded mutation: without the look after the push, a message
    /// pushed after the exit's last take stays; loom must find it. Run in
    /// a child process (loom aborts on a failed model).
    #[test]
    fn loom_models_a_kept_send_without_its_second_look_is_caught() {
        crate::loom::assert_seeded_bug_caught(
            "message::loom_models::seeded_bug_no_second_look",
            &["stayed in the inbox"],
            "a kept send without its second look",
        );
    }

    #[test]
    #[ignore = "a seeded bug: run by loom_models_a_kept_send_without_its_second_look_is_caught, which expects it to fail"]
    fn seeded_bug_no_second_look() {
        SEEDED_NO_SECOND_LOOK.store(true, std::sync::atomic::Ordering::Relaxed);
        crate::loom::model(
            "kept target: no second look",
            None,
            a_kept_send_racing_the_exit,
        );
    }
}
