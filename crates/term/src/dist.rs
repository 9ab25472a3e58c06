//! The distribution header: how a distribution connection frames a control
//! message and its payload once `DFLAG_DIST_HDR_ATOM_CACHE` is negotiated
//! (erts guide, "External Term Format", section "Distribution Header").
//!
//! ```text
//! 131 68 N Flags AtomCacheRefs  Control [Payload]       (DIST_HEADER)
//! 131 69 SeqId:64 FragId:64 N Flags AtomCacheRefs  Data (DIST_FRAG_HEADER)
//! 131 70 SeqId:64 FragId:64  Data                       (DIST_FRAG_CONT)
//! ```
//!
//! * `N` (0..=255) atom cache references follow; `Flags` has a half-byte per
//!   reference (bit 3: a new cache entry; bits 0–2: the segment) and a last
//!   half-byte whose bit 0 says atom lengths are 2 bytes (`LongAtoms`); the
//!   half-byte of reference `i` is the low half of byte `i / 2` when `i` is
//!   even, the high half when odd. There are `N / 2 + 1` flag bytes, none
//!   when `N` is 0.
//! * Each reference is its index in the segment (1 byte), then for a new
//!   entry the atom's length (1 or 2 bytes) and its UTF-8 text. The cache
//!   slot is `segment * 256 + index`, one of [`ATOM_CACHE_SIZE`] per
//!   connection direction.
//! * The terms that follow have no version byte; `ATOM_CACHE_REF` (82) `i`
//!   in them names the `i`th reference of this header.
//! * Fragments: the first (69) carries the header; continuations (70) carry
//!   the rest; the fragment id counts down to 1 on the last.
//!
//! Here: the receiving [`AtomCache`], [`decode_message`] for a whole
//! (unfragmented or reassembled) message, [`Fragments`] to reassemble, and
//! [`encode_message`] with a sending [`SenderAtomCache`]. The pass-through
//! framing (tag 112, each term with its own 131) needs only
//! [`decode_prefix`](crate::decode_prefix).

use std::collections::HashMap;

use crate::decode::{DecodeError, DecodeErrorKind, DecodeLimits, Decoder};
use crate::encode::{AtomSink, EncodeError, Encoder};
use crate::tag::VERSION;
use crate::term::{Atom, Fun, Term};

/// Slots in a connection's atom cache (8 segments of 256).
pub const ATOM_CACHE_SIZE: usize = 2048;

const DIST_HEADER: u8 = 68;
const DIST_FRAG_HEADER: u8 = 69;
const DIST_FRAG_CONT: u8 = 70;

/// The receiving side's atom cache for one connection: what the peer has
/// put in each of the 2048 slots so far.
#[derive(Clone, Debug)]
pub struct AtomCache {
    slots: Vec<Option<Atom>>,
}

impl Default for AtomCache {
    fn default() -> AtomCache {
        AtomCache {
            slots: vec![None; ATOM_CACHE_SIZE],
        }
    }
}

impl AtomCache {
    /// An empty cache, as at the start of a connection.
    pub fn new() -> AtomCache {
        AtomCache::default()
    }

    /// The atom in `slot`, if the peer has filled it.
    pub fn get(&self, slot: usize) -> Option<&Atom> {
        self.slots.get(slot).and_then(Option::as_ref)
    }
}

/// A message from a distribution connection: the control message and, for
/// the operations that have one (SEND, REG_SEND, ...), the payload.
#[derive(Clone, Debug, PartialEq)]
pub struct DistMessage {
    /// The control message, a tuple whose first element is the operation.
    pub control: Term,
    /// The message carried, if any.
    pub payload: Option<Term>,
}

/// Reads a `DIST_HEADER` (131, 68) from the start of `input`, updating
/// `cache` with its new entries, and returns the atoms its references name
/// (what `ATOM_CACHE_REF` indexes) and the offset where the terms start.
pub fn decode_header(
    input: &[u8],
    cache: &mut AtomCache,
) -> Result<(Vec<Atom>, usize), DecodeError> {
    let limits = DecodeLimits::default();
    let mut d = Decoder::new(input, &limits, None);
    expect_tag(&mut d, DIST_HEADER)?;
    let atoms = atom_cache_refs(&mut d, cache)?;
    Ok((atoms, d.pos))
}

