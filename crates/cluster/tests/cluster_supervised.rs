//! The cluster server under a supervisor (`Cluster::child_spec`): killed,
//! it is restarted and takes over from its predecessor. Service
//! instances keep running with their state, registrations and members
//! are kept, and peers' changes reach the new server.

mod support;

use std::time::Duration;

use ember_cluster::{placement, Cluster, ClusterConfig, ServiceError};
use ember_dist::{Node, NodeConfig};
use ember_otp::gen::StartOptions;
use ember_otp::supervisor::{Flags, SupervisorRef, SupervisorSpec};
use ember_runtime::{receive, trap_exit, ExitReason, Pid, Runtime, Spawn};
use ember_term::{Atom, Term};
use ember_testkit::{free_port, random_cookie, unique};
use support::{eventually, kinds};

const CALL: Duration = Duration::from_secs(5);

/// A node whose cluster server runs under a supervisor, itself linked to
/// a host process that lives as long as the runtime.
struct Supervised {
    rt: Runtime,
    _node: Node,
    name: String,
    cluster: Cluster,
}

fn start(alive: &str, cookie: &str, epmd_port: u16, seeds: &[&str]) -> Supervised {
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    let name = format!("{alive}@localhost");
    let mut config = NodeConfig::new(&name, cookie);
    config.epmd_port = epmd_port;
    config.listen = "127.0.0.1:0".parse().unwrap();
    let handle = rt.handle().clone();
    let node = rt
        .block_on(async move { Node::start_in_runtime(config, &handle).await })
        .expect("start the node");
    let seeds: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = rt.handle().clone();
    rt.handle()
        .spawn_with(Spawn::new().label("supervisor host"), async move {
            trap_exit(true);
            let (cluster, spec) =
                Cluster::child_spec(&handle, ClusterConfig::new(kinds()).join(seeds));
            let flags = Flags::new().intensity(5).period(Duration::from_secs(10));
            SupervisorSpec::new(flags, vec![spec])
                .unwrap()
                .start_link_with(StartOptions::new().name("ember_cluster_sup"))
                .await
                .expect("start the cluster supervisor");
            tx.send(cluster).unwrap();
            loop {
                receive::<()>().await;
            }
        })
        .unwrap();
    let cluster = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the cluster starts");
    Supervised {
        rt,
        _node: node,
        name,
        cluster,
    }
}

/// Calls service `name` from `from`: the node that answered and its count.
fn call(from: &Supervised, name: &str) -> Result<(String, i64), ServiceError> {
    let cluster = from.cluster.clone();
    let name = name.to_owned();
    from.rt.block_on(async move {
        let reply = cluster.call(&name, Term::atom("hi"), CALL).await?;
        let map = reply.as_map().expect("a map");
        let node = map
            .get_atom("node")
            .and_then(Term::as_str)
            .unwrap()
            .to_owned();
        let calls = map.get_atom("calls").and_then(Term::as_int).unwrap();
        Ok((node, calls))
    })
}

fn call_eventually(from: &Supervised, name: &str) -> (String, i64) {
    let mut answer = None;
    eventually(&format!("{name} answers on {}", from.name), || {
        match call(from, name) {
            Ok(a) => {
                answer = Some(a);
                true
            }
            Err(ServiceError::Moving) | Err(ServiceError::Stopping) => false,
            Err(e) => panic!("calling {name}: {e}"),
        }
    });
    answer.unwrap()
}

/// A process of `node` that waits forever.
fn idler(node: &Supervised) -> Pid {
    node.rt.handle().spawn(async {
        receive::<u64>().await;
    })
}

fn register(node: &Supervised, name: &str, pid: Pid) {
    let cluster = node.cluster.clone();
    let name = name.to_owned();
    node.rt
        .block_on(async move { cluster.register(&name, pid).await })
        .expect("register");
}

/// Kills `node`'s cluster server and waits for its successor.
fn kill_server(node: &Supervised) -> Pid {
    let old = node.cluster.server().expect("a server");
    node.rt.handle().exit(old, ExitReason::Kill);
    eventually(&format!("a new cluster server on {}", node.name), || {
        node.cluster
            .server()
            .is_some_and(|p| p != old && node.rt.handle().is_alive(p))
    });
    let new = node.cluster.server().unwrap();
    assert_eq!(node.rt.handle().whereis("ember_cluster"), Some(new));
    assert!(!node.rt.handle().is_alive(old));
    new
}

