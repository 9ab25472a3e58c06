//! Erlang's `busy_dist_port` for Ember processes: a process streaming
//! 100 MB of messages to a node that does not read is suspended once the
//! lane and the connection queue are full (its scheduler thread stays
//! free), a link made meanwhile is not lost, and when the node reads again
//! every message arrives in order, with Ember's memory bounded throughout;
//! and a link whose `LINK` waits in the busy lane while the connection is
//! lost is fired on this side and never made on the peer's.
//!
//! A file of its own so that its process runs nothing else while it
//! measures its own resident memory. Needs `erl` (see
//! dist_erl_interop.rs for how it is found or skipped).

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_runtime::dist::{self, pid_from_term};
use ember_runtime::{link, receive, trap_exit, yield_point, Exit, Spawn};
use ember_term::Term;
use ember_testkit::{erl_required, free_port, random_cookie, start_erl, unique, DEADLINE};
use support::ember::{EmberNode, Reports};

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

const MESSAGES: u64 = 100_000;
const KIB: usize = 1024;
/// Ember's resident memory may grow by at most this much while the
/// 100 MB stream goes out (before lanes were bounded it grew by the
/// whole stream).
const RSS_BOUND_KIB: u64 = 48 * 1024;

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// The tests of this file run one at a time: one measures the memory of
/// the whole process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn a_process_streaming_to_a_stopped_node_is_suspended_in_bounded_memory() {
    if !erl_required() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let port = free_port();
    let cookie = random_cookie();
    let ember = EmberNode::start(&unique("ember"), &cookie, port);
    let mut erl = start_erl(&unique("erl"), &cookie, port, &[]);
    let e = ember.name.clone();
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
    assert_eq!(erl.eval("register(shell, self())."), "true");
    // Counts {n, I, Binary} strictly in order: one out of order stays in
    // the mailbox and the count never completes.
    let counter = format!(
        "register(count, spawn(fun() -> C = fun C({MESSAGES}, Bytes) -> shell ! {{counted, Bytes}}; \
         C(I, Bytes) -> receive {{n, I, X}} -> C(I + 1, Bytes + byte_size(X)) end end, \
         C(0, 0) end))."
    );
    assert_eq!(erl.eval(&counter), "true");
    // A process for an Ember process to link to while the lane is busy.
    erl.eval(
        "register(victim, spawn(fun() -> receive {behind, T} -> shell ! {victim_heard, T} end, \
         receive never -> ok end end)).",
    );
    let erl_name = erl.name.clone();

    // Let Ember's memory settle, then stop erl: nothing is read any more.
    let baseline = rss_kib();
    let mut peak = baseline;
    signal(erl.os_pid(), "-STOP");

    let sent = Arc::new(AtomicU64::new(0));
    let (tx, reports) = Reports::new();
    {
        let (sent, tx, erl_name) = (sent.clone(), tx.clone(), erl_name.clone());
        ember
            .handle()
            .spawn_with(Spawn::new().name("streamer"), async move {
                let chunk = vec![b'z'; KIB];
                for i in 0..MESSAGES {
                    let m = Term::tuple([
                        Term::atom("n"),
                        Term::from(i as i64),
                        Term::binary(chunk.clone()),
                    ]);
                    dist::send_named("count", &erl_name, m);
                    sent.store(i + 1, Ordering::Release);
                    yield_point().await;
                }
                tx.send("streamed".to_string()).unwrap();
            })
            .unwrap();
    }

    // The streamer stops making progress: suspended.
    let deadline = Instant::now() + DEADLINE;
    let mut last = (0, Instant::now());
    let stalled_at = loop {
        peak = peak.max(rss_kib());
        let now = sent.load(Ordering::Acquire);
        assert!(
            now < MESSAGES,
            "the streamer sent all {MESSAGES} messages to a stopped node: never suspended"
        );
        if now != last.0 {
            last = (now, Instant::now());
        } else if now > 0 && last.1.elapsed() > Duration::from_secs(1) {
            break now;
        }
        assert!(Instant::now() < deadline, "the streamer never stalled");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "streamer suspended after {stalled_at} messages ({} KiB); rss {baseline} KiB -> {peak} KiB",
        stalled_at * KIB as u64 / 1024
    );
    assert!(
        stalled_at < 40_000,
        "{stalled_at} messages went out before the streamer was suspended"
    );

    // The schedulers are free: other processes run meanwhile, and a link
    // (a system signal) made while the lane is busy is not lost.
    {
        let tx = tx.clone();
        ember
            .handle()
            .spawn_with(Spawn::new().name("linker"), async move {
                tx.send("scheduled".to_string()).unwrap();
                trap_exit(true);
                let m = receive::<Term>().await;
                let v = pid_from_term(&m).expect("the victim's pid");
                link(v).unwrap();
                ember_runtime::send(v, Term::tuple([Term::atom("behind"), Term::atom("link")]));
                let exit: Exit = receive().timeout(DEADLINE).await.expect("an Exit");
                assert_eq!(exit.from, v);
                tx.send(format!("exit {}", exit.reason)).unwrap();
            })
            .unwrap();
    }
    assert_eq!(
        reports.next("a process running beside the suspended one"),
        "scheduled"
    );
    assert_eq!(
        sent.load(Ordering::Acquire),
        stalled_at,
        "the streamer ran while busy"
    );

    // erl reads again: the stream completes, in order, all of it.
    signal(erl.os_pid(), "-CONT");
    assert_eq!(
        erl.eval(&format!("{{linker, '{e}'}} ! whereis(victim), ok.")),
        "ok"
    );
    let sampler = {
        let mut peak = peak;
        let sent = sent.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + DEADLINE;
            while sent.load(Ordering::Acquire) < MESSAGES && Instant::now() < deadline {
                peak = peak.max(rss_kib());
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    assert_eq!(reports.next("the end of the stream"), "streamed");
    let peak = sampler.join().unwrap().max(rss_kib());
    assert_eq!(
        erl.eval("receive {counted, B} -> B after 60000 -> timeout end."),
        (MESSAGES * KIB as u64).to_string()
    );
    assert_eq!(
        erl.eval("receive {victim_heard, T} -> T after 10000 -> timeout end."),
        "link"
    );
    assert_eq!(erl.eval("exit(whereis(victim), kill)."), "true");
    assert_eq!(reports.next("the linked process's exit"), "exit killed");
    eprintln!("ember -> stopped erl: 100 MB, rss {baseline} KiB -> peak {peak} KiB");
    assert!(
        peak - baseline < RSS_BOUND_KIB,
        "Ember's memory grew by {} KiB streaming to a slow node",
        peak - baseline
    );
}

/// A `LINK` waits behind a busy lane when the connection is lost: the link
/// fires here with `noconnection`, and the `LINK` is not sent on the next
/// connection (the erl process would hold a link Ember does not).
#[test]
fn a_link_queued_across_a_lost_connection_is_not_made_on_the_next() {
    if !erl_required() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let port = free_port();
    let cookie = random_cookie();
    // The disconnect fires the link at once. The message sent behind it
    // starts a new connection while erl may still be stopped; the default
    // setup time (7 s) leaves a busy machine room to resume erl and finish
    // that handshake.
    let ember = EmberNode::start_configured(
        &unique("ember"),
        &cookie,
        port,
        ember_dist::Functions::new(),
        |c| c.setup_time = Duration::from_secs(7),
    );
    let mut erl = start_erl(&unique("erl"), &cookie, port, &[]);
    let e = ember.name.clone();
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
    assert_eq!(erl.eval("register(shell, self())."), "true");
    // The victim reports its links once a message from the linker, sent
    // behind the LINK, reaches it.
    erl.eval(
        "register(victim, spawn(fun() -> receive behind -> \
         shell ! {links, element(2, process_info(self(), links))} end end)).",
    );
    let (tx, reports) = Reports::new();
    let linker = {
        let tx = tx.clone();
        ember
            .handle()
            .spawn_with(Spawn::new().name("linker"), async move {
                trap_exit(true);
                let v = pid_from_term(&receive::<Term>().await).expect("the victim's pid");
                tx.send("has the victim".to_string()).unwrap();
                receive::<Term>().await; // go
                link(v).unwrap();
                tx.send("linked".to_string()).unwrap();
                let exit: Exit = receive().timeout(DEADLINE).await.expect("an Exit");
                tx.send(format!("exit {}", exit.reason)).unwrap();
                ember_runtime::send(v, Term::atom("behind"));
            })
            .unwrap()
            .pid
    };
    assert_eq!(
        erl.eval(&format!("{{linker, '{e}'}} ! whereis(victim), ok.")),
        "ok"
    );
    assert_eq!(
        reports.next("the linker has the victim's pid"),
        "has the victim"
    );

    // erl stops reading; a streamer fills the lane until it is suspended.
    signal(erl.os_pid(), "-STOP");
    let sent = Arc::new(AtomicU64::new(0));
    {
        let (sent, erl_name) = (sent.clone(), erl.name.clone());
        ember.handle().spawn(async move {
            let chunk = Term::binary(vec![b'q'; KIB]);
            for i in 0..MESSAGES {
                dist::send_named("nobody", &erl_name, chunk.clone());
                sent.store(i + 1, Ordering::Release);
                yield_point().await;
            }
        });
    }
    let deadline = Instant::now() + DEADLINE;
    let mut last = (0, Instant::now());
    loop {
        let now = sent.load(Ordering::Acquire);
        if now != last.0 {
            last = (now, Instant::now());
        } else if now > 0 && last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(now < MESSAGES, "never suspended");
        assert!(Instant::now() < deadline, "the streamer never stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The LINK goes into the lane behind the stream; then the connection
    // is lost.
    ember.handle().send(linker, Term::atom("go"));
    assert_eq!(reports.next("the link is made"), "linked");
    assert!(ember.node.disconnect(&erl.name));
    assert_eq!(reports.next("the link fires"), "exit noconnection");
    signal(erl.os_pid(), "-CONT");
    // The message behind it arrives (on a new connection); the LINK did
    // not, so the victim holds no link.
    assert_eq!(
        erl.eval("receive {links, L} -> L after 60000 -> timeout end."),
        "[]"
    );
}
