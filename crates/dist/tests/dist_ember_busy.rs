//! Erlang's `busy_dist_port` between two Ember nodes: an Ember process
//! streams 100 MB of messages to another Ember node whose reader is
//! stalled (its delivery hook blocks, so it stops reading the socket). The
//! process is suspended, the sending node's memory stays bounded (nothing
//! like the 100 MB it was asked to send), the connection's queue holds
//! about its limit; when the peer reads again, the process resumes and
//! every message arrives, in order.
//!
//! A file of its own so that its process runs nothing else while it
//! measures its own resident memory.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ember_dist::{Deliver, Delivery, Node, NodeConfig};
use ember_runtime::{dist, yield_point, Spawn};
use ember_term::{Atom, Term};
use ember_testkit::{free_port, random_cookie, unique, DEADLINE};
use support::ember::{EmberNode, Reports};

const KIB: usize = 1024;
/// 100 MB of 1 KiB messages.
const MESSAGES: u64 = 100_000;
/// The sending node's connection queue and lane limit.
const LIMIT: usize = 256 * KIB;
/// How much the sender's resident memory may grow (100 MB if unbounded).
const RSS_BOUND_KIB: u64 = 48 * 1024;

/// This process's resident set size in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A delivery hook that blocks (stalling the connection's reader) while
/// the gate is shut, and counts `{n, I, Binary}` messages strictly in
/// order.
struct Stalled {
    open: Mutex<bool>,
    opened: Condvar,
    /// Messages counted in order; `u64::MAX` once one came out of order.
    counted: AtomicU64,
}

impl Stalled {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl Deliver for Stalled {
    fn deliver(&self, _node: &Atom, delivery: Delivery) {
        let Delivery::ToName { message, .. } = delivery else {
            return;
        };
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        drop(open);
        let i = message.as_tuple().and_then(|t| t.get(1)?.as_int());
        let expected = self.counted.load(Ordering::Acquire);
        let next = if i == Some(expected as i64) {
            expected + 1
        } else {
            u64::MAX
        };
        self.counted.store(next, Ordering::Release);
    }
}

#[test]
fn a_process_streaming_to_a_stalled_ember_node_is_suspended_in_bounded_memory() {
    let port = free_port();
    let cookie = random_cookie();
    let sender = EmberNode::start_configured(
        &unique("a"),
        &cookie,
        port,
        ember_dist::Functions::new(),
        |c| c.send_queue_limit = LIMIT,
    );
    // The receiving node: no runtime, its reader runs the hook.
    let hook = Arc::new(Stalled {
        open: Mutex::new(false),
        opened: Condvar::new(),
        counted: AtomicU64::new(0),
    });
    let peer_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let peer_name = format!("{}@localhost", unique("b"));
    let peer = {
        let mut config = NodeConfig::new(&peer_name, &cookie);
        config.epmd_port = port;
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.deliver = hook.clone();
        peer_rt.block_on(Node::start_with(config)).unwrap()
    };

    let baseline = rss_kib();
    let sent = Arc::new(AtomicU64::new(0));
    let (tx, reports) = Reports::new();
    {
        let (sent, peer_name) = (sent.clone(), peer_name.clone());
        sender
            .handle()
            .spawn_with(Spawn::new().name("streamer"), async move {
                let chunk = vec![b'z'; KIB];
                for i in 0..MESSAGES {
                    let m = Term::tuple([
                        Term::atom("n"),
                        Term::from(i as i64),
                        Term::binary(chunk.clone()),
                    ]);
                    dist::send_named("sink", &peer_name, m);
                    sent.store(i + 1, Ordering::Release);
                    yield_point().await;
                }
                tx.send("streamed").unwrap();
            })
            .unwrap();
    }

    // The streamer stops making progress: suspended. (The peer's reader
    // blocks in the hook, its socket buffers fill, then the connection's
    // queue and the lane.)
    let deadline = Instant::now() + DEADLINE;
    let mut peak = baseline;
    let mut last = (0, Instant::now());
    let stalled_at = loop {
        peak = peak.max(rss_kib());
        let now = sent.load(Ordering::Acquire);
        assert!(
            now < MESSAGES,
            "the streamer sent all {MESSAGES} messages to a stalled node: never suspended"
        );
        if now != last.0 {
            last = (now, Instant::now());
        } else if now > 0 && last.1.elapsed() > Duration::from_secs(1) {
            break now;
        }
        assert!(Instant::now() < deadline, "the streamer never stalled");
        std::thread::sleep(Duration::from_millis(20));
    };
    let queued = sender
        .node
        .connections()
        .iter()
        .find(|c| c.node.as_str() == peer_name)
        .map(|c| c.queued_bytes)
        .expect("a connection to the peer");
    eprintln!(
        "streamer suspended after {stalled_at} messages ({} KiB), {queued} bytes queued; \
         rss {baseline} KiB -> {peak} KiB",
        stalled_at * KIB as u64 / 1024
    );
    assert!(
        queued <= LIMIT + 4 * KIB,
        "the connection queue holds {queued} bytes, over its limit of {LIMIT}"
    );
    assert_eq!(hook.counted.load(Ordering::Acquire), 0, "the hook was open");

    // The peer reads again: the streamer resumes, every message arrives in
    // order.
    hook.open();
    assert_eq!(reports.next("the end of the stream"), "streamed");
    let deadline = Instant::now() + DEADLINE;
    while hook.counted.load(Ordering::Acquire) < MESSAGES {
        peak = peak.max(rss_kib());
        assert!(
            Instant::now() < deadline,
            "only {} messages arrived in order",
            hook.counted.load(Ordering::Acquire)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        hook.counted.load(Ordering::Acquire),
        MESSAGES,
        "a message arrived out of order"
    );
    let peak = peak.max(rss_kib());
    eprintln!("ember -> stalled ember: 100 MB, rss {baseline} KiB -> peak {peak} KiB");
    assert!(
        peak.saturating_sub(baseline) < RSS_BOUND_KIB,
        "the sending node's memory grew by {} KiB streaming to a stalled node",
        peak - baseline
    );
    peer.stop();
}
