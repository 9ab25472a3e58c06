//! Ember's side of OTP's `global` name server, at the first level of
//! participation: "synced but not known".
//!
//! When a visible connection comes up, the OTP node's `global_name_server`
//! casts `{init_connect, {Vsn, Tag}, Node, {locker, _, Known, LockerPid}}`
//! to `global_name_server` on the new peer and counts the peer as synced
//! only once the peer answers. Until then `global:sync()` on the OTP node
//! waits (for ever). Ember answers every `init_connect` from the node on
//! the other end of the connection with
//! `{'$gen_cast', {in_sync, EmberNode, true}}`, one of global's own
//! protocol paths (how a node that learnt a peer through another member of
//! its partition ends a pending connect). The OTP node then lists Ember as
//! synced, `global:sync()` returns, and Ember stays outside the global name
//! table, the global lock and `prevent_overlapping_partitions`.
//!
//! A malformed message to `global_name_server` can crash it and, with it,
//! the whole OTP node (it is a child of `kernel_sup`, intensity 0), so this
//! module sends exactly one message shape, built from the connection's own
//! peer name, and only in answer to a well-formed `init_connect` whose
//! sender is that peer. Everything else sent to `global_name_server` is
//! logged and dropped. Lock requests (`global:trans/2`, `set_lock/1` over
//! `[node() | nodes()]`) monitor `{global_name_server, Ember}` first; the
//! connection answers that monitor with `noproc`, so the caller counts
//! Ember as a node without global and carries on.

use ember_term::{Atom, Pid, Term};

/// The registered name OTP's global name server runs under.
pub(crate) const NAME: &str = "global_name_server";

/// The answer to one message from `peer` to `global_name_server`: a
/// message to send back to `{global_name_server, peer}`, or `None`.
pub(crate) fn answer(own_node: &Atom, peer: &Atom, message: &Term) -> Option<Term> {
    match init_connect_from(message) {
        Some(node) if &node == peer => {
            tracing::debug!("dist: global init_connect from {peer}: answering in_sync");
            Some(in_sync(own_node))
        }
        Some(node) => {
            tracing::info!("dist: ignoring a global init_connect from {peer} naming {node}");
            None
        }
        None => {
            tracing::debug!("dist: ignoring a message from {peer} to global: {message}");
            None
        }
    }
}

/// The node that sent an `init_connect` cast, if `message` is one:
/// `{'$gen_cast', {init_connect, Vsn, Node, {locker, _, _, LockerPid}}}`
/// (`Vsn` is `{8, Tag}` from OTP 25; older versions sent a bare integer).
fn init_connect_from(message: &Term) -> Option<Atom> {
    let [cast, request] = message.as_tuple()? else {
        return None;
    };
    if !cast.is_atom("$gen_cast") {
        return None;
    }
    let [op, vsn, node, locker] = request.as_tuple()? else {
        return None;
    };
    if !op.is_atom("init_connect") {
        return None;
    }
    let version = match vsn {
        Term::Tuple(items) => items.first().and_then(Term::as_int)?,
        other => other.as_int()?,
    };
    // global itself refuses versions up to 4.
    if version <= 4 {
        return None;
    }
    let [tag, _, _, locker_pid] = locker.as_tuple()? else {
        return None;
    };
    if !tag.is_atom("locker") || locker_pid.as_pid().is_none() {
        return None;
    }
    node.as_atom().map(Atom::new)
}

/// `{'$gen_cast', {in_sync, Node, true}}`.
fn in_sync(own_node: &Atom) -> Term {
    Term::tuple([
        Term::atom("$gen_cast"),
        Term::tuple([
            Term::atom("in_sync"),
            Term::Atom(own_node.clone()),
            Term::atom("true"),
        ]),
    ])
}

/// The `REG_SEND` control message that carries the answer from `from`.
pub(crate) fn reg_send_control(from: &Pid) -> Term {
    crate::connection::reg_send_control(from, &Atom::new(NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(node: &str) -> Term {
        Term::Pid(Pid {
            node: Atom::new(node),
            id: 77,
            serial: 0,
            creation: 3,
        })
    }

    fn init_connect(node: &str, vsn: Term, locker: Term) -> Term {
        Term::tuple([
            Term::atom("$gen_cast"),
            Term::tuple([Term::atom("init_connect"), vsn, Term::atom(node), locker]),
        ])
    }

    fn locker(p: Term) -> Term {
        Term::tuple([
            Term::atom("locker"),
            Term::atom("no_longer_a_pid"),
            Term::map([]),
            p,
        ])
    }

    #[test]
    fn a_well_formed_init_connect_from_the_peer_gets_in_sync() {
        let me = Atom::new("ember@h");
        let peer = Atom::new("a@h");
        let tag = Term::from(-576460752303423487i64);
        let m = init_connect("a@h", Term::tuple([Term::from(8), tag]), locker(pid("a@h")));
        let expected = Term::tuple([
            Term::atom("$gen_cast"),
            Term::tuple([
                Term::atom("in_sync"),
                Term::atom("ember@h"),
                Term::atom("true"),
            ]),
        ]);
        assert_eq!(answer(&me, &peer, &m), Some(expected));
        // A version 6 peer sends a bare integer.
        let old = init_connect("a@h", Term::from(6), locker(pid("a@h")));
        assert!(answer(&me, &peer, &old).is_some());
    }

    #[test]
    fn anything_else_gets_nothing() {
        let me = Atom::new("ember@h");
        let peer = Atom::new("a@h");
        let v8 = || Term::tuple([Term::from(8), Term::from(1)]);
        for m in [
            // Another node's name, an old version, a locker without a pid.
            init_connect("b@h", v8(), locker(pid("b@h"))),
            init_connect("a@h", Term::from(4), locker(pid("a@h"))),
            init_connect("a@h", v8(), locker(Term::atom("x"))),
            init_connect("a@h", v8(), Term::atom("locker")),
            // Other global traffic, and junk.
            Term::tuple([
                Term::atom("$gen_cast"),
                Term::tuple([Term::atom("in_sync"), Term::atom("a@h"), Term::atom("true")]),
            ]),
            Term::tuple([Term::atom("lost_connection"), Term::atom("a@h")]),
            Term::atom("junk"),
            Term::tuple([]),
        ] {
            assert_eq!(answer(&me, &peer, &m), None, "{m}");
        }
    }
}
