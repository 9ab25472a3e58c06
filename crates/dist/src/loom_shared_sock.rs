//! A loom model of the plain-TCP socket a runtime node's connection shares
//! between its reader process and its writers (`connection::SharedSock`,
//! `EmberRead`, `SendQueue::enqueue` / `write_direct` / `close`,
//! `write_loop`), over the readiness protocol of the runtime's pollset
//! (`ember_runtime`'s `net/reactor.rs`, `Source`), step for step on
//! loom's types.
//!
//! One registered socket has one `Source`: readiness bits and an event
//! tick in one atomic, and a waker slot per direction. An event (epoll,
//! edge-triggered) sets bits, bumps the tick and wakes the slot of each
//! direction it concerns. A task waiting in a direction checks the bits,
//! stores its waker, checks again; after a syscall that would block (or a
//! short transfer) it clears its direction's bit only if the tick is still
//! the one it saw before the syscall. The reader process waits for `Read`;
//! the writer task (the write token's holder) waits for `Write`; a sender
//! writing directly never waits: `try_write` and what the socket did not
//! take goes back to the queue for the writer, which is woken (`work`).
//! The kernel side: a write that finds the send buffer full (or fills it:
//! a short write) marks the socket `nospace`, and draining it then brings
//! one writable event (`sk_stream_write_space`); data arriving brings one
//! readable event. Events carry every direction ready at the time, as
//! epoll reports the whole mask.
//!
//! Model 1, a write racing the reader's readiness wake-up: a direct
//! sender's two bytes meet a one-byte send buffer (a short write, the rest
//! to the writer task, which finds the socket full), while the peer's data
//! arrives for the reader and the kernel drains the buffer. Checked in
//! every interleaving (preemption bound 2): everything is written once and
//! in order, one writer at a time, and the reader and the writer are always
//! woken (a lost wake-up leaves a thread blocked for ever: loom reports the
//! deadlock). The two directions share the tick, so a readable event
//! landing between the writer's `WouldBlock` and its clear keeps the
//! writable bit, and the other way round: a spurious retry, never a lost
//! event.
//!
//! Model 2, the connection's teardown racing a writer: the reader ends
//! (the peer closed or went silent): it aborts the writer task (a tokio
//! abort ends it at its next await) and closes the queue, which takes the
//! socket out of `Pending::direct` under the queue's lock, while a sender
//! may be holding a batch with its own handle on the socket. The socket's
//! write side is shut down when its last holder drops it. Checked: no write
//! after the shutdown, the shutdown happens exactly once, a sender finding
//! the queue closed queues nothing, and no direct write starts after the
//! close returned.
//!
//! Each model is also run with a seeded mutation (a step of the protocol
//! left out: the tick compare of a clear, the second look after storing a
//! waker, the shutdown left to the socket's last holder), which loom must
//! catch (`loom_shared_sock_seeded_mutations_are_caught`, each mutant in a
//! process of its own): so the model is known to see the bug it is there
//! for.
//!
//! ```text
//! cargo test -p ember-dist --lib --release --features loom-models \
//!     -- loom_shared_sock --test-threads=1
//! ```

use std::task::{Context, Poll, Waker};

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex, Notify};
use loom::thread;

const READABLE: usize = 1;
const WRITABLE: usize = 2;
const BITS: usize = 2;
const MASK: usize = (1 << BITS) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

impl Dir {
    fn bit(self) -> usize {
        match self {
            Dir::Read => READABLE,
            Dir::Write => WRITABLE,
        }
    }
}

/// A step of the protocol left out, for the seeded-mutation checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutation {
    /// `Source::clear` clears without comparing the tick.
    ClearIgnoresTick,
    /// `Source::poll_ready` does not look again after storing the waker.
    NoRecheck,
    /// `SendQueue::close` shuts the socket down itself instead of leaving
    /// it to the last holder.
    CloseShutsDown,
}

/// `reactor::Source`.
struct Source {
    state: AtomicUsize,
    reader: Mutex<Option<Waker>>,
    writer: Mutex<Option<Waker>>,
    mutation: Option<Mutation>,
}

