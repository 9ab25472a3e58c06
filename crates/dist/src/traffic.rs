//! Per-connection traffic counters, and what [`Node::connections`]
//! reports about each connection.
//!
//! The counters sit on the hot paths of a connection (every queued
//! message, every write, every frame read), so they are plain relaxed
//! atomic adds: no lock, no ordering with anything else. A reader gets
//! each counter's own latest value; the four are not one snapshot.
//!
//! [`Node::connections`]: crate::Node::connections

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use ember_term::Atom;

/// The counters of one connection, from the moment its handshake ended.
#[derive(Debug)]
pub(crate) struct Traffic {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    up_since: SystemTime,
    started: Instant,
}

impl Traffic {
    /// Zero counters, up from now.
    pub(crate) fn new() -> Traffic {
        Traffic {
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            up_since: SystemTime::now(),
            started: Instant::now(),
        }
    }

    /// `bytes` read from the socket (a frame with its length prefix).
    pub(crate) fn read(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    /// One whole message (control message and payload) received.
    pub(crate) fn received_message(&self) {
        self.messages_in.fetch_add(1, Relaxed);
    }

    /// Whole messages received so far.
    pub(crate) fn messages_in(&self) -> u64 {
        self.messages_in.load(Relaxed)
    }

    /// `bytes` written to the socket.
    pub(crate) fn written(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    /// One whole message queued for the peer.
    pub(crate) fn queued_message(&self) {
        self.messages_out.fetch_add(1, Relaxed);
    }

    /// The report on this connection.
    pub(crate) fn info(&self, node: Atom, creation: u32, queued_bytes: usize) -> ConnectionInfo {
        ConnectionInfo {
            node,
            creation,
            up_since: self.up_since,
            up_for: self.started.elapsed(),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            queued_bytes,
        }
    }
}

/// One live connection to another node, as [`Node::connections`] reports
/// it.
///
/// Bytes count everything on the socket, frames with their 4-byte length
/// prefixes and ticks included; messages count whole distribution messages
/// (a `SEND`, a `LINK`, a `MONITOR_P`, ...; a fragmented message is one),
/// not ticks. Outgoing messages are counted when queued, outgoing bytes
/// when written.
///
/// [`Node::connections`]: crate::Node::connections
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The peer node's name.
    pub node: Atom,
    /// The peer node's creation (its incarnation).
    pub creation: u32,
    /// When the handshake ended, by the wall clock.
    pub up_since: SystemTime,
    /// How long it has been up, by the monotonic clock.
    pub up_for: Duration,
    /// Bytes read from the peer.
    pub bytes_in: u64,
    /// Bytes written to the peer.
    pub bytes_out: u64,
    /// Messages received from the peer.
    pub messages_in: u64,
    /// Messages queued for the peer.
    pub messages_out: u64,
    /// Bytes queued for the peer and not yet written.
    pub queued_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_and_report() {
        let t = Traffic::new();
        t.read(10);
        t.read(4);
        t.received_message();
        t.written(7);
        t.queued_message();
        t.queued_message();
        let info = t.info(Atom::new("p@h"), 3, 5);
        assert_eq!(
            (
                info.bytes_in,
                info.bytes_out,
                info.messages_in,
                info.messages_out
            ),
            (14, 7, 1, 2)
        );
        assert_eq!((info.creation, info.queued_bytes), (3, 5));
        assert_eq!(info.node, Atom::new("p@h"));
        assert!(info.up_since <= SystemTime::now());
    }
}
