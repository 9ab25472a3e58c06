//! Ember's side of `bench/run cluster` (driven by `bench/cluster/run`):
//! real OS processes of this binary, each one Ember node with a cluster
//! server (`ember_cluster`) and the `counter` service kind.
//!
//! ```text
//! ember-cluster-bench node NAME COOKIE EPMD [SEED] [N]   # a member; with N, waits for
//!                                                        # 2 members, starts svc0..svcN-1
//! ember-cluster-bench failover COOKIE EPMD KILLS CALLS   # 3 nodes, kills, lookups
//! ember-cluster-bench rebalance COOKIE EPMD N            # a 3rd node joins N services
//! ```
//!
//! `failover` is node `a` (in this process) plus children `b` and `c`. It
//! creates a service owned by a child, and a client process on `a` calls
//! it every millisecond. Each round kills the owner's OS process with
//! SIGKILL and times until a call is answered again (by the new
//! instance); then it restarts the killed node and waits until the
//! service has been handed back to it, counting the calls made during
//! that graceful handoff: answered, refused with the retryable
//! `Moving`, or lost (any other error, a timeout included). It also
//! times `Cluster::whereis` (the local replica) and calls to a service on
//! another node and on this one.
//!
//! `rebalance` starts children `a` and `b`; `a` creates N services once
//! `b` is a member and waits until they run on their owners. Then this
//! process starts node `c` joining `a` and times until its replica shows
//! every service registered on its owner among the three (the services
//! owned by `c` moved there with a handoff each), and reports the
//! traffic on `c`'s connections (they came up with the join; `a`-`b`
//! traffic is not counted).
//!
//! Results are `RESULT key value` lines on stdout.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember_cluster::{placement, Cluster, ClusterConfig, Counter, Kinds, ServiceError};
use ember_dist::{Node, NodeConfig};
use ember_runtime::Runtime;
use ember_term::{Atom, Term};

const HOST: &str = "localhost";
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
const LIMIT: Duration = Duration::from_secs(120);

fn usage() -> ! {
    eprintln!(
        "usage: ember-cluster-bench node NAME COOKIE EPMD [SEED] [N] \
         | failover COOKIE EPMD KILLS CALLS | rebalance COOKIE EPMD N"
    );
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage())
}

fn full(alive: &str) -> String {
    format!("{alive}@{HOST}")
}

fn fail(msg: &str) -> ! {
    eprintln!("ember-cluster-bench: {msg}");
    std::process::exit(1)
}

/// One node: a runtime, its distribution and its cluster server.
struct Member {
    rt: Runtime,
    node: Node,
    cluster: Cluster,
}

fn start(alive: &str, cookie: &str, epmd: u16, seeds: Vec<String>) -> Member {
    let rt = Runtime::builder()
        .schedulers(1)
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    let mut config = NodeConfig::new(&full(alive), cookie);
    config.epmd_port = epmd;
    config.listen = "127.0.0.1:0".parse().expect("an address");
    let handle = rt.handle().clone();
    let (node, cluster) = rt.block_on(async move {
        // A node restarted right after a SIGKILL may find its name still
        // registered until epmd sees the old connection close: retry.
        let mut tries = 0;
        let node = loop {
            match Node::start_in_runtime(config.clone(), &handle).await {
                Ok(node) => break node,
                Err(e) if tries < 100 => {
                    tries += 1;
                    eprintln!("ember-cluster-bench: node: {e}; retrying");
                    ember_runtime::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => fail(&format!("node: {e}")),
            }
        };
        let mut kinds = Kinds::new();
        kinds.register("counter", Counter);
        let cluster = Cluster::start(&handle, ClusterConfig::new(kinds).join(seeds))
            .await
            .unwrap_or_else(|e| fail(&format!("cluster: {e}")));
        (node, cluster)
    });
    Member { rt, node, cluster }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        if t0.elapsed() > LIMIT {
            fail(&format!("not within {LIMIT:?}: {what}"));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    t0.elapsed()
}

/// Whether every service in `names` is registered on its owner among
/// `c`'s members (and there are `want` members).
fn converged(c: &Cluster, names: &[String], want: usize) -> bool {
    let members = c.members();
    members.len() == want
        && names.iter().all(|n| {
            let owner = placement::owner(n, &members);
            c.whereis(n).map(|p| p.node) == owner.cloned()
        })
}

fn node_role(args: &[String]) {
    let (name, cookie, epmd) = (&args[1], &args[2], arg::<u16>(args, 3));
    let seeds: Vec<String> = args
        .get(4)
        .filter(|s| *s != "-")
        .map(|s| full(s))
        .into_iter()
        .collect();
    let n: usize = args.get(5).map_or(0, |_| arg(args, 5));
    let m = start(name, cookie, epmd, seeds);
    if n > 0 {
        wait_until("a second member", || m.cluster.members().len() >= 2);
        let c = m.cluster.clone();
        let t0 = Instant::now();
        let names: Vec<String> = (0..n).map(|i| format!("svc{i}")).collect();
        let created = names.clone();
        m.rt.block_on(async move {
            for name in created {
                if let Err(e) = c.start_service(&name, "counter", Term::nil()).await {
                    fail(&format!("start_service {name}: {e}"));
                }
            }
        });
        println!("RESULT create_s {:.3}", t0.elapsed().as_secs_f64());
        let d = wait_until("the services running on their owners", || {
            converged(&m.cluster, &names, 2)
        });
        println!("RESULT settle_s {:.3}", d.as_secs_f64());
    }
    println!("READY");
    // Serve until killed or stdin closes.
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
        line.clear();
    }
}

fn spawnnode(alive: &str, cookie: &str, epmd: u16, seed: &str, n: usize) -> Child {
    let (child, ready) = spawnnode_nowait(alive, cookie, epmd, seed, n);
    wait_ready(alive, child, &ready)
}

fn wait_ready(alive: &str, mut child: Child, ready: &std::sync::mpsc::Receiver<()>) -> Child {
    if ready.recv_timeout(LIMIT).is_err() {
        let _ = child.kill();
        fail(&format!("node {alive} did not get ready"));
    }
    child
}

fn spawnnode_nowait(
    alive: &str,
    cookie: &str,
    epmd: u16,
    seed: &str,
    n: usize,
) -> (Child, std::sync::mpsc::Receiver<()>) {
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(&format!("exe: {e}")));
    let mut cmd = Command::new(exe);
    cmd.args(["node", alive, cookie, &epmd.to_string(), seed]);
    if n > 0 {
        cmd.arg(n.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("spawn: {e}")));
    let out = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("RESULT") {
                println!("{line}");
            }
            if line == "READY" {
                let _ = tx.send(());
            }
        }
    });
    (child, rx)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// One call: `Ok(node that answered)`, or the error.