impl Source {
    fn new(initial: usize, mutation: Option<Mutation>) -> Source {
        Source {
            state: AtomicUsize::new(initial),
            reader: Mutex::new(None),
            writer: Mutex::new(None),
            mutation,
        }
    }

    fn slot(&self, dir: Dir) -> &Mutex<Option<Waker>> {
        match dir {
            Dir::Read => &self.reader,
            Dir::Write => &self.writer,
        }
    }

    /// Ready (with the tick seen) or the waker stored.
    fn poll_ready(&self, cx: &mut Context<'_>, dir: Dir) -> Poll<usize> {
        let state = self.state.load(Ordering::Acquire);
        if state & dir.bit() != 0 {
            return Poll::Ready(state >> BITS);
        }
        {
            let mut slot = self.slot(dir).lock().unwrap();
            match &*slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        if self.mutation == Some(Mutation::NoRecheck) {
            return Poll::Pending;
        }
        let state = self.state.load(Ordering::Acquire);
        if state & dir.bit() != 0 {
            Poll::Ready(state >> BITS)
        } else {
            Poll::Pending
        }
    }

    /// Would block at `tick`: forget the readiness unless an event came.
    fn clear(&self, tick: usize, dir: Dir) {
        let ignore_tick = self.mutation == Some(Mutation::ClearIgnoresTick);
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (ignore_tick || state >> BITS == tick).then_some(state & !dir.bit())
            });
    }

    /// An event: bits set, tick bumped, the concerned tasks woken.
    fn dispatch(&self, bits: usize) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                let tick = (state >> BITS) + 1;
                Some((tick << BITS) | (state & MASK) | bits)
            });
        for dir in [Dir::Read, Dir::Write] {
            if bits & dir.bit() != 0 {
                let waker = self.slot(dir).lock().unwrap().take();
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        }
    }
}

/// The kernel's side of the socket.
struct Kernel {
    /// Bytes in the send buffer, not yet taken by the peer.
    buffer: Vec<u8>,
    capacity: usize,
    /// A write found the buffer full: draining it brings a writable event.
    nospace: bool,
    /// What the peer received, in order.
    delivered: Vec<u8>,
    /// Bytes from the peer not yet read.
    inbound: usize,
    /// The write side was shut down.
    shut: bool,
    shutdowns: usize,
}

/// One registered socket: the kernel, its `Source`, and the kernel's own
/// wake-up (bytes to drain).
struct Sock {
    kernel: Mutex<Kernel>,
    source: Source,
    drain: Notify,
    /// Inside a write: two at once is a bug.
    in_write: AtomicBool,
}

impl Sock {
    fn new(capacity: usize, mutation: Option<Mutation>) -> Sock {
        Sock {
            kernel: Mutex::new(Kernel {
                buffer: Vec::new(),
                capacity,
                nospace: false,
                delivered: Vec::new(),
                inbound: 0,
                shut: false,
                shutdowns: 0,
            }),
            // Registered writable, as epoll's first event says.
            source: Source::new(WRITABLE, mutation),
            drain: Notify::new(),
            in_write: AtomicBool::new(false),
        }
    }

    /// `try_write`: what the buffer takes; `None` for `WouldBlock`.
    fn try_write(&self, bytes: &[u8]) -> Option<usize> {
        assert!(
            !self.in_write.swap(true, Ordering::SeqCst),
            "two writers at once"
        );
        let mut k = self.kernel.lock().unwrap();
        assert!(!k.shut, "a write after the socket was shut down");
        let n = bytes.len().min(k.capacity - k.buffer.len());
        k.buffer.extend_from_slice(&bytes[..n]);
        if n < bytes.len() {
            k.nospace = true;
        }
        drop(k);
        self.in_write.store(false, Ordering::SeqCst);
        if n > 0 {
            self.drain.notify();
        }
        (n > 0).then_some(n)
    }

