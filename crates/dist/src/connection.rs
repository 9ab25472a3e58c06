//! One distribution connection after the handshake: `Len:32 | Payload`
//! frames, ticks, decoding, and the control messages Ember answers itself.
//!
//! Two tasks per connection. Senders encode their messages straight into
//! the connection's [`SendQueue`] (under its lock, which also guards the
//! sending atom cache, so bytes are queued in the order they were
//! encoded); the writer takes everything queued in one swap and writes it
//! with one `write_all`, so a burst of small messages costs one system
//! call, and writes a tick (an empty frame) when it has been idle for a
//! quarter of `net_ticktime`. The reader owns the read half, the receiving
//! atom cache and the fragment reassembler; it declares the connection
//! down when nothing (not even a tick) arrives for `net_ticktime`, on a
//! protocol error, or on EOF, and then removes the connection from the
//! node.
//!
//! On plain TCP the write half is shared with the senders: whoever holds
//! the queue's write token (`Pending::writing`) is the only one writing.
//! A sender ([`SendQueue::enqueue`]: a process's message on the lane's
//! direct path, the lane's forwarder, [`Node::send`](crate::Node) and the
//! reader's own answers) that finds the token free, nothing queued before
//! its message, and the connection idle for [`DIRECT_IDLE`] (or for
//! [`DIRECT_ANSWER_IDLE`] if a message arrived since the last write: an
//! answer) takes the token and writes its message itself without
//! blocking (`try_write`), then puts back in front what the socket did
//! not take and wakes the writer for it; so a call's request or reply
//! leaves from the sender's thread, with no wake-up of the writer task
//! (loom model in `loom_direct.rs`). A stream (messages queued behind one
//! another, or within those times of the last write) is written by the
//! writer task in bursts, as is everything while the token is taken.
//!
//! The queue's protocol (lock, counter, the writer's wake-up) has a loom
//! model in `loom_models.rs`. The socket a runtime node's connection shares
//! between its reader process, the writer task and direct writers (over
//! the pollset's readiness and wake-ups), and its teardown racing a
//! writer, have one in `loom_shared_sock.rs`.
//!
//! # Backpressure (`busy_dist_port`)
//!
//! The queue is bounded by bytes ([`NodeConfig::send_queue_limit`](crate::NodeConfig)):
//! while the encoded bytes not yet written reach the limit, the queue is
//! *busy*. An async sender waits until the writer has made room, then
//! queues its message; a sync sender ([`SendQueue::try_send`]) gets
//! [`DistError::Busy`] and its message is not queued. A message is never
//! dropped without an error. Like Erlang, a sender that found room queues
//! its whole message, so the queue holds at most the limit plus one
//! message per concurrent sender. Answers the reader writes for the peer
//! (`is_auth`, `MONITOR_P_EXIT`, ...) skip the wait: a reader waiting for
//! its own writer could deadlock two nodes that both stream.
//!
//! Messages come as pass-through frames (`112`, then the control message
//! and payload, each with its own `131`), with the distribution header
//! (`131, 68`, atom cache) once `DFLAG_DIST_HDR_ATOM_CACHE` is negotiated,
//! or as fragments (`131, 69` and `131, 70`) once `DFLAG_FRAGMENTS` is.
//! Ember sends with the header when it was negotiated, pass-through
//! otherwise, and splits a message whose frame would exceed
//! [`FRAGMENT_SIZE`] into fragments when both sides have `DFLAG_FRAGMENTS`
//! (the first fragment carries the atom cache update and the whole control
//! message; the fragments of one message are written back to back).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ember_runtime::{ExitReason, Spawn};
use ember_term::dist::{self as wire, AtomCache, Fragments, SenderAtomCache};
use ember_term::{decode_prefix, encode_into, Atom, DecodeLimits, Pid, Reference, Term};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use crate::error::DistError;
use crate::flags;
use crate::global;
use crate::handshake::Peer;
use crate::node::{Delivery, Inner};
use crate::traffic::Traffic;
use crate::transport::DistStream;

const PASS_THROUGH: u8 = 112;

// Control message operations (erts guide, "Protocol between connected nodes").
const LINK: i64 = 1;
const SEND: i64 = 2;
const EXIT: i64 = 3;
const REG_SEND: i64 = 6;
const SEND_TT: i64 = 12;
const REG_SEND_TT: i64 = 16;
const MONITOR_P: i64 = 19;
const DEMONITOR_P: i64 = 20;
const MONITOR_P_EXIT: i64 = 21;
const SEND_SENDER: i64 = 22;
const SEND_SENDER_TT: i64 = 23;
const SPAWN_REQUEST: i64 = 29;
const SPAWN_REQUEST_TT: i64 = 30;
const SPAWN_REPLY: i64 = 31;
const ALIAS_SEND: i64 = 33;
const ALIAS_SEND_TT: i64 = 34;
const UNLINK_ID: i64 = 35;
const UNLINK_ID_ACK: i64 = 36;

/// A message for the writer: a control message and its optional payload.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) control: Term,
    pub(crate) payload: Option<Term>,
}

/// Reads one frame: `Ok(None)` is a tick. A length above `max` is an
/// error before anything is allocated, and the buffer only grows as bytes
/// actually arrive.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, DistError> {
    let len = r.read_u32().await?;
    if len == 0 {
        return Ok(None);
    }
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max {
        return Err(DistError::Protocol(format!(
            "frame of {len} bytes exceeds the limit of {max}"
        )));
    }
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    r.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(DistError::Protocol(
            "connection closed inside a frame".into(),
        ));
    }
    Ok(Some(buf))
}

/// Decodes a frame into the control message and payload; `None` for a
/// fragment that does not finish its message.
pub(crate) fn decode_frame(
    buf: &[u8],
    cache: &mut AtomCache,
    fragments: &mut Fragments,
    limits: &DecodeLimits,
) -> Result<Option<(Term, Option<Term>)>, DistError> {
    let bad = |e: ember_term::DecodeError| DistError::Protocol(format!("bad message: {e}"));
    match buf {
        [PASS_THROUGH, rest @ ..] => {
            let (control, used) = decode_prefix(rest, limits).map_err(bad)?;
            let rest = &rest[used..];
            if rest.is_empty() {
                return Ok(Some((control, None)));
            }
            let (payload, used) = decode_prefix(rest, limits).map_err(bad)?;
            if used != rest.len() {
                return Err(DistError::Protocol("trailing bytes after a message".into()));
            }
            Ok(Some((control, Some(payload))))
        }
        [131, 68..=70, ..] => Ok(fragments
            .push(buf, cache, limits)
            .map_err(bad)?
            .map(|m| (m.control, m.payload))),
        [first, ..] => Err(DistError::Protocol(format!("unknown frame type {first}"))),
        [] => Err(DistError::Protocol("empty frame".into())),
    }
}

/// The largest frame Ember sends unsplit to a peer that takes fragments.
pub(crate) const FRAGMENT_SIZE: usize = 64 * 1024;

/// How a connection encodes what it sends.
struct Encoder {
    /// The sending atom cache, when the distribution header is used.
    cache: Option<SenderAtomCache>,
    /// Split frames over [`FRAGMENT_SIZE`] (`DFLAG_FRAGMENTS`).
    fragments: bool,
    /// The sequence id of the next fragmented message.
    next_sequence: u64,
}

/// Appends the frame(s) of `m` to `out`. On an error `out` is unchanged.
fn encode_frames(m: &Outgoing, enc: &mut Encoder, out: &mut Vec<u8>) -> Result<(), DistError> {
    let bad = |e: ember_term::EncodeError| DistError::Protocol(format!("cannot encode: {e}"));
    let start = out.len();
    let result = (|| match enc.cache.as_mut() {
        Some(cache) => {
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            if let Err(e) = wire::encode_message_into(&m.control, m.payload.as_ref(), cache, out) {
                // The cache now names atoms the peer never got: start afresh
                // (every atom goes as a new entry again), which is always safe.
                *cache = SenderAtomCache::new();
                return Err(bad(e));
            }
            let len = out.len() - at - 4;
            if !enc.fragments || len <= FRAGMENT_SIZE {
                let len = u32::try_from(len)
                    .map_err(|_| DistError::Protocol("message over 4 GiB".into()))?;
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
                return Ok(());
            }
            let body = out.split_off(at + 4);
            out.truncate(at);
            // The length of the control message in `body`: encoded alone,
            // its atoms get the same cache references (they come first in
            // the message, and are all in the cache now, so this encoding
            // changes nothing in it).
            let alone = wire::encode_message(&m.control, None, cache).map_err(bad)?;
            let control_len = alone.len() - header_len(&alone);
            let sequence = enc.next_sequence;
            enc.next_sequence += 1;
            push_fragments(&body, control_len, sequence, out)
        }
        None => push_frame(out, |out| {
            out.push(PASS_THROUGH);
            encode_into(&m.control, out)?;
            if let Some(p) = &m.payload {
                encode_into(p, out)?;
            }
            Ok::<(), ember_term::EncodeError>(())
        })
        .and_then(|r| r.map_err(bad)),
    })();
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Appends `Len:32` and what `body` writes.
fn push_frame<T>(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> T) -> Result<T, DistError> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let r = body(out);
    let len = u32::try_from(out.len() - at - 4)
        .map_err(|_| DistError::Protocol("message over 4 GiB".into()))?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(r)
}

