//! Erlang distribution for Ember: an Ember node that real `erl` and `iex`
//! nodes (OTP 25+) can connect to and ping, and that can connect to and
//! ping them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ember_dist::DistError> {
//! use ember_dist::Node;
//!
//! // Registers with epmd (ERL_EPMD_PORT or 4369; an embedded port mapper
//! // is started when none runs) and accepts connections.
//! let node = Node::start("ember@localhost", "secret-cookie").await?;
//! node.connect("erl@localhost").await?;        // epmd lookup + handshake
//! assert!(node.ping("erl@localhost").await);   // net_adm:ping/1
//! println!("{:?}", node.nodes());              // [erl@localhost]
//! // {some_name, 'erl@localhost'} ! hello (connects first if needed)
//! node.send_named("erl@localhost", "some_name", ember_term::Term::atom("hello")).await?;
//! node.disconnect("erl@localhost");           // erlang:disconnect_node/1
//! node.stop();
//! # Ok(()) }
//! ```
//!
//! From `erl -sname erl -setcookie secret-cookie`,
//! `net_adm:ping('ember@localhost')` answers `pong`, and the Ember node is
//! listed in `nodes()` (it is a visible node unless
//! [`NodeConfig::hidden`] is set).
//!
//! # What is here
//!
//! * [`epmd`]: the port mapper client (`ALIVE2_REQ`, `PORT_PLEASE2_REQ`,
//!   `NAMES_REQ`) and [`EmbeddedEpmd`], which serves those three requests;
//!   [`Registrar`] keeps a node registered, and when the node holding the
//!   embedded mapper dies a survivor takes the port over.
//! * The version 6 handshake (`DFLAG_HANDSHAKE_23`) in both directions,
//!   with the MD5 challenge; a peer with another cookie is refused with a
//!   `warn` log line and [`DistError::WrongCookie`], and the node carries
//!   on. Simultaneous connects are settled by node name (`nok` /
//!   `ok_simultaneous`), and `alive` replaces a stale connection. Peers
//!   must have the OTP 25 and 26 mandatory [`flags`]. An accepted peer may
//!   also open with the old version 5 `send_name` (`'n'`, then the `'c'`
//!   complement), as OTP 23/24 nodes do when they do not know our version.
//! * Connections: 4-byte framed messages, ticks every `net_ticktime / 4`,
//!   a connection with nothing received for `net_ticktime` is down.
//!   Incoming messages are decoded with `ember_term` (pass-through `112`
//!   frames, the distribution header with its atom cache, and fragments,
//!   reassembled). Ember sends with the header and splits frames over
//!   64 KiB into fragments when the peer takes them (`DFLAG_FRAGMENTS`).
//! * Backpressure like Erlang's `busy_dist_port`: each connection's send
//!   queue is bounded by bytes ([`NodeConfig::send_queue_limit`], 1 MiB by
//!   default). When it is full, [`Node::send`] and [`Node::send_named`]
//!   wait for room, and [`Node::try_send`] / [`Node::try_send_named`] fail
//!   with [`DistError::Busy`] without queueing; no message is ever dropped
//!   without an error. What is queued is written in one system call per
//!   batch. A runtime's processes go through one bounded FIFO per peer node
//!   in front of the connection's queue: a process sending to a busy node
//!   (messages, or its own links, unlinks, monitors and `exit/2`) is
//!   suspended until it drains below half its limit; a message sent from
//!   outside any process is dropped, with a log line, once that FIFO holds
//!   twice its limit (`docs/semantics.md` §19.11).
//! * Relation signals (`LINK`, `MONITOR_P`, `UNLINK_ID`, `EXIT`) carry the
//!   number of the connection they arrived on ([`Deliver::signal`]); one
//!   from a connection that was lost or replaced is not applied to the
//!   next. `UNLINK_ID` follows OTP's link protocol: while an unlink is in
//!   flight, a crossing `LINK` or an `EXIT` from the peer is ignored.
//! * Ember answers on its own: `net_kernel`'s `is_auth` call (so pings
//!   work), `MONITOR_P` to anything but `net_kernel` with `noproc`, `LINK`
//!   with an `EXIT` `noproc`, `UNLINK_ID` with its ack, and
//!   `SPAWN_REQUEST` with a `notsup` `SPAWN_REPLY` (so `rpc:call` to Ember
//!   fails at once instead of hanging), unless a runtime serves them (below).
//!   `global_name_server`'s `init_connect` is answered with `in_sync`
//!   (module `global`), so `global:sync()` on an OTP peer completes while
//!   Ember is connected visibly; the rest of global's traffic is ignored
//!   (a wrong answer to `global` can halt an OTP node).
//!
//! # TLS
//!
//! [`NodeConfig::tls`] ([`TlsOptions`]: certificate, key, trusted CAs,
//! mutual TLS by default) runs every connection of a node inside TLS
//! (rustls, `ring`), as OTP's `-proto_dist inet_tls`: the handshake and
//! everything after it are unchanged, and Ember and `erl` nodes with TLS
//! distribution connect to each other.
//!
//! # The seam to the runtime
//!
//! [`Node::start_in_runtime`] makes an Ember runtime's processes the
//! node's processes: their pids cross as this node's pids, messages
//! (`ember_term::Term`s), links, monitors and exit signals go both ways,
//! a lost connection fires `noconnection`, other nodes spawn and call
//! registered Rust [`Functions`] (`spawn/4`, `rpc:call`, `erpc:call`),
//! and [`rpc_call`] calls other nodes' `rex`. Ember processes spawn on
//! other nodes ([`spawn`]: `spawn`, `spawn_link`, `spawn_monitor`,
//! `spawn_opt`, with `SPAWN_REQUEST` / `SPAWN_REPLY`). [`tasks`] serves Elixir's
//! `Task.Supervisor` protocol for registered functions
//! (`Task.Supervisor.async({:ember_tasks, node}, M, F, A)` from iex) and
//! calls it on any node from Rust ([`tasks::RemoteTaskSupervisor`]). See `ember_runtime::dist`
//! for the runtime's side and `docs/semantics.md` §19.
//!
//! Without a runtime, every `SEND`, `REG_SEND` and `ALIAS_SEND` goes, in
//! order, to the [`Deliver`] hook of [`NodeConfig::deliver`] (the default,
//! [`DropAll`], drops them), and other signals are answered as if no
//! process existed. [`Node::send`] (to a pid, `SEND`) and
//! [`Node::send_named`] (`REG_SEND`) send a [`Term`](ember_term::Term)
//! to a process on another node, connecting first if needed.
//!
//! # Not done yet
//!
//! * Group leaders and the IO protocol (output of remote functions).
//! * Full `global` participation (Ember is synced but not known: it holds
//!   no replica of the name table and takes no part in the global lock),
//!   `pg`.
//! * Interleaving the fragments of a big message with later small ones
//!   (they are written back to back), `DFLAG_NAME_ME`, per-node cookies,
//!   a cap on concurrent handshakes.
//! * The embedded port mapper lives as long as the node that started it;
//!   then a surviving Ember node takes the port over and the survivors
//!   register again, but `erl` nodes registered with it are not (they do
//!   not register again) until they restart.
#![forbid(unsafe_code)]

