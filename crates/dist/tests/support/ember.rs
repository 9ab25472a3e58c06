//! An Ember runtime that is a distribution node, for the tests that put
//! Ember processes on the wire.

use std::sync::mpsc;
use std::time::Duration;

use ember_dist::{Functions, Node, NodeConfig};
use ember_runtime::{Handle, Runtime};

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
        let rt = Runtime::builder().schedulers(2).build().unwrap();
        let name = format!("{alive}@localhost");
        let mut config = NodeConfig::new(&name, cookie);
        config.epmd_port = epmd_port;
        config.listen = "127.0.0.1:0".parse().unwrap();
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

    /// The next report within `limit`.
    pub(crate) fn within(&self, limit: Duration, what: &str) -> T {
        self.rx
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("no report in {limit:?}: {what}"))
    }
}
