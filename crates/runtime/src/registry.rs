//! Registered names: `register`, `unregister`, `whereis`.
//!
//! A name maps to at most one live process and a process has at most one
//! name. The name is released when the process terminates, atomically with
//! its other relations (see [`crate::signal`]).

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
        let relations = relations.get_or_insert_with(Box::default);
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
        match self.names.entry(name.clone()) {
            Entry::Occupied(owner) => Err(RegisterError::NameTaken {
                name,
                owner: *owner.get(),
            }),
            Entry::Vacant(slot) => {
                slot.insert(pid);
                relations.name = Some(name);
                Ok(())
            }
        }
    }

    pub(crate) fn unregister(&self, name: &str) -> Result<(), NotRegistered> {
        let Some((name, pid)) = self.names.remove(name) else {
            return Err(NotRegistered(name.into()));
        };
        if let Some(process) = self.lookup(pid) {
            process.with_relations(|r| {
                if r.name.as_ref() == Some(&name) {
                    r.name = None;
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