/// The length of the `131, 68, N, Flags, AtomCacheRefs` header of an
/// encoded `DIST_HEADER` message (written by `ember_term`, so well formed).
fn header_len(msg: &[u8]) -> usize {
    let n = usize::from(msg[2]);
    if n == 0 {
        return 3;
    }
    let flags = &msg[3..3 + n / 2 + 1];
    let half = |i: usize| (flags[i / 2] >> ((i % 2) * 4)) & 0x0f;
    let long_atoms = half(n) & 1 != 0;
    let mut pos = 3 + n / 2 + 1;
    for i in 0..n {
        pos += 1; // the index in the segment
        if half(i) & 0x08 != 0 {
            let len = if long_atoms {
                let l = usize::from(u16::from_be_bytes([msg[pos], msg[pos + 1]]));
                pos += 2;
                l
            } else {
                let l = usize::from(msg[pos]);
                pos += 1;
                l
            };
            pos += len;
        }
    }
    pos
}

/// Splits an encoded `DIST_HEADER` message into `DIST_FRAG_HEADER` (the
/// header, the control message and the first data) and `DIST_FRAG_CONT`
/// frames of at most about [`FRAGMENT_SIZE`] bytes each.
fn push_fragments(
    msg: &[u8],
    control_len: usize,
    sequence: u64,
    out: &mut Vec<u8>,
) -> Result<(), DistError> {
    let header = header_len(msg);
    let data = &msg[header..];
    let first = data.len().min(FRAGMENT_SIZE.max(control_len));
    let rest = &data[first..];
    let count = 1 + rest.len().div_ceil(FRAGMENT_SIZE);
    push_frame(out, |out| {
        out.extend_from_slice(&[131, 69]);
        out.extend_from_slice(&sequence.to_be_bytes());
        out.extend_from_slice(&(count as u64).to_be_bytes());
        out.extend_from_slice(&msg[2..header]);
        out.extend_from_slice(&data[..first]);
    })?;
    for (i, chunk) in rest.chunks(FRAGMENT_SIZE).enumerate() {
        let id = (count - 1 - i) as u64;
        push_frame(out, |out| {
            out.extend_from_slice(&[131, 70]);
            out.extend_from_slice(&sequence.to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(chunk);
        })?;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the senders have encoded and the writer has not taken yet.
struct Pending {
    bytes: Vec<u8>,
    encoder: Encoder,
    /// The write token: someone (the writer task, or a sender writing
    /// directly) has taken bytes out and is writing them. Only its holder
    /// writes to the socket, so frames go out whole and in queue order.
    writing: bool,
    /// The write half of a plain TCP connection, shared with the writer so
    /// that a sender finding the token free writes its bytes itself
    /// ([`SendQueue::write_direct`]); `None` over TLS and once closed.
    direct: Option<Arc<SharedSock>>,
    /// An emptied buffer kept for the next direct write.
    spare: Vec<u8>,
    /// When the last write (direct or the writer's) ended: a sender
    /// writes directly only to a connection idle for [`DIRECT_IDLE`], or
    /// for [`DIRECT_ANSWER_IDLE`] if it received a message since.
    last_write: Instant,
    /// The connection's count of received messages when that write ended.
    heard_at_write: u64,
}

/// How long a connection must have written nothing for a sender to write
/// directly. A stream of messages (each sent well within this of the
/// last write) goes through the writer task, which writes each burst with
/// one system call; a message after a pause (a call, its reply) leaves at
/// once from the sender's thread.
const DIRECT_IDLE: Duration = Duration::from_micros(20);

/// How long a connection that received a message since its last write
/// must have written nothing for a sender to write directly: an answer
/// (a call's reply, the next request after a reply, an echo) leaves at
/// once even when the round trip took less than [`DIRECT_IDLE`], while
/// streams both ways (each side's messages well within this of the
/// last) still go through the writer in bursts.
const DIRECT_ANSWER_IDLE: Duration = Duration::from_micros(3);

/// Bytes a sender took out of the queue with the write token, to write
/// directly ([`SendQueue::write_direct`]).
pub(crate) struct Batch {
    sock: Arc<SharedSock>,
    bytes: Vec<u8>,
    /// Written ahead of a message (a call's `MONITOR_P`): the write does
    /// not count as the connection's last, so the message that follows
    /// is written directly too.
    lead: bool,
}

/// The send side of one connection: encoded frames waiting for the
/// writer, bounded by bytes (see the module docs on backpressure).
pub(crate) struct SendQueue {
    pending: Mutex<Pending>,
    /// Bytes encoded and not yet written (queued plus being written).
    queued: AtomicUsize,
    limit: usize,
    closed: AtomicBool,
    /// Senders → writer: there is something to write.
    work: Notify,
    /// Writer → senders: bytes were written (or the connection closed).
    room: Notify,
    peer: Atom,
    /// The flags negotiated with the peer.
    peer_flags: u64,
    /// What the peer accepts of its own pids and references.
    own_ids: PeerIds,
    /// The connection's traffic counters (relaxed adds, see `traffic.rs`).
    pub(crate) traffic: Traffic,
    /// Held by the reader while it hands one control message on; true once
    /// the connection is retired ([`SendQueue::retire`]): from then on the
    /// reader delivers nothing, so nothing from this connection reaches the
    /// node after its `connection_down`.
    retired: Mutex<bool>,
}

/// The pids and references of the peer's own node (its name and current
/// creation) the peer accepts back. An OTP node decodes one of its own pids
/// as a local pid and takes one it could never have made — number or
/// serial out of its range — for a corrupted external term: it closes the
/// connection, losing everything queued behind it. Such a pid (a made-up
/// `<0.999999.0>` of an OTP 25 node, say) is refused before it is encoded.
///
/// OTP 25 and earlier (and 32-bit emulators) make pids with a 15-bit number
/// and a 13-bit serial; OTP 26 and later on 64-bit emulators a 28-bit
/// number and a 32-bit serial; an Ember node any 32-bit number and serial.
/// Nothing in the handshake tells them apart, so a connection starts with
/// the narrow range and widens it for good when the peer names one of its
/// own pids beyond it in anything it sends (the sender of a message, a
/// link, a monitor, a pid inside a message): to OTP 26's range, or to any
/// pid once the peer shows one beyond that too. The first word of a
/// reference of the peer is 18 bits in every version. Pids and references
/// of other nodes, and of earlier incarnations of the peer, are external
/// for it and never refused.
struct PeerIds {
    creation: u32,
    /// [`NARROW`], [`WIDE`] or [`ANY`]: only ever grows.
    range: AtomicU8,
}

/// The peer takes OTP 25's range of its own pids.
const NARROW: u8 = 0;
/// The peer takes OTP 26's range (it showed a pid beyond OTP 25's).
const WIDE: u8 = 1;
/// The peer takes any pid of its own (it showed one beyond OTP 26's: an
/// Ember node).
const ANY: u8 = 2;

/// OTP 25's range of its own pids' numbers and serials.
const NARROW_PID: (u32, u32) = ((1 << 15) - 1, (1 << 13) - 1);
/// OTP 26's (64-bit): 28-bit numbers, 32-bit serials.
const WIDE_PID: (u32, u32) = ((1 << 28) - 1, u32::MAX);
/// The largest first word of a reference in every version.
const MAX_REF_WORD0: u32 = (1 << 18) - 1;

impl PeerIds {
    /// `any`: the peer said in the handshake that it takes any pid of its
    /// own ([`flags::EMBER_PIDS`]: an Ember node), so nothing is ever
    /// checked or learnt (no walk of the terms at all).
    fn new(creation: u32, any: bool) -> PeerIds {
        PeerIds {
            creation,
            range: AtomicU8::new(if any { ANY } else { NARROW }),
        }
    }

    /// Visits every pid and reference of the peer `name` (this creation)
    /// in `terms`, iteratively (a deep term cannot overflow the stack),
    /// until `f` answers `Some`.
    fn find<'a, T>(
        &self,
        name: &Atom,
        terms: impl IntoIterator<Item = &'a Term>,
        mut f: impl FnMut(&'a Term) -> Option<T>,
    ) -> Option<T> {
        let mut pending: Vec<&'a Term> = terms.into_iter().collect();
        while let Some(t) = pending.pop() {
            match t {
                Term::Pid(p) if &p.node == name && p.creation == self.creation => {
                    if let Some(found) = f(t) {
                        return Some(found);
                    }
                }
                Term::Reference(r) if &r.node == name && r.creation == self.creation => {
                    if let Some(found) = f(t) {
                        return Some(found);
                    }
                }
                Term::Tuple(items) | Term::List(items) => pending.extend(items.iter()),
                Term::ImproperList(items, tail) => {
                    pending.extend(items.iter());
                    pending.push(tail);
                }
                Term::Map(m) => {
                    for (k, v) in m.iter() {
                        pending.push(k);
                        pending.push(v);
                    }
                }
                Term::Fun(ember_term::Fun::Closure(c)) => pending.extend(c.free_vars.iter()),
                _ => {}
            }
        }
        None
    }

    /// The first pid or reference of the peer in `m` it would not accept,
    /// described.
    fn refused(&self, name: &Atom, m: &Outgoing) -> Option<String> {
        let (max_id, max_serial) = match self.range.load(Ordering::Relaxed) {
            NARROW => NARROW_PID,
            WIDE => WIDE_PID,
            _ => return None,
        };
        let terms = std::iter::once(&m.control).chain(m.payload.as_ref());
        self.find(name, terms, |t| match t {
            Term::Pid(p) if p.id > max_id || p.serial > max_serial => Some(format!(
                "{t} names {name} with number {} and serial {}, which it never makes \
                 (it takes at most {max_id} and {max_serial}): it would take the message \
                 for a corrupted term and close the connection",
                p.id, p.serial
            )),
            Term::Reference(r) if r.ids.first().is_some_and(|&w| w > MAX_REF_WORD0) => {
                Some(format!(
                    "{t} names {name} with a first word over {MAX_REF_WORD0}, which it never \
                     makes: it would take the message for a corrupted term and close the \
                     connection"
                ))
            }
            _ => None,
        })
    }

    /// Widens the range when the peer names one of its own pids beyond
    /// it in `control` or `payload` (what the peer sent: every pid of its
    /// own in there is one it makes).
    fn learn(&self, name: &Atom, control: &Term, payload: Option<&Term>) {
        let range = self.range.load(Ordering::Relaxed);
        if range == ANY {
            return;
        }
        let beyond =
            |(max_id, max_serial): (u32, u32), p: &Pid| p.id > max_id || p.serial > max_serial;
        let mut seen = range;
        self.find(name, std::iter::once(control).chain(payload), |t| {
            if let Term::Pid(p) = t {
                if beyond(WIDE_PID, p) {
                    seen = ANY;
                    return Some(());
                }
                if beyond(NARROW_PID, p) {
                    seen = seen.max(WIDE);
                }
            }
            None
        });
        if seen > range {
            self.range.fetch_max(seen, Ordering::Relaxed);
        }
    }
}

impl SendQueue {
    fn new(
        peer: Atom,
        creation: u32,
        limit: usize,
        (cache, fragments, any_pid): (bool, bool, bool),
    ) -> SendQueue {
        SendQueue {
            pending: Mutex::new(Pending {
                bytes: Vec::new(),
                encoder: Encoder {
                    cache: cache.then(SenderAtomCache::new),
                    fragments,
                    next_sequence: 1,
                },
                writing: false,
                direct: None,
                spare: Vec::new(),
                last_write: Instant::now(),
                heard_at_write: 0,
            }),
            queued: AtomicUsize::new(0),
            limit,
            closed: AtomicBool::new(false),
            work: Notify::new(),
            room: Notify::new(),
            peer,
            peer_flags: 0,
            own_ids: PeerIds::new(creation, any_pid),
            traffic: Traffic::new(),
            retired: Mutex::new(false),
        }
    }

    /// Retires the connection: once this returns, its reader delivers
    /// nothing more (a control message it is handing on now has been
    /// handed on), and senders get an error.
    pub(crate) fn retire(&self) {
        *lock(&self.retired) = true;
        self.close();
    }

    fn closed_error(&self) -> DistError {
        DistError::Refused(format!("the connection to {} closed", self.peer))
    }

    /// Queues `m`, first waiting while the queue is busy.
    pub(crate) async fn send(&self, m: Outgoing) -> Result<(), DistError> {
        // The common case, room: no waiting machinery at all.
        if self.queued.load(Ordering::Acquire) < self.limit {
            return self.force(m);
        }
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return Err(self.closed_error());
            }
            if self.queued.load(Ordering::Acquire) < self.limit {
                break;
            }
            room.await;
        }
        self.push(&m)
    }

    /// Queues `m` unless the queue is busy ([`DistError::Busy`]: nothing
    /// was queued) or closed.
    pub(crate) fn try_send(&self, m: Outgoing) -> Result<(), DistError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        if self.queued.load(Ordering::Acquire) >= self.limit {
            return Err(DistError::Busy(self.peer.to_string()));
        }
        self.push(&m)
    }

    /// Queues `m` whether or not the queue is busy: for the reader's
    /// answers to the peer.
    fn force(&self, m: Outgoing) -> Result<(), DistError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        self.push(&m)
    }

    /// The peer node.
    pub(crate) fn peer(&self) -> &Atom {
        &self.peer
    }

    /// The flags negotiated with the peer.
    pub(crate) fn peer_flags(&self) -> u64 {
        self.peer_flags
    }

    /// Whether the queue is closed (the connection is down or retired).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether a sender finds room now: open and not busy.
    pub(crate) fn has_room(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && self.queued.load(Ordering::Acquire) < self.limit
    }

    /// Queues `m` and, when [`SendQueue::enqueue`] hands the write token
    /// over, writes it at once ([`SendQueue::write_direct`]); else the
    /// writer task is woken for it.
    fn push(&self, m: &Outgoing) -> Result<(), DistError> {
        if let Some(batch) = self.enqueue(m, false)? {
            self.write_direct(batch);
        }
        Ok(())
    }

    /// Queues `m` (without looking at the limit: the caller found room)
    /// and, on a plain TCP connection idle for [`DIRECT_IDLE`] (or for
    /// [`DIRECT_ANSWER_IDLE`] after receiving a message) whose write token
    /// is free, takes the token and everything queued: the caller
    /// then writes it with [`SendQueue::write_direct`] (after releasing
    /// any lock of its own; the order of the bytes is fixed here).
    /// Otherwise the writer task is woken.
    ///
    /// `lead`: `m` is a signal a message is likely to follow at once (the
    /// `MONITOR_P` of a call): its direct write leaves the connection idle
    /// for that message's.
    pub(crate) fn enqueue(&self, m: &Outgoing, lead: bool) -> Result<Option<Batch>, DistError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        if let Some(why) = self.own_ids.refused(&self.peer, m) {
            tracing::warn!("dist: not sending a message to {}: {why}", self.peer);
            return Err(DistError::BadPid(why));
        }
        let mut p = lock(&self.pending);
        let Pending {
            bytes,
            encoder,
            writing,
            direct: sock,
            spare,
            last_write,
            heard_at_write,
        } = &mut *p;
        let before = bytes.len();
        if let Err(e) = encode_frames(m, encoder, bytes) {
            tracing::warn!("dist: not sending a message to {}: {e}", self.peer);
            return Err(e);
        }
        self.queued
            .fetch_add(bytes.len() - before, Ordering::AcqRel);
        // Bytes queued before this message: a stream the writer was woken
        // for (and no clock read for each of its messages).
        let batch = match sock {
            Some(sock)
                if !*writing && before == 0 && {
                    let idle = last_write.elapsed();
                    idle >= DIRECT_IDLE
                        || (idle >= DIRECT_ANSWER_IDLE
                            && self.traffic.messages_in() != *heard_at_write)
                } =>
            {
                *writing = true;
                let mut taken = std::mem::take(spare);
                std::mem::swap(bytes, &mut taken);
                Some(Batch {
                    sock: sock.clone(),
                    bytes: taken,
                    lead,
                })
            }
            _ => None,
        };
        drop(p);
        self.traffic.queued_message();
        if batch.is_none() {
            self.work.notify_one();
        }
        Ok(batch)
    }

    /// Writes a [`Batch`] without blocking, as far as the socket takes
    /// it, then gives the write token back; what the socket did not take
    /// goes back to the front of the queue for the writer task (woken
    /// then), before anything queued since.
    pub(crate) fn write_direct(&self, batch: Batch) {
        let Batch {
            sock,
            mut bytes,
            lead,
        } = batch;
        let mut done = 0;
        while done < bytes.len() {
            match sock.try_write(&bytes[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // WouldBlock, or an error the writer meets again and ends on.
                Err(_) => break,
            }
        }
        drop(sock);
        if done > 0 {
            self.queued.fetch_sub(done, Ordering::AcqRel);
            self.traffic.written(done);
        }
        let mut p = lock(&self.pending);
        p.writing = false;
        if !(lead && done == bytes.len()) {
            p.last_write = Instant::now();
            p.heard_at_write = self.traffic.messages_in();
        }
        if done < bytes.len() {
            bytes.drain(..done);
            bytes.extend_from_slice(&p.bytes);
            std::mem::swap(&mut p.bytes, &mut bytes);
        }
        bytes.clear();
        if bytes.capacity() <= 4 * FRAGMENT_SIZE {
            p.spare = bytes;
        }
        let wake = !p.bytes.is_empty();
        drop(p);
        if done > 0 {
            self.room.notify_waiters();
        }
        if wake {
            self.work.notify_one();
        }
    }
    /// Bytes queued and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // No direct writes from now on; the socket closes with its last
        // holder (the writer task, or a direct write under way).
        lock(&self.pending).direct = None;
        self.room.notify_waiters();
    }
}