    /// `poll_bytes` for a write: waits for `Write`, clears on
    /// `WouldBlock` or a short write.
    fn poll_write(&self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<usize> {
        loop {
            let Poll::Ready(tick) = self.source.poll_ready(cx, Dir::Write) else {
                return Poll::Pending;
            };
            match self.try_write(bytes) {
                None => self.source.clear(tick, Dir::Write),
                Some(n) => {
                    if n < bytes.len() {
                        self.source.clear(tick, Dir::Write);
                    }
                    return Poll::Ready(n);
                }
            }
        }
    }

    /// `poll_bytes` for a read of one byte.
    fn poll_read(&self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Poll::Ready(tick) = self.source.poll_ready(cx, Dir::Read) else {
                return Poll::Pending;
            };
            let got = {
                let mut k = self.kernel.lock().unwrap();
                let got = k.inbound > 0;
                if got {
                    k.inbound -= 1;
                }
                got
            };
            if got {
                return Poll::Ready(());
            }
            self.source.clear(tick, Dir::Read);
        }
    }

    /// The peer's data arrives: one readable event (writable too if the
    /// buffer has room, as epoll reports the whole mask).
    fn arrive(&self) {
        let bits = {
            let mut k = self.kernel.lock().unwrap();
            k.inbound += 1;
            READABLE
                | if k.buffer.len() < k.capacity {
                    WRITABLE
                } else {
                    0
                }
        };
        self.source.dispatch(bits);
    }

    /// The peer takes the buffer, byte by byte, until `total` bytes are
    /// delivered; a drain after a full buffer brings a writable event.
    fn drain_until(&self, total: usize) {
        loop {
            let event = {
                let mut k = self.kernel.lock().unwrap();
                if k.delivered.len() == total {
                    return;
                }
                if k.buffer.is_empty() {
                    None
                } else {
                    let b = k.buffer.remove(0);
                    k.delivered.push(b);
                    Some(
                        std::mem::take(&mut k.nospace)
                            .then_some(WRITABLE | if k.inbound > 0 { READABLE } else { 0 }),
                    )
                }
            };
            match event {
                None => self.drain.wait(),
                Some(Some(bits)) => self.source.dispatch(bits),
                Some(None) => {}
            }
        }
    }

    /// `shutdown(SHUT_WR)`; counted once however often it is asked for.
    fn shut_down(&self) {
        let mut k = self.kernel.lock().unwrap();
        if !k.shut {
            k.shut = true;
            k.shutdowns += 1;
        }
    }
}

/// Wakes a thread blocked in [`block_on`].
struct Unparker(thread::Thread);

