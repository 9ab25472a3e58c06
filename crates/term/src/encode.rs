//! Encoding: a [`Term`] to the bytes `erlang:term_to_binary/2` gives with
//! `[{minor_version, 2}, deterministic]` (OTP 26+'s default atoms).
//!
//! Each term takes the tag Erlang picks for it: integers the smallest of
//! `SMALL_INTEGER_EXT`, `INTEGER_EXT`, `SMALL_BIG_EXT`, `LARGE_BIG_EXT`;
//! floats `NEW_FLOAT_EXT`; atoms `SMALL_ATOM_UTF8_EXT` or `ATOM_UTF8_EXT`;
//! a proper list of at most 65,535 integers in `0..=255` `STRING_EXT`; map
//! entries in map-key order; pids `NEW_PID_EXT`, ports `NEW_PORT_EXT` (or
//! `V4_PORT_EXT` past 32 bits), references `NEWER_REFERENCE_EXT`.

use std::fmt;

use num_bigint::{BigInt, Sign};
use num_traits::ToPrimitive;

use crate::tag::*;
use crate::term::{Atom, Fun, Pid, Reference, Term};

/// Why a term cannot be encoded (only hand-built terms can fail).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A NaN or infinite float: Erlang has neither.
    NonFiniteFloat,
    /// A reference with no words or more than [`Reference::MAX_WORDS`].
    BadReferenceLength(usize),
    /// A length that does not fit the format's 32-bit length field.
    TooLong(usize),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::NonFiniteFloat => f.write_str("float is NaN or infinite"),
            EncodeError::BadReferenceLength(n) => {
                write!(f, "reference of {n} words (1 to 5 allowed)")
            }
            EncodeError::TooLong(n) => write!(f, "length {n} does not fit in 32 bits"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Encodes `term` with the version byte, as `term_to_binary/1` does.
///
/// ```
/// use ember_term::{encode, Term};
/// assert_eq!(encode(&Term::atom("ok")).unwrap(), [131, 119, 2, b'o', b'k']);
/// ```
pub fn encode(term: &Term) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(term, &mut out)?;
    Ok(out)
}

/// Appends the version byte and `term` to `out`. On error `out` may hold a
/// partial encoding.
pub fn encode_into(term: &Term, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(VERSION);
    Encoder {
        out,
        atom_cache: None,
    }
    .term(term)
}

/// Encodes `term` compressed (tag 80, zlib at `level` 0–9) when that is
/// smaller, as `term_to_binary(T, [{compressed, Level}])` does.
pub fn encode_compressed(term: &Term, level: u8) -> Result<Vec<u8>, EncodeError> {
    let plain = encode(term)?;
    let body = &plain[1..];
    let packed = miniz_oxide::deflate::compress_to_vec_zlib(body, level.min(9));
    if packed.len() + 5 >= body.len() {
        return Ok(plain);
    }
    let size = u32::try_from(body.len()).map_err(|_| EncodeError::TooLong(body.len()))?;
    let mut out = Vec::with_capacity(packed.len() + 6);
    out.push(VERSION);
    out.push(COMPRESSED);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&packed);
    Ok(out)
}

/// A sink that can replace atoms by atom cache references (distribution
/// header); `None` writes every atom in full.
pub(crate) trait AtomSink {
    /// The cache index to write for `atom`, if it has one.
    fn index(&mut self, atom: &Atom) -> Option<u8>;
}

pub(crate) struct Encoder<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) atom_cache: Option<&'a mut dyn AtomSink>,
}

fn len32(n: usize) -> Result<[u8; 4], EncodeError> {
    u32::try_from(n)
        .map(u32::to_be_bytes)
        .map_err(|_| EncodeError::TooLong(n))
}