fn expect_tag(d: &mut Decoder<'_>, tag: u8) -> Result<(), DecodeError> {
    let version = d.u8()?;
    if version != VERSION {
        return Err(d.error_at(0, DecodeErrorKind::BadVersion(version)));
    }
    let found = d.u8()?;
    if found != tag {
        return Err(d.error_at(
            1,
            DecodeErrorKind::Expected {
                what: "a distribution header",
                tag: found,
            },
        ));
    }
    Ok(())
}

/// `N`, the flags and the references; updates `cache`.
fn atom_cache_refs(d: &mut Decoder<'_>, cache: &mut AtomCache) -> Result<Vec<Atom>, DecodeError> {
    let n = usize::from(d.u8()?);
    if n == 0 {
        return Ok(Vec::new());
    }
    let flags = d.take(n / 2 + 1)?;
    let half = |i: usize| (flags[i / 2] >> ((i % 2) * 4)) & 0x0f;
    let long_atoms = half(n) & 1 == 1;
    let mut atoms = Vec::with_capacity(n);
    for i in 0..n {
        let at = d.pos;
        let f = half(i);
        let slot = usize::from(f & 0x07) * 256 + usize::from(d.u8()?);
        if f & 0x08 != 0 {
            let len = if long_atoms {
                usize::from(d.u16()?)
            } else {
                usize::from(d.u8()?)
            };
            let text = std::str::from_utf8(d.take(len)?)
                .map_err(|_| d.error_at(at, DecodeErrorKind::AtomNotUtf8))?;
            let atom = Atom::try_new(text)
                .map_err(|e| d.error_at(at, DecodeErrorKind::AtomTooLong { chars: e.chars }))?;
            cache.slots[slot] = Some(atom);
        }
        match &cache.slots[slot] {
            Some(atom) => atoms.push(atom.clone()),
            // A reference to a slot the peer never filled.
            None => return Err(d.error_at(at, DecodeErrorKind::AtomCacheRef(i as u8))),
        }
    }
    Ok(atoms)
}

/// Decodes a whole `DIST_HEADER` message (or a reassembled fragmented one):
/// header, control message, optional payload.
pub fn decode_message(
    input: &[u8],
    cache: &mut AtomCache,
    limits: &DecodeLimits,
) -> Result<DistMessage, DecodeError> {
    let (atoms, start) = decode_header(input, cache)?;
    decode_terms(input, start, &atoms, limits)
}

fn decode_terms(
    input: &[u8],
    start: usize,
    atoms: &[Atom],
    limits: &DecodeLimits,
) -> Result<DistMessage, DecodeError> {
    let mut d = Decoder::new(input, limits, Some(atoms));
    d.pos = start;
    let control = d.term(0)?;
    let payload = if d.pos < input.len() {
        Some(d.term(0)?)
    } else {
        None
    };
    if d.pos != input.len() {
        return Err(d.error_at(d.pos, DecodeErrorKind::TrailingBytes(input.len() - d.pos)));
    }
    Ok(DistMessage { control, payload })
}

/// Reassembles fragmented messages (`DIST_FRAG_HEADER`, `DIST_FRAG_CONT`)
/// of one connection. Fragments of different sequences may interleave;
/// those of one sequence arrive in order.
#[derive(Debug)]
pub struct Fragments {
    pending: HashMap<u64, Pending>,
    max_message: usize,
    max_pending: usize,
}

#[derive(Debug)]
struct Pending {
    atoms: Vec<Atom>,
    next_fragment: u64,
    data: Vec<u8>,
}

impl Default for Fragments {
    /// At most 64 MiB per message and 64 unfinished sequences.
    fn default() -> Fragments {
        Fragments::new(64 * 1024 * 1024, 64)
    }
}

impl Fragments {
    /// A reassembler that refuses messages over `max_message` bytes and more
    /// than `max_pending` unfinished sequences at once.
    pub fn new(max_message: usize, max_pending: usize) -> Fragments {
        Fragments {
            pending: HashMap::new(),
            max_message,
            max_pending,
        }
    }

