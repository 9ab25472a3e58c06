//! Typed calls to a generic server on any node: OTP's
//! `gen_server:call({Name, Node}, Request)` and Elixir's
//! `GenServer.call({name, node}, request)`, from Rust.
//!
//! [`RemoteServer`] names a server by pid or `{Name, Node}` (an Erlang or
//! Elixir `gen_server` on another node, or an Ember server that accepts
//! term requests, [`GenServer::call_from_term`](super::GenServer::call_from_term)),
//! and fixes the request and reply types: requests are turned into terms
//! and replies read back with serde (`ember_term::to_term` /
//! `ember_term::from_term`, whose mapping is Elixir's: a
//! `#[serde(rename_all = "snake_case")]` enum variant `Add(5)` is
//! `{add, 5}`). [`call_term`] and [`cast_term`] are the untyped layer
//! underneath, for requests that carry pids or references.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use ember_runtime::Pid;
use ember_term::Term;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{call_term, TermServer};
use crate::gen::{self, CallError};

impl TermServer {
    /// `{Name, Node}`: the process registered as `name` on `node`.
    pub fn name(name: impl Into<String>, node: impl Into<String>) -> TermServer {
        TermServer::Name {
            name: name.into(),
            node: node.into(),
        }
    }
}

impl From<Pid> for TermServer {
    fn from(pid: Pid) -> TermServer {
        TermServer::Pid(pid)
    }
}

impl fmt::Display for TermServer {
    /// `{Name, Node}` or the pid, as Erlang writes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TermServer::Pid(pid) => write!(f, "{pid}"),
            TermServer::Name { name, node } => write!(f, "{{{name}, {node}}}"),
        }
    }
}

/// Sends `{'$gen_cast', Request}` to a generic server (OTP's
/// `gen_server:cast/2`): fire and forget, dropped if the server does not
/// exist, as in OTP.
pub fn cast_term(server: &TermServer, request: Term) {
    let message = Term::tuple([Term::atom("$gen_cast"), request]);
    match server {
        TermServer::Pid(pid) => ember_runtime::send(*pid, message),
        TermServer::Name { name, node } => ember_runtime::dist::send_named(name, node, message),
    }
}

/// Why a typed call to a [`RemoteServer`] returned no reply.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RemoteCallError {
    /// The request has no term form (serde refused it); nothing was sent.
    Encode(String),
    /// The call failed: no reply in time ([`CallError::Timeout`]), no such
    /// process or name ([`CallError::NoProc`], OTP's `noproc`), the server
    /// exited before replying ([`CallError::Exited`], with its reason;
    /// `noconnection` when its node went away), or the caller is the
    /// server.
    Call {
        /// The server that was called.
        server: TermServer,
        /// What happened.
        error: CallError,
    },
    /// The server replied, but not with a value of the reply type.
    Decode {
        /// The reply as it came.
        reply: Term,
        /// Why it is not a value of the reply type.
        error: String,
    },
}

