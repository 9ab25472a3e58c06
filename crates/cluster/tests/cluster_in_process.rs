//! Three cluster nodes in one test process: the registry and groups seen
//! from every node, service placement, graceful handoff, and a net split
//! that heals to the documented winner.

mod support;

use std::time::Duration;

use ember_cluster::{placement, RegisterError, ServiceError};
use ember_runtime::{receive, spawn};
use ember_term::{Atom, Term};
use ember_testkit::{free_port, random_cookie, unique};
use support::{eventually, kinds, BareNode, TestNode};

const CALL: Duration = Duration::from_secs(5);

fn three_nodes() -> [TestNode; 3] {
    let port = free_port();
    let cookie = random_cookie();
    let a = TestNode::start(&unique("a"), &cookie, port, &[]);
    let seed = a.name.clone();
    let b = TestNode::start(&unique("b"), &cookie, port, &[&seed]);
    let c = TestNode::start(&unique("c"), &cookie, port, &[&seed]);
    let nodes = [a, b, c];
    eventually("three members everywhere", || {
        nodes.iter().all(|n| n.cluster.members().len() == 3)
    });
    nodes
}

/// Calls service `name` from a process of `from`; the reply map's
/// `node` and `calls`.
fn call(from: &TestNode, name: &str) -> Result<(String, i64), ServiceError> {
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
        let text = map.get_atom("reply").and_then(Term::as_str).unwrap();
        assert_eq!(text, format!("response from {name} on {node}"));
        Ok((node, calls))
    })
}

/// Calls until the service answers (it may be moving).
fn call_eventually(from: &TestNode, name: &str) -> (String, i64) {
    let mut answer = None;
    eventually(&format!("{name} answers on {}", from.name), || {
        match call(from, name) {
            Ok(a) => {
                answer = Some(a);
                true
            }
            Err(ServiceError::Moving) => false,
            Err(e) => panic!("calling {name}: {e}"),
        }
    });
    answer.unwrap()
}

fn owner(name: &str, members: &[&TestNode]) -> String {
    let atoms: Vec<Atom> = members.iter().map(|n| Atom::new(&n.name)).collect();
    placement::owner(name, &atoms).unwrap().as_str().to_owned()
}

/// How many of `nodes` run an instance of `name`.
fn instances(nodes: &[&TestNode], name: &str) -> usize {
    nodes
        .iter()
        .filter(|n| n.cluster.running_here().iter().any(|r| r == name))
        .count()
}

/// One registration, the same on every node given.
fn converged(nodes: &[&TestNode], name: &str) -> bool {
    let first = nodes[0].cluster.whereis(name);
    first.is_some() && nodes.iter().all(|n| n.cluster.whereis(name) == first)
}

#[test]
fn names_and_groups_are_seen_from_every_node_and_go_with_their_process() {
    let [a, b, c] = three_nodes();
    let cluster = b.cluster.clone();
    let (pid, term_pid) = b.rt.block_on(async move {
        let pid = spawn(async {
            receive::<Term>().await;
        });
        cluster.register("the_name", pid).await.unwrap();
        (pid, ember_runtime::dist::pid_to_term(pid))
    });
    for n in [&a, &b, &c] {
        eventually(&format!("the_name on {}", n.name), || {
            n.cluster.whereis("the_name").map(Term::Pid) == Some(term_pid.clone())
        });
    }
    // Taken, from another node.
    let cluster = c.cluster.clone();
    let taken = c.rt.block_on(async move {
        let other = spawn(async {
            receive::<Term>().await;
        });
        cluster.register("the_name", other).await
    });
    assert!(matches!(taken, Err(RegisterError::Taken(_))), "{taken:?}");
    // Groups: members on two nodes, seen from the third.
    for n in [&a, &c] {
        let cluster = n.cluster.clone();
        n.rt.block_on(async move {
            let member = spawn(async {
                receive::<Term>().await;
            });
            cluster.join("workers", member);
        });
    }
    eventually("two workers seen from b", || {
        b.cluster.members_of("workers").len() == 2
    });
    // The process exits: its name goes everywhere.
    b.rt.handle().send(pid, Term::atom("stop"));
    for n in [&a, &b, &c] {
        eventually(&format!("the_name gone on {}", n.name), || {
            n.cluster.whereis("the_name").is_none()
        });
    }
    // A local lookup is a table read.
    let started = std::time::Instant::now();
    for _ in 0..100_000 {
        std::hint::black_box(a.cluster.whereis("the_name"));
    }
    let per = started.elapsed() / 100_000;
    eprintln!("whereis: {per:?} per lookup");
}

