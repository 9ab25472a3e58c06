//! TCP sockets driven by the schedulers' own pollset.

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::reactor::{Direction, Reactor, Source};
use crate::context;
use crate::pid::Pid;

/// A registration: the mio socket, its [`Source`], and the reactor to leave
/// on drop.
struct Registered<T: mio::event::Source> {
    io: T,
    source: Arc<Source>,
    reactor: Arc<Reactor>,
}

impl<T: mio::event::Source> Registered<T> {
    fn new(mut io: T, reactor: Arc<Reactor>) -> io::Result<Registered<T>> {
        let source = reactor.register(&mut io)?;
        Ok(Registered {
            io,
            source,
            reactor,
        })
    }

    /// Runs the non-blocking `op` until it does not block, waiting for
    /// readiness in `direction` in between.
    fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
        op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        self.poll_transfer(cx, direction, op, |_| false)
    }

    /// [`poll_io`](Self::poll_io) for a read or write of `wanted` bytes: a
    /// short transfer means the socket is drained (or its buffer full), so
    /// the readiness is cleared at once instead of by one more syscall that
    /// would block (edge-triggered: the next edge brings it back).
    fn poll_bytes(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
        wanted: usize,
        op: impl FnMut(&T) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        self.poll_transfer(cx, direction, op, |n| *n > 0 && *n < wanted)
    }

    fn poll_transfer<R>(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut op: impl FnMut(&T) -> io::Result<R>,
        drained: impl Fn(&R) -> bool,
    ) -> Poll<io::Result<R>> {
        loop {
            let ready = ready!(self.source.poll_ready(cx, direction));
            match op(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.source.clear(ready, direction)
                }
                Ok(r) => {
                    if drained(&r) {
                        self.source.clear(ready, direction);
                    }
                    return Poll::Ready(Ok(r));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<T: mio::event::Source> Drop for Registered<T> {
    fn drop(&mut self) {
        self.reactor.deregister(&mut self.io, &self.source);
    }
}

/// The reactor of the runtime this thread works for.
fn current_reactor(what: &str) -> Arc<Reactor> {
    context::with_runtime(what, |rt| rt.sched.reactor.clone())
}

/// A listening TCP socket whose `accept` suspends only the calling process.
///
/// Works inside Ember processes (and on the runtime's threads); the
/// scheduler that would otherwise sleep polls the socket, so an accepted
/// connection is handled on the thread that noticed it.
pub struct TcpListener {
    inner: Registered<mio::net::TcpListener>,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl TcpListener {
    /// Binds `addr` (the first address that binds, like
    /// `std::net::TcpListener::bind`).
    ///
    /// # Panics
    ///
    /// Outside an Ember runtime.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        TcpListener::from_std(std::net::TcpListener::bind(addr)?)
    }

    /// Takes over a bound std listener (made non-blocking here).
    ///
    /// # Panics
    ///
    /// Outside an Ember runtime.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        let reactor = current_reactor("TcpListener::from_std");
        Ok(TcpListener {
            inner: Registered::new(mio::net::TcpListener::from_std(listener), reactor)?,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io.local_addr()
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = poll_fn(|cx| self.poll_accept(cx)).await?;
        Ok((
            TcpStream::from_mio(stream, self.inner.reactor.clone())?,
            peer,
        ))
    }

    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(mio::net::TcpStream, SocketAddr)>> {
        self.inner
            .poll_io(cx, Direction::Read, mio::net::TcpListener::accept)
    }
}

/// A TCP connection; implements tokio's `AsyncRead` and `AsyncWrite`, so
/// hyper (through `hyper_util::rt::TokioIo`) and tokio's I/O helpers work
/// with it unchanged.
pub struct TcpStream {
    inner: Registered<mio::net::TcpStream>,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("local_addr", &self.inner.io.local_addr().ok())
            .field("peer_addr", &self.inner.io.peer_addr().ok())
            .finish()
    }
}

impl TcpStream {
    fn from_mio(stream: mio::net::TcpStream, reactor: Arc<Reactor>) -> io::Result<TcpStream> {
        Ok(TcpStream {
            inner: Registered::new(stream, reactor)?,
        })
    }

    /// Connects to `addr` (a resolved address).
    ///
    /// # Panics
    ///
    /// Outside an Ember runtime.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = mio::net::TcpStream::connect(addr)?;
        let stream = TcpStream::from_mio(stream, current_reactor("TcpStream::connect"))?;
        // Writable (or an error) once the handshake ends; until then the
        // socket has no peer.
        poll_fn(|cx| {
            stream.inner.poll_io(cx, Direction::Write, |io| {
                if let Some(e) = io.take_error()? {
                    return Err(e);
                }
                match io.peer_addr() {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    Err(e) => Err(e),
                }
            })
        })
        .await?;
        Ok(stream)
    }

    /// Takes over a connected std stream (made non-blocking here).
    ///
    /// # Panics
    ///
    /// Outside an Ember runtime.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        let reactor = current_reactor("TcpStream::from_std");
        TcpStream::from_mio(mio::net::TcpStream::from_std(stream), reactor)
    }

    /// [`TcpStream::from_std`] on the pollset of the runtime `handle`
    /// names, from any thread (a tokio task's, say).
    pub fn from_std_in(
        stream: std::net::TcpStream,
        handle: &crate::Handle,
    ) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        let reactor = handle.shared.sched.reactor.clone();
        TcpStream::from_mio(mio::net::TcpStream::from_std(stream), reactor)
    }

    /// Writes what the socket takes now, without waiting: `WouldBlock` if
    /// it takes nothing. Any thread may call it, also while another reads
    /// or writes through `&TcpStream` (the caller keeps the order of its
    /// bytes).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.inner.io).write(buf)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io.local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io.peer_addr()
    }

    /// A watch on this connection's peer hanging up, usable while the
    /// stream itself is owned elsewhere (by hyper, say).
    ///
    /// # Panics
    ///
    /// Outside an Ember runtime.
    pub fn hangup_watch(&self) -> HangupWatch {
        HangupWatch {
            source: self.inner.source.clone(),
            handle: crate::Handle::current(),
        }
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.inner.io.set_nodelay(on)
    }
}

