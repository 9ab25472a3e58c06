//! Ember distribution nodes inside the test process for the console's
//! cluster tests: a runtime that is a node (with the introspection
//! functions and, if asked, a console's functions), a console of that node
//! on a real socket, and a reader of its event streams.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ember_console as console;
use ember_dist::{Functions, Node, NodeConfig};
use ember_runtime::Runtime;
use ember_web::{Config, Router, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A runtime that is the node `alive@localhost`.
pub struct EmberNode {
    pub rt: Runtime,
    pub node: Arc<Node>,
    pub name: String,
}

/// Starts `alive@localhost` with `cookie`, registered with the port mapper
/// on `epmd_port` (the first node starts it there), listening on
/// 127.0.0.1, with the introspection functions and, with `with_console`,
/// a console's (`ember_console:load/0`, `top/0`, `process/1`; its pages
/// are not served: other consoles ask it over distribution only).
pub fn start_node(alive: &str, cookie: &str, epmd_port: u16, with_console: bool) -> EmberNode {
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    let name = format!("{alive}@localhost");
    let mut config = NodeConfig::new(&name, cookie);
    config.epmd_port = epmd_port;
    config.listen = "127.0.0.1:0".parse().unwrap();
    let handle = rt.handle().clone();
    let node = rt
        .block_on(async move {
            let mut functions = Functions::new();
            ember_dist::register_introspection(&mut functions);
            if with_console {
                let _ = console::mount_with_functions(
                    Router::new(),
                    console::Options::default(),
                    &mut functions,
                );
            }
            Node::start_in_runtime_with(config, &handle, functions).await
        })
        .expect("start the Ember node");
    EmberNode {
        rt,
        node: Arc::new(node),
        name,
    }
}

/// Runs `body` against a console of node `a` on 127.0.0.1:0, failing the
/// test after `limit`.
pub fn with_node_console<F, Fut>(a: &EmberNode, limit: Duration, body: F)
where
    F: FnOnce(SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let options = console::Options {
        node: Some(a.node.view()),
        ..console::Options::default()
    };
    a.rt.block_on(async move {
        let router = console::mount_with(Router::new(), options);
        let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
        let addr = server.local_addr();
        tokio::time::timeout(limit, body(addr))
            .await
            .unwrap_or_else(|_| panic!("the test did not finish within {limit:?}"));
        server.shutdown().await;
    });
}

/// An open event stream.
pub struct Events {
    stream: TcpStream,
    buffer: String,
    /// Where the next `data:` line is looked for.
    at: usize,
}

impl Events {
    /// `GET path` on a new connection, kept open.
    pub async fn open(addr: SocketAddr, path: &str) -> Events {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        Events {
            stream,
            buffer: String::new(),
            at: 0,
        }
    }

    /// The next event's JSON.
    pub async fn next(&mut self) -> Value {
        loop {
            if let Some(start) = self.buffer[self.at..].find("data: ") {
                let start = self.at + start + "data: ".len();
                if let Some(len) = self.buffer[start..].find('\n') {
                    self.at = start + len;
                    let line = &self.buffer[start..start + len];
                    return serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("an event not JSON ({e}): {line:?}"));
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the stream ended: {}", self.buffer);
            self.buffer.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }

    /// The first event for which `ok` holds, within 20 s.
    pub async fn until(&mut self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let event = tokio::time::timeout_at(deadline, self.next())
                .await
                .unwrap_or_else(|_| panic!("{what}: no such event in 20 s"));
            if ok(&event) {
                return event;
            }
        }
    }
}
