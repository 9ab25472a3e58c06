//! Process groups compatible with OTP's `pg` (OTP 23+): a scope process
//! that speaks `pg`'s protocol, so Ember processes and processes of `erl`
//! nodes (running the same scope, e.g. `-kernel start_pg true` for the
//! default scope `pg`) see each other's group members, and Ember nodes
//! running the scope see each other's.
//!
//! The protocol, between the scope processes (registered under the scope
//! name on every node):
//!
//! * `{discover, PeerScope}` (plain, to `{Scope, Node}` on every visible
//!   node at start and on each nodeup; to the pid when answering): the
//!   receiver casts `{'$gen_cast', {sync, self(), [{Group, [Pid]}]}}` with
//!   its local members to `PeerScope` and, if the peer is new, monitors it
//!   and discovers it back. `{discover, Peer, Version}` (OTP 26+) is
//!   accepted too; only the 2-tuple is ever sent, as OTP 25 scopes crash
//!   on the 3-tuple.
//! * `{sync, Peer, Groups}` replaces everything known from `Peer`.
//! * `{join, Peer, Group, Pid | [Pid]}` and `{leave, Peer, Pid | [Pid],
//!   [Group]}` (plain) change `Peer`'s members; from a peer not yet synced
//!   they are ignored.
//! * A peer's members go when the monitor of its scope process fires
//!   (also with `noconnection`).
//!
//! Only the message shapes above are ever sent to a scope: an OTP 25
//! scope crashes on anything else. Malformed input from peers is logged
//! and dropped. Groups are any terms; members may appear more than once
//! (one entry per join), as in `pg`.

use std::collections::HashMap;
use std::sync::Arc;

use ember_runtime::dist::{self, NodeDown, NodeUp};
use ember_runtime::{
    demonitor, monitor, receive_any, self_pid, send, Down, Handle, MonitorRef, Pid, Spawn,
    SpawnError,
};
use ember_term::{Atom, Pid as TermPid, Term};
use parking_lot::RwLock;

/// Every member known to one node's scope: `group → pids`, local and
/// remote.
#[derive(Default)]
struct Members {
    local: HashMap<Term, Vec<TermPid>>,
    remote: HashMap<TermPid, HashMap<Term, Vec<TermPid>>>,
}

/// One node's handle on a `pg` scope: cheap to clone.
#[derive(Clone)]
pub struct PgScope {
    name: String,
    handle: Handle,
    server: Pid,
    members: Arc<RwLock<Members>>,
}

enum Request {
    Join(Term, Pid),
    Leave(Term, Pid),
}

impl PgScope {
    /// Starts scope `scope` (`"pg"` is OTP's default scope) in `handle`'s
    /// runtime, whose distribution must run; fails if the name is taken.
    pub fn start(handle: &Handle, scope: &str) -> Result<PgScope, SpawnError> {
        let members = Arc::new(RwLock::new(Members::default()));
        let shared = members.clone();
        let name = scope.to_owned();
        let spawned = handle.spawn_with(Spawn::new().name(scope), async move {
            Scope {
                name,
                members: shared,
                peers: HashMap::new(),
                watched: HashMap::new(),
            }
            .run()
            .await;
        })?;
        Ok(PgScope {
            name: scope.to_owned(),
            handle: handle.clone(),
            server: spawned.pid,
            members,
        })
    }

    /// The scope's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `pid` (a process of this node) to `group` (`pg:join/3`); it
    /// leaves every group when it exits.
    pub fn join(&self, group: Term, pid: Pid) {
        self.handle.send(self.server, Request::Join(group, pid));
    }

    /// Removes one membership of `pid` in `group` (`pg:leave/3`).
    pub fn leave(&self, group: Term, pid: Pid) {
        self.handle.send(self.server, Request::Leave(group, pid));
    }

    /// The members of `group` on every node (`pg:get_members/2`).
    pub fn members(&self, group: &Term) -> Vec<TermPid> {
        let m = self.members.read();
        let mut v = m.local.get(group).cloned().unwrap_or_default();
        for groups in m.remote.values() {
            v.extend(groups.get(group).into_iter().flatten().cloned());
        }
        v
    }

