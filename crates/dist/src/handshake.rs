//! The distribution handshake, version 6 (`DFLAG_HANDSHAKE_23`), both
//! directions. Messages are `Len:16 | Body`. A connects to B:
//!
//! ```text
//! A -> B  'N' Flags:64 Creation:32 Nlen:16 Name            send_name
//! B -> A  's' Status                                       ok | ok_simultaneous | nok | not_allowed | alive
//!        (after alive: A -> B 's' true|false)
//! B -> A  'N' Flags:64 Challenge:32 Creation:32 Nlen:16 Name   challenge
//! A -> B  'r' Challenge:32 Digest:16                       challenge_reply
//! B -> A  'a' Digest:16                                    challenge_ack
//! ```
//!
//! `Digest = MD5(Cookie ++ integer_to_list(Challenge))`. As the accepting
//! side, Ember also takes the old version 5 `send_name`
//! (`'n' Version:16 Flags:32 Name`) from a peer that has
//! `DFLAG_HANDSHAKE_23` (OTP 23/24 nodes that did not learn our versions
//! from epmd): it then gets the new challenge and answers with
//! `'c' FlagsHigh:32 Creation:32` before its challenge reply. Ember itself
//! always sends `'N'` (OTP 25.0-25.2 refuse `'n'`).
//!
//! Inside TLS the length prefix is 32 bits (`Len:32 | Body`), as OTP's
//! `inet_tls_dist` (`{packet, 4}`) has it; the messages are the same
//! ([`HandshakeStream::wide_lengths`]).

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use ember_term::Atom;

use crate::error::DistError;
use crate::flags;

/// Who we are, as the handshake tells it.
#[derive(Clone, Debug)]
pub(crate) struct Local {
    pub(crate) name: Atom,
    pub(crate) cookie: String,
    pub(crate) creation: u32,
    pub(crate) flags: u64,
}

/// The peer, once the handshake succeeded.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) name: Atom,
    pub(crate) creation: u32,
    /// The flags both sides have (the intersection).
    pub(crate) flags: u64,
}

/// What the accepting side answers a `send_name` with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Go on.
    Ok,
    /// Go on; our own simultaneous attempt is dropped.
    OkSimultaneous,
    /// Our simultaneous attempt wins; this one stops.
    Nok,
    /// Refused.
    NotAllowed,
    /// A connection is already up; the peer says whether to replace it.
    Alive,
}

impl Status {
    fn text(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::OkSimultaneous => "ok_simultaneous",
            Status::Nok => "nok",
            Status::NotAllowed => "not_allowed",
            Status::Alive => "alive",
        }
    }
}

/// The MD5 digest of `cookie ++ integer_to_list(challenge)`.
pub(crate) fn digest(cookie: &str, challenge: u32) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(cookie.as_bytes());
    h.update(challenge.to_string().as_bytes());
    h.finalize().into()
}

/// A stream the handshake runs on.
pub(crate) trait HandshakeStream: AsyncRead + AsyncWrite + Unpin {
    /// Whether handshake messages have a 32-bit length prefix (inside
    /// TLS, as `inet_tls_dist`) instead of the 16-bit one of TCP.
    fn wide_lengths(&self) -> bool {
        false
    }
}

impl HandshakeStream for tokio::net::TcpStream {}

#[cfg(test)]
impl HandshakeStream for tokio::io::DuplexStream {}