mod connection;
pub mod epmd;
mod error;
pub mod flags;
mod global;
mod handshake;
mod introspect;
#[cfg(all(test, feature = "loom-models"))]
mod loom_direct;
#[cfg(all(test, feature = "loom-models"))]
mod loom_mapper;
#[cfg(all(test, feature = "loom-models"))]
mod loom_models;
#[cfg(all(test, feature = "loom-models"))]
mod loom_shared_sock;
mod node;
mod procs;
pub mod tasks;
mod traffic;
mod transport;

pub use epmd::{EmbeddedEpmd, Registrar};
pub use error::DistError;
pub use introspect::{register_introspection, MAX_TOP, TOP_WINDOW};
pub use node::{Deliver, Delivery, DropAll, Node, NodeConfig, NodeView};
pub use procs::{rpc_call, FunctionFuture, FunctionResult, Functions, Raise};
pub use traffic::ConnectionInfo;

/// Spawning processes on other nodes from an Ember process (Erlang's
/// `spawn/4`, `spawn_link/4`, `spawn_monitor/4` and `spawn_request` to
/// another node): the runtime's functions, here with the rest of the
/// distribution API. On an Ember node the function is a registered one
/// ([`Functions`]), on an `erl` node any exported function.
///
/// ```no_run
/// # async fn demo() -> Result<(), ember_dist::spawn::RemoteSpawnError> {
/// use ember_dist::spawn;
/// use ember_term::Term;
///
/// let (pid, monitor) =
///     spawn::spawn_monitor("erl@localhost", "timer", "sleep", vec![Term::from(100)]).await?;
/// # let _ = (pid, monitor);
/// # Ok(()) }
/// ```
pub mod spawn {
    pub use ember_runtime::dist::{
        spawn, spawn_link, spawn_monitor, spawn_opt, RemoteSpawnError, RemoteSpawnOptions,
        RemoteSpawned, DEFAULT_SPAWN_TIMEOUT,
    };
}
pub use transport::TlsOptions;