impl std::task::Wake for Unparker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `poll` until it is ready, parking the thread on `Pending` until
/// its waker is woken (a lost wake-up parks it for ever: loom reports the
/// deadlock). One waker for every poll, as an executor keeps a task's.
fn block_on<T>(mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>) -> T {
    let waker = Waker::from(std::sync::Arc::new(Unparker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

/// `Pending`: the queue in front of the socket.
struct Pending {
    bytes: Vec<u8>,
    writing: bool,
}

/// Model 1's connection: the queue, the writer's wake-up.
struct Conn {
    sock: Sock,
    pending: Mutex<Pending>,
    work: Notify,
    total: usize,
}

impl Conn {
    /// Everything reached the socket (the writer's stop, test only).
    fn whole(&self) -> bool {
        let k = self.sock.kernel.lock().unwrap();
        k.delivered.len() + k.buffer.len() == self.total
    }

    /// `enqueue` + `write_direct`.
    fn send_direct(&self, message: &[u8]) {
        let batch = {
            let mut p = self.pending.lock().unwrap();
            p.bytes.extend_from_slice(message);
            if p.writing {
                None
            } else {
                p.writing = true;
                Some(std::mem::take(&mut p.bytes))
            }
        };
        let Some(mut batch) = batch else {
            self.work.notify();
            return;
        };
        let done = self.sock.try_write(&batch).unwrap_or(0);
        let wake = {
            let mut p = self.pending.lock().unwrap();
            p.writing = false;
            batch.drain(..done);
            batch.extend_from_slice(&p.bytes);
            p.bytes = batch;
            !p.bytes.is_empty()
        };
        if wake || self.whole() {
            self.work.notify();
        }
    }

    /// `write_loop` with `Sink::Shared`: the token and everything queued,
    /// written whole (waiting for `Write`), the token back.
    fn writer(&self) {
        loop {
            let out = {
                let mut p = self.pending.lock().unwrap();
                if p.writing || p.bytes.is_empty() {
                    None
                } else {
                    p.writing = true;
                    Some(std::mem::take(&mut p.bytes))
                }
            };
            let Some(out) = out else {
                if self.whole() {
                    return;
                }
                self.work.wait();
                continue;
            };
            let mut rest = &out[..];
            while !rest.is_empty() {
                let n = block_on(|cx| self.sock.poll_write(cx, rest));
                rest = &rest[n..];
            }
            self.pending.lock().unwrap().writing = false;
        }
    }
}

fn builder() -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder
}

/// Model 1 (see the module docs).
fn write_racing_the_readers_wake_up(mutation: Option<Mutation>) {
    builder().check(move || {
        let conn = Arc::new(Conn {
            sock: Sock::new(1, mutation),
            pending: Mutex::new(Pending {
                bytes: Vec::new(),
                writing: false,
            }),
            work: Notify::new(),
            total: 2,
        });
        // The reader process: one byte from the peer.
        let reader = {
            let conn = conn.clone();
            thread::spawn(move || {
                block_on(|cx| conn.sock.poll_read(cx));
            })
        };
        // A sender writing directly: two bytes into a one-byte buffer.
        let sender = {
            let conn = conn.clone();
            thread::spawn(move || conn.send_direct(&[1, 2]))
        };
        let writer = {
            let conn = conn.clone();
            thread::spawn(move || conn.writer())
        };
        // The kernel: the peer's byte arrives, the buffer drains.
        conn.sock.arrive();
        conn.sock.drain_until(2);
        sender.join().unwrap();
        writer.join().unwrap();
        reader.join().unwrap();
        let k = conn.sock.kernel.lock().unwrap();
        assert_eq!(k.delivered, vec![1, 2], "each byte once, in order");
        let p = conn.pending.lock().unwrap();
        assert!(p.bytes.is_empty() && !p.writing);
    });
}

#[test]
fn loom_shared_sock_a_direct_write_racing_the_readers_wake_up_wakes_everyone() {
    write_racing_the_readers_wake_up(None);
}

/// The seeded mutants: each runs a model with a step left out and must
/// fail. Ignored, so that only [`loom_shared_sock_seeded_mutations_are_caught`]
/// runs them, each in a process of its own (a loom failure unwinds
/// through loom's objects, whose destructors then abort the process: it
/// cannot be caught in the test's own).
#[test]
#[ignore = "a seeded mutant: must fail, run by loom_shared_sock_seeded_mutations_are_caught"]
fn mutant_clear_ignores_the_tick() {
    write_racing_the_readers_wake_up(Some(Mutation::ClearIgnoresTick));
}

#[test]
#[ignore = "a seeded mutant: must fail, run by loom_shared_sock_seeded_mutations_are_caught"]
fn mutant_no_recheck_after_storing_the_waker() {
    write_racing_the_readers_wake_up(Some(Mutation::NoRecheck));
}

#[test]
#[ignore = "a seeded mutant: must fail, run by loom_shared_sock_seeded_mutations_are_caught"]
fn mutant_close_shuts_the_socket_down_at_once() {
    teardown_racing_a_writer(Some(Mutation::CloseShutsDown));
}

/// Loom catches every seeded mutant: each fails in a process of its own.
#[test]
fn loom_shared_sock_seeded_mutations_are_caught() {
    let exe = std::env::current_exe().expect("the test binary");
    for mutant in [
        "mutant_clear_ignores_the_tick",
        "mutant_no_recheck_after_storing_the_waker",
        "mutant_close_shuts_the_socket_down_at_once",
    ] {
        let status = std::process::Command::new(&exe)
            .args(["--ignored", "--exact", "--test-threads=1", "--quiet"])
            .arg(format!("loom_shared_sock::{mutant}"))
            .env("RUST_BACKTRACE", "0")
            .env("LOOM_LOG", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run the mutant");
        assert!(
            !status.success(),
            "loom did not catch the seeded mutant {mutant}"
        );
    }
}

/// The shared write half (`SharedSock`): shut down when its last holder
/// drops it (or, mutated, by `close` itself).
struct Shared {
    sock: Arc<Sock>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.sock.shut_down();
    }
}

/// Model 2's queue: `SendQueue` with `Pending::direct`, `closed`.
struct Queue {
    pending: Mutex<(Pending, Option<Arc<Shared>>)>,
    closed: AtomicBool,
    work: Notify,
    /// The reader aborted the writer task.
    aborted: AtomicBool,
    mutation: Option<Mutation>,
}

impl Queue {
    /// `SendQueue::queue` with `direct`: `false` if closed (nothing
    /// queued); else queued, and written directly if the token was free.
    fn send(&self, message: u8) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let batch = {
            let mut guard = self.pending.lock().unwrap();
            let (p, direct) = &mut *guard;
            p.bytes.push(message);
            match direct {
                Some(sock) if !p.writing => {
                    p.writing = true;
                    Some((sock.clone(), std::mem::take(&mut p.bytes)))
                }
                _ => None,
            }
        };
        match batch {
            Some((sock, bytes)) => {
                let done = sock.sock.try_write(&bytes).unwrap_or(0);
                drop(sock);
                let mut guard = self.pending.lock().unwrap();
                guard.0.writing = false;
                let mut rest = bytes[done..].to_vec();
                rest.extend_from_slice(&guard.0.bytes);
                guard.0.bytes = rest;
                drop(guard);
                self.work.notify();
            }
            None => self.work.notify(),
        }
        true
    }

    /// `SendQueue::close`.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let direct = self.pending.lock().unwrap().1.take();
        if self.mutation == Some(Mutation::CloseShutsDown) {
            if let Some(shared) = &direct {
                shared.sock.shut_down();
            }
        }
        drop(direct);
    }

    /// `write_loop`: shares the socket for direct writes unless closed,
    /// writes what is queued (its writes complete: the buffer is big
    /// enough here), sleeps on `work`; ends at an await once aborted, and
    /// closes the queue as it ends (`CloseOnDrop`).
    fn writer(&self, shared: Arc<Shared>) {
        {
            let mut guard = self.pending.lock().unwrap();
            if !self.closed.load(Ordering::Acquire) {
                guard.1 = Some(shared.clone());
            }
        }
        loop {
            let out = {
                let mut guard = self.pending.lock().unwrap();
                let p = &mut guard.0;
                if p.writing || p.bytes.is_empty() {
                    None
                } else {
                    p.writing = true;
                    Some(std::mem::take(&mut p.bytes))
                }
            };
            match out {
                Some(out) => {
                    let _ = shared.sock.try_write(&out);
                    self.pending.lock().unwrap().0.writing = false;
                }
                None => {
                    // An await: where an abort ends the task.
                    if self.aborted.load(Ordering::Acquire) {
                        break;
                    }
                    self.work.wait();
                }
            }
        }
        drop(shared);
        self.close();
    }
}

