//! The replicated tables every node holds: names and process groups, read
//! without asking the cluster server (a read lock and a hash lookup).

use std::cmp::Ordering;
use std::collections::HashMap;

use ember_term::{Atom, Pid as TermPid};
use parking_lot::RwLock;

/// One cluster-wide registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The registered process (its node is `pid.node`).
    pub pid: TermPid,
    /// When the name was first registered: milliseconds since the Unix
    /// epoch on the registering node, raised past every stamp that node
    /// had seen. A handed-over service keeps the stamp of its first
    /// registration.
    pub stamp: i64,
    /// How many times the registration was handed over to another node.
    pub generation: i64,
}

impl Entry {
    /// The key the conflict rule orders by: the earliest stamp first, then
    /// the highest generation, then node name, process number and serial.
    fn rank(&self) -> (i64, i64, &str, u32, u32) {
        (
            self.stamp,
            -self.generation,
            self.pid.node.as_str(),
            self.pid.id,
            self.pid.serial,
        )
    }

    /// Whether `self` keeps the name when it clashes with `other` (see
    /// the conflict rule in the crate documentation).
    pub fn beats(&self, other: &Entry) -> bool {
        self.rank().cmp(&other.rank()) == Ordering::Less
    }
}

/// What [`Table::insert`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// The name was free, or already held by this pid.
    Fresh,
    /// The name was held by another pid: the claim that lost (kept behind
    /// the winner until withdrawn) and the one that holds the name now.
    Conflict {
        /// The losing registration.
        loser: Entry,
        /// The registration that keeps the name.
        winner: Entry,
    },
}

/// A node's claims (name, entry) and group memberships (group, pid).
pub(crate) type Local = (Vec<(String, Entry)>, Vec<(String, TermPid)>);

/// The names and groups of one node's replica.
///
/// A name may have several claims (registrations of different pids met
/// in a clash); the best by [`Entry::beats`] holds the name, the others
/// wait behind it until their node withdraws them (it does when it learns
/// its claim lost) or goes down. So a registration that loses only to a
/// dead node's claim here (its node saw the death first) takes the name
/// as soon as this node sees the death too.
#[derive(Default)]
pub(crate) struct Table {
    names: RwLock<HashMap<String, Vec<Entry>>>,
    groups: RwLock<HashMap<String, Vec<TermPid>>>,
}

impl Table {
    /// The registration of `name`: its best claim.
    pub(crate) fn whereis(&self, name: &str) -> Option<Entry> {
        self.names.read().get(name).and_then(|c| c.first()).cloned()
    }

