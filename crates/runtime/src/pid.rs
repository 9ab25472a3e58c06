//! Process identifiers and references.
//!
//! A [`Pid`] names one process forever: identifiers are never reused within a
//! runtime, so a message sent to a dead pid can never reach a newer process.
//! Every pid carries a node index (0 is the local node) so that pids of remote
//! processes can exist without changing the type once distribution arrives.

use std::fmt;

/// Index of the local node in a pid or reference.
pub(crate) const LOCAL_NODE: u32 = 0;

/// The identifier of a process, printed Erlang-style as `<node.number.serial>`.
///
/// Pids are plain data: cheap to copy, hash and compare, and they keep nothing
/// alive. Sending to the pid of a process that has exited is silently dropped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid {
    node: u32,
    number: u32,
    serial: u32,
}

impl Pid {
    /// `<0.0.0>`: the sender of signals and messages that come from outside
    /// any process (a [`Handle`](crate::Handle), a plain thread). No process
    /// ever has this pid.
    pub const OUTSIDE: Pid = Pid {
        node: LOCAL_NODE,
        number: 0,
        serial: 0,
    };

    /// Builds a local pid from a runtime-unique sequence number.
    pub(crate) fn local(seq: u64) -> Pid {
        Pid {
            node: LOCAL_NODE,
            number: seq as u32,
            serial: (seq >> 32) as u32,
        }
    }

    /// The local pid with these fields (of `Pid::local`'s sequence).
    pub(crate) fn from_parts(number: u32, serial: u32) -> Pid {
        Pid {
            node: LOCAL_NODE,
            number,
            serial,
        }
    }

    /// Builds a pid of the node at `node` in the runtime's node table
    /// (never 0: that is the local node).
    pub(crate) fn remote(node: u32, number: u32, serial: u32) -> Pid {
        debug_assert_ne!(node, LOCAL_NODE);
        Pid {
            node,
            number,
            serial,
        }
    }

    /// The key of this pid in the local process table.
    pub(crate) fn key(self) -> u64 {
        (u64::from(self.serial) << 32) | u64::from(self.number)
    }

    /// Whether this pid names a process on the local node.
    pub fn is_local(self) -> bool {
        self.node == LOCAL_NODE
    }

    /// The node index (0 for the local node).
    pub fn node(self) -> u32 {
        self.node
    }

    /// The process number (the middle field of `<0.N.0>`).
    pub fn number(self) -> u32 {
        self.number
    }

    /// The serial (the last field of `<0.N.S>`), which grows when numbers wrap.
    pub fn serial(self) -> u32 {
        self.serial
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}.{}>", self.node, self.number, self.serial)
    }
}

/// The error of parsing a [`Pid`] from text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsePidError(String);

impl fmt::Display for ParsePidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a pid: {:?} (expected <node.number.serial> or node.number.serial)",
            self.0
        )
    }
}

impl std::error::Error for ParsePidError {}

impl std::str::FromStr for Pid {
    type Err = ParsePidError;

    /// Parses `<0.123.0>` or `0.123.0`. The pid need not name a live process.
    fn from_str(text: &str) -> Result<Pid, ParsePidError> {
        let error = || ParsePidError(text.to_owned());
        let inner = text.trim();
        let inner = inner
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or(inner);
        let mut parts = inner
            .split('.')
            .map(|p| p.parse::<u32>().map_err(|_| error()));
        let (Some(node), Some(number), Some(serial), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(error());
        };
        Ok(Pid {
            node: node?,
            number: number?,
            serial: serial?,
        })
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A runtime-unique reference, like Erlang's `make_ref()`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ref {
    node: u32,
    id: u64,
}

impl Ref {
    pub(crate) fn local(id: u64) -> Ref {
        Ref {
            node: LOCAL_NODE,
            id,
        }
    }

    /// A reference that stands, in this runtime, for one a process of the
    /// node at `node` made (see `crate::dist`).
    pub(crate) fn of_node(node: u32, id: u64) -> Ref {
        Ref { node, id }
    }

    /// The runtime-unique number of this reference.
    pub fn id(self) -> u64 {
        self.id
    }

    /// The node index (0 for a reference made on this node).
    pub fn node(self) -> u32 {
        self.node
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#Ref<{}.{}>", self.node, self.id)
    }
}

impl fmt::Debug for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The reference of a monitor, returned by [`monitor`](crate::monitor) and
/// carried by the [`Down`](crate::Down) message it produces.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct MonitorRef(pub(crate) Ref);

impl MonitorRef {
    /// The reference itself (what crosses to other nodes as the monitor's
    /// tag: [`dist::ref_to_term`](crate::dist::ref_to_term)).
    pub fn reference(self) -> Ref {
        self.0
    }
}

impl From<Ref> for MonitorRef {
    /// A reference used as a monitor reference (a tag of the same kind,
    /// e.g. for a reply that is matched like a monitor's).
    fn from(r: Ref) -> MonitorRef {
        MonitorRef(r)
    }
}

impl fmt::Display for MonitorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The reference of a timer armed by [`send_after`](crate::send_after).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TimerRef {
    /// The scheduler slot whose timer wheel holds the timer.
    pub(crate) slot: u32,
    /// Its key in that wheel.
    pub(crate) key: u64,
}

impl fmt::Display for TimerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#Timer<{}.{}>", self.slot, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_prints_erlang_style_and_round_trips_its_key() {
        let pid = Pid::local((7 << 32) | 123);
        assert_eq!(pid.to_string(), "<0.123.7>");
        assert_eq!(Pid::local(pid.key()), pid);
        assert!(pid.is_local());
    }

    #[test]
    fn pids_parse_with_or_without_brackets_and_reject_garbage() {
        let pid: Pid = "<0.123.7>".parse().unwrap();
        assert_eq!(pid, Pid::local((7 << 32) | 123));
        assert_eq!("0.123.7".parse::<Pid>(), Ok(pid));
        for bad in ["", "<0.1>", "0.1.2.3", "a.b.c", "<0.1.2", "0.-1.2"] {
            assert!(bad.parse::<Pid>().is_err(), "{bad}");
        }
    }
}
