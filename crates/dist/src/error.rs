//! The error type of distribution operations.

use std::fmt;
use std::io;

/// Why a distribution operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum DistError {
    /// A socket operation failed.
    Io(io::Error),
    /// A node name is not `alive@host`.
    BadNodeName(String),
    /// The port mapper refused or answered nonsense.
    Epmd(String),
    /// The port mapper does not know the node.
    NotRegistered(String),
    /// The peer sent bytes that break the protocol.
    Protocol(String),
    /// The peer refused the connection with this status
    /// (`nok`, `not_allowed`, `alive`, ...).
    Refused(String),
    /// The cookies differ: the challenge reply or ack did not match, or
    /// the peer closed the connection instead of acknowledging ours.
    WrongCookie(String),
    /// The peer lacks distribution flags Ember requires (the missing bits).
    MissingFlags(u64),
    /// A step did not finish in time.
    Timeout(&'static str),
    /// A send's destination is not a pid, or its name is not an atom.
    BadDestination(String),
    /// The node is stopped.
    Stopped,
    /// The send queue of the connection to this node is full
    /// (`busy_dist_port`): the message was not queued. Retry later, or use
    /// the async send, which waits for room.
    Busy(String),
    /// There is no connection to this node (a sync send does not connect).
    NotConnected(String),
    /// TLS distribution: a certificate or key could not be loaded, or a
    /// TLS handshake failed (an untrusted or missing certificate, a peer
    /// that does not speak TLS).
    Tls(String),
    /// The message holds a pid (or reference) of the receiving node that
    /// it never makes (a number or serial out of its range): the node
    /// would take it for a corrupted term and close the connection. Nothing
    /// was sent.
    BadPid(String),
}

impl fmt::Display for DistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DistError::Io(e) => write!(f, "i/o error: {e}"),
            DistError::BadNodeName(n) => write!(f, "bad node name {n:?} (want alive@host)"),
            DistError::Epmd(m) => write!(f, "epmd: {m}"),
            DistError::NotRegistered(n) => write!(f, "node {n} is not registered with epmd"),
            DistError::Protocol(m) => write!(f, "protocol error: {m}"),
            DistError::Refused(s) => write!(f, "connection refused by peer: {s}"),
            DistError::WrongCookie(n) => write!(f, "handshake with {n} failed: wrong cookie"),
            DistError::MissingFlags(b) => {
                write!(f, "peer lacks required distribution flags {b:#x}")
            }
            DistError::Timeout(what) => write!(f, "timed out: {what}"),
            DistError::BadDestination(m) => write!(f, "bad destination: {m}"),
            DistError::Stopped => write!(f, "node stopped"),
            DistError::Busy(n) => write!(f, "the send queue to {n} is full (busy)"),
            DistError::NotConnected(n) => write!(f, "not connected to {n}"),
            DistError::Tls(m) => write!(f, "tls: {m}"),
            DistError::BadPid(m) => write!(f, "refused to send: {m}"),
        }
    }
}

impl std::error::Error for DistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DistError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for DistError {
    fn from(e: io::Error) -> DistError {
        DistError::Io(e)
    }
}