/// Reads one `Len:16 | Body` handshake message (`Len:32` when the stream
/// says so; bounded by 65535 bytes either way). An empty message is a
/// protocol error.
pub(crate) async fn read_msg<R: HandshakeStream>(r: &mut R) -> Result<Vec<u8>, DistError> {
    let len = if r.wide_lengths() {
        let len = r.read_u32().await?;
        u16::try_from(len).map_err(|_| {
            DistError::Protocol(format!(
                "handshake message of {len} bytes (a peer without TLS?)"
            ))
        })?
    } else {
        let len = r.read_u16().await?;
        // A TLS record (alert or handshake, version 3.x) where a message
        // length belongs; no handshake message is this long.
        if matches!(len >> 8, 0x15 | 0x16) && len & 0xff == 0x03 {
            return Err(DistError::Tls(
                "the peer answered with TLS: it runs TLS distribution and this node does not"
                    .into(),
            ));
        }
        len
    };
    if len == 0 {
        return Err(DistError::Protocol("empty handshake message".into()));
    }
    let mut buf = vec![0; usize::from(len)];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_msg<W: HandshakeStream>(w: &mut W, body: &[u8]) -> Result<(), DistError> {
    let len = u16::try_from(body.len())
        .map_err(|_| DistError::Protocol("handshake message too long".into()))?;
    let mut out = Vec::with_capacity(body.len() + 4);
    if w.wide_lengths() {
        out.extend_from_slice(&u32::from(len).to_be_bytes());
    } else {
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(body);
    w.write_all(&out).await?;
    // TLS may hold the record back until flushed.
    w.flush().await?;
    Ok(())
}

/// A cursor over a handshake message that fails instead of panicking.
struct Cursor<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DistError> {
        if self.b.len() < n {
            return Err(DistError::Protocol(format!("truncated {}", self.what)));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, DistError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DistError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DistError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    fn name(&mut self) -> Result<Atom, DistError> {
        let len = usize::from(self.u16()?);
        let text = std::str::from_utf8(self.take(len)?)
            .map_err(|_| DistError::Protocol(format!("node name in {} is not UTF-8", self.what)))?;
        if !text.contains('@') {
            return Err(DistError::Protocol(format!("bad node name {text:?}")));
        }
        Atom::try_new(text).map_err(|_| DistError::Protocol("node name too long".into()))
    }
}

fn check_flags(peer: u64) -> Result<(), DistError> {
    let missing = flags::REQUIRED & !peer;
    if missing != 0 {
        return Err(DistError::MissingFlags(missing));
    }
    Ok(())
}

fn name_field(out: &mut Vec<u8>, name: &Atom) {
    let bytes = name.as_str().as_bytes();
    // Atoms are at most 255 characters, so this fits in 16 bits.
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn random_challenge() -> u32 {
    getrandom::u32().unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        t ^ std::process::id()
    })
}

/// The connecting side. `expected` is the node we meant to reach. If the
/// peer answers `alive` (it holds a connection to us), `still_pending`
/// says whether this attempt is still ours to make (net_kernel's
/// `is_pending`): if not (a connection from the peer was set up meanwhile)
/// we answer `false`, the peer keeps that connection, and this attempt
/// ends with `Refused("alive")`.
pub(crate) async fn connect<S: HandshakeStream>(
    s: &mut S,
    local: &Local,
    expected: &Atom,
    still_pending: impl FnOnce() -> bool,
) -> Result<Peer, DistError> {
    let mut send_name = vec![b'N'];
    send_name.extend_from_slice(&local.flags.to_be_bytes());
    send_name.extend_from_slice(&local.creation.to_be_bytes());
    name_field(&mut send_name, &local.name);
    write_msg(s, &send_name).await?;

    let status = read_msg(s).await?;
    let Some((&b's', status)) = status.split_first() else {
        return Err(DistError::Protocol("expected a status message".into()));
    };
    match status {
        b"ok" | b"ok_simultaneous" => {}
        b"alive" => {
            if !still_pending() {
                write_msg(s, b"sfalse").await?;
                return Err(DistError::Refused("alive".into()));
            }
            write_msg(s, b"strue").await?
        }
        other => {
            return Err(DistError::Refused(
                String::from_utf8_lossy(other).into_owned(),
            ))
        }
    }

    let challenge = read_msg(s).await?;
    let mut c = Cursor {
        b: &challenge,
        what: "challenge",
    };
    if c.take(1)? != b"N" {
        return Err(DistError::Protocol(
            "expected a version 6 challenge ('N')".into(),
        ));
    }
    let peer_flags = c.u64()?;
    let their_challenge = c.u32()?;
    let creation = c.u32()?;
    let name = c.name()?;
    if &name != expected {
        return Err(DistError::Protocol(format!(
            "connected to {name}, expected {expected}"
        )));
    }
    check_flags(peer_flags)?;

    let our_challenge = random_challenge();
    let mut reply = vec![b'r'];
    reply.extend_from_slice(&our_challenge.to_be_bytes());
    reply.extend_from_slice(&digest(&local.cookie, their_challenge));
    write_msg(s, &reply).await?;

    // A peer with another cookie closes the connection here.
    let ack = match read_msg(s).await {
        Ok(ack) => ack,
        Err(DistError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(DistError::WrongCookie(name.to_string()))
        }
        Err(e) => return Err(e),
    };
    let mut c = Cursor {
        b: &ack,
        what: "challenge ack",
    };
    if c.take(1)? != b"a" {
        return Err(DistError::Protocol("expected a challenge ack ('a')".into()));
    }
    if c.take(16)? != digest(&local.cookie, our_challenge) {
        return Err(DistError::WrongCookie(name.to_string()));
    }
    Ok(Peer {
        name,
        creation,
        flags: peer_flags & local.flags,
    })
}

/// The accepting side. `decide` chooses the status for the named peer;
/// after `alive`, `replace` is told whether the peer wants the old
/// connection replaced (a `false` ends the handshake).
pub(crate) async fn accept<S: HandshakeStream>(
    s: &mut S,
    local: &Local,
    decide: impl FnOnce(&Atom) -> Status,
) -> Result<Peer, DistError> {
    let first = read_msg(s).await?;
    let mut c = Cursor {
        b: &first,
        what: "send_name",
    };
    // Version 6 ('N'), or version 5 ('n': 32 flag bits, no creation, the
    // name filling the rest) from a peer that knows the version 6 handshake
    // (DFLAG_HANDSHAKE_23) but did not learn from epmd that we speak it;
    // it completes its flags and creation after our challenge ('c').
    let old = match c.take(1)? {
        b"N" => false,
        b"n" => true,
        _ => {
            return Err(DistError::Protocol(
                "expected a send_name ('N' or 'n')".into(),
            ))
        }
    };
    let (mut peer_flags, mut creation, name) = if old {
        let _version = c.u16()?;
        let low = u64::from(c.u32()?);
        let len = c.b.len() as u16;
        let mut with_len = len.to_be_bytes().to_vec();
        with_len.extend_from_slice(c.b);
        let name = Cursor {
            b: &with_len,
            what: "send_name",
        }
        .name()?;
        (low, 0, name)
    } else {
        (c.u64()?, c.u32()?, c.name()?)
    };
    // The high flag bits of an old send_name come with the complement.
    let known = if old { 0xffff_ffff } else { u64::MAX };
    if let Err(e) = check_flags(peer_flags | (flags::REQUIRED & !known)) {
        write_msg(s, b"snot_allowed").await?;
        return Err(e);
    }
    let status = decide(&name);
    let mut msg = vec![b's'];
    msg.extend_from_slice(status.text().as_bytes());
    write_msg(s, &msg).await?;
    match status {
        Status::Ok | Status::OkSimultaneous => {}
        Status::Nok | Status::NotAllowed => {
            return Err(DistError::Refused(format!(
                "{} (sent to {name})",
                status.text()
            )))
        }
        Status::Alive => {
            let answer = read_msg(s).await?;
            if answer != b"strue" {
                return Err(DistError::Refused(format!(
                    "{name} keeps its existing connection"
                )));
            }
        }
    }

    let our_challenge = random_challenge();
    let mut challenge = vec![b'N'];
    challenge.extend_from_slice(&local.flags.to_be_bytes());
    challenge.extend_from_slice(&our_challenge.to_be_bytes());
    challenge.extend_from_slice(&local.creation.to_be_bytes());
    name_field(&mut challenge, &local.name);
    write_msg(s, &challenge).await?;

    if old {
        let complement = read_msg(s).await?;
        let mut c = Cursor {
            b: &complement,
            what: "send_complement",
        };
        if c.take(1)? != b"c" {
            return Err(DistError::Protocol(
                "expected a send_complement ('c')".into(),
            ));
        }
        peer_flags |= u64::from(c.u32()?) << 32;
        creation = c.u32()?;
        check_flags(peer_flags)?;
    }

    let reply = read_msg(s).await?;
    let mut c = Cursor {
        b: &reply,
        what: "challenge reply",
    };
    if c.take(1)? != b"r" {
        return Err(DistError::Protocol(
            "expected a challenge reply ('r')".into(),
        ));
    }
    let their_challenge = c.u32()?;
    if c.take(16)? != digest(&local.cookie, our_challenge) {
        tracing::warn!(
            "connection attempt from node {name} rejected: invalid challenge reply (wrong cookie)"
        );
        return Err(DistError::WrongCookie(name.to_string()));
    }
    let mut ack = vec![b'a'];
    ack.extend_from_slice(&digest(&local.cookie, their_challenge));
    write_msg(s, &ack).await?;
    Ok(Peer {
        name,
        creation,
        flags: peer_flags & local.flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(name: &str, cookie: &str) -> Local {
        Local {
            name: Atom::new(name),
            cookie: cookie.into(),
            creation: 7,
            flags: flags::OFFERED,
        }
    }

    #[test]
    fn digest_is_md5_of_cookie_and_decimal_challenge() {
        // erlang:md5("secret" ++ integer_to_list(1234567)).
        // MD5("secret1234567"), as Python's hashlib computes it.
        let want = "1074ec9d831e47aa83e47394ca29f2de";
        let got: String = digest("secret", 1234567)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn both_sides_agree_with_the_same_cookie_and_refuse_with_different_ones() {
        for (ca, cb, ok) in [("c1", "c1", true), ("c1", "c2", false)] {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let la = local("a@h", ca);
            let lb = local("b@h", cb);
            let expected = Atom::new("b@h");
            let (ra, rb) = tokio::join!(connect(&mut a, &la, &expected, || true), async {
                let r = accept(&mut b, &lb, |_| Status::Ok).await;
                drop(b);
                r
            });
            if ok {
                assert_eq!(ra.unwrap().name.as_str(), "b@h");
                assert_eq!(rb.unwrap().name.as_str(), "a@h");
            } else {
                assert!(matches!(ra, Err(DistError::WrongCookie(_))), "{ra:?}");
                assert!(matches!(rb, Err(DistError::WrongCookie(_))), "{rb:?}");
            }
        }
    }

    #[tokio::test]
    async fn alive_is_answered_by_whether_the_attempt_is_still_pending() {
        for pending in [true, false] {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let la = local("a@h", "c");
            let expected = Atom::new("b@h");
            let (ra, rb) = tokio::join!(connect(&mut a, &la, &expected, || pending), async {
                let r = accept(&mut b, &local("b@h", "c"), |_| Status::Alive).await;
                drop(b);
                r
            });
            if pending {
                // The peer drops its old connection and takes this one.
                assert_eq!(ra.unwrap().name.as_str(), "b@h");
                assert_eq!(rb.unwrap().name.as_str(), "a@h");
            } else {
                // A connection set up meanwhile stays; this attempt ends.
                assert!(
                    matches!(ra, Err(DistError::Refused(ref s)) if s == "alive"),
                    "{ra:?}"
                );
                assert!(matches!(rb, Err(DistError::Refused(_))), "{rb:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_peer_without_the_mandatory_flags_gets_not_allowed() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let mut old = local("a@h", "c");
        old.flags = flags::MANDATORY_25; // no V4_NC, no UNLINK_ID
        let expected = Atom::new("b@h");
        let (ra, rb) = tokio::join!(connect(&mut a, &old, &expected, || true), async {
            let r = accept(&mut b, &local("b@h", "c"), |_| Status::Ok).await;
            drop(b);
            r
        });
        assert!(
            matches!(ra, Err(DistError::Refused(ref s)) if s == "not_allowed"),
            "{ra:?}"
        );
        assert!(
            matches!(rb, Err(DistError::MissingFlags(m)) if m == flags::MANDATORY_26),
            "{rb:?}"
        );
    }

    /// A version 5 client, by hand: `'n'`, then `'c'` after the challenge.
    async fn v5_client(
        s: &mut tokio::io::DuplexStream,
        l: &Local,
        complement: bool,
    ) -> Result<u32, DistError> {
        let mut name = vec![b'n', 0, 5];
        name.extend_from_slice(&((l.flags & 0xffff_ffff) as u32).to_be_bytes());
        name.extend_from_slice(l.name.as_str().as_bytes());
        write_msg(s, &name).await?;
        assert_eq!(read_msg(s).await?, b"sok");
        let challenge = read_msg(s).await?;
        assert_eq!(challenge[0], b'N');
        let theirs = u32::from_be_bytes(challenge[9..13].try_into().unwrap());
        if complement {
            let mut c = vec![b'c'];
            c.extend_from_slice(&((l.flags >> 32) as u32).to_be_bytes());
            c.extend_from_slice(&l.creation.to_be_bytes());
            write_msg(s, &c).await?;
        }
        let mut reply = vec![b'r'];
        reply.extend_from_slice(&99u32.to_be_bytes());
        reply.extend_from_slice(&digest(&l.cookie, theirs));
        write_msg(s, &reply).await?;
        let ack = read_msg(s).await?;
        assert_eq!(&ack[1..], digest(&l.cookie, 99));
        Ok(theirs)
    }

    #[tokio::test]
    async fn an_old_version_5_send_name_with_its_complement_is_accepted() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let mut la = local("old@h", "c");
        la.creation = 4242;
        let (ra, rb) = tokio::join!(v5_client(&mut a, &la, true), async {
            accept(&mut b, &local("b@h", "c"), |_| Status::Ok).await
        });
        ra.unwrap();
        let peer = rb.unwrap();
        assert_eq!(peer.name.as_str(), "old@h");
        assert_eq!(peer.creation, 4242);
        // The high flags (V4_NC, SPAWN, ALIAS) came with the complement.
        assert_eq!(peer.flags, flags::OFFERED);

        // Without the complement's high flags, V4_NC is missing: refused.
        let (mut a, mut b) = tokio::io::duplex(4096);
        let mut low_only = local("old@h", "c");
        low_only.flags &= 0xffff_ffff;
        let lb = local("b@h", "c");
        let (_, rb) = tokio::join!(v5_client(&mut a, &low_only, true), async {
            let r = accept(&mut b, &lb, |_| Status::Ok).await;
            drop(b);
            r
        });
        assert!(
            matches!(rb, Err(DistError::MissingFlags(m)) if m & flags::V4_NC != 0),
            "{rb:?}"
        );
    }

    #[tokio::test]
    async fn a_version_5_peer_without_handshake_23_gets_not_allowed() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let mut name = vec![b'n', 0, 5];
        let low = (flags::REQUIRED & 0xffff_ffff) & !flags::HANDSHAKE_23;
        name.extend_from_slice(&(low as u32).to_be_bytes());
        name.extend_from_slice(b"ancient@h");
        write_msg(&mut a, &name).await.unwrap();
        let r = accept(&mut b, &local("b@h", "c"), |_| Status::Ok).await;
        assert!(
            matches!(r, Err(DistError::MissingFlags(m)) if m == flags::HANDSHAKE_23),
            "{r:?}"
        );
        assert_eq!(read_msg(&mut a).await.unwrap(), b"snot_allowed");
    }

    #[tokio::test]
    async fn garbage_and_truncated_handshakes_are_errors() {
        let l = local("b@h", "c");
        for input in [
            &b"\x00\x05hello"[..],
            &[0xff, 0xff, 0xff, 0xff][..],
            &[0, 0][..],
            &[0, 3, b'N', 0, 0][..],
            &[0, 15, b'N', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff][..],
        ] {
            let (mut a, mut b) = tokio::io::duplex(1 << 17);
            a.write_all(input).await.unwrap();
            drop(a);
            assert!(accept(&mut b, &l, |_| Status::Ok).await.is_err());
        }
    }
}
