//! A rolling upgrade of a cluster service: node `v1` runs version 1 of the
//! `counter` kind and serves `orders` with state (its call count); node
//! `v2` joins running version 2 of the kind (a newer build: its state is a
//! map, made from version 1's plain count by `code_change`); `v1` leaves
//! gracefully and `orders` moves to `v2` with its state migrated. A client
//! calls `orders` through `v2` the whole time and counts what it sees:
//! answers, and `Moving` (the documented retryable error) while the
//! service moves. Any other error fails the example.
//!
//! ```text
//! cargo run --example rolling_upgrade
//! ```
//!
//! Both nodes live in this one OS process (two runtimes, each its own
//! node, talking over TCP). They register with the port mapper at
//! `ERL_EPMD_PORT` (default 4369), or start an embedded one. Every wait has
//! a deadline: a step that fails says which, and the example exits with
//! status 1.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_cluster::{
    placement, Cluster, ClusterConfig, Counter, Kinds, Service, ServiceError, ServiceKind,
};
use ember_dist::{Node, NodeConfig};
use ember_runtime::Runtime;
use ember_term::{Atom, Term};

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(10);

/// What a step failed with.
type Step<T> = Result<T, String>;

/// Version 2 of the counter: its state is `#{calls => N, upgraded_from => V}`.
struct CounterV2;

/// An instance of [`CounterV2`].
struct V2 {
    node: String,
    calls: i64,
    upgraded_from: Option<i64>,
}

impl ServiceKind for CounterV2 {
    fn version(&self) -> u32 {
        2
    }

    fn init(&self, _name: &str, node: &str, _args: &Term, state: Option<Term>) -> Box<dyn Service> {
        let map = state.as_ref().and_then(Term::as_map);
        let get = |k: &str| map.and_then(|m| m.get_atom(k)).and_then(Term::as_int);
        Box::new(V2 {
            node: node.to_owned(),
            calls: get("calls").unwrap_or(0),
            upgraded_from: get("upgraded_from"),
        })
    }

    /// Version 1 handed over its plain count.
    fn code_change(&self, old_version: u32, state: Term) -> Term {
        Term::map([
            (Term::atom("calls"), Term::from(state.as_int().unwrap_or(0))),
            (Term::atom("upgraded_from"), Term::from(old_version)),
        ])
    }
}

impl Service for V2 {
    fn handle_call(&mut self, _request: Term) -> Term {
        self.calls += 1;
        Term::map([
            (Term::atom("node"), Term::from(self.node.as_str())),
            (Term::atom("calls"), Term::from(self.calls)),
            (Term::atom("version"), Term::from(2i64)),
            (
                Term::atom("upgraded_from"),
                Term::from(self.upgraded_from.unwrap_or(0)),
            ),
        ])
    }

    fn handoff(&mut self) -> Term {
        Term::map([
            (Term::atom("calls"), Term::from(self.calls)),
            (
                Term::atom("upgraded_from"),
                Term::from(self.upgraded_from.unwrap_or(0)),
            ),
        ])
    }
}

fn main() {
    if let Err(e) = upgrade() {
        eprintln!("rolling_upgrade: {e}");
        std::process::exit(1);
    }
}

/// One node of the example.
struct Member {
    rt: Runtime,
    _node: Node,
    cluster: Cluster,
}

fn start(name: &str, cookie: &str, kinds: Kinds, seeds: &[&str]) -> Step<Member> {
    let rt = Runtime::builder().build().map_err(|e| e.to_string())?;
    let mut config = NodeConfig::new(name, cookie);
    config.listen = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let handle = rt.handle().clone();
    let seeds: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
    let (node, cluster) = rt.block_on(async move {
        let node = Node::start_in_runtime(config, &handle)
            .await
            .map_err(|e| format!("cannot start {e}"))?;
        let cluster = Cluster::start(&handle, ClusterConfig::new(kinds).join(seeds))
            .await
            .map_err(|e| format!("cannot start the cluster server: {e}"))?;
        Ok::<_, String>((node, cluster))
    })?;
    Ok(Member {
        rt,
        _node: node,
        cluster,
    })
}