    /// The members of `group` on this node (`pg:get_local_members/2`).
    pub fn local_members(&self, group: &Term) -> Vec<TermPid> {
        self.members
            .read()
            .local
            .get(group)
            .cloned()
            .unwrap_or_default()
    }
}

struct Scope {
    name: String,
    members: Arc<RwLock<Members>>,
    /// Remote scope processes we monitor.
    peers: HashMap<TermPid, MonitorRef>,
    /// Local members: monitor → pid, and their groups (one per join).
    watched: HashMap<Pid, (MonitorRef, Vec<Term>)>,
}

fn pids_of(t: &Term) -> Option<Vec<TermPid>> {
    match t {
        Term::Pid(p) => Some(vec![p.clone()]),
        other => other
            .as_list()?
            .iter()
            .map(|p| p.as_pid().cloned())
            .collect(),
    }
}

impl Scope {
    fn me(&self) -> Term {
        dist::pid_to_term(self_pid())
    }

    fn discover(&self, node: &Atom) {
        dist::send_named(
            &self.name,
            node.as_str(),
            Term::tuple([Term::atom("discover"), self.me()]),
        );
    }

    fn local_sync(&self) -> Term {
        let m = self.members.read();
        Term::list(m.local.iter().map(|(g, pids)| {
            Term::tuple([g.clone(), Term::list(pids.iter().cloned().map(Term::Pid))])
        }))
    }

    async fn run(mut self) {
        dist::monitor_nodes(true);
        for node in dist::nodes() {
            self.discover(&node);
        }
        loop {
            let m = receive_any(|m| {
                m.is::<Request>()
                    || m.is::<Term>()
                    || m.is::<Down>()
                    || m.is::<NodeUp>()
                    || m.is::<NodeDown>()
            })
            .await;
            let m = match m.downcast::<Request>() {
                Ok(Request::Join(group, pid)) => {
                    self.join(group, pid);
                    continue;
                }
                Ok(Request::Leave(group, pid)) => {
                    self.leave(&[group], pid);
                    continue;
                }
                Err(m) => m,
            };
            let m = match m.downcast::<Term>() {
                Ok(t) => {
                    if self.peer_message(&t).is_none() {
                        tracing::warn!("pg {}: dropped a malformed message: {t}", self.name);
                    }
                    continue;
                }
                Err(m) => m,
            };
            let m = match m.downcast::<Down>() {
                Ok(d) => {
                    self.down(d);
                    continue;
                }
                Err(m) => m,
            };
            if let Ok(up) = m.downcast::<NodeUp>() {
                self.discover(&up.node);
            }
            // A nodedown needs nothing: the peer's monitor fires.
        }
    }

    fn broadcast(&self, message: Term) {
        for peer in self.peers.keys() {
            if let Some(pid) = dist::pid_from_term(&Term::Pid(peer.clone())) {
                send(pid, message.clone());
            }
        }
    }

    fn join(&mut self, group: Term, pid: Pid) {
        if !ember_runtime::is_alive(pid) {
            return;
        }
        let entry = self
            .watched
            .entry(pid)
            .or_insert_with(|| (monitor(pid), Vec::new()));
        entry.1.push(group.clone());
        let p = match dist::pid_to_term(pid) {
            Term::Pid(p) => p,
            _ => return,
        };
        self.members
            .write()
            .local
            .entry(group.clone())
            .or_default()
            .push(p.clone());
        self.broadcast(Term::tuple([
            Term::atom("join"),
            self.me(),
            group,
            Term::Pid(p),
        ]));
    }

    /// Removes one membership of `pid` per group in `groups`.
    fn leave(&mut self, groups: &[Term], pid: Pid) {
        let Some((m, joined)) = self.watched.get_mut(&pid) else {
            return;
        };
        let mut left = Vec::new();
        for g in groups {
            if let Some(i) = joined.iter().position(|j| j == g) {
                joined.remove(i);
                left.push(g.clone());
            }
        }
        if joined.is_empty() {
            demonitor(*m, true);
            self.watched.remove(&pid);
        }
        self.remove_local(&left, pid);
    }

