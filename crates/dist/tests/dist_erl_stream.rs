//! Big messages and long streams between Ember and a real `erl` node:
//! a 1 MiB binary each way (fragments, both sides having
//! `DFLAG_FRAGMENTS`), 100 MB of 1 KiB messages each way with Ember's
//! memory bounded, and a stopped peer making Ember's sends wait or fail
//! with `Busy` without losing a message.
//!
//! A file of its own so that its process runs nothing else while it
//! measures its own resident memory. Needs `erl` (see
//! dist_erl_interop.rs for how it is found or skipped).

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_dist::{Deliver, Delivery, DistError, EmbeddedEpmd, Node, NodeConfig};
use ember_term::{Atom, Term};
use ember_testkit::{erl_required, random_cookie, start_erl, unique, DEADLINE};

/// Counts `{n, Binary}` messages for `sink` and their bytes; keeps any
/// other message.
#[derive(Default)]
struct Sink {
    count: AtomicU64,
    bytes: AtomicU64,
    other: Mutex<Vec<Term>>,
}

impl Deliver for Sink {
    fn deliver(&self, _node: &Atom, delivery: Delivery) {
        if let Delivery::ToName { to, message, .. } = delivery {
            if to.as_str() == "sink" {
                if let Some([tag, Term::Binary(b)]) = message.as_tuple() {
                    if tag.is_atom("n") {
                        self.count.fetch_add(1, Ordering::Relaxed);
                        self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        return;
                    }
                }
            }
            self.other.lock().unwrap().push(message);
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
    let epmd_server = EmbeddedEpmd::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let cookie = random_cookie();
    let sink = Arc::new(Sink::default());
    let mut c = NodeConfig::new(&format!("{}@localhost", unique("ember")), &cookie);
    c.epmd_port = epmd_server.port();
    c.deliver = sink.clone();
    let ember = Node::start_with(c).await.unwrap();
    let mut erl = start_erl(&unique("erl"), &cookie, epmd_server.port(), &[]);
    let e = ember.name().as_str().to_string();
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
    assert_eq!(erl.eval("register(shell, self())."), "true");

    // 1 MiB each way, checked byte for byte on arrival.
    let mib: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let erl_mib = "list_to_binary([I rem 251 || I <- lists:seq(0, 1048575)])";
    assert_eq!(
        erl.eval(&format!("{{sink, '{e}'}} ! {{big, {erl_mib}}}, ok.")),
        "ok"
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = sink.other.lock().unwrap().iter().any(
            |m| matches!(m.as_tuple(), Some([t, Term::Binary(b)]) if t.is_atom("big") && *b == mib),
        );
        if got {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "erl's 1 MiB binary never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let baseline = rss_kib();
    let mut peak = baseline;
    erl.send(&format!(
        "B = binary:copy(<<\"x\">>, {KIB}), \
         [{{sink, '{e}'}} ! {{n, B}} || _ <- lists:seq(1, {MESSAGES})], sent."
    ));
    let deadline = Instant::now() + DEADLINE;
    while sink.count.load(Ordering::Relaxed) < MESSAGES {
        peak = peak.max(rss_kib());
        assert!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} messages from erl arrived",
            sink.count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(erl.answer("the stream to Ember"), "sent");
    assert_eq!(sink.count.load(Ordering::Relaxed), MESSAGES);
    assert_eq!(sink.bytes.load(Ordering::Relaxed), MESSAGES * KIB as u64);
    eprintln!("erl -> ember: 100 MB, rss {baseline} KiB -> peak {peak} KiB");
    assert!(
        peak - baseline < RSS_BOUND_KIB,
        "Ember's memory grew by {} KiB receiving the stream",
        peak - baseline
    );

    // 100 MB from Ember to erl, counted by an erl process.
    let counter = format!(
        "register(count, spawn(fun() -> C = fun C(0, Bytes) -> shell ! {{counted, Bytes}}; \
         C(N, Bytes) -> receive {{n, X}} -> C(N - 1, Bytes + byte_size(X)) end end, \
         C({MESSAGES}, 0) end))."
    );
    assert_eq!(erl.eval(&counter), "true");
    let baseline = rss_kib();
    let mut peak = baseline;
    let payload = Term::tuple([Term::atom("n"), Term::binary(vec![b'y'; KIB])]);
    for i in 0..MESSAGES {
        ember
            .send_named(&erl.name, "count", payload.clone())
            .await
            .unwrap();
        if i % 1000 == 0 {
            peak = peak.max(rss_kib());
            let queued = ember.queued_bytes(&erl.name).unwrap();
            assert!(queued < 2 << 20, "{queued} bytes queued");
        }
    }
    assert_eq!(
        erl.eval("receive {counted, N} -> N after 60000 -> timeout end."),
        (MESSAGES * KIB as u64).to_string()
    );
    eprintln!("ember -> erl: 100 MB, rss {baseline} KiB -> peak {peak} KiB");
    assert!(
        peak - baseline < RSS_BOUND_KIB,
        "Ember's memory grew by {} KiB sending the stream",
        peak - baseline
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_peer_makes_sends_wait_or_fail_busy_and_loses_nothing() {
    if !erl_required() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let epmd_server = EmbeddedEpmd::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let cookie = random_cookie();
    let mut c = NodeConfig::new(&format!("{}@localhost", unique("ember")), &cookie);
    c.epmd_port = epmd_server.port();
    c.send_queue_limit = 256 * 1024;
    let ember = Node::start_with(c).await.unwrap();
    let mut erl = start_erl(&unique("erl"), &cookie, epmd_server.port(), &[]);
    let e = ember.name().as_str().to_string();
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
    assert_eq!(erl.eval("register(shell, self())."), "true");
    assert!(matches!(
        ember.try_send_named("nobody@localhost", "x", Term::atom("x")),
        Err(DistError::NotConnected(_))
    ));

    // erl stops reading: the socket buffers fill, then Ember's queue.
    let pid = erl.os_pid().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
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
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
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