/// Kills a process when a connection is gone — reset by the peer, or
/// failed — even while that process is inside a long poll that never
/// awaits: the scheduler that polls the sockets sees it and sends the kill,
/// so `should_stop()` turns true and the process dies at its next await. A
/// server arms it around a request's handler so that a client that gives up
/// stops the work.
///
/// A FIN alone is not a hang-up: a client that half-closes its side
/// (`shutdown(SHUT_WR)`) after sending a request still waits for the answer.
/// (A peer that closed its socket entirely also sends only a FIN; it is
/// found out when the answer is written and the peer resets.)
#[derive(Clone)]
pub struct HangupWatch {
    source: Arc<Source>,
    handle: crate::Handle,
}

impl fmt::Debug for HangupWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HangupWatch").finish_non_exhaustive()
    }
}

impl HangupWatch {
    /// From now on, a hang-up kills `pid` (at once if the peer already hung
    /// up). Replaces an earlier arming.
    pub fn kill_on_hangup(&self, pid: Pid) {
        self.source.kill_on_hangup(pid, self.handle.clone());
    }

    /// A hang-up kills nobody any more.
    pub fn disarm(&self) {
        self.source.disarm_hangup();
    }

    /// Whether the connection is gone (reset or failed), whether or not the
    /// watch is armed.
    pub fn hung_up(&self) -> bool {
        self.source.hung_up()
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self).poll_read(cx, buf)
    }
}

/// Reads through a shared reference, as `std`'s `impl Read for
/// &TcpStream`: one reader and one writer may share the stream (an
/// `Arc`); each task's waker is kept per direction.
impl AsyncRead for &TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let wanted = buf.remaining();
        let n = ready!(self
            .inner
            .poll_bytes(cx, Direction::Read, wanted, |mut io| {
                io.read(buf.initialize_unfilled())
            }))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Writes through a shared reference (see `impl AsyncRead for &TcpStream`).
impl AsyncWrite for &TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner
            .poll_bytes(cx, Direction::Write, buf.len(), |mut io| io.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.inner.io.shutdown(Shutdown::Write))
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner
            .poll_bytes(cx, Direction::Write, buf.len(), |mut io| io.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let wanted = bufs.iter().map(|b| b.len()).sum();
        self.inner
            .poll_bytes(cx, Direction::Write, wanted, |mut io| {
                io.write_vectored(bufs)
            })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.inner.io.shutdown(Shutdown::Write))
    }
}