/// The write side of a plain TCP connection, shared by the writer task
/// and the senders writing directly (only the write token's holder
/// writes). Dropped with its last holder, it shuts the socket's write
/// side down, as tokio's `OwnedWriteHalf` does.
pub(crate) enum SharedSock {
    /// On the `ember-io` thread's tokio reactor.
    Tokio(OwnedWriteHalf),
    /// On an Ember runtime's pollset, shared with the reader process.
    Ember(Arc<ember_runtime::net::TcpStream>),
}

impl SharedSock {
    /// Writes what the socket takes now, without waiting.
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            SharedSock::Tokio(s) => s.try_write(buf),
            SharedSock::Ember(s) => s.try_write(buf),
        }
    }

    /// Writes some of `buf`, waiting until the socket takes something.
    async fn write_some(&self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            SharedSock::Tokio(sock) => loop {
                sock.writable().await?;
                match sock.try_write(buf) {
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) => {}
                    r => return r,
                }
            },
            SharedSock::Ember(sock) => {
                let mut sock = &**sock;
                std::future::poll_fn(|cx| Pin::new(&mut sock).poll_write(cx, buf)).await
            }
        }
    }
}

impl Drop for SharedSock {
    fn drop(&mut self) {
        if let SharedSock::Ember(s) = self {
            let mut s = &**s;
            let waker = std::task::Waker::noop();
            let _ = Pin::new(&mut s).poll_shutdown(&mut std::task::Context::from_waker(waker));
        }
    }
}

