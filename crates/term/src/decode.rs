//! Decoding: bytes from a peer to a [`Term`], never trusting them.
//!
//! Every length prefix is checked against the bytes left before anything is
//! allocated for it (an element takes at least one byte, so a count larger
//! than the rest of the input is an error at once), and preallocation is
//! capped besides, so a hostile prefix costs nothing. Nesting depth, bignum
//! size and the size of a compressed term's contents are bounded by
//! [`DecodeLimits`]. Malformed input yields a [`DecodeError`] with the byte
//! offset of the problem; nothing here panics on input.

use std::fmt;

use num_bigint::{BigInt, Sign};

use crate::tag::*;
use crate::term::{Atom, BitBinary, Closure, Fun, Map, Pid, Port, Reference, Term, MAX_ATOM_CHARS};

/// Bounds on what a decode may build. The defaults suit terms from the
/// network: generous for real traffic, small enough that a hostile peer
/// cannot exhaust memory or the stack. To change one, change it on the
/// defaults:
///
/// ```
/// use ember_term::{decode_with, DecodeLimits};
/// let mut limits = DecodeLimits::default();
/// limits.max_depth = 2;
/// assert!(decode_with(&[131, 104, 1, 104, 1, 104, 0], &limits).is_ok()); // {{{}}}
/// assert!(decode_with(&[131, 104, 1, 104, 1, 104, 1, 104, 0], &limits).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeLimits {
    /// How deeply tuples, lists, maps and funs may nest: default 512. The
    /// decoder recurses once per level, and so do `Drop`, the encoder and
    /// the comparisons, so this also protects the code that handles the
    /// term afterwards. A long flat list is not deep; `[[[[...]]]]` is.
    pub max_depth: usize,
    /// The largest bignum, in bytes of magnitude: default 65,536 (a
    /// 524,288-bit integer).
    pub max_bignum_bytes: usize,
    /// The largest size a compressed term (tag 80) may declare for its
    /// contents: default 64 MiB. Output is produced as the input inflates,
    /// so a false declaration costs nothing.
    pub max_decompressed_size: usize,
}

impl Default for DecodeLimits {
    fn default() -> DecodeLimits {
        DecodeLimits {
            max_depth: 512,
            max_bignum_bytes: 64 * 1024,
            max_decompressed_size: 64 * 1024 * 1024,
        }
    }
}

/// Why input could not be decoded, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// The byte offset of the problem in the input (in the inflated
    /// contents when `in_compressed` is set).
    pub offset: usize,
    /// Whether the offset is into the contents of a compressed term.
    pub in_compressed: bool,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

