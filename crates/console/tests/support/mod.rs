//! The HTTP test client (`ember_testkit::http`), a client for the
//! console's JSON API, and a runner with the console mounted.

#![allow(dead_code, unused_imports, unreachable_pub)]

pub mod nodes;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use ember_console as console;
use ember_runtime::Runtime;
use ember_web::{Config, Router, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use ember_testkit::http::*;

/// Runs `body` with the console mounted on a server at 127.0.0.1:0, on a
/// fresh runtime with two schedulers, failing the test after `limit`.
pub fn with_console<F, Fut>(limit: Duration, body: F)
where
    F: FnOnce(SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    rt.block_on(async move {
        let server = Server::bind(
            "127.0.0.1:0",
            console::mount(Router::new()),
            Config::default(),
        )
        .unwrap();
        let addr = server.local_addr();
        tokio::time::timeout(limit, body(addr))
            .await
            .unwrap_or_else(|_| panic!("the test did not finish within {limit:?}"));
        server.shutdown().await;
    });
}

/// A response to a request of the console's API.
#[derive(Debug)]
pub struct ApiReply {
    pub status: u16,
    pub body: String,
}

impl ApiReply {
    /// The body as JSON; fails the test if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The `error` field of the JSON body ("" without one).
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Sends one request with exactly `headers` (plus `content-length` and
/// `connection: close`) on a new connection and reads the whole response;
/// `Err` if the server closed or reset without one (or within 10 s).
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Result<ApiReply, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ));
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no whole response: {raw:?}"))?;
        let status = status_of(head).ok_or_else(|| format!("no status: {head:?}"))?;
        Ok(ApiReply {
            status,
            body: body.to_string(),
        })
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err("no response within 10 s".into()))
}

/// [`try_request`] that must get a response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> ApiReply {
    try_request(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `GET path` of the JSON API, with a `host` header and nothing else.
pub async fn api_get(addr: SocketAddr, path: &str) -> ApiReply {
    request(addr, "GET", path, &[host(addr)], "").await
}

/// `GET path` until `ok` holds for its answer (every 20 ms, for at most
/// 20 s); fails the test with `what` and the last answer otherwise.
pub async fn api_get_until(
    addr: SocketAddr,
    path: &str,
    what: &str,
    ok: impl Fn(&ApiReply) -> bool,
) -> ApiReply {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = api_get(addr, path).await;
        if ok(&reply) {
            return reply;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: GET {path} never got there; last {} {}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `host` header naming `addr`.
pub fn host(addr: SocketAddr) -> (&'static str, String) {
    ("host", addr.to_string())
}