/// The read side of a plain TCP connection on an Ember runtime's pollset.
struct EmberRead(Arc<ember_runtime::net::TcpStream>);

impl AsyncRead for EmberRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

/// Where a connection's reader runs.
enum ReaderTask {
    /// A tokio task on the node's tokio runtime (`ember-io` in a runtime).
    Task(tokio::task::AbortHandle),
    /// An Ember process (plain TCP on a node of an Ember runtime).
    Process(ember_runtime::Handle, ember_runtime::Pid),
}

/// A connection's reader and writer, to stop them.
pub(crate) struct Tasks {
    reader: ReaderTask,
    writer: tokio::task::AbortHandle,
}

impl Tasks {
    /// Stops both: the tasks are aborted, the reader process killed.
    pub(crate) fn abort(&self) {
        match &self.reader {
            ReaderTask::Task(t) => t.abort(),
            ReaderTask::Process(handle, pid) => handle.exit(*pid, ExitReason::Kill),
        }
        self.writer.abort();
    }
}

/// Starts the reader and writer of a connection that finished its
/// handshake; returns the connection's send queue and its tasks.
///
/// The writer is a tokio task. The reader is one too, except on plain TCP
/// on a node of an Ember runtime ([`Node::start_in_runtime`](crate::Node)):
/// there the socket moves to the runtime's own pollset and the reader is
/// an Ember process, so a message is read, decoded and delivered by the
/// scheduler that then runs its receiver, with no hop through `ember-io`
/// (on a node pinned to one core, a context switch per message).
pub(crate) fn spawn(
    inner: &Arc<Inner>,
    stream: DistStream,
    peer: &Peer,
    id: u64,
) -> (Arc<SendQueue>, Tasks) {
    // Plain TCP keeps its owned halves (no lock between reader and writer),
    // and shares the write half with the senders for direct writes.
    match stream {
        DistStream::Tcp(s) => match inner.runtime.get() {
            None => {
                let (read, write) = s.into_split();
                let write = Arc::new(SharedSock::Tokio(write));
                spawn_halves::<_, OwnedWriteHalf>(inner, read, Sink::Shared(write), peer, id, None)
            }
            Some(handle) => {
                // Out of tokio's pollset (`into_std` deregisters it), into
                // the runtime's.
                let moved = s
                    .into_std()
                    .and_then(|s| ember_runtime::net::TcpStream::from_std_in(s, handle));
                match moved {
                    Ok(s) => {
                        let s = Arc::new(s);
                        let write = Arc::new(SharedSock::Ember(s.clone()));
                        spawn_halves::<_, OwnedWriteHalf>(
                            inner,
                            EmberRead(s),
                            Sink::Shared(write),
                            peer,
                            id,
                            Some(handle),
                        )
                    }
                    Err(e) => {
                        // The socket is gone: a reader that meets its end
                        // at once takes the connection down.
                        tracing::warn!(
                            "dist: cannot move the connection to {} to the runtime: {e}",
                            peer.name
                        );
                        spawn_halves(
                            inner,
                            tokio::io::empty(),
                            Sink::Stream(tokio::io::sink()),
                            peer,
                            id,
                            None,
                        )
                    }
                }
            }
        },
        DistStream::Tls(s) => {
            let (read, write) = tokio::io::split(*s);
            spawn_halves(inner, read, Sink::Stream(write), peer, id, None)
        }
    }
}

fn spawn_halves<R, W>(
    inner: &Arc<Inner>,
    read: R,
    write: Sink<W>,
    peer: &Peer,
    id: u64,
    runtime: Option<&ember_runtime::Handle>,
) -> (Arc<SendQueue>, Tasks)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let use_header = peer.flags & flags::DIST_HDR_ATOM_CACHE != 0;
    let fragments = use_header && peer.flags & flags::FRAGMENTS != 0;
    let mut queue = SendQueue::new(
        peer.name.clone(),
        peer.creation,
        inner.config.send_queue_limit.max(1),
        (use_header, fragments, peer.flags & flags::EMBER_PIDS != 0),
    );
    queue.peer_flags = peer.flags;
    let queue = Arc::new(queue);
    let tick = inner.config.net_ticktime / 4;
    let clock = Clock::of(inner);
    let writer = tokio::spawn(write_loop(write, queue.clone(), tick, clock.clone()));
    let reading = read_loop(
        inner.clone(),
        read,
        queue.clone(),
        peer.clone(),
        id,
        writer.abort_handle(),
        clock,
    );
    let reader = match runtime {
        Some(handle) => {
            let options = Spawn::new().label("dist reader");
            match handle.spawn_with(options, reading) {
                Ok(spawned) => ReaderTask::Process(handle.clone(), spawned.pid),
                Err(_) => unreachable!("a spawn without name, link or monitor cannot fail"),
            }
        }
        None => ReaderTask::Task(tokio::spawn(reading).abort_handle()),
    };
    let writer = writer.abort_handle();
    (queue, Tasks { reader, writer })
}

/// Where the writer task writes: a plain TCP write half it shares with
/// the senders (direct writes), or a stream of its own (TLS).
pub(crate) enum Sink<W> {
    /// Plain TCP, shared with direct writers.
    Shared(Arc<SharedSock>),
    /// Any other stream, the writer's alone.
    Stream(W),
}

impl<W: AsyncWrite + Unpin> Sink<W> {
    /// Writes `out` whole (and flushes a stream: TLS may hold the last
    /// record back until flushed).
    async fn write_out(&mut self, mut out: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Shared(sock) => {
                while !out.is_empty() {
                    match sock.write_some(out).await? {
                        0 => return Err(std::io::ErrorKind::WriteZero.into()),
                        n => out = &out[n..],
                    }
                }
                Ok(())
            }
            Sink::Stream(w) => {
                w.write_all(out).await?;
                w.flush().await
            }
        }
    }
}

/// Closes the queue when the writer ends, however it ends (also when
/// aborted), so that waiting senders get an error instead of waiting.
struct CloseOnDrop(Arc<SendQueue>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The writer task: takes the write token and everything queued, writes
/// it, gives the token back; sleeps when there is nothing (or a sender
/// holds the token: it wakes the writer if it leaves bytes behind), and
/// writes a tick when nothing has been written for `tick` (a quarter of
/// `net_ticktime`), on `clock`'s timers: one timer per `tick`, moved to a
/// quarter after the last write, not one per wait.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: Sink<W>,
    queue: Arc<SendQueue>,
    tick: Duration,
    clock: Clock,
) {
    let _close = CloseOnDrop(queue.clone());
    if let Sink::Shared(sock) = &w {
        let mut p = lock(&queue.pending);
        if !queue.closed.load(Ordering::Acquire) {
            p.direct = Some(sock.clone());
        }
    }
    let mut out = Vec::new();
    let mut idle = clock.sleep_until(Instant::now() + tick);
    loop {
        let took = {
            let mut p = lock(&queue.pending);
            if p.writing || p.bytes.is_empty() {
                false
            } else {
                p.writing = true;
                std::mem::swap(&mut p.bytes, &mut out);
                true
            }
        };
        if !took {
            tokio::select! {
                biased;
                _ = queue.work.notified() => continue,
                _ = &mut idle => {}
            }
            // Due: a tick if nothing was written for `tick` and no sender
            // is writing right now (traffic enough); else due again a
            // quarter after the last write.
            let due = {
                let mut p = lock(&queue.pending);
                let due = p.last_write + tick;
                if p.writing || Instant::now() < due {
                    Some(due)
                } else {
                    p.writing = true;
                    None
                }
            };
            if let Some(due) = due {
                idle = clock.sleep_until(due.max(Instant::now() + Duration::from_millis(1)));
                continue;
            }
            if let Err(e) = write_holding_token(&mut w, &queue, &[0, 0, 0, 0]).await {
                tracing::debug!("dist: writing to {} failed: {e}", queue.peer);
                return;
            }
            queue.traffic.written(4);
            idle = clock.sleep_until(Instant::now() + tick);
            continue;
        }
        if let Err(e) = write_holding_token(&mut w, &queue, &out).await {
            tracing::debug!("dist: writing to {} failed: {e}", queue.peer);
            return;
        }
        queue.queued.fetch_sub(out.len(), Ordering::AcqRel);
        queue.traffic.written(out.len());
        queue.room.notify_waiters();
        out.clear();
        // A buffer grown by one huge burst is not kept for ever.
        if out.capacity() > 4 * queue.limit.max(FRAGMENT_SIZE) {
            out = Vec::new();
        }
    }
}