impl Encoder<'_> {
    pub(crate) fn term(&mut self, term: &Term) -> Result<(), EncodeError> {
        match term {
            Term::Int(i) => self.int(*i),
            Term::BigInt(b) => match b.to_i64() {
                Some(i) => self.int(i),
                None => self.big(b),
            },
            Term::Float(f) => {
                if !f.is_finite() {
                    return Err(EncodeError::NonFiniteFloat);
                }
                self.out.push(NEW_FLOAT_EXT);
                self.out.extend_from_slice(&f.to_bits().to_be_bytes());
                Ok(())
            }
            Term::Atom(a) => {
                self.atom(a);
                Ok(())
            }
            Term::Reference(r) => self.reference(r),
            Term::Fun(f) => self.fun(f),
            Term::Port(p) => {
                match u32::try_from(p.id) {
                    Ok(id) => {
                        self.out.push(NEW_PORT_EXT);
                        self.atom(&p.node);
                        self.out.extend_from_slice(&id.to_be_bytes());
                    }
                    Err(_) => {
                        self.out.push(V4_PORT_EXT);
                        self.atom(&p.node);
                        self.out.extend_from_slice(&p.id.to_be_bytes());
                    }
                }
                self.out.extend_from_slice(&p.creation.to_be_bytes());
                Ok(())
            }
            Term::Pid(p) => {
                self.pid(p);
                Ok(())
            }
            Term::Tuple(t) => {
                match u8::try_from(t.len()) {
                    Ok(n) => self.out.extend_from_slice(&[SMALL_TUPLE_EXT, n]),
                    Err(_) => {
                        self.out.push(LARGE_TUPLE_EXT);
                        self.out.extend_from_slice(&len32(t.len())?);
                    }
                }
                t.iter().try_for_each(|e| self.term(e))
            }
            Term::Map(m) => {
                self.out.push(MAP_EXT);
                self.out.extend_from_slice(&len32(m.len())?);
                m.iter().try_for_each(|(k, v)| {
                    self.term(k)?;
                    self.term(v)
                })
            }
            Term::List(l) if l.is_empty() => {
                self.out.push(NIL_EXT);
                Ok(())
            }
            Term::List(l) => {
                if let Some(bytes) = string_bytes(l) {
                    self.out.push(STRING_EXT);
                    self.out
                        .extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                    self.out.extend_from_slice(&bytes);
                    return Ok(());
                }
                self.out.push(LIST_EXT);
                self.out.extend_from_slice(&len32(l.len())?);
                l.iter().try_for_each(|e| self.term(e))?;
                self.out.push(NIL_EXT);
                Ok(())
            }
            Term::ImproperList(l, tail) => {
                if l.is_empty() {
                    return self.term(tail);
                }
                self.out.push(LIST_EXT);
                self.out.extend_from_slice(&len32(l.len())?);
                l.iter().try_for_each(|e| self.term(e))?;
                self.term(tail)
            }
            Term::Binary(b) => {
                self.out.push(BINARY_EXT);
                self.out.extend_from_slice(&len32(b.len())?);
                self.out.extend_from_slice(b);
                Ok(())
            }
            Term::BitBinary(b) => {
                self.out.push(BIT_BINARY_EXT);
                self.out.extend_from_slice(&len32(b.bytes().len())?);
                self.out.push(b.last_bits());
                self.out.extend_from_slice(b.bytes());
                Ok(())
            }
        }
    }

    fn int(&mut self, i: i64) -> Result<(), EncodeError> {
        if let Ok(small) = u8::try_from(i) {
            self.out.extend_from_slice(&[SMALL_INTEGER_EXT, small]);
        } else if let Ok(word) = i32::try_from(i) {
            self.out.push(INTEGER_EXT);
            self.out.extend_from_slice(&word.to_be_bytes());
        } else {
            let magnitude = i.unsigned_abs().to_le_bytes();
            let n = 8 - magnitude.iter().rev().take_while(|&&b| b == 0).count();
            self.out
                .extend_from_slice(&[SMALL_BIG_EXT, n as u8, u8::from(i < 0)]);
            self.out.extend_from_slice(&magnitude[..n]);
        }
        Ok(())
    }

    fn big(&mut self, b: &BigInt) -> Result<(), EncodeError> {
        let (sign, digits) = b.to_bytes_le();
        let negative = u8::from(sign == Sign::Minus);
        match u8::try_from(digits.len()) {
            Ok(n) => self.out.extend_from_slice(&[SMALL_BIG_EXT, n]),
            Err(_) => {
                self.out.push(LARGE_BIG_EXT);
                self.out.extend_from_slice(&len32(digits.len())?);
            }
        }
        self.out.push(negative);
        self.out.extend_from_slice(&digits);
        Ok(())
    }

    pub(crate) fn atom(&mut self, a: &Atom) {
        if let Some(index) = self.atom_cache.as_mut().and_then(|c| c.index(a)) {
            self.out.extend_from_slice(&[ATOM_CACHE_REF, index]);
            return;
        }
        let text = a.as_str().as_bytes();
        match u8::try_from(text.len()) {
            Ok(n) => self.out.extend_from_slice(&[SMALL_ATOM_UTF8_EXT, n]),
            Err(_) => {
                // At most 255 characters of at most 4 bytes: fits 16 bits.
                self.out.push(ATOM_UTF8_EXT);
                self.out
                    .extend_from_slice(&(text.len() as u16).to_be_bytes());
            }
        }
        self.out.extend_from_slice(text);
    }

    fn pid(&mut self, p: &Pid) {
        self.out.push(NEW_PID_EXT);
        self.atom(&p.node);
        self.out.extend_from_slice(&p.id.to_be_bytes());
        self.out.extend_from_slice(&p.serial.to_be_bytes());
        self.out.extend_from_slice(&p.creation.to_be_bytes());
    }

    fn reference(&mut self, r: &Reference) -> Result<(), EncodeError> {
        if r.ids.is_empty() || r.ids.len() > Reference::MAX_WORDS {
            return Err(EncodeError::BadReferenceLength(r.ids.len()));
        }
        self.out.push(NEWER_REFERENCE_EXT);
        self.out
            .extend_from_slice(&(r.ids.len() as u16).to_be_bytes());
        self.atom(&r.node);
        self.out.extend_from_slice(&r.creation.to_be_bytes());
        for id in &r.ids {
            self.out.extend_from_slice(&id.to_be_bytes());
        }
        Ok(())
    }

    fn fun(&mut self, f: &Fun) -> Result<(), EncodeError> {
        match f {
            Fun::Export {
                module,
                function,
                arity,
            } => {
                self.out.push(EXPORT_EXT);
                self.atom(module);
                self.atom(function);
                self.out.extend_from_slice(&[SMALL_INTEGER_EXT, *arity]);
                Ok(())
            }
            Fun::Closure(c) => {
                self.out.push(NEW_FUN_EXT);
                let start = self.out.len();
                self.out.extend_from_slice(&[0; 4]);
                self.out.push(c.arity);
                self.out.extend_from_slice(&c.uniq);
                self.out.extend_from_slice(&c.index.to_be_bytes());
                self.out.extend_from_slice(&len32(c.free_vars.len())?);
                self.atom(&c.module);
                self.int(c.old_index)?;
                self.int(c.old_uniq)?;
                self.pid(&c.pid);
                c.free_vars.iter().try_for_each(|v| self.term(v))?;
                let size = len32(self.out.len() - start)?;
                self.out[start..start + 4].copy_from_slice(&size);
                Ok(())
            }
        }
    }
}

/// The bytes of a list Erlang sends as `STRING_EXT`.
fn string_bytes(l: &[Term]) -> Option<Vec<u8>> {
    if l.len() > usize::from(u16::MAX) {
        return None;
    }
    l.iter()
        .map(|t| match t {
            Term::Int(i) => u8::try_from(*i).ok(),
            _ => None,
        })
        .collect()
}
