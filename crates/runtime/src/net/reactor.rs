//! The pollset: one `epoll` instance (through mio) polled by the schedulers
//! themselves, as BEAM's schedulers poll theirs.
//!
//! * An idle worker becomes *the poller*: it blocks in `epoll_wait` instead
//!   of parking, so a socket becoming readable wakes the very thread that
//!   will run the process waiting on it — no hop through another thread.
//!   At most one thread polls at a time (the `Poll` sits behind a mutex that
//!   is only ever `try_lock`ed); the other idle workers park as usual.
//! * A busy worker polls without blocking every [`CHECK_INTERVAL`], so I/O
//!   keeps flowing while every scheduler has work.
//! * Anyone who must wake the worker blocked in `epoll_wait` (new work in
//!   the injector, shutdown) writes to the pollset's waker (an eventfd); the
//!   slot's parker says when that is needed (`scheduler::park`).
//!
//! # Readiness and lost wake-ups
//!
//! mio registers sockets edge-triggered. Each registered socket has a
//! [`Source`]: readiness bits and a tick, packed in one atomic, plus a
//! waker per direction. An event sets bits and bumps the tick, then wakes.
//! A reader that finds the socket drained (`WouldBlock`) clears the bit only
//! if the tick is the one it read before the syscall, so an edge that lands
//! in between is never lost (the same scheme as tokio's `ScheduledIo`).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mio::event::Source as MioSource;
use mio::{Events, Interest, Token};
use parking_lot::{Mutex, MutexGuard};
use slab::Slab;

use crate::pid::Pid;
use crate::reason::ExitReason;
use crate::runtime::Handle;
use crate::scheduler::park::Driver;

/// How often a busy worker checks for I/O events without blocking.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_micros(100);

/// Events taken from the kernel per `epoll_wait`.
const EVENTS_PER_POLL: usize = 256;

/// The waker's token (sources use slab indexes, far below it).
const WAKE: Token = Token(usize::MAX);

/// Readiness bits of a [`Source`].
pub(crate) const READABLE: usize = 1;
pub(crate) const WRITABLE: usize = 1 << 1;
const READ_CLOSED: usize = 1 << 2;
const WRITE_CLOSED: usize = 1 << 3;
const ERROR: usize = 1 << 4;
const READINESS_BITS: usize = 5;
const READINESS_MASK: usize = (1 << READINESS_BITS) - 1;

/// Which way a task waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

impl Direction {
    /// The bits that end a wait in this direction.
    fn mask(self) -> usize {
        match self {
            Direction::Read => READABLE | READ_CLOSED | ERROR,
            Direction::Write => WRITABLE | WRITE_CLOSED | ERROR,
        }
    }

    /// The bit a `WouldBlock` in this direction clears.
    fn ready_bit(self) -> usize {
        match self {
            Direction::Read => READABLE,
            Direction::Write => WRITABLE,
        }
    }
}

/// Readiness observed by a task, to be cleared if the syscall would block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ready {
    tick: usize,
}

/// What the reactor knows of one registered socket.
#[derive(Debug)]
pub(crate) struct Source {
    token: Token,
    /// Readiness bits in the low [`READINESS_BITS`], an event tick above.
    state: AtomicUsize,
    reader: Mutex<Option<Waker>>,
    writer: Mutex<Option<Waker>>,
    /// A process to kill when the peer hangs up (see `HangupWatch`).
    on_hangup: Mutex<Option<(Pid, Handle)>>,
}

/// Readiness bits that mean the connection is gone: an error (a reset
/// arrives as `EPOLLERR`) or both directions closed (`EPOLLHUP`, which mio
/// reports as write-closed). `READ_CLOSED` alone is not one: it is the
/// peer's FIN, which a client that half-closes (`shutdown(SHUT_WR)`) sends
/// after its request and still expects an answer.
const HANGUP: usize = WRITE_CLOSED | ERROR;