    /// Takes one frame: a `DIST_HEADER` message gives its message at once; a
    /// fragment gives the message when it was the last one, `None` before.
    pub fn push(
        &mut self,
        frame: &[u8],
        cache: &mut AtomCache,
        limits: &DecodeLimits,
    ) -> Result<Option<DistMessage>, DecodeError> {
        let header_limits = DecodeLimits::default();
        let mut d = Decoder::new(frame, &header_limits, None);
        let version = d.u8()?;
        if version != VERSION {
            return Err(d.error_at(0, DecodeErrorKind::BadVersion(version)));
        }
        let tag = d.u8()?;
        match tag {
            // Only the header's atom references are read before this.
            DIST_HEADER => decode_message(frame, cache, limits).map(Some),
            DIST_FRAG_HEADER | DIST_FRAG_CONT => {
                let sequence = d.u64()?;
                let fragment = d.u64()?;
                let at = d.pos;
                let (mut pending, first) = if tag == DIST_FRAG_HEADER {
                    if self.pending.contains_key(&sequence) {
                        return Err(d.error_at(
                            2,
                            DecodeErrorKind::Fragment("starts a sequence already started"),
                        ));
                    }
                    if self.pending.len() >= self.max_pending {
                        return Err(d.error_at(
                            2,
                            DecodeErrorKind::Fragment("starts one sequence too many"),
                        ));
                    }
                    let atoms = atom_cache_refs(&mut d, cache)?;
                    (
                        Pending {
                            atoms,
                            next_fragment: fragment,
                            data: Vec::new(),
                        },
                        true,
                    )
                } else {
                    match self.pending.remove(&sequence) {
                        Some(p) => (p, false),
                        None => {
                            return Err(d.error_at(
                                2,
                                DecodeErrorKind::Fragment("continues a sequence never started"),
                            ))
                        }
                    }
                };
                if fragment == 0 || (!first && fragment != pending.next_fragment) {
                    return Err(d.error_at(at - 8, DecodeErrorKind::Fragment("id out of order")));
                }
                let rest = &frame[d.pos..];
                if pending.data.len() + rest.len() > self.max_message {
                    return Err(d.error_at(
                        d.pos,
                        DecodeErrorKind::MessageTooLarge {
                            size: (pending.data.len() + rest.len()) as u64,
                            limit: self.max_message,
                        },
                    ));
                }
                pending.data.extend_from_slice(rest);
                if fragment == 1 {
                    decode_terms(&pending.data, 0, &pending.atoms, limits).map(Some)
                } else {
                    pending.next_fragment = fragment - 1;
                    self.pending.insert(sequence, pending);
                    Ok(None)
                }
            }
            other => Err(d.error_at(1, DecodeErrorKind::UnknownTag(other))),
        }
    }
}

/// The sending side's atom cache for one connection: which atom this side
/// has put in each slot, so that repeated atoms travel as one byte.
#[derive(Clone, Debug)]
pub struct SenderAtomCache {
    slots: Vec<Option<Atom>>,
}

impl Default for SenderAtomCache {
    fn default() -> SenderAtomCache {
        SenderAtomCache {
            slots: vec![None; ATOM_CACHE_SIZE],
        }
    }
}

impl SenderAtomCache {
    /// An empty cache, as at the start of a connection.
    pub fn new() -> SenderAtomCache {
        SenderAtomCache::default()
    }

    fn slot_of(atom: &Atom) -> usize {
        // FNV-1a: any stable spread over the slots will do.
        let mut h: u32 = 0x811c_9dc5;
        for b in atom.as_str().bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        h as usize % ATOM_CACHE_SIZE
    }
}

/// The references of one message being encoded. A message has at most
/// one atom per cache slot, so an atom is found by its slot: a scan of
/// small integers, no hashing of atom text beyond the slot's own hash.
struct Refs {
    /// (atom, slot, whether the slot is new or changed), in reference order.
    list: Vec<(Atom, usize, bool)>,
}

