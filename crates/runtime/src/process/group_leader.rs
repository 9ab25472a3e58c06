//! Where a process's group leader lives (`crate::io`): a flag bit in the
//! process's `flags` byte says it has one of its own, and the value is in
//! [`MoreRelations::group_leader`](super::MoreRelations), under the
//! relations lock. Without the bit the process follows the node's default
//! and owns nothing for it.
//!
//! The bit is set after the value is written and cleared after it is
//! removed, both under the lock; a reader loads the bit and, only if it is
//! set, reads the value under the lock. So a spawn (which reads its
//! parent's) pays one atomic load when there is nothing to inherit, and a
//! reader that sees the bit finds the value. A reader racing a change sees
//! the old or the new group leader, never a bit without a value that the
//! lock would not give it (the value read under the lock is the truth; the
//! bit only spares the lock). The loom model below checks this.

use std::sync::atomic::Ordering;

use crate::loom::sync::atomic::AtomicU8;
use crate::pid::Pid;
use crate::signal::{with_live_relations, Node};

/// Flag bit 3 of a process's `flags`: it has a group leader of its own.
pub(crate) const GROUP_LEADER: u8 = 1 << 3;

/// The group leader set for `node`, `None` if it follows the default.
pub(crate) fn read(flags: &AtomicU8, node: &impl Node) -> Option<Pid> {
    if flags.load(Ordering::Acquire) & GROUP_LEADER == 0 {
        return None;
    }
    let record = node.relations().lock();
    record.as_ref()?.more()?.group_leader
}

/// Sets (or, with `None`, clears) `node`'s own group leader; false if it is
/// exiting.
pub(crate) fn write(flags: &AtomicU8, node: &impl Node, leader: Option<Pid>) -> bool {
    with_live_relations(node, |r| match leader {
        Some(leader) => {
            r.more_mut().group_leader = Some(leader);
            flags.fetch_or(GROUP_LEADER, Ordering::AcqRel);
        }
        None => {
            if let Some(more) = r.more_if_any_mut() {
                more.group_leader = None;
            }
            flags.fetch_and(!GROUP_LEADER, Ordering::AcqRel);
        }
    })
    .is_some()
}

/// Model checks of the group-leader bit under loom; see `crate::loom` for
/// the command. The process is reduced to its flags, state byte and
/// relations lock; `read` and `write` are the functions above.
#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use ::loom::sync::atomic::AtomicBool;
    use ::loom::sync::Arc;
    use ::loom::thread;

    use super::{read, write};
    use crate::loom::sync::atomic::AtomicU8;
    use crate::loom::sync::Mutex;
    use crate::pid::Pid;
    use crate::process::State;
    use crate::signal::{Exit, Node, RelationsLock};

    struct Proc {
        flags: AtomicU8,
        state: State,
        relations: RelationsLock,
    }

    impl Node for Proc {
        fn pid(&self) -> Pid {
            Pid::local(1)
        }
        fn state(&self) -> &State {
            &self.state
        }
        fn relations(&self) -> &RelationsLock {
            &self.relations
        }
        fn traps_exits(&self) -> bool {
            false
        }
        fn push_exit(&self, _: Exit) {}
    }

    fn parent() -> Arc<Proc> {
        Arc::new(Proc {
            flags: AtomicU8::new(0),
            state: State::new_scheduled(),
            relations: Mutex::new(None),
        })
    }

    /// A parent changes its group leader (A, then B, then back to the
    /// default) while it spawns on another thread: the child inherits one
    /// of those, and a spawn after a published change sees that change.
    #[test]
    fn a_spawn_inherits_the_old_or_the_new_group_leader() {
        crate::loom::model("group leader: change vs spawn", None, || {
            let (a, b) = (Pid::local(10), Pid::local(11));
            let p = parent();
            let set_b = Arc::new(AtomicBool::new(false));
            let setter = {
                let (p, set_b) = (p.clone(), set_b.clone());
                thread::spawn(move || {
                    assert!(write(&p.flags, &*p, Some(a)));
                    assert!(write(&p.flags, &*p, Some(b)));
                    set_b.store(true, std::sync::atomic::Ordering::Release);
                    assert!(write(&p.flags, &*p, None));
                })
            };
            let saw_b_published = set_b.load(std::sync::atomic::Ordering::Acquire);
            let inherited = read(&p.flags, &*p);
            if saw_b_published {
                assert!(inherited == Some(b) || inherited.is_none(), "{inherited:?}");
            } else {
                assert!(
                    [None, Some(a), Some(b)].contains(&inherited),
                    "{inherited:?}"
                );
            }
            setter.join().unwrap();
            assert_eq!(read(&p.flags, &*p), None);
        });
    }

    /// Setting the group leader of a process that is exiting fails and
    /// leaves nothing behind.
    #[test]
    fn an_exiting_process_gets_no_group_leader() {
        crate::loom::model("group leader: change vs exit", None, || {
            let p = parent();
            let exiter = {
                let p = p.clone();
                thread::spawn(move || {
                    // As `signal::terminate` does: EXITING under the lock.
                    let _record = p.relations.lock();
                    p.state.begin_exit();
                })
            };
            let set = write(&p.flags, &*p, Some(Pid::local(10)));
            exiter.join().unwrap();
            assert_eq!(read(&p.flags, &*p).is_some(), set);
        });
    }
}