impl RemoteCallError {
    /// The [`CallError`] of a failed call, if that is what this is.
    pub fn call_error(&self) -> Option<&CallError> {
        match self {
            RemoteCallError::Call { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl fmt::Display for RemoteCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteCallError::Encode(why) => write!(f, "the request has no term form: {why}"),
            RemoteCallError::Call { server, error } => {
                write!(f, "gen_server call to {server} failed: {error}")
            }
            RemoteCallError::Decode { reply, error } => {
                write!(f, "unexpected reply {reply}: {error}")
            }
        }
    }
}

impl std::error::Error for RemoteCallError {}

/// A generic server on any node, called with typed requests `Req` over
/// OTP's term protocol; each call names the type of its reply.
///
/// | Erlang / Elixir | Ember |
/// | --- | --- |
/// | `gen_server:call({kv, 'a@h'}, {get, K})` | `RemoteServer::<Req>::named("kv", "a@h").call::<Rep>(&Req::Get(k))` |
/// | `gen_server:call(S, R, 1000)` | `.call_timeout::<Rep>(&r, Duration::from_secs(1))` |
/// | a reply with pids or references | `.call_raw(&r)`: the reply as a `Term` |
/// | `gen_server:cast(S, R)` | `.cast(&r)` |
/// | exits `{timeout, _}` | `Err(Call { error: CallError::Timeout, .. })` |
/// | exits `{noproc, _}` | `Err(Call { error: CallError::NoProc, .. })` |
/// | exits `{Reason, _}` (the server crashed) | `Err(Call { error: CallError::Exited(Reason), .. })` |
/// | exits `{{nodedown, N}, _}` | `Err(Call { error: CallError::Exited(noconnection), .. })` |
///
/// The call monitors the server (by name for `{Name, Node}`) and tags the
/// request with the monitor's reference made an alias (OTP 24+): a reply
/// that comes after the timeout is dropped, never left in the mailbox.
/// Call from an Ember process; the node must be distributed to reach
/// another node.
///
/// ```no_run
/// use ember_otp::gen_server::RemoteServer;
///
/// #[derive(serde::Serialize)]
/// #[serde(rename_all = "snake_case")]
/// enum Counter { Add(i64), Get }
///
/// #[derive(serde::Serialize)]
/// #[serde(rename_all = "snake_case")]
/// enum Kv { Put(String, i64) }
///
/// # async fn demo() -> Result<(), ember_otp::gen_server::RemoteCallError> {
/// // GenServer.call({:counter, :"ex@host"}, {:add, 5}) on an Elixir node
/// let counter = RemoteServer::<Counter>::named("counter", "ex@host");
/// let total: i64 = counter.call(&Counter::Add(5)).await?;
/// // gen_server:call({ember_kv, 'ember@host'}, {put, <<"a">>, 1}) -> ok
/// let kv = RemoteServer::<Kv>::named("ember_kv", "ember@host");
/// let ok = kv.call_raw(&Kv::Put("a".into(), 1)).await?;
/// assert!(ok.is_atom("ok"));
/// # Ok(()) }
/// ```
pub struct RemoteServer<Req> {
    server: TermServer,
    _request: PhantomData<fn(&Req)>,
}

impl<Req> Clone for RemoteServer<Req> {
    fn clone(&self) -> Self {
        RemoteServer::new(self.server.clone())
    }
}

impl<Req> fmt::Debug for RemoteServer<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteServer({})", self.server)
    }
}

impl<Req> RemoteServer<Req> {
    /// The server at `server`.
    pub fn new(server: TermServer) -> Self {
        RemoteServer {
            server,
            _request: PhantomData,
        }
    }

    /// The server registered as `name` on `node` (`{Name, Node}`).
    pub fn named(name: impl Into<String>, node: impl Into<String>) -> Self {
        RemoteServer::new(TermServer::name(name, node))
    }

    /// The server with this pid (of any node).
    pub fn from_pid(pid: Pid) -> Self {
        RemoteServer::new(TermServer::Pid(pid))
    }

    /// Where calls go.
    pub fn server(&self) -> &TermServer {
        &self.server
    }
}

impl<Req: Serialize> RemoteServer<Req> {
    /// Calls the server and waits up to 5 seconds for its reply, read as
    /// a `Rep` (`gen_server:call/2`).
    pub async fn call<Rep: DeserializeOwned>(&self, request: &Req) -> Result<Rep, RemoteCallError> {
        self.call_timeout(request, gen::DEFAULT_TIMEOUT).await
    }

    /// Calls the server and waits up to `timeout` for its reply, read as a
    /// `Rep` (`gen_server:call/3`; [`gen::INFINITY`] waits for ever).
    pub async fn call_timeout<Rep: DeserializeOwned>(
        &self,
        request: &Req,
        timeout: Duration,
    ) -> Result<Rep, RemoteCallError> {
        let reply = self.call_raw_timeout(request, timeout).await?;
        ember_term::from_term::<Rep>(reply.clone()).map_err(|e| RemoteCallError::Decode {
            reply,
            error: e.to_string(),
        })
    }

    /// [`RemoteServer::call`], with the reply as the term it came as.
    pub async fn call_raw(&self, request: &Req) -> Result<Term, RemoteCallError> {
        self.call_raw_timeout(request, gen::DEFAULT_TIMEOUT).await
    }

    /// [`RemoteServer::call_timeout`], with the reply as the term it came as.
    pub async fn call_raw_timeout(
        &self,
        request: &Req,
        timeout: Duration,
    ) -> Result<Term, RemoteCallError> {
        let request =
            ember_term::to_term(request).map_err(|e| RemoteCallError::Encode(e.to_string()))?;
        call_term(&self.server, request, timeout)
            .await
            .map_err(|error| RemoteCallError::Call {
                server: self.server.clone(),
                error,
            })
    }

    /// Casts `request` to the server (`gen_server:cast/2`): fire and
    /// forget. Fails only if the request has no term form.
    pub fn cast(&self, request: &Req) -> Result<(), RemoteCallError> {
        let request =
            ember_term::to_term(request).map_err(|e| RemoteCallError::Encode(e.to_string()))?;
        cast_term(&self.server, request);
        Ok(())
    }
}
