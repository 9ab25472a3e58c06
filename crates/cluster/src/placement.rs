//! Where a service runs: rendezvous (highest random weight) hashing over
//! the cluster's members.
//!
//! Every node computes the same owner from the same member set without
//! asking anyone, and when a member leaves only the services it owned
//! move (when one joins, only those it now wins move to it).

use ember_term::Atom;

/// FNV-1a over `bytes`, continuing from `hash`.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A finaliser (splitmix64's) so that close inputs spread.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The weight of `node` for `service`: the same on every node and build
/// (no per-process random seed).
pub fn weight(service: &str, node: &str) -> u64 {
    let h = fnv1a(0xcbf2_9ce4_8422_2325, node.as_bytes());
    let h = fnv1a(h, &[0]);
    mix(fnv1a(h, service.as_bytes()))
}

/// The member that owns `service`: the highest weight, ties to the
/// greatest node name. `None` for no members.
pub fn owner<'a>(service: &str, members: impl IntoIterator<Item = &'a Atom>) -> Option<&'a Atom> {
    members.into_iter().max_by(|a, b| {
        (weight(service, a.as_str()), a.as_str()).cmp(&(weight(service, b.as_str()), b.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<Atom> {
        names.iter().map(|n| Atom::new(n)).collect()
    }

    #[test]
    fn the_owner_does_not_depend_on_member_order() {
        let a = nodes(&["a@h", "b@h", "c@h"]);
        let mut b = a.clone();
        b.reverse();
        for i in 0..100 {
            let s = format!("svc{i}");
            assert_eq!(owner(&s, &a), owner(&s, &b));
        }
    }

    #[test]
    fn only_the_services_of_a_lost_member_move() {
        let all = nodes(&["a@h", "b@h", "c@h"]);
        let rest = nodes(&["a@h", "b@h"]);
        let mut moved = 0;
        for i in 0..300 {
            let s = format!("svc{i}");
            let before = owner(&s, &all).unwrap();
            let after = owner(&s, &rest).unwrap();
            if before.as_str() != "c@h" {
                assert_eq!(before, after, "{s} moved though its owner stayed");
            } else {
                moved += 1;
            }
        }
        // Roughly a third is owned by each of three members.
        assert!((60..=140).contains(&moved), "{moved} of 300 on c");
    }

    #[test]
    fn no_members_no_owner() {
        assert_eq!(owner("x", &Vec::<Atom>::new()), None);
    }
}