impl Source {
    /// Kills `pid` when the peer hangs up; at once if it already has.
    pub(crate) fn kill_on_hangup(&self, pid: Pid, handle: Handle) {
        let mut armed = self.on_hangup.lock();
        // Read under the lock: `dispatch` sets the bits before taking it.
        if self.state.load(Ordering::Acquire) & HANGUP != 0 {
            drop(armed);
            handle.exit(pid, ExitReason::Kill);
        } else {
            *armed = Some((pid, handle));
        }
    }

    /// Whether the connection is gone (see [`HANGUP`]).
    pub(crate) fn hung_up(&self) -> bool {
        self.state.load(Ordering::Acquire) & HANGUP != 0
    }

    /// Forgets the process to kill.
    pub(crate) fn disarm_hangup(&self) {
        self.on_hangup.lock().take();
    }

    fn waker_slot(&self, direction: Direction) -> &Mutex<Option<Waker>> {
        match direction {
            Direction::Read => &self.reader,
            Direction::Write => &self.writer,
        }
    }

    /// Ready in `direction`, or registers the task's waker and returns
    /// `Pending` (re-checking after registering, so no event is missed).
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>, direction: Direction) -> Poll<Ready> {
        let state = self.state.load(Ordering::Acquire);
        if state & direction.mask() != 0 {
            return Poll::Ready(Ready {
                tick: state >> READINESS_BITS,
            });
        }
        {
            let mut slot = self.waker_slot(direction).lock();
            let replaced = crate::process::keep_quietly(&mut slot, cx.waker());
            drop(slot);
            drop(replaced);
        }
        let state = self.state.load(Ordering::Acquire);
        if state & direction.mask() != 0 {
            Poll::Ready(Ready {
                tick: state >> READINESS_BITS,
            })
        } else {
            Poll::Pending
        }
    }

    /// The syscall would block: forget the readiness seen at `ready`, unless
    /// an event arrived since.
    pub(crate) fn clear(&self, ready: Ready, direction: Direction) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state >> READINESS_BITS == ready.tick).then_some(state & !direction.ready_bit())
            });
    }

    /// Records an event and wakes the tasks it concerns.
    fn dispatch(&self, event: &mio::event::Event) {
        let mut bits = 0;
        if event.is_readable() {
            bits |= READABLE;
        }
        if event.is_writable() {
            bits |= WRITABLE;
        }
        if event.is_read_closed() {
            bits |= READ_CLOSED;
        }
        if event.is_write_closed() {
            bits |= WRITE_CLOSED;
        }
        if event.is_error() {
            bits |= ERROR;
        }
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                let tick = (state >> READINESS_BITS).wrapping_add(1);
                Some((tick << READINESS_BITS) | (state & READINESS_MASK) | bits)
            });
        if bits & HANGUP != 0 {
            let armed = self.on_hangup.lock().take();
            if let Some((pid, handle)) = armed {
                handle.exit(pid, ExitReason::Kill);
            }
        }
        for direction in [Direction::Read, Direction::Write] {
            if bits & direction.mask() != 0 {
                if let Some(waker) = self.waker_slot(direction).lock().take() {
                    waker.wake();
                }
            }
        }
    }
}

/// The `Poll` with its buffers, reused from one poll to the next.
pub(crate) struct Poller {
    poll: mio::Poll,
    events: Events,
    /// The sources an event names, taken out of the table before waking.
    ready: Vec<(Arc<Source>, mio::event::Event)>,
}

/// The pollset and its registrations.
pub(crate) struct Reactor {
    /// Whoever holds the lock polls.
    poll: Mutex<Poller>,
    registry: mio::Registry,
    waker: mio::Waker,
    sources: Mutex<Slab<Arc<Source>>>,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("sources", &self.sources.lock().len())
            .finish_non_exhaustive()
    }
}