#[test]
fn services_run_on_their_owner_and_a_graceful_stop_hands_their_state_over() {
    let [a, b, c] = three_nodes();
    let all = [&a, &b, &c];
    // Six names, at least two of them owned by c.
    let mut names: Vec<String> = Vec::new();
    for i in 0.. {
        let n = format!("svc{i}");
        let on_c = names.iter().filter(|n| owner(n, &all) == c.name).count();
        if names.len() >= 6 && on_c >= 2 {
            break;
        }
        if names.len() < 4 || owner(&n, &all) == c.name {
            names.push(n);
        }
    }
    let cluster = a.cluster.clone();
    let started = names.clone();
    a.rt.block_on(async move {
        for n in &started {
            cluster
                .start_service(n, "counter", Term::nil())
                .await
                .unwrap();
        }
        assert_eq!(
            cluster.start_service("svc0", "counter", Term::nil()).await,
            Err(ServiceError::Exists)
        );
        assert!(matches!(
            cluster.start_service("x", "nope", Term::nil()).await,
            Err(ServiceError::UnknownKind(_))
        ));
    });
    for n in &names {
        eventually(&format!("{n} registered alike everywhere"), || {
            converged(&all, n)
        });
        let expected = owner(n, &all);
        let holder = a.cluster.whereis(n).unwrap().node;
        assert_eq!(holder.as_str(), expected, "{n} placed off its owner");
        for from in all {
            let (node, _) = call_eventually(from, n);
            assert_eq!(node, expected);
        }
    }
    for n in &names {
        eventually(&format!("{n} runs once"), || instances(&all, n) == 1);
    }
    // Listing is the same everywhere.
    let listing = |n: &TestNode| {
        n.cluster
            .services()
            .into_iter()
            .map(|s| format!("{} {} {:?}", s.name, s.node, s.pid))
            .collect::<Vec<_>>()
    };
    assert_eq!(listing(&a), listing(&b));
    assert_eq!(listing(&a), listing(&c));
    // c stops gracefully: its services move with their counts.
    let on_c: Vec<&String> = names.iter().filter(|n| owner(n, &all) == c.name).collect();
    assert!(!on_c.is_empty(), "no service placed on c; pick more names");
    let mut counts = Vec::new();
    for n in &on_c {
        let (_, calls) = call_eventually(&a, n);
        counts.push(calls);
    }
    let cluster = c.cluster.clone();
    c.rt.block_on(async move { cluster.stop().await });
    let rest = [&a, &b];
    for (n, calls) in on_c.iter().zip(counts) {
        eventually(&format!("{n} moved off c"), || {
            converged(&rest, n) && a.cluster.whereis(n).unwrap().node.as_str() != c.name
        });
        let (node, after) = call_eventually(&b, n);
        assert_eq!(node, owner(n, &rest));
        assert_eq!(instances(&all, n), 1, "{n} runs twice");
        assert_eq!(after, calls + 1, "{n} lost its state in the handoff");
    }
    // Deleting a service removes it everywhere.
    let cluster = a.cluster.clone();
    assert!(a
        .rt
        .block_on(async move { cluster.delete_service("svc0").await }));
    eventually("svc0 gone", || {
        rest.iter()
            .all(|n| n.cluster.whereis("svc0").is_none() && !n.cluster.has_service("svc0"))
    });
    assert_eq!(call(&b, "svc0"), Err(ServiceError::NotFound));
}