fn wait(what: &str, mut done: impl FnMut() -> bool) -> Step<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > STEP {
            return Err(format!("not within {STEP:?}: {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn field(reply: &Term, key: &str) -> i64 {
    reply
        .as_map()
        .and_then(|m| m.get_atom(key))
        .and_then(Term::as_int)
        .unwrap_or(-1)
}

fn upgrade() -> Step<()> {
    let cookie = format!("upgrade-{}", std::process::id());
    let (v1_name, v2_name) = ("v1@localhost", "v2@localhost");
    // A service name that v1 keeps when v2 joins, so it moves on the stop.
    let members = [Atom::new(v1_name), Atom::new(v2_name)];
    let name = (0..)
        .map(|i| format!("orders{i}"))
        .find(|n| placement::owner(n, &members).is_some_and(|o| o.as_str() == v1_name))
        .ok_or("no name")?;

    let mut kinds = Kinds::new();
    kinds.register("counter", Counter);
    let v1 = start(v1_name, &cookie, kinds, &[])?;
    let cluster = v1.cluster.clone();
    let n = name.clone();
    let calls = v1.rt.block_on(async move {
        cluster
            .start_service(&n, "counter", Term::nil())
            .await
            .map_err(|e| format!("start_service: {e}"))?;
        let mut last = Term::nil();
        for _ in 0..5 {
            last = cluster
                .call(&n, Term::atom("call"), STEP)
                .await
                .map_err(|e| format!("call: {e}"))?;
        }
        Ok::<_, String>(field(&last, "calls"))
    })?;
    println!("{name} runs counter version 1 on {v1_name}: {calls} calls answered");

    let mut kinds = Kinds::new();
    kinds.register("counter", CounterV2);
    let v2 = start(v2_name, &cookie, kinds, &[v1_name])?;
    wait("v2 sees the service on v1", || {
        v2.cluster
            .whereis(&name)
            .is_some_and(|p| p.node.as_str() == v1_name)
    })?;
    println!("{v2_name} joined, running counter version 2");

    // The client, calling through v2 until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, answered) = (stop.clone(), answered.clone());
        let (cluster, handle, name) = (v2.cluster.clone(), v2.rt.handle().clone(), name.clone());
        std::thread::spawn(move || {
            let (tx, rx) = std::sync::mpsc::channel();
            handle.spawn(async move {
                let (mut retries, mut last) = (0usize, -1i64);
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match cluster.call(&name, Term::atom("call"), STEP).await {
                        Ok(reply) => {
                            let calls = field(&reply, "calls");
                            if calls <= last {
                                errors.push(format!("count went from {last} to {calls}"));
                            }
                            last = calls;
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(ServiceError::Moving) => {
                            retries += 1;
                            ember_runtime::sleep(Duration::from_millis(10)).await;
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                let _ = tx.send((answered.load(Ordering::Relaxed), retries, errors));
            });
            rx.recv_timeout(STEP * 3)
                .map_err(|_| "the client did not finish".to_string())
        })
    };
    wait("the client's first answers", || {
        answered.load(Ordering::Relaxed) >= 10
    })?;

    println!("stopping {v1_name} gracefully");
    let cluster = v1.cluster.clone();
    v1.rt.block_on(async move { cluster.stop().await });
    wait("the service moves to v2", || {
        v2.cluster
            .whereis(&name)
            .is_some_and(|p| p.node.as_str() == v2_name)
    })?;
    let before = answered.load(Ordering::Relaxed);
    wait("the client's answers from v2", || {
        answered.load(Ordering::Relaxed) >= before + 10
    })?;
    stop.store(true, Ordering::Relaxed);
    let (answers, retries, errors) = client
        .join()
        .map_err(|_| "the client panicked".to_string())??;
    let cluster = v2.cluster.clone();
    let n = name.clone();
    let reply = v2.rt.block_on(async move {
        cluster
            .call(&n, Term::atom("call"), STEP)
            .await
            .map_err(|e| format!("call: {e}"))
    })?;
    let (calls, version, from) = (
        field(&reply, "calls"),
        field(&reply, "version"),
        field(&reply, "upgraded_from"),
    );
    println!(
        "{name} now on {v2_name}: version {version}, {calls} calls, state migrated from version {from}"
    );
    println!(
        "client: {answers} answers, {retries} retryable (moving), {} errors",
        errors.len()
    );
    if !errors.is_empty() {
        return Err(format!("the client saw errors: {errors:?}"));
    }
    let expected = 5 + answers as i64 + 1;
    if version != 2 || from != 1 || calls != expected {
        return Err(format!(
            "expected version 2 migrated from 1 with {expected} calls, got {reply}"
        ));
    }
    drop(v1);
    println!("rolling upgrade done");
    Ok(())
}