impl Refs {
    /// The reference index of the atom this message put in `slot`.
    fn in_slot(&self, slot: usize) -> Option<(usize, &Atom)> {
        self.list
            .iter()
            .enumerate()
            .find(|(_, (_, s, _))| *s == slot)
            .map(|(i, (a, _, _))| (i, a))
    }
}

impl AtomSink for Refs {
    fn index(&mut self, atom: &Atom) -> Option<u8> {
        match self.in_slot(SenderAtomCache::slot_of(atom)) {
            Some((i, a)) if a == atom => Some(i as u8),
            _ => None,
        }
    }
}

fn visit_atoms(t: &Term, f: &mut impl FnMut(&Atom)) {
    match t {
        Term::Atom(a) => f(a),
        Term::Pid(p) => f(&p.node),
        Term::Port(p) => f(&p.node),
        Term::Reference(r) => f(&r.node),
        Term::Fun(Fun::Export {
            module, function, ..
        }) => {
            f(module);
            f(function);
        }
        Term::Fun(Fun::Closure(c)) => {
            f(&c.module);
            f(&c.pid.node);
            c.free_vars.iter().for_each(|v| visit_atoms(v, f));
        }
        Term::Tuple(items) | Term::List(items) => items.iter().for_each(|v| visit_atoms(v, f)),
        Term::ImproperList(items, tail) => {
            items.iter().for_each(|v| visit_atoms(v, f));
            visit_atoms(tail, f);
        }
        Term::Map(m) => m.iter().for_each(|(k, v)| {
            visit_atoms(k, f);
            visit_atoms(v, f);
        }),
        _ => {}
    }
}

/// Encodes a `DIST_HEADER` message: the header, then `control` and
/// `payload` with their atoms as cache references (up to 255 distinct atoms
/// per message; more are written in full). `cache` is updated.
pub fn encode_message(
    control: &Term,
    payload: Option<&Term>,
    cache: &mut SenderAtomCache,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_message_into(control, payload, cache, &mut out)?;
    Ok(out)
}

/// [`encode_message`], appending to `out` (on an error, `out` may hold
/// part of the message; `cache` is updated as for a sent message).
pub fn encode_message_into(
    control: &Term,
    payload: Option<&Term>,
    cache: &mut SenderAtomCache,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mut refs = Refs { list: Vec::new() };
    let mut collect = |a: &Atom| {
        if refs.list.len() == 255 {
            return;
        }
        let slot = SenderAtomCache::slot_of(a);
        // Already referenced, or two atoms of one message in one slot (the
        // second goes in full).
        if refs.in_slot(slot).is_some() {
            return;
        }
        let new = cache.slots[slot].as_ref() != Some(a);
        refs.list.push((a.clone(), slot, new));
    };
    visit_atoms(control, &mut collect);
    if let Some(p) = payload {
        visit_atoms(p, &mut collect);
    }

    out.extend_from_slice(&[VERSION, DIST_HEADER, refs.list.len() as u8]);
    if !refs.list.is_empty() {
        let long_atoms = refs
            .list
            .iter()
            .any(|(a, _, new)| *new && a.as_str().len() > 255);
        let n = refs.list.len();
        let mut flags = vec![0u8; n / 2 + 1];
        let halves = refs
            .list
            .iter()
            .map(|(_, slot, new)| (slot / 256) as u8 | if *new { 0x08 } else { 0 })
            .chain(std::iter::once(u8::from(long_atoms)));
        for (i, h) in halves.enumerate() {
            flags[i / 2] |= h << ((i % 2) * 4);
        }
        out.extend_from_slice(&flags);
        for (atom, slot, new) in &refs.list {
            out.push((slot % 256) as u8);
            if *new {
                let text = atom.as_str().as_bytes();
                if long_atoms {
                    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
                } else {
                    out.push(text.len() as u8);
                }
                out.extend_from_slice(text);
                cache.slots[*slot] = Some(atom.clone());
            }
        }
    }
    let mut enc = Encoder {
        out,
        atom_cache: Some(&mut refs),
    };
    enc.term(control)?;
    if let Some(p) = payload {
        enc.term(p)?;
    }
    Ok(())
}
