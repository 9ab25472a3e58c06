//! The embedded port mapper outlives the node that ran it: three `ember`
//! binaries register with the mapper the first one started (on a port of
//! their own, `ERL_EPMD_PORT`, so a host epmd on 4369 changes nothing);
//! that node is killed with SIGKILL; one of the two others binds the port,
//! both register with it, and a fourth binary started afterwards joins
//! them by name, as does an `erl -sname` node (`net_adm:ping`). Then the
//! new holder is killed too, and the two nodes left take over again.
//! Every wait has a deadline.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ember_testkit::{erl_required, free_port, random_cookie, start_erl, unique};
use support::{eventually, http, Ember};

/// The names registered with the port mapper on `port` (`NAMES_REQ`), or
/// `None` when nothing answers there.
fn mapper_names(port: u16) -> Option<BTreeSet<String>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(&[0, 1, 110]).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(raw.get(4..)?).into_owned();
    Some(
        text.lines()
            .filter_map(|l| {
                Some(
                    l.strip_prefix("name ")?
                        .split(" at port ")
                        .next()?
                        .to_string(),
                )
            })
            .collect(),
    )
}

/// The alive part of `node` (`alive@host`).
fn alive(node: &str) -> String {
    node.split('@').next().unwrap().to_string()
}

/// The nodes `e` is connected to (`GET /api/cluster`).
fn connected(e: &Ember) -> BTreeSet<String> {
    let r = http(e.addr, "GET", "/api/cluster", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["nodes"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the mapper on `port` lists exactly `nodes`.
fn registered_exactly(port: u16, nodes: &[&Ember]) {
    let want: BTreeSet<String> = nodes.iter().map(|e| alive(&e.node)).collect();
    eventually(&format!("the mapper lists {want:?}"), || {
        mapper_names(port).is_some_and(|n| n == want)
    });
}

#[test]
fn survivors_take_the_port_mapper_over_when_its_node_is_killed() {
    let port = free_port();
    let cookie = random_cookie();
    let a = Ember::start(&unique("a"), &cookie, port, None);
    let b = Ember::start(&unique("b"), &cookie, port, Some(&a.node));
    let c = Ember::start(&unique("c"), &cookie, port, Some(&a.node));
    registered_exactly(port, &[&a, &b, &c]);
    eventually("b and c connected", || connected(&b).contains(&c.node));
    // a runs the mapper (it started first): kill -9 it.
    assert!(mapper_holder(port, &a));
    drop(a);
    registered_exactly(port, &[&b, &c]);
    assert!(
        mapper_holder(port, &b) != mapper_holder(port, &c),
        "exactly one survivor holds the port"
    );
    // A node started now finds b and c by name through the new mapper.
    let d = Ember::start(&unique("d"), &cookie, port, Some(&b.node));
    registered_exactly(port, &[&b, &c, &d]);
    eventually("d connected to b and c", || {
        let on_d = connected(&d);
        on_d.contains(&b.node) && on_d.contains(&c.node)
    });
    if erl_required() {
        let mut erl = start_erl(&unique("erl"), &cookie, port, &[]);
        for e in [&b, &c, &d] {
            assert_eq!(erl.eval(&format!("net_adm:ping('{}').", e.node)), "pong");
        }
    }
    // Kill whichever of b and c took the port over: the two left take
    // over again, and b and c still reach each other by name.
    let (mut b, mut c) = (Some(b), Some(c));
    let holder = if mapper_holder(port, b.as_ref().unwrap()) {
        b.take()
    } else {
        c.take()
    };
    let holder = holder.unwrap();
    let holder_node = holder.node.clone();
    drop(holder);
    let left = b.or(c).unwrap();
    registered_exactly(port, &[&left, &d]);
    assert!(
        mapper_holder(port, &left) != mapper_holder(port, &d),
        "exactly one survivor holds the port"
    );
    let e = Ember::start(&unique("e"), &cookie, port, Some(&left.node));
    registered_exactly(port, &[&left, &d, &e]);
    eventually("e connected to both survivors", || {
        let on_e = connected(&e);
        on_e.contains(&left.node) && on_e.contains(&d.node) && !on_e.contains(&holder_node)
    });
}

/// Whether `e`'s process has the socket listening on `port` (Linux:
/// the listening socket's inode in `/proc/net/tcp` among its fds).
fn mapper_holder(port: u16, e: &Ember) -> bool {
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let want = format!(":{port:04X}");
    let inode = tcp
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A")
        .map(|f| f[9].to_string())
        .expect("a socket listens on the port");
    let link = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{}/fd", e.child.id()))
        .expect("the node's fds")
        .filter_map(Result::ok)
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == link))
}