    fn remove_local(&mut self, groups: &[Term], pid: Pid) {
        if groups.is_empty() {
            return;
        }
        let p = match dist::pid_to_term(pid) {
            Term::Pid(p) => p,
            _ => return,
        };
        {
            let mut m = self.members.write();
            for g in groups {
                if let Some(v) = m.local.get_mut(g) {
                    if let Some(i) = v.iter().position(|x| x == &p) {
                        v.remove(i);
                    }
                    if v.is_empty() {
                        m.local.remove(g);
                    }
                }
            }
        }
        // One entry per membership, as pg sends it: the receiver removes
        // one occurrence of the pid per listed group.
        self.broadcast(Term::tuple([
            Term::atom("leave"),
            self.me(),
            Term::Pid(p),
            Term::list(groups.iter().cloned()),
        ]));
    }

    fn down(&mut self, down: Down) {
        if let Some(peer) = self
            .peers
            .iter()
            .find(|(_, m)| **m == down.monitor)
            .map(|(p, _)| p.clone())
        {
            self.peers.remove(&peer);
            self.members.write().remote.remove(&peer);
            return;
        }
        if let Some((m, groups)) = self.watched.remove(&down.pid) {
            if m == down.monitor {
                self.remove_local(&groups, down.pid);
            } else {
                self.watched.insert(down.pid, (m, groups));
            }
        }
    }

    /// Monitors a new peer scope; false if it was known.
    fn add_peer(&mut self, peer: &TermPid) -> bool {
        if self.peers.contains_key(peer) {
            return false;
        }
        let Some(pid) = dist::pid_from_term(&Term::Pid(peer.clone())) else {
            return false;
        };
        self.peers.insert(peer.clone(), monitor(pid));
        self.members
            .write()
            .remote
            .insert(peer.clone(), HashMap::new());
        true
    }

    fn peer_message(&mut self, t: &Term) -> Option<()> {
        let items = t.as_tuple()?;
        match items {
            [op, peer] | [op, peer, _] if op.is_atom("discover") => {
                let peer = peer.as_pid()?.clone();
                if peer.node == dist::node() {
                    return Some(());
                }
                let pid = dist::pid_from_term(&Term::Pid(peer.clone()))?;
                let sync = Term::tuple([
                    Term::atom("$gen_cast"),
                    Term::tuple([Term::atom("sync"), self.me(), self.local_sync()]),
                ]);
                send(pid, sync);
                if self.add_peer(&peer) {
                    send(pid, Term::tuple([Term::atom("discover"), self.me()]));
                }
            }
            [cast, body] if cast.is_atom("$gen_cast") => {
                let [op, peer, groups] = body.as_tuple()? else {
                    return None;
                };
                if !op.is_atom("sync") {
                    return None;
                }
                let peer = peer.as_pid()?.clone();
                let mut parsed: HashMap<Term, Vec<TermPid>> = HashMap::new();
                for g in groups.as_list()? {
                    let [group, pids] = g.as_tuple()? else {
                        return None;
                    };
                    parsed
                        .entry(group.clone())
                        .or_default()
                        .extend(pids_of(pids)?);
                }
                self.add_peer(&peer);
                self.members.write().remote.insert(peer, parsed);
            }
            [op, peer, group, pids] if op.is_atom("join") => {
                let pids = pids_of(pids)?;
                let mut m = self.members.write();
                if let Some(groups) = m.remote.get_mut(peer.as_pid()?) {
                    groups.entry(group.clone()).or_default().extend(pids);
                }
            }
            [op, peer, pids, groups] if op.is_atom("leave") => {
                let pids = pids_of(pids)?;
                let groups = groups.as_list()?;
                let mut m = self.members.write();
                if let Some(known) = m.remote.get_mut(peer.as_pid()?) {
                    for g in groups {
                        if let Some(v) = known.get_mut(g) {
                            for p in &pids {
                                if let Some(i) = v.iter().position(|x| x == p) {
                                    v.remove(i);
                                }
                            }
                            if v.is_empty() {
                                known.remove(g);
                            }
                        }
                    }
                }
            }
            _ => return None,
        }
        Some(())
    }
}