#[test]
fn a_killed_cluster_server_is_restarted_and_takes_over() {
    let port = free_port();
    let cookie = random_cookie();
    let a = start(&unique("sup_a"), &cookie, port, &[]);
    let seed = a.name.clone();
    let b = start(&unique("sup_b"), &cookie, port, &[&seed]);
    eventually("two members on both", || {
        a.cluster.members().len() == 2 && b.cluster.members().len() == 2
    });

    // A service, and the node that runs it (X); the other is Y.
    let cluster = a.cluster.clone();
    a.rt.block_on(async move { cluster.start_service("svc", "counter", Term::nil()).await })
        .expect("start svc");
    let atoms = [Atom::new(&a.name), Atom::new(&b.name)];
    let owner = placement::owner("svc", &atoms).unwrap().as_str().to_owned();
    let (x, y) = if owner == a.name { (&a, &b) } else { (&b, &a) };
    eventually("Y learns of svc", || y.cluster.has_service("svc"));
    let (node, calls) = call_eventually(y, "svc");
    assert_eq!(node, x.name);
    assert_eq!(calls, 1);

    // A plain name of X's and a group member of X's, seen on Y.
    let keeper = idler(x);
    register(x, "keeper", keeper);
    let member = idler(x);
    x.cluster.join("workers", member);
    eventually("Y sees X's name and group member", || {
        y.cluster.whereis("keeper").is_some() && y.cluster.members_of("workers").len() == 1
    });
    let keeper_term = y.cluster.whereis("keeper").unwrap();
    let instance = x.cluster.whereis("svc").expect("svc is registered");

    kill_server(x);

    // The members, the registrations and the instance are the same, on
    // both nodes; the instance kept its state (it was not restarted).
    eventually("two members on both again", || {
        x.cluster.members().len() == 2 && y.cluster.members().len() == 2
    });
    assert_eq!(x.cluster.running_here(), vec!["svc".to_string()]);
    assert_eq!(x.cluster.whereis("svc"), Some(instance.clone()));
    assert_eq!(x.cluster.whereis("keeper"), Some(keeper_term.clone()));
    assert_eq!(call_eventually(x, "svc"), (x.name.clone(), 2));
    assert_eq!(call_eventually(y, "svc"), (x.name.clone(), 3));
    assert_eq!(y.cluster.whereis("svc"), Some(instance));
    assert_eq!(y.cluster.whereis("keeper"), Some(keeper_term));

    // The new server monitors what the old one did: the member leaves
    // the group when it exits, everywhere.
    x.rt.handle().exit(member, ExitReason::Kill);
    eventually("the dead member left the group on both", || {
        x.cluster.members_of("workers").is_empty() && y.cluster.members_of("workers").is_empty()
    });

    // Changes flow both ways: a name registered on each node after the
    // restart is seen on the other, and a new service runs.
    let later_x = idler(x);
    register(x, "later_x", later_x);
    let later_y = idler(y);
    register(y, "later_y", later_y);
    eventually("names registered after the restart, on both", || {
        y.cluster.whereis("later_x").is_some() && x.cluster.whereis("later_y").is_some()
    });
    let cluster = y.cluster.clone();
    y.rt.block_on(async move { cluster.start_service("svc2", "counter", Term::nil()).await })
        .expect("start svc2");
    eventually("X learns of svc2", || x.cluster.has_service("svc2"));
    assert_eq!(call_eventually(x, "svc2").1, 1);
    assert_eq!(call_eventually(y, "svc2").1, 2);
    // Exactly one instance of each, cluster-wide.
    for name in ["svc", "svc2"] {
        let running = [&a, &b]
            .iter()
            .filter(|n| n.cluster.running_here().iter().any(|r| r == name))
            .count();
        assert_eq!(running, 1, "{name}");
    }
}

