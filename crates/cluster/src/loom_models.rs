//! loom models of the replication protocol, with the real [`Table`] and
//! conflict rule and loom's types for the wires: each ordered connection
//! between two nodes is a FIFO (`Mutex<VecDeque>`), and every node is a
//! model thread applying what it reads, so loom explores every order in
//! which a node reads its several connections. Checked in every
//! interleaving:
//!
//! * a handoff (the leaving node sends `takeover` to the new owner and
//!   `unreg` to a third node; the owner registers the successor and sends
//!   `reg` to the third node) leaves every replica with the successor;
//! * two nodes registering one name at once (each broadcasting to the
//!   other and to a third node) converge on the same winner everywhere,
//!   and exactly the losing node finds out it lost;
//! * a node that restarts a service after its old node died, and whose
//!   registration reaches a third node before that node sees the death,
//!   still ends up holding the name there.
//!
//! ```text
//! cargo test -p ember-cluster --lib --release --features loom-models \
//!     -- loom_models --test-threads=1
//! ```

use std::collections::VecDeque;

use ember_term::{Atom, Pid as TermPid};
use loom::sync::{Arc, Mutex};
use loom::thread;

use crate::table::{Entry, Inserted, Table};

#[derive(Clone, Debug)]
enum Msg {
    Reg(Entry),
    NodeDown(Atom),
    Unreg(TermPid),
    Takeover(Entry),
}

type Wire = Arc<Mutex<VecDeque<Msg>>>;

fn wire() -> Wire {
    Arc::new(Mutex::new(VecDeque::new()))
}

fn entry(node: &str, id: u32, stamp: i64, generation: i64) -> Entry {
    Entry {
        pid: TermPid {
            node: Atom::new(node),
            id,
            serial: 0,
            creation: 1,
        },
        stamp,
        generation,
    }
}

/// Reads `count` messages from `wires` in whatever order they come.
fn read(wires: &[Wire], count: usize, mut apply: impl FnMut(Msg)) {
    let mut got = 0;
    while got < count {
        let mut any = false;
        for w in wires {
            if let Some(m) = w.lock().unwrap().pop_front() {
                apply(m);
                got += 1;
                any = true;
            }
        }
        if !any {
            thread::yield_now();
        }
    }
}

/// What a replica does with a peer's message; true if a local entry lost.
fn apply(table: &Table, me: &str, m: Msg) -> bool {
    match m {
        Msg::Reg(e) => match table.insert("x", e) {
            Inserted::Conflict { loser, .. } => loser.pid.node.as_str() == me,
            Inserted::Fresh => false,
        },
        Msg::Unreg(pid) => {
            table.remove("x", &pid);
            false
        }
        Msg::NodeDown(node) => {
            table.drop_node(&node);
            false
        }
        Msg::Takeover(_) => unreachable!("only the owner reads takeovers"),
    }
}

#[test]
fn loom_models_a_handoff_leaves_every_replica_with_the_successor() {
    loom::model(|| {
        let old = entry("l@h", 1, 100, 0);
        let (l_o, l_t, o_t) = (wire(), wire(), wire());
        let leaving = {
            let (l_o, l_t, old) = (l_o.clone(), l_t.clone(), old.clone());
            thread::spawn(move || {
                l_o.lock().unwrap().push_back(Msg::Takeover(old.clone()));
                l_t.lock().unwrap().push_back(Msg::Unreg(old.pid));
            })
        };
        let owner = {
            let (l_o, o_t, old) = (l_o.clone(), o_t.clone(), old.clone());
            thread::spawn(move || {
                let table = Table::default();
                table.insert("x", old);
                read(&[l_o], 1, |m| {
                    let Msg::Takeover(e) = m else { unreachable!() };
                    table.remove("x", &e.pid);
                    let next = entry("o@h", 7, e.stamp, e.generation + 1);
                    table.insert("x", next.clone());
                    o_t.lock().unwrap().push_back(Msg::Reg(next));
                });
                table.whereis("x")
            })
        };
        let table = Table::default();
        table.insert("x", old);
        read(&[l_t, o_t], 2, |m| {
            apply(&table, "t@h", m);
        });
        leaving.join().unwrap();
        let at_owner = owner.join().unwrap();
        let successor = entry("o@h", 7, 100, 1);
        assert_eq!(at_owner, Some(successor.clone()));
        assert_eq!(table.whereis("x"), Some(successor));
    });
}

#[test]
fn loom_models_a_registration_race_converges_on_one_winner() {
    loom::model(|| {
        let ea = entry("a@h", 1, 100, 0);
        let eb = entry("b@h", 2, 100, 0);
        let (a_b, a_t, b_a, b_t) = (wire(), wire(), wire(), wire());
        let node = |me: &'static str, mine: Entry, out: [Wire; 2], inbox: Wire| {
            thread::spawn(move || {
                let table = Table::default();
                table.insert("x", mine.clone());
                for w in &out {
                    w.lock().unwrap().push_back(Msg::Reg(mine.clone()));
                }
                let mut lost = false;
                read(&[inbox], 1, |m| lost |= apply(&table, me, m));
                (table.whereis("x"), lost)
            })
        };
        let a = node("a@h", ea.clone(), [a_b.clone(), a_t.clone()], b_a.clone());
        let b = node("b@h", eb.clone(), [b_a, b_t.clone()], a_b);
        let table = Table::default();
        read(&[a_t, b_t], 2, |m| {
            apply(&table, "t@h", m);
        });
        let (at_a, a_lost) = a.join().unwrap();
        let (at_b, b_lost) = b.join().unwrap();
        // Equal stamps: the lower node name wins.
        assert_eq!(at_a, Some(ea.clone()));
        assert_eq!(at_b, Some(ea.clone()));
        assert_eq!(table.whereis("x"), Some(ea));
        assert!(!a_lost && b_lost, "a lost: {a_lost}, b lost: {b_lost}");
    });
}

#[test]
fn loom_models_a_restart_racing_the_news_of_a_death_takes_the_name() {
    loom::model(|| {
        let dead = entry("c@h", 1, 100, 0);
        let restarted = entry("b@h", 2, 200, 0);
        // The link from b, and the connection to c going down.
        let (from_b, from_c) = (wire(), wire());
        let b = {
            let (from_b, restarted) = (from_b.clone(), restarted.clone());
            thread::spawn(move || from_b.lock().unwrap().push_back(Msg::Reg(restarted)))
        };
        let c = {
            let from_c = from_c.clone();
            thread::spawn(move || {
                from_c
                    .lock()
                    .unwrap()
                    .push_back(Msg::NodeDown(Atom::new("c@h")))
            })
        };
        let table = Table::default();
        table.insert("x", dead);
        read(&[from_b, from_c], 2, |m| {
            assert!(!apply(&table, "a@h", m), "a has no claim to lose");
        });
        b.join().unwrap();
        c.join().unwrap();
        assert_eq!(table.whereis("x"), Some(restarted));
    });
}