/// Model 2 (see the module docs).
fn teardown_racing_a_writer(mutation: Option<Mutation>) {
    builder().check(move || {
        let sock = Arc::new(Sock::new(4, None));
        let queue = Arc::new(Queue {
            pending: Mutex::new((
                Pending {
                    bytes: Vec::new(),
                    writing: false,
                },
                None,
            )),
            closed: AtomicBool::new(false),
            work: Notify::new(),
            aborted: AtomicBool::new(false),
            mutation,
        });
        let writer = {
            let queue = queue.clone();
            let shared = Arc::new(Shared { sock: sock.clone() });
            thread::spawn(move || queue.writer(shared))
        };
        // A sender writing directly when it can.
        let sender = {
            let queue = queue.clone();
            thread::spawn(move || queue.send(1))
        };
        // The reader ends: aborts the writer, closes the queue.
        queue.aborted.store(true, Ordering::Release);
        queue.work.notify();
        queue.close();
        // Nothing starts writing directly after the close.
        assert!(queue.pending.lock().unwrap().1.is_none());
        let late = queue.send(2);
        assert!(!late, "a send after the close was queued");
        sender.join().unwrap();
        writer.join().unwrap();
        let k = sock.kernel.lock().unwrap();
        assert_eq!(k.shutdowns, 1, "shut down once, by the last holder");
        assert!(!k.buffer.contains(&2));
    });
}

#[test]
fn loom_shared_sock_teardown_racing_a_writer_never_writes_after_the_shutdown() {
    teardown_racing_a_writer(None);
}
