//! An Ember runtime that is a distribution node, for the tests that put
//! Ember processes on the wire.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ember_dist::{Functions, Node, NodeConfig};
use ember_runtime::dist::NodeDown;
use ember_runtime::{receive, receive_any, Down, Exit, Handle, Pid, Runtime};
use ember_term::Term;

use ember_testkit::DEADLINE;

/// A runtime and the node its processes belong to.
pub(crate) struct EmberNode {
    pub(crate) rt: Runtime,
    pub(crate) node: Node,
    pub(crate) name: String,
}

impl EmberNode {
    /// Starts `alive@localhost` on the port mapper at `epmd_port` (an
    /// embedded one if none answers there).
    pub(crate) fn start(alive: &str, cookie: &str, epmd_port: u16) -> EmberNode {
        EmberNode::start_with(alive, cookie, epmd_port, Functions::new())
    }

    /// [`EmberNode::start`] with functions for other nodes to call.
    pub(crate) fn start_with(
        alive: &str,
        cookie: &str,
        epmd_port: u16,
        functions: Functions,
    ) -> EmberNode {
        EmberNode::start_configured(alive, cookie, epmd_port, functions, |_| {})
    }

    /// [`EmberNode::start_with`], with `configure` changing the config.
    pub(crate) fn start_configured(
        alive: &str,
        cookie: &str,
        epmd_port: u16,
        functions: Functions,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> EmberNode {
        let rt = Runtime::builder().schedulers(2).build().unwrap();
        let name = format!("{alive}@localhost");
        let mut config = NodeConfig::new(&name, cookie);
        config.epmd_port = epmd_port;
        config.listen = "127.0.0.1:0".parse().unwrap();
        configure(&mut config);
        let handle = rt.handle().clone();
        let node = rt
            .block_on(async move { Node::start_in_runtime_with(config, &handle, functions).await })
            .expect("start the Ember node");
        EmberNode { rt, node, name }
    }

    /// The runtime's handle.
    pub(crate) fn handle(&self) -> &Handle {
        self.rt.handle()
    }
}

/// What Ember processes report to the test thread.
pub(crate) struct Reports<T> {
    rx: mpsc::Receiver<T>,
}

impl<T> Reports<T> {
    /// A channel: the sender goes into processes.
    pub(crate) fn new() -> (mpsc::Sender<T>, Reports<T>) {
        let (tx, rx) = mpsc::channel();
        (tx, Reports { rx })
    }

    /// The next report, within the deadline.
    pub(crate) fn next(&self, what: &str) -> T {
        self.within(DEADLINE, what)
    }

    /// A report that came within `limit` (`None`: none did, as expected).
    pub(crate) fn quiet_for(&self, limit: Duration) -> Option<T> {
        self.rx.recv_timeout(limit).ok()
    }

    /// The next report within `limit`.
    pub(crate) fn within(&self, limit: Duration, what: &str) -> T {
        self.rx
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("no report in {limit:?}: {what}"))
    }
}

/// Receives the next `Term` within [`DEADLINE`].
pub(crate) async fn next_term() -> Term {
    receive::<Term>()
        .timeout(DEADLINE)
        .await
        .expect("a term within the deadline")
}

/// Collects the `count` signals a lost connection fires at the calling
/// process (trapping exits): `exit R` for the `Exit` from `linked`,
/// `<label> R` for a `Down`, where `down_label` names the monitor (and
/// asserts it is one of the caller's), and `nodedown N`. Sorted and joined
/// with ", "; fails if they do not all come within [`DEADLINE`].
pub(crate) async fn connection_loss_signals(
    count: usize,
    linked: Pid,
    down_label: impl Fn(&Down) -> &'static str,
) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while seen.len() < count {
        let m = receive_any(|m| m.is::<Exit>() || m.is::<Down>() || m.is::<NodeDown>())
            .timeout(deadline.saturating_duration_since(Instant::now()))
            .await
            .unwrap_or_else(|| panic!("only {seen:?} within {DEADLINE:?}"));
        let m = match m.downcast::<Exit>() {
            Ok(exit) => {
                assert_eq!(exit.from, linked);
                seen.push(format!("exit {}", exit.reason));
                continue;
            }
            Err(m) => m,
        };
        match m.downcast::<Down>() {
            Ok(down) => seen.push(format!("{} {}", down_label(&down), down.reason)),
            Err(m) => {
                let Ok(nodedown) = m.downcast::<NodeDown>() else {
                    unreachable!("only the three kinds are received")
                };
                seen.push(format!("nodedown {}", nodedown.node));
            }
        }
    }
    seen.sort();
    seen.join(", ")
}
