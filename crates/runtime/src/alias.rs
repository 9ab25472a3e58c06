//! Process aliases (OTP 24): references a process can be sent to, until
//! it deactivates them.
//!
//! [`alias`] makes one for the calling process; [`unalias`] deactivates
//! it; a message sent to an inactive alias (or to one whose process is
//! gone) is dropped. [`alias_monitor`] turns a monitor's reference into an
//! alias that lasts until the first message through it, which also removes
//! the monitor: OTP's `monitor(process, Pid, [{alias, reply_demonitor}])`,
//! what `gen:call` uses so that a reply arriving after the caller gave up
//! is dropped instead of lingering in its mailbox. Aliases cross nodes as
//! references of this node (`ALIAS_SEND`); see `crate::dist`.

use crate::context;
use crate::mailbox::Envelope;
use crate::pid::{MonitorRef, Pid, Ref};
use crate::runtime::Shared;
use crate::signal;

/// An active alias: whose it is, and whether its first message ends it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AliasEntry {
    owner: Pid,
    reply_demonitor: bool,
}

fn add(owner: &std::sync::Arc<crate::process::Process>, id: u64, reply_demonitor: bool) -> bool {
    // Recorded on the process under its relations lock, so its exit
    // (which takes the list under the same lock) removes it.
    owner
        .with_live_relations(|r| {
            r.more_mut().aliases.push(id);
            owner.rt.aliases.insert(
                id,
                AliasEntry {
                    owner: owner.pid,
                    reply_demonitor,
                },
            );
        })
        .is_some()
}

/// Makes a new alias for the calling process (Erlang's `alias()`).
pub fn alias() -> Ref {
    context::with_current("alias", |me| {
        let r = me.rt.make_ref();
        add(me, r.id(), false);
        r
    })
}

/// Makes `monitor`'s reference an alias of the calling process, removed,
/// with the monitor, by the first message sent through it (OTP's
/// `{alias, reply_demonitor}`).
pub fn alias_monitor(monitor: MonitorRef) {
    context::with_current("alias_monitor", |me| {
        add(me, monitor.reference().id(), true);
    })
}

/// Deactivates an alias of the calling process (Erlang's `unalias/1`);
/// true if it was active.
pub fn unalias(alias: Ref) -> bool {
    context::with_current("unalias", |me| {
        let id = alias.id();
        let owned = me
            .rt
            .aliases
            .remove_if(&id, |_, e| e.owner == me.pid)
            .is_some();
        me.with_relations(|r| {
            if let Some(more) = r.more_if_any_mut() {
                more.aliases.retain(|a| *a != id);
            }
        });
        owned
    })
}

/// Sends `message` to the process an alias of this node names; dropped if
/// the alias is not active.
pub fn send_alias<M: Send + 'static>(alias: Ref, message: M) {
    context::with_runtime("send_alias", |rt| {
        context::consume_reductions(1);
        if !crate::message::sender_is_dead() {
            rt.send_to_alias(alias, Envelope::new(message));
        }
    })
}

impl Shared {
    /// Delivers through an alias of this node, or drops.
    pub(crate) fn send_to_alias(&self, alias: Ref, message: Envelope) {
        if alias.node() != 0 {
            return crate::scheduler::drop_contained(message);
        }
        let id = alias.id();
        let entry = match self.aliases.get(&id).map(|e| *e) {
            Some(e) if e.reply_demonitor => self.aliases.remove(&id).map(|(_, e)| e),
            other => other,
        };
        let Some(entry) = entry else {
            return crate::scheduler::drop_contained(message);
        };
        let Some(owner) = self.lookup(entry.owner) else {
            self.aliases.remove(&id);
            return crate::scheduler::drop_contained(message);
        };
        signal::deliver(&owner, message);
        if entry.reply_demonitor {
            owner.with_relations(|r| {
                if let Some(more) = r.more_if_any_mut() {
                    more.aliases.retain(|a| *a != id);
                }
            });
            signal::demonitor_of(&owner, MonitorRef::from(alias));
        }
    }
}