/// What is wrong with the input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ends early: `needed` bytes were wanted, `left` were there.
    Truncated {
        /// Bytes wanted.
        needed: usize,
        /// Bytes left.
        left: usize,
    },
    /// The first byte is not the version byte 131.
    BadVersion(u8),
    /// A tag this decoder does not know (or that cannot appear here).
    UnknownTag(u8),
    /// A term of another kind was expected here (an atom for a node name,
    /// a pid in a fun, a small integer for an arity, ...).
    Expected {
        /// What was expected.
        what: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// Nesting past [`DecodeLimits::max_depth`].
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A bignum past [`DecodeLimits::max_bignum_bytes`].
    BignumTooLarge {
        /// Its declared size in bytes.
        bytes: u64,
        /// The limit.
        limit: usize,
    },
    /// A compressed term declaring contents past
    /// [`DecodeLimits::max_decompressed_size`].
    DecompressedTooLarge {
        /// The declared size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// The zlib stream of a compressed term is corrupt, or does not inflate
    /// to the declared size.
    BadCompressed,
    /// A compressed term somewhere other than at the top.
    NestedCompressed,
    /// A UTF-8 atom that is not UTF-8.
    AtomNotUtf8,
    /// An atom of more than 255 characters.
    AtomTooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// A float that is NaN, infinite, or (old `FLOAT_EXT`) not a number.
    BadFloat,
    /// A `BIT_BINARY_EXT` whose bit count does not fit its length.
    BadBitCount {
        /// The byte length.
        len: u32,
        /// The bit count of the last byte.
        bits: u8,
    },
    /// A reference with no words, or more than [`Reference::MAX_WORDS`].
    BadReferenceLength(u16),
    /// A map with the same key twice.
    DuplicateMapKey,
    /// An integer field (a fun's old index or uniq) outside `i64`.
    IntegerOutOfRange,
    /// A fun whose size field disagrees with its contents.
    BadFunSize {
        /// What the size field says.
        declared: u32,
        /// What the fields take.
        actual: usize,
    },
    /// `ATOM_CACHE_REF` outside a distribution message, or an index that
    /// the message's atom cache does not have.
    AtomCacheRef(u8),
    /// Bytes left over after the term.
    TrailingBytes(usize),
    /// A distribution fragment that does not fit its sequence (see
    /// [`dist::Fragments`](crate::dist::Fragments)).
    Fragment(&'static str),
    /// A reassembled distribution message past its size limit.
    MessageTooLarge {
        /// Its size so far.
        size: u64,
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::Truncated { needed, left } => {
                write!(f, "input ends early: {needed} bytes needed, {left} left")
            }
            DecodeErrorKind::BadVersion(v) => write!(f, "version byte is {v}, not 131"),
            DecodeErrorKind::UnknownTag(t) => write!(f, "unknown or misplaced tag {t}"),
            DecodeErrorKind::Expected { what, tag } => {
                write!(f, "expected {what}, found tag {tag}")
            }
            DecodeErrorKind::TooDeep { limit } => write!(f, "terms nest deeper than {limit}"),
            DecodeErrorKind::BignumTooLarge { bytes, limit } => {
                write!(f, "bignum of {bytes} bytes is over the limit of {limit}")
            }
            DecodeErrorKind::DecompressedTooLarge { size, limit } => {
                write!(
                    f,
                    "compressed term declares {size} bytes, over the limit of {limit}"
                )
            }
            DecodeErrorKind::BadCompressed => {
                f.write_str("compressed term does not inflate to its declared size")
            }
            DecodeErrorKind::NestedCompressed => f.write_str("compressed term inside a term"),
            DecodeErrorKind::AtomNotUtf8 => f.write_str("UTF-8 atom is not valid UTF-8"),
            DecodeErrorKind::AtomTooLong { chars } => {
                write!(
                    f,
                    "atom of {chars} characters is longer than {MAX_ATOM_CHARS}"
                )
            }
            DecodeErrorKind::BadFloat => f.write_str("float is not a finite number"),
            DecodeErrorKind::BadBitCount { len, bits } => {
                write!(f, "bitstring of {len} bytes cannot end in {bits} bits")
            }
            DecodeErrorKind::BadReferenceLength(n) => {
                write!(f, "reference of {n} words (1 to 5 allowed)")
            }
            DecodeErrorKind::DuplicateMapKey => f.write_str("map has a key twice"),
            DecodeErrorKind::IntegerOutOfRange => f.write_str("integer field is out of range"),
            DecodeErrorKind::BadFunSize { declared, actual } => {
                write!(
                    f,
                    "fun size field says {declared} bytes, its fields take {actual}"
                )
            }
            DecodeErrorKind::AtomCacheRef(i) => {
                write!(f, "atom cache reference {i} has no atom cache entry")
            }
            DecodeErrorKind::TrailingBytes(n) => write!(f, "{n} bytes after the term"),
            DecodeErrorKind::Fragment(what) => write!(f, "fragment {what}"),
            DecodeErrorKind::MessageTooLarge { size, limit } => {
                write!(f, "message of {size} bytes is over the limit of {limit}")
            }
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = if self.in_compressed {
            " of the compressed contents"
        } else {
            ""
        };
        write!(f, "{} at byte {}{inner}", self.kind, self.offset)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one term: the version byte 131, then the term, and nothing after
/// it. Uses the default [`DecodeLimits`].
///
/// ```
/// use ember_term::{decode, Term};
/// assert_eq!(decode(&[131, 119, 2, b'o', b'k']).unwrap(), Term::atom("ok"));
/// assert!(decode(&[131, 108, 255, 255, 255, 255]).is_err()); // no 4 GiB list
/// ```
pub fn decode(input: &[u8]) -> Result<Term, DecodeError> {
    decode_with(input, &DecodeLimits::default())
}

/// [`decode`] with the given limits.
pub fn decode_with(input: &[u8], limits: &DecodeLimits) -> Result<Term, DecodeError> {
    let (term, used) = decode_prefix(input, limits)?;
    if used != input.len() {
        return Err(DecodeError {
            offset: used,
            in_compressed: false,
            kind: DecodeErrorKind::TrailingBytes(input.len() - used),
        });
    }
    Ok(term)
}

/// Decodes the versioned term at the start of `input`, returning it and the
/// number of bytes it took, for input holding several terms one after the
/// other (a distribution message: control message, then payload). A
/// compressed term takes the rest of the input.
pub fn decode_prefix(input: &[u8], limits: &DecodeLimits) -> Result<(Term, usize), DecodeError> {
    let mut d = Decoder::new(input, limits, None);
    let version = d.u8()?;
    if version != VERSION {
        return Err(d.error_at(0, DecodeErrorKind::BadVersion(version)));
    }
    if d.peek()? == COMPRESSED {
        d.pos += 1;
        let term = d.compressed()?;
        return Ok((term, input.len()));
    }
    let term = d.term(0)?;
    Ok((term, d.pos))
}

/// Never preallocate more elements than this from a count on the wire; the
/// vector grows from there as elements actually decode.
const PREALLOC: usize = 256;

/// A cursor over one input; `pub(crate)` so that the distribution header can
/// decode terms that refer to its atom cache.
pub(crate) struct Decoder<'a> {
    input: &'a [u8],
    pub(crate) pos: usize,
    limits: &'a DecodeLimits,
    atom_cache: Option<&'a [Atom]>,
    in_compressed: bool,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(
        input: &'a [u8],
        limits: &'a DecodeLimits,
        atom_cache: Option<&'a [Atom]>,
    ) -> Decoder<'a> {
        Decoder {
            input,
            pos: 0,
            limits,
            atom_cache,
            in_compressed: false,
        }
    }

    pub(crate) fn error_at(&self, offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            offset,
            in_compressed: self.in_compressed,
            kind,
        }
    }

    fn left(&self) -> usize {
        self.input.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.left() {
            return Err(self.error_at(
                self.pos,
                DecodeErrorKind::Truncated {
                    needed: n,
                    left: self.left(),
                },
            ));
        }
        let bytes = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        match self.input.get(self.pos) {
            Some(b) => Ok(*b),
            None => Err(self.error_at(self.pos, DecodeErrorKind::Truncated { needed: 1, left: 0 })),
        }
    }

    /// Checks that `count` items of at least `each` bytes can follow, and
    /// gives the capacity to start a vector with.
    fn room_for(&self, count: usize, each: usize) -> Result<usize, DecodeError> {
        let needed = count.saturating_mul(each);
        if needed > self.left() {
            return Err(self.error_at(
                self.pos,
                DecodeErrorKind::Truncated {
                    needed,
                    left: self.left(),
                },
            ));
        }
        Ok(count.min(PREALLOC))
    }

    fn compressed(&mut self) -> Result<Term, DecodeError> {
        let at = self.pos;
        let size = self.u32()?;
        let limit = self.limits.max_decompressed_size;
        if size as usize > limit {
            return Err(self.error_at(
                at,
                DecodeErrorKind::DecompressedTooLarge {
                    size: u64::from(size),
                    limit,
                },
            ));
        }
        let data = self.take(self.left())?;
        let inflated = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(data, size as usize)
            .map_err(|_| self.error_at(at + 4, DecodeErrorKind::BadCompressed))?;
        if inflated.len() != size as usize {
            return Err(self.error_at(at + 4, DecodeErrorKind::BadCompressed));
        }
        let mut inner = Decoder::new(&inflated, self.limits, self.atom_cache);
        inner.in_compressed = true;
        let term = inner.term(0)?;
        if inner.pos != inflated.len() {
            return Err(inner.error_at(
                inner.pos,
                DecodeErrorKind::TrailingBytes(inflated.len() - inner.pos),
            ));
        }
        Ok(term)
    }

    /// One term (no version byte) at nesting `depth`.
    ///
    /// Kept small on purpose: this and the compound decoders are the
    /// recursion, so their frames times `max_depth` is the stack a decode
    /// needs; everything that does not nest is in [`Decoder::leaf`].
    pub(crate) fn term(&mut self, depth: usize) -> Result<Term, DecodeError> {
        if depth > self.limits.max_depth {
            return Err(self.too_deep());
        }
        let at = self.pos;
        let tag = self.u8()?;
        match tag {
            SMALL_TUPLE_EXT => {
                let n = self.u8()?;
                self.terms(usize::from(n), depth).map(Term::Tuple)
            }
            LARGE_TUPLE_EXT => {
                let n = self.u32()?;
                self.terms(n as usize, depth).map(Term::Tuple)
            }
            MAP_EXT => self.map(depth),
            LIST_EXT => self.list(depth),
            NEW_FUN_EXT => self.closure(depth),
            _ => self.leaf(at, tag),
        }
    }

    #[cold]
    #[inline(never)]
    fn too_deep(&self) -> DecodeError {
        self.error_at(
            self.pos,
            DecodeErrorKind::TooDeep {
                limit: self.limits.max_depth,
            },
        )
    }

    /// A term that holds no other terms, its tag at `at` already read.
    #[inline(never)]
    fn leaf(&mut self, at: usize, tag: u8) -> Result<Term, DecodeError> {
        Ok(match tag {
            SMALL_INTEGER_EXT => Term::Int(i64::from(self.u8()?)),
            INTEGER_EXT => Term::Int(i64::from(self.u32()? as i32)),
            SMALL_BIG_EXT => {
                let n = self.u8()?;
                self.bignum(at, u64::from(n))?
            }
            LARGE_BIG_EXT => {
                let n = self.u32()?;
                self.bignum(at, u64::from(n))?
            }
            NEW_FLOAT_EXT => {
                let f = f64::from_bits(self.u64()?);
                self.finite(at, f)?
            }
            FLOAT_EXT => {
                let text = self.take(31)?;
                let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
                let f = std::str::from_utf8(&text[..end])
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .ok_or_else(|| self.error_at(at, DecodeErrorKind::BadFloat))?;
                self.finite(at, f)?
            }
            ATOM_EXT | SMALL_ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT | ATOM_CACHE_REF => {
                Term::Atom(self.atom_body(at, tag)?)
            }
            NIL_EXT => Term::List(Vec::new()),
            STRING_EXT => {
                let n = self.u16()?;
                let bytes = self.take(usize::from(n))?;
                Term::List(bytes.iter().map(|&b| Term::Int(i64::from(b))).collect())
            }
            BINARY_EXT => {
                let n = self.u32()?;
                Term::Binary(self.take(n as usize)?.to_vec())
            }
            BIT_BINARY_EXT => {
                let n = self.u32()?;
                let bits = self.u8()?;
                let bytes = self.take(n as usize)?;
                match (n, bits) {
                    (0, 0) => Term::Binary(Vec::new()),
                    (1.., 8) => Term::Binary(bytes.to_vec()),
                    (1.., 1..=7) => Term::BitBinary(
                        BitBinary::new(bytes.to_vec(), bits).expect("checked length and bits"),
                    ),
                    _ => {
                        return Err(self.error_at(at, DecodeErrorKind::BadBitCount { len: n, bits }))
                    }
                }
            }
            PID_EXT | NEW_PID_EXT => Term::Pid(self.pid_body(tag)?),
            PORT_EXT | NEW_PORT_EXT | V4_PORT_EXT => {
                let node = self.atom()?;
                let id = if tag == V4_PORT_EXT {
                    self.u64()?
                } else {
                    u64::from(self.u32()?)
                };
                let creation = if tag == PORT_EXT {
                    u32::from(self.u8()?)
                } else {
                    self.u32()?
                };
                Term::Port(Port { node, id, creation })
            }
            REFERENCE_EXT => {
                let node = self.atom()?;
                let id = self.u32()?;
                let creation = u32::from(self.u8()?);
                Term::Reference(Reference {
                    node,
                    creation,
                    ids: vec![id],
                })
            }
            NEW_REFERENCE_EXT | NEWER_REFERENCE_EXT => {
                let len = self.u16()?;
                if len == 0 || usize::from(len) > Reference::MAX_WORDS {
                    return Err(self.error_at(at, DecodeErrorKind::BadReferenceLength(len)));
                }
                let node = self.atom()?;
                let creation = if tag == NEW_REFERENCE_EXT {
                    u32::from(self.u8()?)
                } else {
                    self.u32()?
                };
                let ids = (0..len).map(|_| self.u32()).collect::<Result<_, _>>()?;
                Term::Reference(Reference {
                    node,
                    creation,
                    ids,
                })
            }
            EXPORT_EXT => {
                let module = self.atom()?;
                let function = self.atom()?;
                let arity_at = self.pos;
                let arity_tag = self.u8()?;
                if arity_tag != SMALL_INTEGER_EXT {
                    return Err(self.error_at(
                        arity_at,
                        DecodeErrorKind::Expected {
                            what: "a small integer arity",
                            tag: arity_tag,
                        },
                    ));
                }
                let arity = self.u8()?;
                Term::Fun(Fun::Export {
                    module,
                    function,
                    arity,
                })
            }
            COMPRESSED => return Err(self.error_at(at, DecodeErrorKind::NestedCompressed)),
            other => return Err(self.error_at(at, DecodeErrorKind::UnknownTag(other))),
        })
    }

    fn finite(&self, at: usize, f: f64) -> Result<Term, DecodeError> {
        if f.is_finite() {
            Ok(Term::Float(f))
        } else {
            Err(self.error_at(at, DecodeErrorKind::BadFloat))
        }
    }

    fn bignum(&mut self, at: usize, n: u64) -> Result<Term, DecodeError> {
        let limit = self.limits.max_bignum_bytes;
        if n > limit as u64 {
            return Err(self.error_at(at, DecodeErrorKind::BignumTooLarge { bytes: n, limit }));
        }
        let sign = self.u8()?;
        let digits = self.take(n as usize)?;
        let sign = if sign == 0 { Sign::Plus } else { Sign::Minus };
        Ok(Term::from_bigint(BigInt::from_bytes_le(sign, digits)))
    }

    fn terms(&mut self, n: usize, depth: usize) -> Result<Vec<Term>, DecodeError> {
        let mut out = Vec::with_capacity(self.room_for(n, 1)?);
        for _ in 0..n {
            out.push(self.term(depth + 1)?);
        }
        Ok(out)
    }

    fn map(&mut self, depth: usize) -> Result<Term, DecodeError> {
        let at = self.pos - 1;
        let n = self.u32()? as usize;
        let mut entries = Vec::with_capacity(self.room_for(n, 2)?);
        for _ in 0..n {
            let k = self.term(depth + 1)?;
            let v = self.term(depth + 1)?;
            entries.push((k, v));
        }
        Map::from_unsorted(entries)
            .map(Term::Map)
            .map_err(|_| self.error_at(at, DecodeErrorKind::DuplicateMapKey))
    }

    /// `LIST_EXT`: its elements, then its tail. A tail that is itself a list
    /// is spliced in, in this same loop, so `[a | [b | [c]]]` written as
    /// nested `LIST_EXT`s costs no depth.
    fn list(&mut self, depth: usize) -> Result<Term, DecodeError> {
        let mut elements = Vec::new();
        loop {
            let n = self.u32()? as usize;
            elements.reserve(self.room_for(n, 1)?);
            for _ in 0..n {
                elements.push(self.term(depth + 1)?);
            }
            match self.peek()? {
                LIST_EXT => self.pos += 1,
                NIL_EXT => {
                    self.pos += 1;
                    return Ok(Term::List(elements));
                }
                STRING_EXT => {
                    self.pos += 1;
                    let n = self.u16()?;
                    let bytes = self.take(usize::from(n))?;
                    elements.extend(bytes.iter().map(|&b| Term::Int(i64::from(b))));
                    return Ok(Term::List(elements));
                }
                _ => {
                    let tail = self.term(depth + 1)?;
                    return Ok(if elements.is_empty() {
                        tail
                    } else {
                        Term::ImproperList(elements, Box::new(tail))
                    });
                }
            }
        }
    }

    /// An atom in any of its encodings, for node names and fun fields.
    pub(crate) fn atom(&mut self) -> Result<Atom, DecodeError> {
        let at = self.pos;
        let tag = self.u8()?;
        match tag {
            ATOM_EXT | SMALL_ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT | ATOM_CACHE_REF => {
                self.atom_body(at, tag)
            }
            _ => Err(self.error_at(
                at,
                DecodeErrorKind::Expected {
                    what: "an atom",
                    tag,
                },
            )),
        }
    }

    fn atom_body(&mut self, at: usize, tag: u8) -> Result<Atom, DecodeError> {
        let len = match tag {
            ATOM_EXT | ATOM_UTF8_EXT => usize::from(self.u16()?),
            ATOM_CACHE_REF => {
                let index = self.u8()?;
                return self
                    .atom_cache
                    .and_then(|cache| cache.get(usize::from(index)))
                    .cloned()
                    .ok_or_else(|| self.error_at(at, DecodeErrorKind::AtomCacheRef(index)));
            }
            _ => usize::from(self.u8()?),
        };
        let bytes = self.take(len)?;
        let text: std::borrow::Cow<'_, str> = if tag == ATOM_EXT || tag == SMALL_ATOM_EXT {
            // Latin-1: every byte is the code point of the same value.
            bytes
                .iter()
                .map(|&b| char::from(b))
                .collect::<String>()
                .into()
        } else {
            std::str::from_utf8(bytes)
                .map_err(|_| self.error_at(at, DecodeErrorKind::AtomNotUtf8))?
                .into()
        };
        Atom::try_new(&text)
            .map_err(|e| self.error_at(at, DecodeErrorKind::AtomTooLong { chars: e.chars }))
    }

    fn pid_body(&mut self, tag: u8) -> Result<Pid, DecodeError> {
        let node = self.atom()?;
        let id = self.u32()?;
        let serial = self.u32()?;
        let creation = if tag == PID_EXT {
            u32::from(self.u8()?)
        } else {
            self.u32()?
        };
        Ok(Pid {
            node,
            id,
            serial,
            creation,
        })
    }

    fn small_int(&mut self) -> Result<i64, DecodeError> {
        let at = self.pos;
        match self.term(0)? {
            Term::Int(i) => Ok(i),
            Term::BigInt(_) => Err(self.error_at(at, DecodeErrorKind::IntegerOutOfRange)),
            _ => Err(self.error_at(
                at,
                DecodeErrorKind::Expected {
                    what: "an integer",
                    tag: self.input[at],
                },
            )),
        }
    }

    fn closure(&mut self, depth: usize) -> Result<Term, DecodeError> {
        let start = self.pos;
        let size = self.u32()?;
        let arity = self.u8()?;
        let uniq: [u8; 16] = self.array()?;
        let index = self.u32()?;
        let num_free = self.u32()? as usize;
        let module = self.atom()?;
        let old_index = self.int_field()?;
        let old_uniq = self.int_field()?;
        let pid_at = self.pos;
        let pid_tag = self.u8()?;
        if pid_tag != NEW_PID_EXT && pid_tag != PID_EXT {
            return Err(self.error_at(
                pid_at,
                DecodeErrorKind::Expected {
                    what: "a pid",
                    tag: pid_tag,
                },
            ));
        }
        let pid = self.pid_body(pid_tag)?;
        let free_vars = self.terms(num_free, depth)?;
        let actual = self.pos - start;
        if actual != size as usize {
            return Err(self.error_at(
                start,
                DecodeErrorKind::BadFunSize {
                    declared: size,
                    actual,
                },
            ));
        }
        Ok(Term::Fun(Fun::Closure(Box::new(Closure {
            arity,
            uniq,
            index,
            module,
            old_index,
            old_uniq,
            pid,
            free_vars,
        }))))
    }

    /// An integer-valued field of a fun: only integer tags, which do not nest.
    fn int_field(&mut self) -> Result<i64, DecodeError> {
        let at = self.pos;
        match self.peek()? {
            SMALL_INTEGER_EXT | INTEGER_EXT | SMALL_BIG_EXT | LARGE_BIG_EXT => self.small_int(),
            tag => Err(self.error_at(
                at,
                DecodeErrorKind::Expected {
                    what: "an integer",
                    tag,
                },
            )),
        }
    }
}
