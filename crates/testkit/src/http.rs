//! A tiny HTTP/1.1 client over raw tokio sockets for tests of Ember's HTTP
//! servers, and a runner with an overall timeout. Every read has a deadline
//! through [`run`]'s.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use ember_runtime::Runtime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs `body` as a process on a fresh runtime with `schedulers` schedulers,
/// failing the test if it takes longer than a minute.
pub fn run<F>(schedulers: usize, body: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = Runtime::builder().schedulers(schedulers).build().unwrap();
    rt.block_on(async move {
        tokio::time::timeout(Duration::from_secs(60), body)
            .await
            .expect("the test did not finish within 60 s")
    })
}

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The status line and the headers, with the blank line ending them.
    pub head: String,
    /// The body (lossily UTF-8).
    pub body: String,
}

impl Reply {
    /// The value of header `name` (case-insensitive), if the head has it.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Reads one response with a `content-length` body from `stream`, keeping
/// anything after it unread.
pub async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut byte = [0u8; 1];
        let n = stream
            .read(&mut byte)
            .await
            .expect("read the response head");
        assert!(
            n > 0,
            "the server closed before a whole head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let mut reply = Reply {
        status,
        head,
        body: String::new(),
    };
    let len: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.expect("read the body");
    reply.body = String::from_utf8_lossy(&body).into_owned();
    reply
}

/// Sends `GET path` on an open connection and reads the response.
pub async fn get_on(stream: &mut TcpStream, path: &str) -> Reply {
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_reply(stream).await
}

/// `GET path` on a new connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    get_on(&mut stream, path).await
}

/// Writes `raw` on a new connection and reads until the server closes it.
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw response.
pub fn status_of(raw: &str) -> Option<u16> {
    raw.split_whitespace().nth(1)?.parse().ok()
}

/// A JSON `content-type` header.
pub fn json_type() -> (&'static str, String) {
    ("content-type", "application/json".to_string())
}
