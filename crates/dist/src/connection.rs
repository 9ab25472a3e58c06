//! One distribution connection after the handshake: `Len:32 | Payload`
//! frames, ticks, decoding, and the control messages Ember answers itself.
//!
//! Two tasks per connection. The writer owns the socket's write half and
//! the sending atom cache; it sends queued messages, and a tick (an empty
//! frame) when it has been idle for a quarter of `net_ticktime`. The reader
//! owns the read half and the receiving atom cache; it declares the
//! connection down when nothing (not even a tick) arrives for
//! `net_ticktime`, on a protocol error, or on EOF, and then removes the
//! connection from the node.
//!
//! Messages come as pass-through frames (`112`, then the control message
//! and payload, each with its own `131`) or with the distribution header
//! (`131, 68`, atom cache), which the peer uses once
//! `DFLAG_DIST_HDR_ATOM_CACHE` is negotiated. Ember sends with the header
//! when it was negotiated, pass-through otherwise. Fragments are never
//! negotiated (no `DFLAG_FRAGMENTS`), so they never arrive.

use std::sync::Arc;
use std::time::Duration;

use ember_term::dist::{self as wire, AtomCache, SenderAtomCache};
use ember_term::{decode_prefix, encode_into, Atom, DecodeLimits, Pid, Reference, Term};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::error::DistError;
use crate::flags;
use crate::handshake::Peer;
use crate::node::{Delivery, Inner};

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

/// Decodes a frame into the control message and payload.
pub(crate) fn decode_frame(
    buf: &[u8],
    cache: &mut AtomCache,
    limits: &DecodeLimits,
) -> Result<(Term, Option<Term>), DistError> {
    let bad = |e: ember_term::DecodeError| DistError::Protocol(format!("bad message: {e}"));
    match buf {
        [PASS_THROUGH, rest @ ..] => {
            let (control, used) = decode_prefix(rest, limits).map_err(bad)?;
            let rest = &rest[used..];
            if rest.is_empty() {
                return Ok((control, None));
            }
            let (payload, used) = decode_prefix(rest, limits).map_err(bad)?;
            if used != rest.len() {
                return Err(DistError::Protocol("trailing bytes after a message".into()));
            }
            Ok((control, Some(payload)))
        }
        [131, 68, ..] => {
            let m = wire::decode_message(buf, cache, limits).map_err(bad)?;
            Ok((m.control, m.payload))
        }
        [first, ..] => Err(DistError::Protocol(format!(
            "unknown frame type {first} (fragments are not negotiated)"
        ))),
        [] => Err(DistError::Protocol("empty frame".into())),
    }
}

