//! `pg` scopes: Ember and a real `erl` (`-kernel start_pg true`) see each
//! other's group members join and leave, Ember nodes see each other's, and
//! erl's scope process survives all of it.

mod support;

use ember_cluster::PgScope;
use ember_runtime::{receive, spawn, Pid};
use ember_term::Term;
use ember_testkit::{erl_required, free_port, random_cookie, start_erl, unique};
use support::{eventually, TestNode};

fn member(node: &TestNode) -> Pid {
    node.rt.block_on(async {
        spawn(async {
            receive::<Term>().await;
        })
    })
}

#[test]
fn ember_and_erl_share_a_pg_group() {
    if !erl_required() {
        return;
    }
    let port = free_port();
    let cookie = random_cookie();
    let e = TestNode::start(&unique("e"), &cookie, port, &[]);
    let scope = PgScope::start(e.rt.handle(), "pg").unwrap();
    let mine = member(&e);
    scope.join(Term::atom("g"), mine);
    let mut erl = start_erl(
        &unique("erl"),
        &cookie,
        port,
        &["-kernel", "start_pg", "true"],
    );
    let erl_scope = erl.eval("whereis(pg).");
    assert_eq!(erl.eval(&format!("net_adm:ping('{}').", e.name)), "pong");
    eventually("erl sees the Ember member", || {
        erl.eval("length(pg:get_members(g)).") == "1"
    });
    let ours = erl.eval("hd(pg:get_members(g)).");
    assert!(ours.contains('<'), "{ours}");
    // An erl process joins twice; Ember sees both memberships.
    assert_eq!(
        erl.eval(
            "begin P = spawn(fun() -> pg:join(g, self()), pg:join(g, [self()]), \
             receive stop -> ok end end), register(member, P), ok end."
        ),
        "ok"
    );
    eventually("Ember sees the erl member", || {
        scope.members(&Term::atom("g")).len() == 3
    });
    assert_eq!(scope.local_members(&Term::atom("g")).len(), 1);
    // It stops: gone on Ember.
    assert_eq!(erl.eval("begin member ! stop, ok end."), "ok");
    eventually("the erl member left", || {
        scope.members(&Term::atom("g")).len() == 1
    });
    // The Ember member leaves, joins again, then exits.
    scope.leave(Term::atom("g"), mine);
    eventually("erl sees the leave", || {
        erl.eval("length(pg:get_members(g)).") == "0"
    });
    scope.join(Term::atom("g"), mine);
    eventually("erl sees the join", || {
        erl.eval("length(pg:get_members(g)).") == "1"
    });
    e.rt.handle().send(mine, Term::atom("stop"));
    eventually("erl sees the exit", || {
        erl.eval("length(pg:get_members(g)).") == "0"
    });
    // Ember's node goes: nothing left behind, and erl's scope never restarted.
    scope.join(Term::atom("h"), member(&e));
    eventually("erl sees h", || {
        erl.eval("length(pg:get_members(h)).") == "1"
    });
    e.node.stop();
    eventually("erl dropped Ember's members", || {
        erl.eval("length(pg:get_members(h)).") == "0"
    });
    assert_eq!(
        erl.eval("whereis(pg)."),
        erl_scope,
        "erl's pg scope restarted"
    );
    assert!(erl.alive());
}

#[test]
fn two_ember_nodes_share_a_pg_group() {
    let port = free_port();
    let cookie = random_cookie();
    let a = TestNode::start(&unique("a"), &cookie, port, &[]);
    let b = TestNode::start(&unique("b"), &cookie, port, &[&a.name]);
    let sa = PgScope::start(a.rt.handle(), "pg").unwrap();
    let sb = PgScope::start(b.rt.handle(), "pg").unwrap();
    let g = Term::tuple([Term::atom("workers"), Term::from(1)]);
    let pa = member(&a);
    let pb = member(&b);
    sa.join(g.clone(), pa);
    sb.join(g.clone(), pb);
    sb.join(g.clone(), pb);
    eventually("three memberships on both", || {
        sa.members(&g).len() == 3 && sb.members(&g).len() == 3
    });
    b.rt.handle().send(pb, Term::atom("stop"));
    eventually("b's member gone from a", || sa.members(&g).len() == 1);
    assert_eq!(sb.members(&g).len(), 1);
}