/// Writes `bytes` for the writer task, which holds the write token: gives
/// the token back and records when the connection was last written to.
async fn write_holding_token<W: AsyncWrite + Unpin>(
    w: &mut Sink<W>,
    queue: &SendQueue,
    bytes: &[u8],
) -> std::io::Result<()> {
    let r = w.write_out(bytes).await;
    let mut p = lock(&queue.pending);
    p.writing = false;
    p.last_write = Instant::now();
    p.heard_at_write = queue.traffic.messages_in();
    r
}

/// Whose timers a connection's ticks and watchdog run on.
#[derive(Clone)]
pub(crate) enum Clock {
    /// tokio's timer driver (the node's tokio runtime): a node without an
    /// Ember runtime.
    Tokio(tokio::runtime::Handle),
    /// The wheels of the node's Ember runtime (`ember_runtime::time`): its
    /// connections need no tokio timer driver.
    Ember(ember_runtime::Handle),
}

impl Clock {
    /// The clock of a node's connections: its Ember runtime's, if it has
    /// one, else the current tokio runtime's.
    pub(crate) fn of(inner: &Inner) -> Clock {
        match inner.runtime.get() {
            Some(handle) => Clock::Ember(handle.clone()),
            None => Clock::Tokio(tokio::runtime::Handle::current()),
        }
    }

    /// A sleep until `deadline` on this clock, usable from any thread or
    /// executor (the reader may be an Ember process, the writer a tokio
    /// task).
    pub(crate) fn sleep_until(&self, deadline: Instant) -> ClockSleep {
        match self {
            Clock::Tokio(handle) => {
                let _in = handle.enter();
                ClockSleep::Tokio(Box::pin(tokio::time::sleep_until(deadline.into())))
            }
            Clock::Ember(handle) => ClockSleep::Ember(handle.sleep_until(deadline)),
        }
    }
}

/// A [`Clock`]'s sleep.
pub(crate) enum ClockSleep {
    /// On tokio's timer.
    Tokio(Pin<Box<tokio::time::Sleep>>),
    /// On an Ember runtime's wheels.
    Ember(ember_runtime::time::Sleep),
}

impl std::future::Future for ClockSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match self.get_mut() {
            ClockSleep::Tokio(s) => s.as_mut().poll(cx),
            ClockSleep::Ember(s) => Pin::new(s).poll(cx),
        }
    }
}