fn encode_frame(
    m: &Outgoing,
    atom_cache: Option<&mut SenderAtomCache>,
) -> Result<Vec<u8>, DistError> {
    let bad = |e: ember_term::EncodeError| DistError::Protocol(format!("cannot encode: {e}"));
    let mut out = vec![0, 0, 0, 0];
    match atom_cache {
        Some(cache) => {
            let body = wire::encode_message(&m.control, m.payload.as_ref(), cache).map_err(bad)?;
            out.extend_from_slice(&body);
        }
        None => {
            out.push(PASS_THROUGH);
            encode_into(&m.control, &mut out).map_err(bad)?;
            if let Some(p) = &m.payload {
                encode_into(p, &mut out).map_err(bad)?;
            }
        }
    }
    let len = u32::try_from(out.len() - 4)
        .map_err(|_| DistError::Protocol("message over 4 GiB".into()))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Starts the reader and writer of a connection that finished its
/// handshake; returns the writer's queue and the two tasks' abort handles.
pub(crate) fn spawn(
    inner: &Arc<Inner>,
    stream: TcpStream,
    peer: &Peer,
    id: u64,
) -> (mpsc::Sender<Outgoing>, [tokio::task::AbortHandle; 2]) {
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::channel(1024);
    let tick = inner.config.net_ticktime / 4;
    let use_header = peer.flags & flags::DIST_HDR_ATOM_CACHE != 0;
    let writer = tokio::spawn(write_loop(write, rx, tick, use_header, peer.name.clone()));
    let reader = tokio::spawn(read_loop(
        inner.clone(),
        read,
        tx.clone(),
        peer.clone(),
        id,
        writer.abort_handle(),
    ));
    (tx, [reader.abort_handle(), writer.abort_handle()])
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Outgoing>,
    tick: Duration,
    use_header: bool,
    peer: Atom,
) {
    let mut cache = use_header.then(SenderAtomCache::new);
    loop {
        let bytes = match tokio::time::timeout(tick, rx.recv()).await {
            Ok(Some(m)) => match encode_frame(&m, cache.as_mut()) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("dist: dropping a message to {peer}: {e}");
                    continue;
                }
            },
            Ok(None) => return,
            Err(_) => vec![0, 0, 0, 0],
        };
        if let Err(e) = w.write_all(&bytes).await {
            tracing::debug!("dist: writing to {peer} failed: {e}");
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    inner: Arc<Inner>,
    mut r: R,
    tx: mpsc::Sender<Outgoing>,
    peer: Peer,
    id: u64,
    writer: tokio::task::AbortHandle,
) {
    let mut cache = AtomCache::new();
    let limits = DecodeLimits::default();
    let ticktime = inner.config.net_ticktime;
    let reason = loop {
        let frame = match tokio::time::timeout(ticktime, read_frame(&mut r, inner.config.max_frame))
            .await
        {
            Err(_) => break DistError::Timeout("net_ticktime passed without a tick"),
            Ok(Err(e)) => break e,
            Ok(Ok(None)) => continue,
            Ok(Ok(Some(f))) => f,
        };
        match decode_frame(&frame, &mut cache, &limits) {
            Ok((control, payload)) => dispatch(&inner, &tx, &peer, control, payload).await,
            Err(e) => break e,
        }
    };
    tracing::info!("dist: connection to {} down: {reason}", peer.name);
    writer.abort();
    inner.connection_down(&peer.name, id);
}

fn elems(t: &Term) -> &[Term] {
    t.as_tuple().unwrap_or(&[])
}

async fn dispatch(
    inner: &Arc<Inner>,
    tx: &mpsc::Sender<Outgoing>,
    peer: &Peer,
    control: Term,
    payload: Option<Term>,
) {
    let c = elems(&control);
    let Some(op) = c.first().and_then(Term::as_int) else {
        tracing::debug!("dist: ignoring a control message that is not {{Op, ...}}: {control}");
        return;
    };
    let reply = |control: Term, payload: Option<Term>| async {
        // A full queue or a closed writer: the connection is going down.
        let _ = tx.send(Outgoing { control, payload }).await;
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
                        reply(control, Some(payload)).await;
                    }
                }
                // global's protocol is not spoken here: ignoring it is
                // safe, answering it wrongly is not (a malformed message
                // to global can halt the peer). `rex` is a process of the
                // node when it runs in an Ember runtime.
                "global_name_server" => {
                    tracing::debug!("dist: ignoring a message from {} to {name}", peer.name);
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
        _ if inner.config.deliver.signal(&peer.name, c, payload.as_ref()) => {}
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
                reply(exit, None).await;
            }
        }
        (LINK, [_, from, to]) => {
            let exit = Term::tuple([
                Term::from(EXIT),
                to.clone(),
                from.clone(),
                Term::atom("noproc"),
            ]);
            reply(exit, None).await;
        }
        (UNLINK_ID, [_, id, from, to]) => {
            let ack = Term::tuple([
                Term::from(UNLINK_ID_ACK),
                id.clone(),
                to.clone(),
                from.clone(),
            ]);
            reply(ack, None).await;
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
            reply(r, None).await;
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
        let limits = DecodeLimits::default();
        for f in [
            &[][..],
            &[1, 2, 3][..],
            &[112][..],
            &[112, 131, 104, 9][..],
            &[131, 68, 5][..],
        ] {
            assert!(decode_frame(f, &mut cache, &limits).is_err());
        }
    }

    #[test]
    fn frames_round_trip_pass_through_and_with_the_atom_cache() {
        let control = Term::tuple([Term::from(SEND), Term::atom(""), Term::atom("x")]);
        let m = Outgoing {
            control: control.clone(),
            payload: Some(Term::atom("hello")),
        };
        let mut sender = SenderAtomCache::new();
        for cache in [None, Some(&mut sender)] {
            let bytes = encode_frame(&m, cache).unwrap();
            let (c, p) =
                decode_frame(&bytes[4..], &mut AtomCache::new(), &DecodeLimits::default()).unwrap();
            assert_eq!((c, p), (control.clone(), Some(Term::atom("hello"))));
        }
    }
}
