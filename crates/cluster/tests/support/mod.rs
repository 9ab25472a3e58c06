//! Cluster nodes in the test process: one runtime, one distribution node
//! and one cluster server each.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use ember_cluster::{Cluster, ClusterConfig, Counter, Kinds};
use ember_dist::{Node, NodeConfig};
use ember_runtime::Runtime;
use ember_testkit::DEADLINE;

/// A node of the test cluster.
pub(crate) struct TestNode {
    pub(crate) rt: Runtime,
    pub(crate) node: Node,
    pub(crate) name: String,
    pub(crate) cluster: Cluster,
}

/// The service kinds every test node knows.
pub(crate) fn kinds() -> Kinds {
    let mut k = Kinds::new();
    k.register("counter", Counter);
    k
}

impl TestNode {
    /// Starts `alive@localhost` joining `seeds`.
    pub(crate) fn start(alive: &str, cookie: &str, epmd_port: u16, seeds: &[&str]) -> TestNode {
        TestNode::start_with(alive, cookie, epmd_port, seeds, kinds())
    }

    /// [`TestNode::start`] with other service kinds.
    pub(crate) fn start_with(
        alive: &str,
        cookie: &str,
        epmd_port: u16,
        seeds: &[&str],
        kinds: Kinds,
    ) -> TestNode {
        BareNode::start(alive, cookie, epmd_port).join(seeds, kinds)
    }
}

/// A node whose distribution runs but whose cluster server has not
/// started yet.
pub(crate) struct BareNode {
    pub(crate) rt: Runtime,
    pub(crate) node: Node,
    pub(crate) name: String,
}

impl BareNode {
    /// Starts distribution as `alive@localhost`.
    pub(crate) fn start(alive: &str, cookie: &str, epmd_port: u16) -> BareNode {
        let rt = Runtime::builder().schedulers(2).build().unwrap();
        let name = format!("{alive}@localhost");
        let mut config = NodeConfig::new(&name, cookie);
        config.epmd_port = epmd_port;
        config.listen = "127.0.0.1:0".parse().unwrap();
        let handle = rt.handle().clone();
        let node = rt.block_on(async move {
            Node::start_in_runtime(config, &handle)
                .await
                .expect("start the node")
        });
        BareNode { rt, node, name }
    }

    /// Starts its cluster server, joining `seeds`.
    pub(crate) fn join(self, seeds: &[&str], kinds: Kinds) -> TestNode {
        let seeds: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
        self.start_cluster(ClusterConfig::new(kinds).join(seeds))
    }

    /// Starts its cluster server with `config`.
    pub(crate) fn start_cluster(self, config: ClusterConfig) -> TestNode {
        let BareNode { rt, node, name } = self;
        let handle = rt.handle().clone();
        let cluster = rt.block_on(async move {
            Cluster::start(&handle, config)
                .await
                .expect("start the cluster server")
        });
        TestNode {
            rt,
            node,
            name,
            cluster,
        }
    }
}

/// Waits until `what` holds, polling every 20 ms, and fails after the
/// deadline with `describe`.
pub(crate) fn wait_until(
    limit: Duration,
    describe: &str,
    mut what: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !what() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {describe}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// [`wait_until`] with the test deadline.
pub(crate) fn eventually(describe: &str, what: impl FnMut() -> bool) -> Duration {
    wait_until(DEADLINE, describe, what)
}