    /// All registrations (best claims), sorted by name.
    pub(crate) fn names(&self) -> Vec<(String, Entry)> {
        let mut v: Vec<_> = self
            .names
            .read()
            .iter()
            .filter_map(|(k, c)| Some((k.clone(), c.first()?.clone())))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Adds (or updates) `entry`'s claim on `name`. A clash with the best
    /// claim is settled by [`Entry::beats`]; the losing claim is kept
    /// behind the winner.
    pub(crate) fn insert(&self, name: &str, entry: Entry) -> Inserted {
        let mut names = self.names.write();
        let claims = names.entry(name.to_owned()).or_default();
        let best = claims.first().cloned();
        match claims.iter_mut().find(|c| c.pid == entry.pid) {
            Some(same) => {
                if entry.beats(same) {
                    *same = entry.clone();
                }
            }
            None => claims.push(entry.clone()),
        }
        claims.sort_by(|a, b| a.rank().cmp(&b.rank()));
        match best {
            Some(best) if best.pid != entry.pid => {
                if entry.beats(&best) {
                    Inserted::Conflict {
                        loser: best,
                        winner: entry,
                    }
                } else {
                    Inserted::Conflict {
                        loser: entry,
                        winner: best,
                    }
                }
            }
            _ => Inserted::Fresh,
        }
    }

    /// Withdraws `pid`'s claim on `name`; true if it had one.
    pub(crate) fn remove(&self, name: &str, pid: &TermPid) -> bool {
        let mut names = self.names.write();
        let Some(claims) = names.get_mut(name) else {
            return false;
        };
        let before = claims.len();
        claims.retain(|c| &c.pid != pid);
        let removed = claims.len() != before;
        if claims.is_empty() {
            names.remove(name);
        }
        removed
    }

    /// Removes every claim and group member of `node`.
    pub(crate) fn drop_node(&self, node: &Atom) {
        let mut names = self.names.write();
        for claims in names.values_mut() {
            claims.retain(|e| &e.pid.node != node);
        }
        names.retain(|_, c| !c.is_empty());
        drop(names);
        let mut groups = self.groups.write();
        for members in groups.values_mut() {
            members.retain(|p| &p.node != node);
        }
        groups.retain(|_, m| !m.is_empty());
    }

    /// Every claim and group membership of `node`'s processes.
    pub(crate) fn local(&self, node: &Atom) -> Local {
        let names = self
            .names
            .read()
            .iter()
            .flat_map(|(name, claims)| {
                claims
                    .iter()
                    .filter(|e| &e.pid.node == node)
                    .map(move |e| (name.clone(), e.clone()))
            })
            .collect();
        let groups = self
            .groups
            .read()
            .iter()
            .flat_map(|(group, members)| {
                members
                    .iter()
                    .filter(|p| &p.node == node)
                    .map(move |p| (group.clone(), p.clone()))
            })
            .collect();
        (names, groups)
    }

    /// Adds `pid` to `group` (once).
    pub(crate) fn join(&self, group: &str, pid: TermPid) {
        let mut groups = self.groups.write();
        let members = groups.entry(group.to_owned()).or_default();
        if !members.contains(&pid) {
            members.push(pid);
        }
    }

    /// Removes `pid` from `group`.
    pub(crate) fn leave(&self, group: &str, pid: &TermPid) {
        let mut groups = self.groups.write();
        if let Some(members) = groups.get_mut(group) {
            members.retain(|p| p != pid);
            if members.is_empty() {
                groups.remove(group);
            }
        }
    }

    /// The members of `group`.
    pub(crate) fn members(&self, group: &str) -> Vec<TermPid> {
        self.groups.read().get(group).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_earliest_registration_wins_in_either_order() {
        let old = entry("b@h", 1, 100, 0);
        let new = entry("a@h", 2, 200, 0);
        for (first, second) in [(&old, &new), (&new, &old)] {
            let t = Table::default();
            t.insert("x", first.clone());
            let r = t.insert("x", second.clone());
            assert_eq!(
                r,
                Inserted::Conflict {
                    loser: new.clone(),
                    winner: old.clone()
                }
            );
            assert_eq!(t.whereis("x"), Some(old.clone()));
        }
    }

    #[test]
    fn a_handed_over_registration_supersedes_its_predecessor() {
        let before = entry("a@h", 1, 100, 0);
        let after = entry("b@h", 9, 100, 1);
        let t = Table::default();
        t.insert("x", before.clone());
        assert!(matches!(
            t.insert("x", after.clone()),
            Inserted::Conflict { .. }
        ));
        assert_eq!(t.whereis("x"), Some(after.clone()));
        // The old holder's late unregister withdraws only its own claim.
        assert!(t.remove("x", &before.pid));
        assert_eq!(t.whereis("x"), Some(after));
    }

    #[test]
    fn a_losing_claim_takes_the_name_when_the_winner_s_node_goes() {
        let dead = entry("c@h", 1, 100, 0);
        let restarted = entry("b@h", 2, 200, 0);
        let t = Table::default();
        t.insert("x", dead.clone());
        assert!(matches!(
            t.insert("x", restarted.clone()),
            Inserted::Conflict { .. }
        ));
        assert_eq!(t.whereis("x"), Some(dead));
        t.drop_node(&Atom::new("c@h"));
        assert_eq!(t.whereis("x"), Some(restarted.clone()));
        assert!(t.remove("x", &restarted.pid));
        assert_eq!(t.whereis("x"), None);
    }

    #[test]
    fn equal_stamps_are_settled_by_node_name() {
        let a = entry("a@h", 5, 100, 0);
        let b = entry("b@h", 1, 100, 0);
        assert!(a.beats(&b) && !b.beats(&a));
    }

    #[test]
    fn a_lost_node_takes_its_names_and_members_along() {
        let t = Table::default();
        t.insert("x", entry("a@h", 1, 1, 0));
        t.insert("y", entry("b@h", 1, 1, 0));
        t.join("g", entry("a@h", 1, 1, 0).pid);
        t.join("g", entry("b@h", 2, 1, 0).pid);
        t.drop_node(&Atom::new("a@h"));
        assert!(t.whereis("x").is_none());
        assert!(t.whereis("y").is_some());
        assert_eq!(t.members("g"), vec![entry("b@h", 2, 1, 0).pid]);
    }
}
