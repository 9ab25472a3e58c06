//! Registered names: `register`, `unregister`, `whereis`.
//!
//! A name maps to at most one live process and a process has at most one
//! name. The name is released when the process terminates: it is free for
//! others from the moment the process is marked exiting (atomically with
//! its other relations, see [`crate::signal`]), and its entry leaves the
//! table when the termination finishes.

use std::fmt;
use std::sync::Arc;

use dashmap::mapref::entry::Entry;

use crate::context;
use crate::pid::Pid;
use crate::runtime::Shared;

/// Why [`register`] refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name belongs to another live process.
    NameTaken {
        /// The name asked for.
        name: Arc<str>,
        /// Its current owner.
        owner: Pid,
    },
    /// The process already has a (different) name.
    AlreadyNamed {
        /// The process.
        pid: Pid,
        /// Its current name.
        name: Arc<str>,
    },
    /// The process is not alive.
    NoProc(Pid),
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::NameTaken { name, owner } => {
                write!(f, "name {name:?} is already registered to {owner}")
            }
            RegisterError::AlreadyNamed { pid, name } => {
                write!(f, "{pid} is already registered as {name:?}")
            }
            RegisterError::NoProc(pid) => write!(f, "noproc: {pid} is not alive"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// The error of [`unregister`] for a name nobody holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotRegistered(pub Arc<str>);

impl fmt::Display for NotRegistered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no process is registered as {:?}", self.0)
    }
}

impl std::error::Error for NotRegistered {}

impl Shared {
    pub(crate) fn register(&self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        let Some(process) = self.lookup(pid) else {
            return Err(RegisterError::NoProc(pid));
        };
        let mut relations = process.relations.lock();
        if process.is_exiting() {
            return Err(RegisterError::NoProc(pid));
        }
        let relations = relations.get_or_insert_with(Box::default).more_mut();
        if let Some(existing) = &relations.name {
            if &**existing == name {
                return Ok(());
            }
            return Err(RegisterError::AlreadyNamed {
                pid,
                name: existing.clone(),
            });
        }
        let name: Arc<str> = name.into();
        self.claim_free_name(&name, pid)?;
        relations.name = Some(name);
        Ok(())
    }

    /// Records `pid` as the owner of `name` unless a live process holds it.
    /// Called under `pid`'s relations lock (the lock order of
    /// `crate::signal`).
    ///
    /// A name whose owner is already exiting is free: the owner is dead for
    /// everyone from the moment its `EXITING` bit is set, although its
    /// termination removes the name from the table only a little later (on
    /// the thread that killed it, which may be descheduled in between). A
    /// supervisor restarting a registered child whose predecessor was killed
    /// through a link must not get `already_started` from a dead process.
    /// The late removal only removes the entry if it still names the old
    /// owner.
    pub(crate) fn claim_free_name(&self, name: &Arc<str>, pid: Pid) -> Result<(), RegisterError> {
        loop {
            let owner = match self.names.entry(name.clone()) {
                Entry::Vacant(slot) => {
                    slot.insert(pid);
                    return Ok(());
                }
                Entry::Occupied(owner) => *owner.get(),
            };
            // The shard is released here: the table is looked up without it.
            let alive = self.lookup(owner).is_some_and(|p| !p.is_exiting());
            if alive {
                return Err(RegisterError::NameTaken {
                    name: name.clone(),
                    owner,
                });
            }
            self.names.remove_if(name, |_, held| *held == owner);
        }
    }

    pub(crate) fn unregister(&self, name: &str) -> Result<(), NotRegistered> {
        let Some((name, pid)) = self.names.remove(name) else {
            return Err(NotRegistered(name.into()));
        };
        if let Some(process) = self.lookup(pid) {
            process.with_relations(|r| {
                if let Some(more) = r.more_if_any_mut() {
                    if more.name.as_ref() == Some(&name) {
                        more.name = None;
                    }
                }
            });
        }
        Ok(())
    }

    pub(crate) fn whereis(&self, name: &str) -> Option<Pid> {
        self.names.get(name).map(|pid| *pid)
    }
}

/// Registers `pid` under `name`. Fails if the name is taken, if the process
/// already has another name, or if it is not alive. Registering a process
/// under the name it already has succeeds.
pub fn register(name: &str, pid: Pid) -> Result<(), RegisterError> {
    context::with_runtime("register", |rt| rt.register(name, pid))
}

/// Removes a registered name.
pub fn unregister(name: &str) -> Result<(), NotRegistered> {
    context::with_runtime("unregister", |rt| rt.unregister(name))
}

/// The pid registered under `name`, if any.
pub fn whereis(name: &str) -> Option<Pid> {
    context::with_runtime("whereis", |rt| rt.whereis(name))
}

/// All registered names with their pids (order unspecified).
pub fn registered() -> Vec<(Arc<str>, Pid)> {
    context::with_runtime("registered", |rt| {
        rt.names
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect()
    })
}

#[cfg(all(test, not(feature = "loom-models")))]
mod tests {
    use crate::{receive, whereis, ExitReason, Runtime, Spawn, SpawnError};

    /// The moment between a process being marked exiting and its
    /// termination removing its name (the killing thread descheduled in
    /// between), held open: the name is free, and the late removal leaves
    /// the new owner's entry alone.
    #[test]
    fn a_name_is_free_once_its_owner_is_marked_exiting() {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let body = || async {
                receive::<()>().await;
            };
            let old = Spawn::new().name("held").spawn(body()).unwrap().pid;
            let taken = Spawn::new().name("held").spawn(body());
            assert!(
                matches!(taken, Err(SpawnError::Register(_))),
                "a live owner keeps its name: {taken:?}"
            );
            crate::context::with_runtime("test", |shared| {
                let process = shared.lookup(old).expect("the owner is alive");
                let dying = crate::signal::begin_exit(&*process).expect("not exiting yet");
                assert_eq!(shared.names.get("held").map(|p| *p), Some(old));
                let new = Spawn::new().name("held").spawn(body()).map(|s| s.pid);
                let new = new.expect("the name of an exiting process is free");
                assert_eq!(whereis("held"), Some(new));
                crate::signal::terminate_all(process, ExitReason::Killed, dying);
                assert_eq!(
                    whereis("held"),
                    Some(new),
                    "the late removal kept the new owner"
                );
                assert!(crate::register("held", old).is_err());
            });
        });
    }
}
