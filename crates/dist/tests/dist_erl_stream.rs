//! Big messages and long streams between Ember and a real `erl` node:
//! a 1 MiB binary each way (fragments, both sides having
//! `DFLAG_FRAGMENTS`), 100 MB of 1 KiB messages each way with Ember's
//! memory bounded, and a stopped peer making Ember's sends wait or fail
//! with `Busy` without losing a message.
//!
//! A file of its own so that its process runs nothing else while it
//! measures its own resident memory. Needs `erl` (see
//! dist_erl_interop.rs for how it is found or skipped).

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_dist::{Deliver, Delivery, DistError, NodeConfig};
use ember_term::{Atom, Term};
use ember_testkit::{erl_required, DEADLINE};
use support::wire::EmberAndErl;
use tokio::sync::{mpsc, Notify};

/// Counts `{n, Binary}` messages for `sink` and their bytes, and says when
/// `expected` have come; passes any other message on to the test.
struct Sink {
    count: AtomicU64,
    bytes: AtomicU64,
    expected: u64,
    all_counted: Notify,
    other: Mutex<mpsc::UnboundedSender<Term>>,
}

impl Sink {
    fn new(expected: u64) -> (Arc<Sink>, mpsc::UnboundedReceiver<Term>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = Sink {
            count: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            expected,
            all_counted: Notify::new(),
            other: Mutex::new(tx),
        };
        (Arc::new(sink), rx)
    }
}

impl Deliver for Sink {
    fn deliver(&self, _node: &Atom, delivery: Delivery) {
        if let Delivery::ToName { to, message, .. } = delivery {
            if to.as_str() == "sink" {
                if let Some([tag, Term::Binary(b)]) = message.as_tuple() {
                    if tag.is_atom("n") {
                        self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        if self.count.fetch_add(1, Ordering::Relaxed) + 1 == self.expected {
                            // A stored permit: not lost if nobody waits yet.
                            self.all_counted.notify_one();
                        }
                        return;
                    }
                }
            }
            let _ = self.other.lock().unwrap().send(message);
        }
    }
}

/// This process's resident set size in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Runs `work` to its end (failing after [`DEADLINE`] with `what`) while
/// sampling the resident memory every few milliseconds; asserts that it
/// grew by less than [`RSS_BOUND_KIB`] over what it was before.
async fn assert_bounded_memory_while<F: Future>(what: &str, work: F) -> F::Output {
    let baseline = rss_kib();
    let mut peak = baseline;
    let mut sample = tokio::time::interval(Duration::from_millis(5));
    let work = tokio::time::timeout(DEADLINE, work);
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            out = &mut work => break out.unwrap_or_else(|_| panic!("{what}: not done within {DEADLINE:?}")),
            _ = sample.tick() => peak = peak.max(rss_kib()),
        }
    };
    peak = peak.max(rss_kib());
    eprintln!("{what}: rss {baseline} KiB -> peak {peak} KiB");
    assert!(
        peak - baseline < RSS_BOUND_KIB,
        "Ember's memory grew by {} KiB: {what}",
        peak - baseline
    );
    out
}

/// An Ember node configured by `configure` and an `erl` connected to it,
/// with erl's shell process registered as `shell`.
async fn connected(configure: impl FnOnce(&mut NodeConfig)) -> EmberAndErl {
    let mut both = EmberAndErl::start(configure, &[]).await;
    let e = &both.e;
    assert_eq!(both.erl.eval(&format!("net_adm:ping('{e}').")), "pong");
    assert_eq!(both.erl.eval("register(shell, self())."), "true");
    both
}

