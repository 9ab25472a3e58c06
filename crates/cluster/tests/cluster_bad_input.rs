//! Malformed messages to a node's cluster server and `pg` scope are
//! dropped: the node keeps serving names and groups.

mod support;

use ember_cluster::PgScope;
use ember_runtime::{dist, receive, spawn};
use ember_term::Term;
use ember_testkit::{free_port, random_cookie, unique};
use support::{eventually, TestNode};

#[test]
fn garbage_from_a_peer_is_dropped_and_the_node_carries_on() {
    let port = free_port();
    let cookie = random_cookie();
    let a = TestNode::start(&unique("a"), &cookie, port, &[]);
    let b = TestNode::start(&unique("b"), &cookie, port, &[&a.name]);
    let sa = PgScope::start(a.rt.handle(), "pg").unwrap();
    let sb = PgScope::start(b.rt.handle(), "pg").unwrap();
    eventually("two members", || a.cluster.members().len() == 2);
    let target = b.name.clone();
    a.rt.block_on(async move {
        let me = dist::pid_to_term(ember_runtime::self_pid());
        let tag = |items: Vec<Term>| {
            let mut v = vec![Term::atom("ember_cluster")];
            v.extend(items);
            Term::tuple(v)
        };
        let garbage = [
            Term::atom("hello"),
            Term::tuple([]),
            tag(vec![]),
            tag(vec![Term::atom("sync")]),
            tag(vec![
                Term::atom("sync"),
                Term::from(1),
                Term::from(2),
                Term::from(3),
                Term::from(4),
                Term::from(5),
            ]),
            tag(vec![
                Term::atom("sync"),
                Term::atom("x@y"),
                Term::list([Term::from(1)]),
                Term::list([Term::tuple([Term::from("n"), Term::atom("notapid")])]),
                Term::nil(),
                Term::nil(),
            ]),
            // Well formed, but naming a node that is not connected.
            tag(vec![
                Term::atom("sync"),
                Term::atom("ghost@nowhere"),
                Term::nil(),
                Term::nil(),
                Term::nil(),
                Term::nil(),
            ]),
            tag(vec![
                Term::atom("reg"),
                Term::from(""),
                Term::atom("notapid"),
                Term::from(1),
                Term::from(0),
            ]),
            tag(vec![Term::atom("unreg"), Term::from(7), me.clone()]),
            tag(vec![
                Term::atom("takeover"),
                Term::from("nope"),
                Term::from(-1),
                Term::nil(),
                me.clone(),
                Term::from(0),
                Term::from(0),
            ]),
            tag(vec![
                Term::atom("spec"),
                Term::from("s"),
                Term::from("no_such_kind"),
                Term::nil(),
                Term::from(1),
                Term::atom("maybe"),
            ]),
            tag(vec![
                Term::atom("ping"),
                Term::atom("notapid"),
                Term::atom("x"),
            ]),
            tag(vec![Term::atom("members"), Term::from(3)]),
        ];
        for g in garbage {
            dist::send_named("ember_cluster", &target, g);
        }
        let pg_garbage = [
            Term::atom("hello"),
            Term::tuple([Term::atom("discover"), Term::atom("notapid")]),
            Term::tuple([
                Term::atom("$gen_cast"),
                Term::tuple([Term::atom("sync"), me.clone(), Term::from(3)]),
            ]),
            Term::tuple([
                Term::atom("join"),
                me.clone(),
                Term::atom("g"),
                Term::from(1),
            ]),
            Term::tuple([Term::atom("leave"), me.clone(), me.clone(), Term::from(1)]),
        ];
        for g in pg_garbage {
            dist::send_named("pg", &target, g);
        }
    });
    // b still serves: a name registered on a reaches it, a group member of
    // b reaches a.
    let cluster = a.cluster.clone();
    a.rt.block_on(async move {
        let p = spawn(async {
            receive::<Term>().await;
        });
        cluster.register("after_garbage", p).await.unwrap();
    });
    eventually("b sees the name", || {
        b.cluster.whereis("after_garbage").is_some()
    });
    let member = b.rt.block_on(async {
        spawn(async {
            receive::<Term>().await;
        })
    });
    sb.join(Term::atom("g"), member);
    eventually("a sees b's member", || {
        sa.members(&Term::atom("g")).len() == 1
    });
    assert_eq!(b.cluster.members().len(), 2, "{:?}", b.cluster.members());
}