#[test]
fn a_healed_split_keeps_the_instance_from_before_the_split() {
    let [a, b, c] = three_nodes();
    let all = [&a, &b, &c];
    // A service that c owns.
    let name = (0..)
        .map(|i| format!("split{i}"))
        .find(|n| owner(n, &all) == c.name)
        .unwrap();
    let cluster = a.cluster.clone();
    let n2 = name.clone();
    a.rt.block_on(async move {
        cluster
            .start_service(&n2, "counter", Term::nil())
            .await
            .unwrap();
    });
    eventually("placed on c", || {
        converged(&all, &name) && a.cluster.whereis(&name).unwrap().node.as_str() == c.name
    });
    let original = c.cluster.registered();
    let (_, first) = call_eventually(&c, &name);
    assert_eq!(first, 1);
    // Cut c off.
    c.cluster.set_seeds(vec![]);
    assert!(c.node.disconnect(&a.name) | c.node.disconnect(&b.name));
    c.node.disconnect(&a.name);
    c.node.disconnect(&b.name);
    let majority = [&a, &b];
    eventually("the majority restarts the service", || {
        converged(&majority, &name) && a.cluster.whereis(&name).unwrap().node.as_str() != c.name
    });
    // Both sides serve it, with their own counts.
    for _ in 0..4 {
        call_eventually(&a, &name);
    }
    let (_, on_c) = call_eventually(&c, &name);
    assert_eq!(on_c, 2);
    assert_eq!(c.cluster.whereis(&name).unwrap().node.as_str(), c.name);
    // Heal.
    c.cluster.set_seeds(vec![a.name.clone()]);
    eventually("healed: one registration everywhere", || {
        all.iter().all(|n| n.cluster.members().len() == 3) && converged(&all, &name)
    });
    let winner = a.cluster.whereis(&name).unwrap();
    let before = original
        .iter()
        .find(|(n, _)| n == &name)
        .unwrap()
        .1
        .pid
        .clone();
    assert_eq!(winner, before, "the copy from before the split did not win");
    let (node, calls) = call_eventually(&b, &name);
    assert_eq!(node, c.name);
    assert_eq!(calls, 3, "the winner's state is the pre-split copy's");
    // No second instance lingers: one runs, every node agrees, for a while.
    eventually("one instance", || instances(&all, &name) == 1);
    for _ in 0..10 {
        assert!(converged(&all, &name));
        assert_eq!(instances(&all, &name), 1, "two live copies");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_seed_that_starts_later_is_joined_by_retrying() {
    let port = free_port();
    let cookie = random_cookie();
    let late = unique("late");
    let late_name = format!("{late}@localhost");
    // b starts first and keeps trying its seed.
    let b = TestNode::start(&unique("b"), &cookie, port, &[&late_name]);
    let a = TestNode::start(&late, &cookie, port, &[]);
    eventually("b joined the seed that came later", || {
        a.cluster.members().len() == 2 && b.cluster.members().len() == 2
    });
    assert_eq!(b.cluster.members(), a.cluster.members());
}

/// The seed's distribution is up before its cluster server: the joiner
/// connects and its `sync` to the seed's server is lost (no such name yet).
/// The seed's server, once started, syncs with the joiner, which answers
/// with its own `sync` again: both count two members.
#[test]
fn a_sync_lost_before_the_seeds_server_started_is_sent_again() {
    let port = free_port();
    let cookie = random_cookie();
    let seed = BareNode::start(&unique("seed"), &cookie, port);
    let joiner = TestNode::start(&unique("joiner"), &cookie, port, &[&seed.name]);
    let joiner_name = Atom::new(&joiner.name);
    eventually("the joiner connected to the seed's node", || {
        seed.node.nodes().contains(&joiner_name)
    });
    let seed = seed.join(&[], kinds());
    eventually("both count two members", || {
        seed.cluster.members().len() == 2 && joiner.cluster.members().len() == 2
    });
    assert_eq!(seed.cluster.members(), joiner.cluster.members());
}
