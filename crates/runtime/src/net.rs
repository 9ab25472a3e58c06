//! Sockets polled by the schedulers themselves.
//!
//! Each runtime has one pollset (`net/reactor.rs`). A worker with nothing to run
//! blocks in it instead of sleeping, and a busy worker checks it between
//! polls, so the thread that learns a socket is ready is the thread that
//! runs the process waiting for it: no hand-over between an I/O thread and
//! the schedulers on the request path. [`TcpListener`] and [`TcpStream`]
//! are registered there; tokio's own sockets still work inside processes
//! (through the runtime's tokio thread) but pay that hand-over.

pub(crate) mod reactor;
mod tcp;

pub use tcp::{HangupWatch, TcpListener, TcpStream};
