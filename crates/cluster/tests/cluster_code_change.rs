//! A service handed over between two builds of its kind: the new
//! instance's init receives the state migrated by `code_change`.

mod support;

use std::time::Duration;

use ember_cluster::{placement, Counter, Kinds, Service, ServiceKind};
use ember_term::{Atom, Term};
use ember_testkit::{free_port, random_cookie, unique};
use support::{eventually, TestNode};

/// Version 2 of the counter: its state is `{calls, N}` instead of `N`.
struct CounterV2;

struct V2 {
    calls: i64,
    migrated: String,
}

impl ServiceKind for CounterV2 {
    fn version(&self) -> u32 {
        2
    }

    fn init(
        &self,
        _name: &str,
        _node: &str,
        _args: &Term,
        handed: Option<Term>,
    ) -> Box<dyn Service> {
        let (calls, migrated) = match handed.as_ref().and_then(Term::as_tuple) {
            Some([tag, n, from]) if tag.is_atom("calls") => {
                (n.as_int().unwrap_or(-1), format!("from version {from}"))
            }
            _ => (0, format!("fresh ({handed:?})")),
        };
        Box::new(V2 { calls, migrated })
    }

    fn code_change(&self, old_version: u32, state: Term) -> Term {
        Term::tuple([Term::atom("calls"), state, Term::from(old_version)])
    }
}

impl Service for V2 {
    fn handle_call(&mut self, _request: Term) -> Term {
        self.calls += 1;
        Term::tuple([Term::from(self.calls), Term::from(self.migrated.as_str())])
    }

    fn handoff(&mut self) -> Term {
        Term::tuple([
            Term::atom("calls"),
            Term::from(self.calls),
            Term::from(2u32),
        ])
    }
}

#[test]
fn a_handoff_to_a_newer_version_migrates_the_state() {
    let port = free_port();
    let cookie = random_cookie();
    let mut v1 = Kinds::new();
    v1.register("counter", Counter);
    let mut v2 = Kinds::new();
    v2.register("counter", CounterV2);
    let old = TestNode::start_with(&unique("old"), &cookie, port, &[], v1);
    let new = TestNode::start_with(&unique("new"), &cookie, port, &[&old.name], v2);
    eventually("two members", || {
        old.cluster.members().len() == 2 && new.cluster.members().len() == 2
    });
    let members = [Atom::new(&old.name), Atom::new(&new.name)];
    let name = (0..)
        .map(|i| format!("m{i}"))
        .find(|n| placement::owner(n, &members).unwrap().as_str() == old.name)
        .unwrap();
    let cluster = old.cluster.clone();
    let n = name.clone();
    let calls = old.rt.block_on(async move {
        cluster
            .start_service(&n, "counter", Term::nil())
            .await
            .unwrap();
        let mut last = Term::nil();
        for _ in 0..3 {
            last = cluster
                .call(&n, Term::atom("hi"), Duration::from_secs(5))
                .await
                .unwrap();
        }
        last
    });
    assert_eq!(
        calls.as_map().and_then(|m| m.get_atom("calls")),
        Some(&Term::from(3))
    );
    let cluster = old.cluster.clone();
    old.rt.block_on(async move { cluster.stop().await });
    eventually("moved to the new node", || {
        new.cluster
            .whereis(&name)
            .is_some_and(|p| p.node.as_str() == new.name)
    });
    let cluster = new.cluster.clone();
    let reply = new.rt.block_on(async move {
        cluster
            .call(&name, Term::atom("hi"), Duration::from_secs(5))
            .await
            .unwrap()
    });
    assert_eq!(
        reply,
        Term::tuple([Term::from(4), Term::from("from version 1")]),
        "the v1 count migrated by code_change"
    );
}
