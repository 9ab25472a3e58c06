//! Distribution capability flags (`DFLAG_*`), exchanged in the handshake.
//!
//! Values from OTP's `dist.hrl`; note that `MANDATORY_25_DIGEST` is bit 26
//! (the erts guide misprints it as bit 36). The flags a connection uses are
//! the intersection of both sides' flags.

/// A visible node: listed in `nodes()` (hidden otherwise).
pub const PUBLISHED: u64 = 0x1;
/// Extended (multi-word) references.
pub const EXTENDED_REFERENCES: u64 = 0x4;
/// Remote process monitors.
pub const DIST_MONITOR: u64 = 0x8;
/// `FUN_TAGS`.
pub const FUN_TAGS: u64 = 0x10;
/// Remote monitors by registered name.
pub const DIST_MONITOR_NAME: u64 = 0x20;
/// `NEW_FUN_EXT`.
pub const NEW_FUN_TAGS: u64 = 0x80;
/// Extended pid and port encodings.
pub const EXTENDED_PIDS_PORTS: u64 = 0x100;
/// `EXPORT_EXT`.
pub const EXPORT_PTR_TAG: u64 = 0x200;
/// Bitstrings.
pub const BIT_BINARIES: u64 = 0x400;
/// `NEW_FLOAT_EXT`.
pub const NEW_FLOATS: u64 = 0x800;
/// The distribution header with the atom cache.
pub const DIST_HDR_ATOM_CACHE: u64 = 0x2000;
/// `SMALL_ATOM_EXT`.
pub const SMALL_ATOM_TAGS: u64 = 0x4000;
/// UTF-8 atoms.
pub const UTF8_ATOMS: u64 = 0x10000;
/// Maps.
pub const MAP_TAG: u64 = 0x20000;
/// 32-bit creation (`NEW_PID_EXT`, `NEW_PORT_EXT`, `NEWER_REFERENCE_EXT`).
pub const BIG_CREATION: u64 = 0x40000;
/// `SEND_SENDER` control messages.
pub const SEND_SENDER: u64 = 0x80000;
/// Exit reasons as payloads.
pub const EXIT_PAYLOAD: u64 = 0x400000;
/// Fragmented messages.
pub const FRAGMENTS: u64 = 0x800000;
/// The OTP 23 handshake (`send_name` 'N' with 64-bit flags and creation).
pub const HANDSHAKE_23: u64 = 0x1000000;
/// The new link protocol (`UNLINK_ID`, `UNLINK_ID_ACK`).
pub const UNLINK_ID: u64 = 0x2000000;
/// Shorthand for the OTP 25 mandatory set.
pub const MANDATORY_25_DIGEST: u64 = 0x4000000;
/// `SPAWN_REQUEST` / `SPAWN_REPLY`.
pub const SPAWN: u64 = 1 << 32;
/// Dynamic node names.
pub const NAME_ME: u64 = 1 << 33;
/// 32-bit pid id/serial, 64-bit port ids, references of up to 5 words.
pub const V4_NC: u64 = 1 << 34;
/// Process aliases (`ALIAS_SEND`).
pub const ALIAS: u64 = 1 << 35;

/// Ember's own flag, in a bit far above every bit OTP assigns (they
/// stay below bit 40): the node makes pids with any 32-bit number and serial and
/// takes any pid of its own back. Only Ember nodes offer it, so it is in
/// the negotiated flags (the intersection) exactly between two Ember
/// nodes, which then never walk their messages for pids the peer could
/// not make (see `connection.rs`, `PeerIds`). OTP nodes keep only the
/// flags they know.
pub const EMBER_PIDS: u64 = 1 << 60;

/// What OTP 25 refuses to connect without (`MANDATORY_DFLAGS_25`).
pub const MANDATORY_25: u64 = EXTENDED_REFERENCES
    | FUN_TAGS
    | NEW_FUN_TAGS
    | EXTENDED_PIDS_PORTS
    | EXPORT_PTR_TAG
    | BIT_BINARIES
    | NEW_FLOATS
    | UTF8_ATOMS
    | MAP_TAG
    | BIG_CREATION
    | HANDSHAKE_23;

/// What OTP 26+ adds to the mandatory set (`MANDATORY_DFLAGS_26`).
pub const MANDATORY_26: u64 = V4_NC | UNLINK_ID;

/// What Ember requires of a peer: the OTP 25 and 26 mandatory sets.
pub const REQUIRED: u64 = MANDATORY_25 | MANDATORY_26;

/// What Ember offers: the required set, the digest bit, monitors (by pid
/// and by name), spawn, aliases, the atom cache, fragments, and
/// `PUBLISHED` (cleared for a hidden node).
pub const OFFERED: u64 = REQUIRED
    | MANDATORY_25_DIGEST
    | PUBLISHED
    | DIST_MONITOR
    | DIST_MONITOR_NAME
    | DIST_HDR_ATOM_CACHE
    | FRAGMENTS
    | SMALL_ATOM_TAGS
    | SEND_SENDER
    | SPAWN
    | ALIAS
    | EMBER_PIDS;
