//! Ember's HTTP server: hyper on Ember processes, so a slow, crashing or
//! CPU-bound handler affects only its own request.
//!
//! * An **acceptor** process owns the listening socket and supervises a
//!   process per **connection** (linked, exits trapped: a crash is logged
//!   and contained, and the count enforces [`Config::max_connections`] with
//!   a `503`).
//! * Each connection's process runs hyper's HTTP/1.1 state machine and
//!   spawns a process per **request** for its handler, so every request
//!   starts from a clean process (priority, `trap_exit`, links, monitors,
//!   timers, label, name and mailbox are its own): a panic answers `500`
//!   for that request only, a handler that computes for seconds without
//!   awaiting is moved off by Ember's watchdog instead of stalling other
//!   connections, a client that resets its connection kills the process
//!   computing its request, and a handler stopped from outside produces no
//!   response at all. A client that only half-closes (a FIN after its
//!   request) still gets its answer.
//! * Limits: request heads and bodies have read timeouts and size limits
//!   (`400`, `408`, `413`, `431`), HTTP/1.1 requests need exactly one valid
//!   `Host` (`400`), a response that makes no progress for
//!   [`Config::write_timeout`] closes its connection, pipelining is capped
//!   ([`Config::max_pipelined`]), and [`Server::shutdown`] drains in-flight
//!   requests. All settings are in [`Config`]; counters in [`Stats`].
//!
//! # A tour
//!
//! Handlers are `async` functions from [`Request`] (the body already read)
//! to [`Response`]; a [`Router`] maps paths to them:
//!
//! ```
//! use ember_web::{json, query, text, Config, Request, Response, Router, Server};
//! use http::StatusCode;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! async fn hello(req: Request) -> Response {
//!     let name = query(&req).remove("name").unwrap_or_else(|| "world".into());
//!     text(StatusCode::OK, format!("hello, {name}"))
//! }
//!
//! async fn whoami(_req: Request) -> Response {
//!     // A handler runs in its own Ember process.
//!     json(&serde_json::json!({ "pid": ember_runtime::self_pid().to_string() }))
//! }
//!
//! let rt = ember_runtime::Runtime::new().unwrap();
//! rt.block_on(async {
//!     let router = Router::new().get("/hello", hello).get("/whoami", whoami);
//!     let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
//!
//!     let mut s = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
//!     s.write_all(b"GET /hello?name=ember HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
//!         .await
//!         .unwrap();
//!     let mut reply = String::new();
//!     s.read_to_string(&mut reply).await.unwrap();
//!     assert!(reply.ends_with("hello, ember"));
//!
//!     server.shutdown().await;
//! });
//! ```
//!
//! This crate is the HTTP library only. The benchmark endpoints (`/ping`,
//! `/fact`, `/spin`, the contract `bench/run http` measures every server
//! on), the live console and the demo node the `ember` binary runs are the
//! `ember-console` crate, built on this one. Every deadline of the server is on Ember's timer
//! wheels: it runs on a runtime built without tokio's driver too.

#![forbid(unsafe_code)]

mod body;
mod config;
mod connection;
mod request;
mod response;
mod router;
mod server;
mod shared;
mod timer;

pub use body::{Body, SseEvent};
pub use config::Config;
pub use request::query;
pub use response::{html, json, sse, sse_events, text};
pub use router::{Handler, HandlerFuture, Router};
pub use server::Server;
pub use shared::Stats;

/// A request as handlers see it: the body is read in full (up to
/// [`Config::max_body_bytes`]).
pub type Request = http::Request<bytes::Bytes>;

/// A response: full bytes or a stream (see [`Body`]).
pub type Response = http::Response<Body>;
