//! What a server's acceptor and its connections share: the router, the
//! settings and the counters.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use ember_runtime::Handle;

use crate::{Config, Router};

/// Counters a server keeps, readable while it runs (see [`Server::stats`](crate::Server::stats)).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Connections being served now.
    pub connections: AtomicUsize,
    /// Connections accepted since start (including rejected ones).
    pub accepted: AtomicU64,
    /// Connections answered `503` because of the cap.
    pub rejected: AtomicU64,
    /// Requests handed to a handler.
    pub requests: AtomicU64,
    /// Handlers that crashed (answered `500`).
    pub crashed: AtomicU64,
    /// Clients that went away abruptly: reset the connection or made a
    /// write fail, or closed it in the middle of a request. One that did so
    /// while a handler ran had the handler's process killed and got no
    /// answer. Not a crash: logged at debug level only.
    pub disconnected: AtomicU64,
    /// Requests whose handler's process was stopped by someone else (killed
    /// from the console, say): nothing was answered, the connection closed.
    pub stopped: AtomicU64,
    /// Connections closed because a response made no progress for
    /// [`Config::write_timeout`] (a client that does not read).
    pub write_timeouts: AtomicU64,
    /// Connections closed because a client pipelined
    /// [`Config::max_pipelined`] requests.
    pub pipeline_capped: AtomicU64,
    /// Connection processes that were killed (from the console, say) rather
    /// than ending on their own; logged at debug level, not as crashes.
    pub connections_killed: AtomicU64,
}

/// What every connection of a server shares.
pub(crate) struct Shared {
    pub(crate) handle: Handle,
    pub(crate) router: Router,
    pub(crate) config: Config,
    pub(crate) stats: Arc<Stats>,
}