impl Reactor {
    /// A new pollset with its waker.
    pub(crate) fn new() -> io::Result<Reactor> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(&registry, WAKE)?;
        Ok(Reactor {
            poll: Mutex::new(Poller {
                poll,
                events: Events::with_capacity(EVENTS_PER_POLL),
                ready: Vec::with_capacity(EVENTS_PER_POLL),
            }),
            registry,
            waker,
            sources: Mutex::new(Slab::new()),
        })
    }

    /// Registers `io` for both directions. Its readiness starts as "ready
    /// both ways": the first syscall finds out.
    pub(crate) fn register(&self, io: &mut impl MioSource) -> io::Result<Arc<Source>> {
        let source = {
            let mut sources = self.sources.lock();
            let entry = sources.vacant_entry();
            let source = Arc::new(Source {
                token: Token(entry.key()),
                state: AtomicUsize::new(READABLE | WRITABLE),
                reader: Mutex::new(None),
                writer: Mutex::new(None),
                on_hangup: Mutex::new(None),
            });
            entry.insert(source.clone());
            source
        };
        let registered =
            self.registry
                .register(io, source.token, Interest::READABLE | Interest::WRITABLE);
        if let Err(e) = registered {
            self.sources.lock().remove(source.token.0);
            return Err(e);
        }
        Ok(source)
    }

    /// Removes `io` from the pollset (before it is closed).
    pub(crate) fn deregister(&self, io: &mut impl MioSource, source: &Source) {
        let _ = self.registry.deregister(io);
        let mut sources = self.sources.lock();
        if sources
            .get(source.token.0)
            .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), source))
        {
            sources.remove(source.token.0);
        }
    }

    /// Polls for events unless another thread is: without blocking if
    /// `timeout` is zero. Dispatches what it finds; returns whether it polled.
    pub(crate) fn poll(&self, timeout: Duration) -> bool {
        match self.try_lock_poller() {
            Some(mut poller) => {
                self.poll_with(&mut poller, timeout);
                true
            }
            None => false,
        }
    }

    /// The right to poll, unless another thread polls (a parked worker
    /// holds it while it sleeps in `epoll_wait`: `scheduler::park`).
    pub(crate) fn try_lock_poller(&self) -> Option<MutexGuard<'_, Poller>> {
        self.poll.try_lock()
    }

    /// Polls for events with the right to poll, for at most `timeout`, and
    /// dispatches what it finds.
    pub(crate) fn poll_with(&self, poller: &mut Poller, timeout: Duration) {
        let Poller {
            poll,
            events,
            ready,
        } = poller;
        let result = poll.poll(events, Some(timeout));
        if let Err(e) = result {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::warn!("ember: polling for I/O failed: {e}");
            }
            return;
        }
        {
            let sources = self.sources.lock();
            for event in events.iter() {
                if event.token() == WAKE {
                    continue;
                }
                if let Some(source) = sources.get(event.token().0) {
                    ready.push((source.clone(), event.clone()));
                }
            }
        }
        // Wakers run outside every lock of ours but the right to poll: they
        // queue processes.
        for (source, event) in ready.drain(..) {
            source.dispatch(&event);
        }
    }

    /// Wakes the thread blocked in `epoll_wait`; if none is, the next
    /// poll returns at once.
    pub(crate) fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::warn!("ember: cannot wake the I/O poller: {e}");
        }
    }
}

/// The pollset as a parked worker's driver (`scheduler::park`): a worker
/// that holds its lock blocks in `epoll_wait`, so a socket event wakes the
/// thread that will run the process waiting for it.
impl Driver for Reactor {
    type Guard<'a> = MutexGuard<'a, Poller>;

    fn try_lock(&self) -> Option<Self::Guard<'_>> {
        self.try_lock_poller()
    }

    fn drive(&self, guard: &mut Self::Guard<'_>, timeout: Duration) {
        self.poll_with(guard, timeout);
    }

    fn wake(&self) {
        Reactor::wake(self);
    }
}