/// Ends when `received` has not moved for `ticktime` (checked every
/// quarter of it, so the peer is declared silent after 1 to 1.25 times
/// `ticktime`), on `clock` (the reader may be an Ember process, outside
/// any tokio runtime).
async fn watchdog(received: &AtomicU64, ticktime: Duration, clock: &Clock) {
    let check = ticktime / 4;
    let mut seen = received.load(Ordering::Relaxed);
    let mut quiet = Duration::ZERO;
    loop {
        clock.sleep_until(Instant::now() + check).await;
        let now = received.load(Ordering::Relaxed);
        if now == seen {
            quiet += check;
            if quiet >= ticktime {
                return;
            }
        } else {
            seen = now;
            quiet = Duration::ZERO;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    inner: Arc<Inner>,
    r: R,
    queue: Arc<SendQueue>,
    peer: Peer,
    id: u64,
    writer: tokio::task::AbortHandle,
    clock: Clock,
) {
    // A reader that is an Ember process (plain TCP on a node in an Ember
    // runtime) does not linger: its scheduler may poll the sockets only
    // when it runs out of work.
    let lingers = inner.runtime.get().is_none();
    let mut r = tokio::io::BufReader::with_capacity(64 * 1024, r);
    let mut cache = AtomCache::new();
    let mut fragments = Fragments::new(inner.config.max_frame, 64);
    let limits = DecodeLimits::default();
    // Frames (ticks included) received so far, for the watchdog: a timer
    // per frame would cost more than the frame.
    let received = AtomicU64::new(0);
    let silent = watchdog(&received, inner.config.net_ticktime, &clock);
    let reading = async {
        let mut since_yield = 0u32;
        let mut last_data = None;
        loop {
            // A stream that never runs dry must not keep the thread (an
            // Ember scheduler, for the reader process) from the receivers.
            since_yield += 1;
            if since_yield == YIELD_EVERY {
                since_yield = 0;
                YieldOnce(false).await;
            }
            if lingers && r.buffer().is_empty() {
                linger(&mut r, &mut last_data).await;
            }
            let read = next_message(
                &mut r,
                inner.config.max_frame,
                &mut cache,
                &mut fragments,
                &limits,
            )
            .await;
            received.fetch_add(1, Ordering::Relaxed);
            match read {
                Err(e) => return e,
                Ok(Read::Tick) => queue.traffic.read(4),
                Ok(Read::Frame { len, message }) => {
                    queue.traffic.read(4 + len);
                    if let Some((control, payload)) = message {
                        queue.traffic.received_message();
                        queue.own_ids.learn(&peer.name, &control, payload.as_ref());
                        if !deliver(&inner, &queue, &peer, id, control, payload) {
                            return DistError::Refused("the connection was retired".into());
                        }
                    }
                }
            }
        }
    };
    let reason = tokio::select! {
        e = reading => e,
        _ = silent => DistError::Timeout("net_ticktime passed without a tick"),
    };
    tracing::info!("dist: connection to {} down: {reason}", peer.name);
    writer.abort();
    queue.close();
    inner.connection_down(&peer.name, id);
}

/// What a reader got from [`next_message`].
#[derive(Debug)]
enum Read {
    /// A tick (an empty frame).
    Tick,
    /// A frame of `len` bytes (after its length) and, unless it was a
    /// fragment that does not finish its message, the message.
    Frame {
        len: usize,
        message: Option<(Term, Option<Term>)>,
    },
}

/// The length of the frame at the head of `buf` (0: a tick) if the whole
/// frame is there and within `max`; `None` otherwise (a frame cut by the
/// buffer's end, an empty buffer, or a length over `max`, which
/// [`read_frame`] then reports).
fn buffered_frame_len(buf: &[u8], max: usize) -> Option<usize> {
    let len = usize::try_from(u32::from_be_bytes(buf.get(..4)?.try_into().ok()?)).ok()?;
    (len <= max && buf.len() - 4 >= len).then_some(len)
}

/// Reads and decodes the next frame. A frame that is whole in the
/// reader's buffer (all of them while the peer keeps up with the buffer's
/// refills) is decoded where it lies, with no copy and no allocation of
/// its own; only one cut by the buffer's end is read into a `Vec` first
/// ([`read_frame`], which also reports lengths over `max`, a stream ended
/// inside a frame and read errors). Decoding errors are errors.
async fn next_message<R: AsyncRead + Unpin>(
    r: &mut tokio::io::BufReader<R>,
    max: usize,
    cache: &mut AtomCache,
    fragments: &mut Fragments,
    limits: &DecodeLimits,
) -> Result<Read, DistError> {
    use tokio::io::AsyncBufRead;
    match buffered_frame_len(r.buffer(), max) {
        Some(0) => {
            Pin::new(&mut *r).consume(4);
            Ok(Read::Tick)
        }
        Some(len) => {
            let message = decode_frame(&r.buffer()[4..4 + len], cache, fragments, limits);
            Pin::new(&mut *r).consume(4 + len);
            Ok(Read::Frame {
                len,
                message: message?,
            })
        }
        None => match read_frame(r, max).await? {
            None => Ok(Read::Tick),
            Some(frame) => Ok(Read::Frame {
                len: frame.len(),
                message: decode_frame(&frame, cache, fragments, limits)?,
            }),
        },
    }
}

/// Frames a reader reads before it lets other work run.
const YIELD_EVERY: u32 = 64;

/// How long a reader that ran dry keeps looking for more bytes (yielding
/// between looks) before it sleeps until the socket wakes it.
const LINGER: Duration = Duration::from_micros(25);

/// Waits for the next bytes of a reader whose buffer is empty. Within
/// [`LINGER`] of the last bytes, it does not go to sleep at once but
/// yields and looks again (the executor polls its sockets in between), as
/// an Erlang scheduler spins before it sleeps: a peer that writes one
/// small message per `write` (as erl does) would otherwise wake this
/// reader, at its own cost, for every two or three messages, which slows
/// that sender down more than the reading costs here. Ready when bytes are
/// buffered (or the stream ended or failed: `read_frame` sees that).
/// Only for a reader that is a tokio task: tokio polls its sockets while
/// tasks yield.
async fn linger<R: AsyncRead + Unpin>(
    r: &mut tokio::io::BufReader<R>,
    last_data: &mut Option<Instant>,
) {
    use tokio::io::AsyncBufRead;
    let mut lingering = true;
    std::future::poll_fn(|cx| match Pin::new(&mut *r).poll_fill_buf(cx) {
        std::task::Poll::Ready(_) => std::task::Poll::Ready(()),
        std::task::Poll::Pending => {
            if lingering {
                lingering = last_data.is_some_and(|at| at.elapsed() < LINGER);
                if lingering {
                    cx.waker().wake_by_ref();
                }
            }
            std::task::Poll::Pending
        }
    })
    .await;
    *last_data = Some(Instant::now());
}

/// Pending once (waking itself at once), then ready: lets the executor
/// run others in between.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Hands one control message on under the queue's `retired` lock; false
/// (and nothing handed on) once the connection is retired.
fn deliver(
    inner: &Arc<Inner>,
    queue: &SendQueue,
    peer: &Peer,
    connection: u64,
    control: Term,
    payload: Option<Term>,
) -> bool {
    let retired = lock(&queue.retired);
    if *retired {
        return false;
    }
    dispatch(inner, queue, peer, connection, control, payload);
    true
}

fn elems(t: &Term) -> &[Term] {
    t.as_tuple().unwrap_or(&[])
}

fn dispatch(
    inner: &Arc<Inner>,
    queue: &SendQueue,
    peer: &Peer,
    connection: u64,
    control: Term,
    payload: Option<Term>,
) {
    let c = elems(&control);
    let Some(op) = c.first().and_then(Term::as_int) else {
        tracing::debug!("dist: ignoring a control message that is not {{Op, ...}}: {control}");
        return;
    };
    let reply = |control: Term, payload: Option<Term>| {
        // Only fails when the connection is going down.
        let _ = queue.force(Outgoing { control, payload });
    };
    match (op, c) {
        (SEND | SEND_TT | SEND_SENDER | SEND_SENDER_TT, [_, from, to, ..]) => {
            let (Some(to), Some(message)) = (to.as_pid(), payload) else {
                return;
            };
            if inner.complete_call(&message) {
                return;
            }
            let from = from.as_pid().cloned();
            inner.deliver(
                &peer.name,
                Delivery::ToPid {
                    from,
                    to: to.clone(),
                    message,
                },
            );
        }
        (REG_SEND | REG_SEND_TT, [_, from, _, to, ..]) => {
            let (Some(name), Some(message)) = (to.as_atom(), payload) else {
                return;
            };
            match name {
                "net_kernel" => {
                    if let Some((control, payload)) = inner.net_kernel(peer, &message) {
                        reply(control, Some(payload));
                    }
                }
                global::NAME => {
                    if let Some(answer) = global::answer(inner.local_name(), &peer.name, &message) {
                        reply(global::reg_send_control(inner.own_pid()), Some(answer));
                    }
                }
                _ => inner.deliver(
                    &peer.name,
                    Delivery::ToName {
                        from: from.as_pid().cloned(),
                        to: Atom::new(name),
                        message,
                    },
                ),
            }
        }
        (ALIAS_SEND | ALIAS_SEND_TT, [_, from, alias, ..]) => {
            let (Some(alias), Some(message)) = (alias.as_reference(), payload) else {
                return;
            };
            if inner.complete_call(&message) {
                return;
            }
            inner.deliver(
                &peer.name,
                Delivery::ToAlias {
                    from: from.as_pid().cloned(),
                    alias: alias.clone(),
                    message,
                },
            );
        }
        // net_kernel is Ember's own (answered above); its monitors need
        // no bookkeeping.
        (MONITOR_P | DEMONITOR_P, [_, _, to, _]) if to.is_atom("net_kernel") => {}
        _ if inner
            .config
            .deliver
            .signal(&peer.name, connection, c, payload.as_ref()) => {}
        (MONITOR_P, [_, from, to, reference]) => {
            // No process behind the Deliver hook: `noproc`.
            {
                let exit = Term::tuple([
                    Term::from(MONITOR_P_EXIT),
                    to.clone(),
                    from.clone(),
                    reference.clone(),
                    Term::atom("noproc"),
                ]);
                reply(exit, None);
            }
        }
        (LINK, [_, from, to]) => {
            let exit = Term::tuple([
                Term::from(EXIT),
                to.clone(),
                from.clone(),
                Term::atom("noproc"),
            ]);
            reply(exit, None);
        }
        (UNLINK_ID, [_, id, from, to]) => {
            let ack = Term::tuple([
                Term::from(UNLINK_ID_ACK),
                id.clone(),
                to.clone(),
                from.clone(),
            ]);
            reply(ack, None);
        }
        (SPAWN_REQUEST | SPAWN_REQUEST_TT, [_, req_id, from, ..]) => {
            // No processes to spawn yet: fail the request instead of
            // leaving the caller waiting.
            let r = Term::tuple([
                Term::from(SPAWN_REPLY),
                req_id.clone(),
                from.clone(),
                Term::from(0),
                Term::atom("notsup"),
            ]);
            reply(r, None);
        }
        _ => tracing::debug!(
            "dist: ignoring control message {control} from {}",
            peer.name
        ),
    }
}

/// `{'$gen_call', {From, Tag}, {is_auth, Node}}` to net_kernel: the reply
/// `{Tag, yes}` and where it goes (to the alias when `Tag` is
/// `[alias | Ref]`, else to `From`).
pub(crate) fn is_auth_reply(
    own_pid: &Pid,
    peer_flags: u64,
    message: &Term,
) -> Option<(Term, Term)> {
    let [call, from, request] = elems(message) else {
        return None;
    };
    let [from_pid, tag] = elems(from) else {
        return None;
    };
    if !call.is_atom("$gen_call") || !elems(request).first().is_some_and(|t| t.is_atom("is_auth")) {
        return None;
    }
    let from_pid = from_pid.as_pid()?;
    let answer = Term::tuple([tag.clone(), Term::atom("yes")]);
    let alias = match tag {
        Term::ImproperList(head, tail) if head.len() == 1 && head[0].is_atom("alias") => {
            tail.as_reference()
        }
        _ => None,
    };
    let control = match alias {
        Some(alias) if peer_flags & flags::ALIAS != 0 => Term::tuple([
            Term::from(ALIAS_SEND),
            Term::Pid(own_pid.clone()),
            Term::Reference(alias.clone()),
        ]),
        _ => Term::tuple([
            Term::from(SEND),
            Term::atom(""),
            Term::Pid(from_pid.clone()),
        ]),
    };
    Some((control, answer))
}

/// `{SEND, '', To}`: a message to a remote pid from no particular sender.
pub(crate) fn send_control(to: &Pid) -> Term {
    Term::tuple([Term::from(SEND), Term::atom(""), Term::Pid(to.clone())])
}

/// `{REG_SEND, From, '', Name}`: a message to a registered name.
pub(crate) fn reg_send_control(from: &Pid, name: &Atom) -> Term {
    Term::tuple([
        Term::from(REG_SEND),
        Term::Pid(from.clone()),
        Term::atom(""),
        Term::Atom(name.clone()),
    ])
}

/// `{'$gen_call', {Pid, Ref}, {is_auth, Node}}` as a REG_SEND to the
/// peer's net_kernel.
pub(crate) fn is_auth_request(own_pid: &Pid, tag: &Reference, own_name: &Atom) -> Outgoing {
    let control = Term::tuple([
        Term::from(REG_SEND),
        Term::Pid(own_pid.clone()),
        Term::atom(""),
        Term::atom("net_kernel"),
    ]);
    let payload = Term::tuple([
        Term::atom("$gen_call"),
        Term::tuple([Term::Pid(own_pid.clone()), Term::Reference(tag.clone())]),
        Term::tuple([Term::atom("is_auth"), Term::Atom(own_name.clone())]),
    ]);
    Outgoing {
        control,
        payload: Some(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_4_gib_frame_length_is_an_error_without_allocating_it() {
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = read_frame(&mut input, 1 << 20).await.unwrap_err();
        assert!(matches!(err, DistError::Protocol(_)), "{err}");
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_an_error_and_a_tick_is_none() {
        let mut input: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 9, 1, 2];
        assert!(read_frame(&mut input, 100).await.unwrap().is_none());
        assert!(read_frame(&mut input, 100).await.is_err());
    }

    #[test]
    fn garbage_frames_are_errors() {
        let mut cache = AtomCache::new();
        let mut fragments = Fragments::default();
        let limits = DecodeLimits::default();
        for f in [
            &[][..],
            &[1, 2, 3][..],
            &[112][..],
            &[112, 131, 104, 9][..],
            &[131, 68, 5][..],
            &[131, 70, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1][..],
        ] {
            assert!(decode_frame(f, &mut cache, &mut fragments, &limits).is_err());
        }
    }

    /// Splits `bytes` into frames and decodes them in order.
    fn decode_all(bytes: &[u8]) -> (Vec<(Term, Option<Term>)>, usize) {
        let mut cache = AtomCache::new();
        let mut fragments = Fragments::default();
        let limits = DecodeLimits::default();
        let (mut rest, mut frames, mut out) = (bytes, 0, Vec::new());
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let frame = &rest[4..4 + len];
            assert!(len <= FRAGMENT_SIZE + 64 || frames == 0, "a frame of {len}");
            frames += 1;
            if let Some(m) = decode_frame(frame, &mut cache, &mut fragments, &limits).unwrap() {
                out.push(m);
            }
            rest = &rest[4 + len..];
        }
        (out, frames)
    }

    /// A stream that hands out `data` in pieces of the sizes in `sizes`
    /// (in turn, over and over).
    struct Chunked {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let size = self.sizes[self.turn % self.sizes.len()];
            self.turn += 1;
            let n = size.min(buf.remaining()).min(self.data.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Everything `next_message` makes of `bytes` read in pieces of
    /// `sizes` through a buffer of `capacity`: the messages, the ticks and
    /// the frames, up to the first error (then also returned).
    async fn read_all(
        bytes: &[u8],
        sizes: &[usize],
        capacity: usize,
    ) -> (Vec<(Term, Option<Term>)>, usize, usize, Option<DistError>) {
        let chunked = Chunked {
            data: bytes.to_vec(),
            at: 0,
            sizes: sizes.to_vec(),
            turn: 0,
        };
        let mut r = tokio::io::BufReader::with_capacity(capacity, chunked);
        let mut cache = AtomCache::new();
        let mut fragments = Fragments::default();
        let limits = DecodeLimits::default();
        let (mut out, mut ticks, mut frames) = (Vec::new(), 0, 0);
        loop {
            if r.get_ref().at == bytes.len() && r.buffer().is_empty() {
                return (out, ticks, frames, None);
            }
            match next_message(&mut r, 1 << 20, &mut cache, &mut fragments, &limits).await {
                Ok(Read::Tick) => ticks += 1,
                Ok(Read::Frame { message, .. }) => {
                    frames += 1;
                    out.extend(message);
                }
                Err(e) => return (out, ticks, frames, Some(e)),
            }
        }
    }

    /// The sending pid of the frames these tests encode.
    fn test_pid() -> Pid {
        Pid {
            node: Atom::new("a@h"),
            id: 1,
            serial: 2,
            creation: 3,
        }
    }

    #[tokio::test]
    async fn frames_whole_in_the_buffer_or_cut_by_it_read_the_same() {
        let control = reg_send_control(&test_pid(), &Atom::new("sink"));
        let mut bytes = vec![0, 0, 0, 0];
        let mut enc = encoder(true, true);
        let mut want = Vec::new();
        for i in 0..50i64 {
            let payload = if i == 20 {
                // Fragments, each bigger than the small buffers below.
                Term::tuple([Term::atom("big"), Term::binary(vec![7u8; 150_000])])
            } else {
                Term::tuple([Term::atom("msg"), Term::from(i)])
            };
            let m = Outgoing {
                control: control.clone(),
                payload: Some(payload.clone()),
            };
            encode_frames(&m, &mut enc, &mut bytes).unwrap();
            if i % 7 == 0 {
                bytes.extend_from_slice(&[0, 0, 0, 0]);
            }
            want.push((control.clone(), Some(payload)));
        }
        // Frames and ticks, counted from their lengths.
        let (mut all_frames, mut at) = (0, 0);
        while at < bytes.len() {
            all_frames += 1;
            at += 4 + u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        }
        assert!(all_frames > 50 + 9, "the big message went in fragments");
        for capacity in [64 * 1024, 4096, 64, 7] {
            for sizes in [&[usize::MAX][..], &[1], &[3, 50, 1, 700], &[4096, 5]] {
                let (got, ticks, frames, err) = read_all(&bytes, sizes, capacity).await;
                assert!(err.is_none(), "{capacity} {sizes:?}: {err:?}");
                assert_eq!(got, want, "{capacity} {sizes:?}");
                assert_eq!(ticks, 1 + 8, "{capacity} {sizes:?}");
                assert_eq!(frames + ticks, all_frames, "{capacity} {sizes:?}");
            }
        }
    }

    #[tokio::test]
    async fn bad_frames_are_errors_whole_in_the_buffer_or_not() {
        let good = {
            let m = Outgoing {
                control: send_control(&test_pid()),
                payload: Some(Term::from(1)),
            };
            let mut bytes = Vec::new();
            encode_frames(&m, &mut encoder(true, true), &mut bytes).unwrap();
            bytes
        };
        let garbage = [0, 0, 0, 3, 112, 131, 104];
        let over_max = [0, 0x20, 0, 0, 112];
        let cut_short = [0, 0, 0, 9, 112, 131];
        for (bad, then) in [
            (&garbage[..], &good[..]),
            (&over_max, &good),
            (&cut_short, &[]),
        ] {
            let bytes = [&good[..], bad, then].concat();
            for capacity in [64 * 1024, 5] {
                for sizes in [&[usize::MAX][..], &[1]] {
                    let (got, _, frames, err) = read_all(&bytes, sizes, capacity).await;
                    assert_eq!((got.len(), frames), (1, 1), "{bad:?} {capacity} {sizes:?}");
                    assert!(
                        matches!(err, Some(DistError::Protocol(_) | DistError::Io(_))),
                        "{bad:?} {capacity} {sizes:?}: {err:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_frame_counts_as_buffered_only_when_whole_and_within_the_limit() {
        assert_eq!(buffered_frame_len(&[], 10), None);
        assert_eq!(buffered_frame_len(&[0, 0, 0], 10), None);
        assert_eq!(buffered_frame_len(&[0, 0, 0, 0], 10), Some(0));
        assert_eq!(buffered_frame_len(&[0, 0, 0, 2, 1], 10), None);
        assert_eq!(buffered_frame_len(&[0, 0, 0, 2, 1, 2, 3], 10), Some(2));
        assert_eq!(buffered_frame_len(&[0, 0, 0, 2, 1, 2], 1), None);
        assert_eq!(
            buffered_frame_len(&[0xff, 0xff, 0xff, 0xff, 1], usize::MAX),
            None
        );
    }

    fn encoder(cache: bool, fragments: bool) -> Encoder {
        Encoder {
            cache: cache.then(SenderAtomCache::new),
            fragments,
            next_sequence: 1,
        }
    }

    #[test]
    fn frames_round_trip_pass_through_and_with_the_atom_cache() {
        let control = Term::tuple([Term::from(SEND), Term::atom(""), Term::atom("x")]);
        let m = Outgoing {
            control: control.clone(),
            payload: Some(Term::atom("hello")),
        };
        for cache in [false, true] {
            let mut bytes = Vec::new();
            encode_frames(&m, &mut encoder(cache, true), &mut bytes).unwrap();
            let (got, frames) = decode_all(&bytes);
            assert_eq!(frames, 1);
            assert_eq!(got, vec![(control.clone(), Some(Term::atom("hello")))]);
        }
    }

    #[test]
    fn big_messages_go_as_fragments_only_when_negotiated_and_reassemble() {
        let control = reg_send_control(&test_pid(), &Atom::new("some_name"));
        let small = Term::tuple([Term::atom("small"), Term::from(1)]);
        let big = Term::tuple([
            Term::atom("big"),
            Term::binary(vec![7u8; 1 << 20]),
            Term::atom("tail_atom"),
        ]);
        let mut enc = encoder(true, true);
        let mut bytes = Vec::new();
        for p in [&small, &big, &small, &big] {
            let m = Outgoing {
                control: control.clone(),
                payload: Some(p.clone()),
            };
            encode_frames(&m, &mut enc, &mut bytes).unwrap();
        }
        let (got, frames) = decode_all(&bytes);
        let want: Vec<_> = [&small, &big, &small, &big]
            .iter()
            .map(|p| (control.clone(), Some((*p).clone())))
            .collect();
        assert_eq!(got, want);
        // 1 MiB in 64 KiB fragments, twice, plus the two small frames.
        assert!(frames >= 2 + 2 * 16, "{frames} frames");

        // Without DFLAG_FRAGMENTS: one frame per message.
        let mut enc = encoder(true, false);
        let mut bytes = Vec::new();
        let m = Outgoing {
            control: control.clone(),
            payload: Some(big.clone()),
        };
        encode_frames(&m, &mut enc, &mut bytes).unwrap();
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len() - 4
        );
    }

    #[test]
    fn header_len_covers_new_and_cached_atoms_short_and_long() {
        for long in [false, true] {
            let mut cache = SenderAtomCache::new();
            let mut receiver = AtomCache::new();
            // 200 characters, 400 bytes: a long (2-byte length) atom.
            let name = if long { "é".repeat(200) } else { "x".into() };
            let t = Term::tuple([Term::atom("a"), Term::atom(&name)]);
            // New entries the first time, cache references the second.
            for _ in 0..2 {
                let body = wire::encode_message(&t, None, &mut cache).unwrap();
                let (_, start) = wire::decode_header(&body, &mut receiver).unwrap();
                assert_eq!(header_len(&body), start);
            }
        }
    }

    #[test]
    fn pids_the_peer_never_makes_are_refused_until_it_shows_wider_ones() {
        let peer = Atom::new("p@h");
        let ids = PeerIds::new(5, false);
        let pid = |id: u32, serial: u32, creation: u32| {
            Term::Pid(Pid {
                node: peer.clone(),
                id,
                serial,
                creation,
            })
        };
        let send = |t: Term| Outgoing {
            control: Term::tuple([Term::from(SEND), Term::atom(""), pid(80, 0, 5)]),
            payload: Some(Term::list([Term::tuple([Term::atom("x"), t])])),
        };
        let reference = |w0: u32| {
            Term::Reference(Reference {
                node: peer.clone(),
                creation: 5,
                ids: vec![w0, 1, 2],
            })
        };
        // OTP 25's range: 15-bit numbers, 13-bit serials.
        assert!(ids.refused(&peer, &send(pid(32_767, 8191, 5))).is_none());
        assert!(ids.refused(&peer, &send(pid(32_768, 0, 5))).is_some());
        assert!(ids.refused(&peer, &send(pid(0, 8192, 5))).is_some());
        // Another creation, another node: external pids, any fields.
        assert!(ids
            .refused(&peer, &send(pid(u32::MAX, u32::MAX, 6)))
            .is_none());
        let other = Term::Pid(Pid {
            node: Atom::new("q@h"),
            id: u32::MAX,
            serial: u32::MAX,
            creation: 5,
        });
        assert!(ids.refused(&peer, &send(other)).is_none());
        // References: an 18-bit first word.
        assert!(ids
            .refused(&peer, &send(reference((1 << 18) - 1)))
            .is_none());
        assert!(ids.refused(&peer, &send(reference(1 << 18))).is_some());
        // A control message naming one of the peer's own pids beyond the
        // narrow range: an OTP 26 peer, 28-bit numbers and 32-bit serials.
        ids.learn(
            &peer,
            &Term::tuple([Term::from(SEND_SENDER), pid(40_000, 0, 5), pid(1, 0, 1)]),
            None,
        );
        assert!(ids
            .refused(&peer, &send(pid(999_999, u32::MAX, 5)))
            .is_none());
        assert!(ids.refused(&peer, &send(pid(1 << 28, 0, 5))).is_some());
        // A queue refuses such a message with an error, queueing nothing.
        let queue = SendQueue::new(peer.clone(), 5, 1000, (false, false, false));
        let refused = queue.try_send(send(pid(1 << 20, 0, 5)));
        assert!(matches!(refused, Err(DistError::BadPid(_))), "{refused:?}");
        assert_eq!(queue.queued_bytes(), 0);
        // A pid beyond OTP 26's range that the peer itself sent, inside a
        // message (an Ember node's pids take any 32-bit number): any pid of
        // the peer goes from then on.
        ids.learn(
            &peer,
            &Term::tuple([Term::from(SEND), Term::atom(""), pid(1, 0, 1)]),
            Some(&Term::tuple([Term::atom("ok"), pid(1 << 29, 0, 5)])),
        );
        assert!(ids
            .refused(&peer, &send(pid(u32::MAX, u32::MAX, 5)))
            .is_none());
    }

    #[test]
    fn a_pid_the_peer_sent_inside_a_message_widens_the_range() {
        let peer = Atom::new("p@h");
        let ids = PeerIds::new(5, false);
        let pid = |id: u32| {
            Term::Pid(Pid {
                node: peer.clone(),
                id,
                serial: 0,
                creation: 5,
            })
        };
        let send = |t: Term| Outgoing {
            control: Term::tuple([Term::from(SEND), Term::atom(""), t]),
            payload: Some(Term::atom("hello")),
        };
        assert!(ids.refused(&peer, &send(pid(999_999))).is_some());
        // The peer answers with its own pid <0.999999.0> as data (an
        // `erlang:list_to_pid/1` reply, say): it makes such pids.
        ids.learn(
            &peer,
            &Term::tuple([Term::from(SEND), Term::atom(""), pid(1)]),
            Some(&Term::tuple([Term::atom("ok"), pid(999_999)])),
        );
        assert!(ids.refused(&peer, &send(pid(999_999))).is_none());
        assert!(ids.refused(&peer, &send(pid(1 << 28))).is_some());
    }

    #[test]
    fn a_peer_that_takes_any_pid_of_its_own_is_never_checked() {
        let peer = Atom::new("p@h");
        let ids = PeerIds::new(5, true);
        let m = Outgoing {
            control: Term::tuple([Term::from(SEND), Term::atom(""), Term::atom("x")]),
            payload: Some(Term::Pid(Pid {
                node: peer.clone(),
                id: u32::MAX,
                serial: u32::MAX,
                creation: 5,
            })),
        };
        assert!(ids.refused(&peer, &m).is_none());
        assert_eq!(ids.range.load(Ordering::Relaxed), ANY);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_writes_from_threads_keep_each_senders_order_over_a_full_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (_read, write) = client.unwrap().into_split();
        let (mut server, _) = accepted.unwrap();
        let queue = Arc::new(SendQueue::new(
            Atom::new("p@h"),
            1,
            1 << 30,
            (false, false, false),
        ));
        let writer = tokio::spawn(write_loop(
            Sink::<OwnedWriteHalf>::Shared(Arc::new(SharedSock::Tokio(write))),
            queue.clone(),
            Duration::from_secs(60),
            Clock::Tokio(tokio::runtime::Handle::current()),
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&queue.pending).direct.is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never started"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Two threads each queue 2,000 messages of 1 KiB while nobody reads:
        // the socket fills, direct writes come up short and leave the rest
        // to the writer.
        const EACH: i64 = 2000;
        let senders: Vec<_> = (0..2i64)
            .map(|t| {
                let q = queue.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let m = Outgoing {
                            control: Term::tuple([Term::from(SEND), Term::atom(""), Term::from(t)]),
                            payload: Some(Term::tuple([
                                Term::from(i),
                                Term::binary(vec![t as u8; 1024]),
                            ])),
                        };
                        if let Some(batch) = q.enqueue(&m, false).unwrap() {
                            q.write_direct(batch);
                        }
                    }
                })
            })
            .collect();
        let mut next = [0i64; 2];
        let mut cache = AtomCache::new();
        let mut fragments = Fragments::default();
        let limits = DecodeLimits::default();
        while next != [EACH, EACH] {
            let frame =
                tokio::time::timeout(Duration::from_secs(20), read_frame(&mut server, 1 << 20))
                    .await
                    .expect("messages stopped coming")
                    .unwrap();
            let Some(frame) = frame else { continue };
            let (control, payload) = decode_frame(&frame, &mut cache, &mut fragments, &limits)
                .unwrap()
                .unwrap();
            let t = elems(&control)[2].as_int().unwrap() as usize;
            let i = elems(payload.as_ref().unwrap())[0].as_int().unwrap();
            assert_eq!(i, next[t], "sender {t} out of order");
            next[t] += 1;
        }
        senders.into_iter().for_each(|s| s.join().unwrap());
        // The counter drops once each write has returned.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while queue.queued_bytes() != 0 {
            assert!(std::time::Instant::now() < deadline, "bytes left counted");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        writer.abort();
    }

    #[tokio::test]
    async fn a_busy_queue_refuses_try_send_and_makes_send_wait_until_written() {
        let queue = Arc::new(SendQueue::new(
            Atom::new("p@h"),
            1,
            1000,
            (false, false, false),
        ));
        let m = || Outgoing {
            control: Term::tuple([Term::from(SEND), Term::atom(""), Term::atom("x")]),
            payload: Some(Term::binary(vec![0u8; 300])),
        };
        let mut sent = 0;
        while queue.try_send(m()).is_ok() {
            sent += 1;
        }
        // Three ~320-byte frames leave the queue under 1000 bytes, so the
        // fourth is let in; then it is busy.
        assert_eq!(sent, 4);
        let queued = queue.queued_bytes();
        assert!((1000..1400).contains(&queued), "{queued}");
        assert!(matches!(queue.try_send(m()), Err(DistError::Busy(_))));
        // An async send waits (polled once: not done, it waits for room) ...
        let mut waiting = Box::pin({
            let q = queue.clone();
            async move { q.send(m()).await }
        });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(std::future::Future::poll(waiting.as_mut(), &mut cx).is_pending());
        assert_eq!(
            queue.queued_bytes(),
            queued,
            "a waiting send queued nothing"
        );
        // ... until the writer has written what was queued.
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(write_loop(
            Sink::Stream(client),
            queue.clone(),
            Duration::from_secs(60),
            Clock::Tokio(tokio::runtime::Handle::current()),
        ));
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting send was never let through")
            .unwrap();
        let mut got = vec![0u8; queued];
        tokio::time::timeout(Duration::from_secs(10), server.read_exact(&mut got))
            .await
            .expect("the writer wrote nothing")
            .unwrap();
        writer.abort();
        let _ = writer.await;
        // A closed queue fails senders instead of keeping them waiting.
        assert!(matches!(queue.try_send(m()), Err(DistError::Refused(_))));
        assert!(queue.send(m()).await.is_err());
    }
}