fn call(m: &Member, name: &str) -> Result<String, ServiceError> {
    let (c, name) = (m.cluster.clone(), name.to_owned());
    m.rt.block_on(async move {
        let reply = c.call(&name, Term::atom("hello"), CALL_TIMEOUT).await?;
        Ok(reply
            .as_map()
            .and_then(|m| m.get_atom("node"))
            .and_then(|t| t.as_str().map(str::to_owned))
            .unwrap_or_default())
    })
}

fn failover_role(args: &[String]) {
    let (cookie, epmd) = (&args[1], arg::<u16>(args, 2));
    let kills: usize = arg(args, 3);
    let calls: usize = arg(args, 4);
    let a = start("a", cookie, epmd, vec![]);
    let mut children = vec![
        ("b", spawnnode("b", cookie, epmd, "a", 0)),
        ("c", spawnnode("c", cookie, epmd, "a", 0)),
    ];
    wait_until("three members", || a.cluster.members().len() == 3);
    let members = a.cluster.members();
    let find = |want: &str| {
        (0..)
            .map(|i| format!("svc{i}"))
            .find(|n| placement::owner(n, &members).map(Atom::as_str) == Some(want))
            .expect("a name")
    };
    let (remote, local) = (find(&full("b")), find(&full("a")));
    for name in [&remote, &local] {
        let (c, n) = (a.cluster.clone(), name.clone());
        a.rt.block_on(async move { c.start_service(&n, "counter", Term::nil()).await })
            .unwrap_or_else(|e| fail(&format!("start_service: {e}")));
    }
    wait_until("both services answering", || {
        call(&a, &remote).is_ok() && call(&a, &local).is_ok()
    });

    // Lookups.
    let n = 1_000_000;
    let c = a.cluster.clone();
    let t0 = Instant::now();
    let mut found = 0usize;
    for _ in 0..n {
        found +=
            usize::from(std::hint::black_box(c.whereis(std::hint::black_box(&remote))).is_some());
    }
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(found, n);
    println!("RESULT whereis_ns {ns:.1}");
    for (key, name) in [("call_remote", &remote), ("call_local", &local)] {
        let (c, name) = (a.cluster.clone(), name.clone());
        let mut v: Vec<f64> = a.rt.block_on(async move {
            let mut v = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t = Instant::now();
                c.call(&name, Term::atom("hello"), CALL_TIMEOUT)
                    .await
                    .unwrap_or_else(|e| fail(&format!("call: {e}")));
                v.push(t.elapsed().as_nanos() as f64);
            }
            v
        });
        println!("RESULT {key}_p50_us {:.1}", pct(&mut v, 0.5) / 1e3);
        println!("RESULT {key}_p99_us {:.1}", pct(&mut v, 0.99) / 1e3);
    }

    // Registrations: `calls` fresh names, one at a time, each a process
    // of this node (checked against the local replica, then announced to
    // the peers without waiting: no cluster-wide lock).
    let c = a.cluster.clone();
    let per = a.rt.block_on(async move {
        let pids: Vec<_> = (0..calls)
            .map(|_| {
                ember_runtime::spawn(async {
                    ember_runtime::receive_any(|_| true).await;
                })
            })
            .collect();
        let t = Instant::now();
        for (i, pid) in pids.iter().enumerate() {
            c.register(&format!("bench{i}"), *pid)
                .await
                .unwrap_or_else(|e| fail(&format!("register: {e}")));
        }
        let per = t.elapsed().as_nanos() as f64 / calls as f64;
        for pid in pids {
            ember_runtime::exit(pid, ember_runtime::ExitReason::Kill);
        }
        per
    });
    println!("RESULT register_us {:.2}", per / 1e3);

    // Failover rounds.
    let mut times = Vec::new();
    let (mut answered, mut moving, mut lost) = (0usize, 0usize, 0usize);
    for round in 0..kills {
        let owner = a
            .cluster
            .whereis(&remote)
            .map(|p| p.node.as_str().to_owned());
        let Some(victim) = children
            .iter()
            .position(|(n, _)| owner.as_deref() == Some(&full(n)))
        else {
            fail(&format!(
                "round {round}: {remote} runs on {owner:?}, not a child"
            ));
        };
        // Steady calls up to the kill.
        for _ in 0..20 {
            if call(&a, &remote).is_err() {
                fail(&format!("round {round}: a call failed before the kill"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let alive = children[victim].0;
        let _ = children[victim].1.kill();
        let t0 = Instant::now();
        let _ = children[victim].1.wait();
        loop {
            match call(&a, &remote) {
                Ok(node) if node != full(alive) => break,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
            if t0.elapsed() > LIMIT {
                fail(&format!("round {round}: no answer after the kill"));
            }
        }
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        // Restart; the service is handed back (a graceful handoff), and
        // the client keeps calling throughout.
        let seed = children[1 - victim].0;
        children[victim].1 = spawnnode(alive, cookie, epmd, seed, 0);
        let t1 = Instant::now();
        loop {
            match call(&a, &remote) {
                Ok(node) if node == full(alive) => break,
                Ok(_) => answered += 1,
                Err(ServiceError::Moving) => moving += 1,
                Err(e) => {
                    lost += 1;
                    eprintln!("round {round}: lost a call during the handoff: {e}");
                }
            }
            if t1.elapsed() > LIMIT {
                fail(&format!("round {round}: the service did not move back"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        answered += 1;
    }
    let all: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
    println!("RESULT failover_ms_all {}", all.join(","));
    if !times.is_empty() {
        println!("RESULT failover_p50_ms {:.1}", pct(&mut times, 0.5));
        println!("RESULT failover_p99_ms {:.1}", pct(&mut times, 0.99));
        println!(
            "RESULT failover_max_ms {:.1}",
            times.last().copied().unwrap_or(0.0)
        );
    }
    println!("RESULT handoff_answered {answered}");
    println!("RESULT handoff_retryable {moving}");
    println!("RESULT handoff_lost {lost}");
    for (_, mut c) in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn rebalance_role(args: &[String]) {
    let (cookie, epmd) = (&args[1], arg::<u16>(args, 2));
    let n: usize = arg(args, 3);
    // `a` creates the services once `b` is a member, and is READY when
    // they run on their owners.
    let (a, a_ready) = spawnnode_nowait("a", cookie, epmd, "-", n);
    let b = spawnnode("b", cookie, epmd, "a", 0);
    let a = wait_ready("a", a, &a_ready);
    let c = start("c", cookie, epmd, vec![full("a")]);
    let names: Vec<String> = (0..n).map(|i| format!("svc{i}")).collect();
    let d = wait_until("the services on their owners among 3", || {
        converged(&c.cluster, &names, 3)
    });
    let moved = c.cluster.running_here().len();
    println!("RESULT join_converged_ms {:.1}", d.as_secs_f64() * 1e3);
    println!("RESULT join_moved {moved}");
    // The joining node's connections came up with the join: their
    // counters are its traffic (ticks included) in the window.
    let conns = c.node.connections();
    let bytes: u64 = conns.iter().map(|i| i.bytes_in + i.bytes_out).sum();
    let messages: u64 = conns.iter().map(|i| i.messages_in + i.messages_out).sum();
    println!("RESULT join_bytes {bytes}");
    println!("RESULT join_messages {messages}");
    // Lookups in a replica of n names.
    let iters = 1_000_000;
    let t = Instant::now();
    let mut found = 0usize;
    for i in 0..iters {
        found += usize::from(std::hint::black_box(c.cluster.whereis(&names[i % n])).is_some());
    }
    let ns = t.elapsed().as_nanos() as f64 / iters as f64;
    assert_eq!(found, iters);
    println!("RESULT whereis_10k_ns {ns:.1}");
    for mut child in [a, b] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("node") if args.len() >= 4 => node_role(&args),
        Some("failover") if args.len() == 5 => failover_role(&args),
        Some("rebalance") if args.len() == 4 => rebalance_role(&args),
        _ => usage(),
    }
}