#[test]
fn a_lone_node_keeps_its_services_across_a_restart_of_its_server() {
    let port = free_port();
    let cookie = random_cookie();
    let solo = start(&unique("sup_solo"), &cookie, port, &[]);
    let cluster = solo.cluster.clone();
    solo.rt
        .block_on(async move { cluster.start_service("solo", "counter", Term::nil()).await })
        .expect("start solo");
    assert_eq!(call_eventually(&solo, "solo").1, 1);

    kill_server(&solo);
    // Nobody to ask for the specs: they come from what the node kept.
    assert!(solo.cluster.has_service("solo"));
    assert_eq!(call_eventually(&solo, "solo").1, 2);
    let cluster = solo.cluster.clone();
    let (exists, deleted) = solo.rt.block_on(async move {
        let exists = cluster.start_service("solo", "counter", Term::nil()).await;
        let deleted = cluster.delete_service("solo").await;
        (exists, deleted)
    });
    assert_eq!(exists.err(), Some(ServiceError::Exists));
    assert!(deleted);
    eventually("the deleted service stops", || {
        solo.cluster.running_here().is_empty() && solo.cluster.whereis("solo").is_none()
    });

    // Killed again (the supervisor allows 5 restarts in 10 s).
    kill_server(&solo);
    assert!(!solo.cluster.has_service("solo"));
    assert_eq!(call(&solo, "solo").err(), Some(ServiceError::NotFound));
}

#[test]
fn what_changed_while_no_server_ran_is_made_up_after_the_restart() {
    let port = free_port();
    let cookie = random_cookie();
    let a = start(&unique("gap_a"), &cookie, port, &[]);
    let seed = a.name.clone();
    let b = start(&unique("gap_b"), &cookie, port, &[&seed]);
    eventually("two members on both", || {
        a.cluster.members().len() == 2 && b.cluster.members().len() == 2
    });
    let a_gone = idler(&a);
    register(&a, "a_gone", a_gone);
    register(&b, "b_old", idler(&b));
    eventually("both names on both nodes", || {
        [&a, &b]
            .iter()
            .all(|n| n.cluster.whereis("a_gone").is_some() && n.cluster.whereis("b_old").is_some())
    });
    // A process of A's that tells this thread what it gets.
    let (seen, probe) = std::sync::mpsc::channel();
    a.rt.handle()
        .spawn_with(Spawn::new().name("probe"), async move {
            loop {
                let _ = seen.send(receive::<Term>().await);
            }
        })
        .unwrap();

    // A's server stops (its supervisor keeps it stopped) ...
    let sup = || SupervisorRef::from_name("ember_cluster_sup");
    a.rt.block_on(async move { sup().terminate_child("ember_cluster").await })
        .expect("terminate the server");
    assert!(a.rt.handle().whereis("ember_cluster").is_none());
    // ... and meanwhile a process of A's registered name dies, B drops a
    // name and registers another: nobody on A hears of it.
    a.rt.handle().exit(a_gone, ExitReason::Kill);
    let cluster = b.cluster.clone();
    let later = idler(&b);
    let a_name = a.name.clone();
    b.rt.block_on(async move {
        assert!(cluster.unregister("b_old").await);
        cluster
            .register("b_new", later)
            .await
            .expect("register b_new");
        // Everything B's node sent A before this has arrived (one
        // ordered connection), and was dropped: no server to read it.
        ember_runtime::dist::send_named("probe", &a_name, Term::atom("after"));
    });
    assert!(probe
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .is_atom("after"));
    assert!(
        a.cluster.whereis("b_old").is_some(),
        "A is stale, as expected"
    );
    assert!(
        a.cluster.whereis("b_new").is_none(),
        "A is stale, as expected"
    );
    assert!(
        b.cluster.whereis("a_gone").is_some(),
        "B is stale, as expected"
    );

    // The restarted server makes it all up.
    a.rt.block_on(async move { sup().restart_child("ember_cluster").await })
        .expect("restart the server");
    eventually("A and B agree again", || {
        a.cluster.whereis("b_old").is_none()
            && a.cluster.whereis("b_new").is_some()
            && b.cluster.whereis("a_gone").is_none()
    });
    eventually("two members on both", || {
        a.cluster.members().len() == 2 && b.cluster.members().len() == 2
    });
}