/// The tests of this file run one at a time: one measures the memory of
/// the whole process.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MESSAGES: u64 = 100_000;
const KIB: usize = 1024;
/// Ember's resident memory may grow by at most this much while 100 MB
/// stream through it each way.
const RSS_BOUND_KIB: u64 = 48 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_messages_and_100_mb_streams_cross_both_ways_in_bounded_memory() {
    if !erl_required() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let (sink, mut other) = Sink::new(MESSAGES);
    let EmberAndErl {
        epmd: _epmd,
        ember,
        mut erl,
        e,
        ..
    } = connected(|c| c.deliver = sink.clone()).await;

    // 1 MiB each way, checked byte for byte on arrival.
    let mib: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let erl_mib = "list_to_binary([I rem 251 || I <- lists:seq(0, 1048575)])";
    assert_eq!(
        erl.eval(&format!("{{sink, '{e}'}} ! {{big, {erl_mib}}}, ok.")),
        "ok"
    );
    // Other messages (erl's own, to names Ember does not have) go by.
    let arrived = async {
        while let Some(m) = other.recv().await {
            if matches!(m.as_tuple(), Some([t, Term::Binary(b)]) if t.is_atom("big") && *b == mib) {
                return;
            }
        }
        panic!("the node stopped before erl's 1 MiB binary arrived");
    };
    tokio::time::timeout(DEADLINE, arrived)
        .await
        .expect("erl's 1 MiB binary, whole, within the deadline");
    ember
        .send_named(
            &erl.name,
            "shell",
            Term::tuple([Term::atom("big"), Term::binary(mib.clone())]),
        )
        .await
        .unwrap();
    assert_eq!(
        erl.eval(&format!(
            "receive {{big, B}} -> B =:= {erl_mib} after 10000 -> timeout end."
        )),
        "true"
    );

    // 100 MB from erl to Ember: 100,000 messages of 1 KiB.
    erl.send(&format!(
        "B = binary:copy(<<\"x\">>, {KIB}), \
         [{{sink, '{e}'}} ! {{n, B}} || _ <- lists:seq(1, {MESSAGES})], sent."
    ));
    assert_bounded_memory_while("erl -> ember, 100 MB", sink.all_counted.notified()).await;
    assert_eq!(erl.answer("the stream to Ember"), "sent");
    assert_eq!(sink.count.load(Ordering::Relaxed), MESSAGES);
    assert_eq!(sink.bytes.load(Ordering::Relaxed), MESSAGES * KIB as u64);

    // 100 MB from Ember to erl, counted by an erl process.
    let counter = format!(
        "register(count, spawn(fun() -> C = fun C(0, Bytes) -> shell ! {{counted, Bytes}}; \
         C(N, Bytes) -> receive {{n, X}} -> C(N - 1, Bytes + byte_size(X)) end end, \
         C({MESSAGES}, 0) end))."
    );
    assert_eq!(erl.eval(&counter), "true");
    let payload = Term::tuple([Term::atom("n"), Term::binary(vec![b'y'; KIB])]);
    let stream = async {
        for i in 0..MESSAGES {
            ember
                .send_named(&erl.name, "count", payload.clone())
                .await
                .unwrap();
            if i % 1000 == 0 {
                let queued = ember.queued_bytes(&erl.name).unwrap();
                assert!(queued < 2 << 20, "{queued} bytes queued");
                // Sends with room never wait: let the sampler in.
                tokio::task::yield_now().await;
            }
        }
    };
    assert_bounded_memory_while("ember -> erl, 100 MB", stream).await;
    assert_eq!(
        erl.eval("receive {counted, N} -> N after 60000 -> timeout end."),
        (MESSAGES * KIB as u64).to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_peer_makes_sends_wait_or_fail_busy_and_loses_nothing() {
    if !erl_required() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let EmberAndErl {
        epmd: _epmd,
        ember,
        mut erl,
        ..
    } = connected(|c| c.send_queue_limit = 256 * 1024).await;
    assert!(matches!(
        ember.try_send_named("nobody@localhost", "x", Term::atom("x")),
        Err(DistError::NotConnected(_))
    ));

    // erl stops reading: the socket buffers fill, then Ember's queue.
    erl.pause();
    let message = |i: u64| Term::tuple([Term::from(i as i64), Term::binary(vec![0u8; 4096])]);
    let mut sent = 0u64;
    let deadline = Instant::now() + DEADLINE;
    loop {
        match ember.try_send_named(&erl.name, "shell", message(sent)) {
            Ok(()) => sent += 1,
            Err(DistError::Busy(node)) => {
                assert_eq!(node, erl.name);
                break;
            }
            Err(other) => panic!("{other}"),
        }
        assert!(Instant::now() < deadline, "the queue never became busy");
    }
    let queued = ember.queued_bytes(&erl.name).unwrap();
    assert!(
        (256 * 1024..256 * 1024 + 8192).contains(&queued),
        "{queued} bytes queued"
    );
    // An async send waits while the peer is stopped (the kernel may still
    // take some bytes off the queue: then the send goes through, and the
    // next one is tried, until one waits).
    let erl_name = erl.name.clone();
    let blocked = loop {
        let mut send = Box::pin(ember.send_named(&erl_name, "shell", message(sent)));
        match tokio::time::timeout(Duration::from_millis(300), send.as_mut()).await {
            Ok(r) => {
                r.unwrap();
                sent += 1;
            }
            // Still waiting, and the queue is full: it waits for room.
            Err(_) if ember.queued_bytes(&erl_name).unwrap() >= 256 * 1024 => break send,
            // Slow for another reason (a busy machine): a send that has
            // not finished has queued nothing; drop it and try again.
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "sends to a stopped peer never waited"
        );
    };
    let queued = ember.queued_bytes(&erl.name).unwrap();
    assert!(queued >= 256 * 1024, "{queued} bytes queued while waiting");
    // ... and goes through once it reads again.
    erl.resume();
    tokio::time::timeout(DEADLINE, blocked)
        .await
        .expect("the waiting send never went through")
        .unwrap();
    sent += 1;
    // Every message arrived, in order, none twice.
    let check = format!(
        "C = fun C(I) when I =:= {sent} -> all; C(I) -> receive {{I, _}} -> C(I + 1) \
         after 10000 -> {{missing, I}} end end, C(0)."
    );
    assert_eq!(erl.eval(&check), "all");
    assert_eq!(
        erl.eval("receive X -> {extra, X} after 0 -> none end."),
        "none"
    );
}
