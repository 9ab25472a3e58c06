//! The owned term: [`Term`] and the identifiers and containers it holds.
//!
//! Invariants the decoder establishes and the builders keep (the variants are
//! public, so a hand-built term may break them; the encoder and the order
//! still handle such terms, see each variant):
//!
//! * [`Term::BigInt`] holds only values outside `i64`; smaller ones are
//!   [`Term::Int`].
//! * [`Term::List`] is a proper list (an empty one is `[]`, Erlang's nil);
//!   [`Term::ImproperList`] has at least one element and a tail that is not a
//!   list.
//! * [`Term::BitBinary`] has a partial last byte; whole bytes are
//!   [`Term::Binary`].
//! * a [`Map`]'s keys are unique and sorted in map-key order.

use std::fmt;
use std::sync::Arc;

use num_bigint::BigInt;
use num_traits::ToPrimitive;

/// The longest atom Erlang accepts, in characters.
pub const MAX_ATOM_CHARS: usize = 255;

/// An Erlang term, owned.
///
/// Built with the `From` conversions, the builders ([`Term::atom`],
/// [`Term::tuple`], [`Term::list`], [`Term::map`], [`Term::binary`]) or the
/// [`term!`](crate::term!) macro; taken apart with `match` or the accessors
/// (`as_atom`, `as_tuple`, `as_int`, ...).
///
/// `Eq`, `Ord` and `Hash` are exact (`=:=`): `1` and `1.0` are different
/// terms. `Ord` is Erlang's term order, with `1` placed just before `1.0`;
/// [`Term::erl_cmp`] is Erlang's own comparison, where they are equal.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Term {
    /// An integer that fits in `i64` (Erlang's small integers and the
    /// smaller bignums).
    Int(i64),
    /// An integer outside `i64`. A value inside `i64` held here is still
    /// compared and encoded by value.
    BigInt(BigInt),
    /// A float. Erlang has no NaN or infinities; encoding one fails.
    Float(f64),
    /// An atom.
    Atom(Atom),
    /// A reference.
    Reference(Reference),
    /// A fun, carried opaquely.
    Fun(Fun),
    /// A port.
    Port(Port),
    /// A process identifier.
    Pid(Pid),
    /// A tuple.
    Tuple(Vec<Term>),
    /// A map.
    Map(Map),
    /// A proper list; the empty list is `[]` (nil). Decoded `STRING_EXT`
    /// lists land here as small integers, and a proper list of integers
    /// `0..=255` is encoded as `STRING_EXT` again, as Erlang does.
    List(Vec<Term>),
    /// An improper list `[A, B | Tail]`: the elements, then the tail.
    ImproperList(Vec<Term>, Box<Term>),
    /// A binary: a whole number of bytes.
    Binary(Vec<u8>),
    /// A bitstring whose length is not a whole number of bytes.
    BitBinary(BitBinary),
}

/// An atom: at most [`MAX_ATOM_CHARS`] characters of UTF-8 text, cheap to
/// clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Atom(Arc<str>);

/// Why a string cannot be an atom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AtomTooLong {
    /// Its length in characters.
    pub chars: usize,
}

impl fmt::Display for AtomTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "atom of {} characters is longer than {MAX_ATOM_CHARS}",
            self.chars
        )
    }
}

impl std::error::Error for AtomTooLong {}

impl Atom {
    /// The atom named `name`.
    ///
    /// # Panics
    ///
    /// If `name` has more than [`MAX_ATOM_CHARS`] characters; use
    /// [`Atom::try_new`] for names that come from outside.
    pub fn new(name: &str) -> Atom {
        match Atom::try_new(name) {
            Ok(atom) => atom,
            Err(e) => panic!("{e}"),
        }
    }

    /// The atom named `name`, or why it cannot be one.
    pub fn try_new(name: &str) -> Result<Atom, AtomTooLong> {
        // Byte length bounds the character count from above.
        if name.len() > MAX_ATOM_CHARS {
            let chars = name.chars().count();
            if chars > MAX_ATOM_CHARS {
                return Err(AtomTooLong { chars });
            }
        }
        Ok(Atom(Arc::from(name)))
    }

    /// The atom's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Atom({:?})", &*self.0)
    }
}

impl fmt::Display for Atom {
    /// Erlang syntax: quoted when the text is not a plain atom.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const RESERVED: [&str; 28] = [
            "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor",
            "case", "catch", "cond", "div", "else", "end", "fun", "if", "let", "maybe", "not",
            "of", "or", "orelse", "receive", "rem", "try", "when",
        ];
        let s = self.as_str();
        let plain = s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
            && !RESERVED.contains(&s);
        if plain {
            f.write_str(s)
        } else {
            f.write_str("'")?;
            for c in s.chars() {
                match c {
                    '\'' => f.write_str("\\'")?,
                    '\\' => f.write_str("\\\\")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("'")
        }
    }
}

impl From<&str> for Atom {
    /// See [`Atom::new`] (panics on an over-long name).
    fn from(name: &str) -> Atom {
        Atom::new(name)
    }
}

/// A process identifier, local or of another node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pid {
    /// The node the process lives on.
    pub node: Atom,
    /// The process number.
    pub id: u32,
    /// The serial (reuse count of the number).
    pub serial: u32,
    /// The node's incarnation, as epmd handed it out.
    pub creation: u32,
}

/// A port identifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Port {
    /// The node the port lives on.
    pub node: Atom,
    /// The port number (64 bits since OTP 24's `V4_PORT_EXT`).
    pub id: u64,
    /// The node's incarnation.
    pub creation: u32,
}

/// A reference. As terms, references compare their words as one number,
/// so high zero words do not count (`erl` agrees); this struct's own `==`
/// compares the fields as they are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The node that made it.
    pub node: Atom,
    /// The node's incarnation.
    pub creation: u32,
    /// The reference's words, least significant first, as on the wire: 1 to
    /// [`Reference::MAX_WORDS`] of them (3 for `make_ref()`).
    pub ids: Vec<u32>,
}

impl Reference {
    /// The most words a reference may have (OTP 24+'s `V4_NC`).
    pub const MAX_WORDS: usize = 5;
}

/// A fun: Erlang code Ember cannot run, kept whole so that it can be sent on.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Fun {
    /// `fun Module:Function/Arity` (`EXPORT_EXT`).
    Export {
        /// The module.
        module: Atom,
        /// The function.
        function: Atom,
        /// The arity.
        arity: u8,
    },
    /// A local fun with its environment (`NEW_FUN_EXT`).
    Closure(Box<Closure>),
}

/// A local fun (`NEW_FUN_EXT`), field for field.
#[derive(Clone, Debug, PartialEq)]
pub struct Closure {
    /// The arity.
    pub arity: u8,
    /// The MD5 of the module's code.
    pub uniq: [u8; 16],
    /// The fun's index in the module's fun table.
    pub index: u32,
    /// The module that defines it.
    pub module: Atom,
    /// The old-style index (an integer term on the wire).
    pub old_index: i64,
    /// The old-style uniq (an integer term on the wire).
    pub old_uniq: i64,
    /// The process that created it.
    pub pid: Pid,
    /// The captured variables.
    pub free_vars: Vec<Term>,
}

/// A bitstring whose length is not a multiple of 8.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BitBinary {
    bytes: Vec<u8>,
    last_bits: u8,
}

impl BitBinary {
    /// `bytes`, of which only the high `last_bits` bits of the last byte
    /// count; `None` unless `bytes` is non-empty and `last_bits` is `1..=7`.
    /// The unused low bits are cleared.
    pub fn new(mut bytes: Vec<u8>, last_bits: u8) -> Option<BitBinary> {
        if bytes.is_empty() || !(1..=7).contains(&last_bits) {
            return None;
        }
        if let Some(last) = bytes.last_mut() {
            *last &= 0xffu8 << (8 - last_bits);
        }
        Some(BitBinary { bytes, last_bits })
    }

    /// The bytes, the last one partial.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many high bits of the last byte belong to the bitstring (`1..=7`).
    pub fn last_bits(&self) -> u8 {
        self.last_bits
    }

    /// The length in bits.
    pub fn bit_len(&self) -> u64 {
        (self.bytes.len() as u64 - 1) * 8 + u64::from(self.last_bits)
    }
}

/// A map: unique keys kept in Erlang's map-key order, so that iteration and
/// encoding follow `term_to_binary(M, [deterministic])`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Map {
    entries: Vec<(Term, Term)>,
}

impl Map {
    /// An empty map.
    pub fn new() -> Map {
        Map::default()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, key: &Term) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(k, _)| crate::order::map_key_cmp(k, key))
    }

    /// The value under `key`.
    pub fn get(&self, key: &Term) -> Option<&Term> {
        self.position(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value under the atom `key` (the usual struct-like lookup).
    pub fn get_atom(&self, key: &str) -> Option<&Term> {
        self.entries.iter().find_map(|(k, v)| match k {
            Term::Atom(a) if a.as_str() == key => Some(v),
            _ => None,
        })
    }

    /// Puts `value` under `key`, returning the value it replaces.
    pub fn insert(&mut self, key: Term, value: Term) -> Option<Term> {
        match self.position(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes the entry under `key`, returning its value.
    pub fn remove(&mut self, key: &Term) -> Option<Term> {
        self.position(key).ok().map(|i| self.entries.remove(i).1)
    }

    /// The entries in map-key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Term, &Term)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The entries in map-key order, as a slice.
    pub fn entries(&self) -> &[(Term, Term)] {
        &self.entries
    }

    /// A map from entries already sorted in map-key order with unique keys;
    /// `Err` gives the first key found out of order or repeated.
    pub(crate) fn from_sorted(entries: Vec<(Term, Term)>) -> Result<Map, Term> {
        for pair in entries.windows(2) {
            if crate::order::map_key_cmp(&pair[0].0, &pair[1].0) != std::cmp::Ordering::Less {
                return Err(pair[1].0.clone());
            }
        }
        Ok(Map { entries })
    }

    /// A map from entries in any order; `Err` gives a repeated key.
    pub(crate) fn from_unsorted(mut entries: Vec<(Term, Term)>) -> Result<Map, Term> {
        entries.sort_by(|a, b| crate::order::map_key_cmp(&a.0, &b.0));
        Map::from_sorted(entries)
    }
}

impl FromIterator<(Term, Term)> for Map {
    /// Collects entries; a later entry replaces an earlier one with the same
    /// key, as in `maps:from_list/1`.
    fn from_iter<I: IntoIterator<Item = (Term, Term)>>(iter: I) -> Map {
        let mut entries: Vec<(Term, Term)> = iter.into_iter().collect();
        // A stable sort keeps equal keys in arrival order; keep the last.
        entries.sort_by(|a, b| crate::order::map_key_cmp(&a.0, &b.0));
        let mut out: Vec<(Term, Term)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match out.last_mut() {
                Some(last) if crate::order::map_key_cmp(&last.0, &entry.0).is_eq() => *last = entry,
                _ => out.push(entry),
            }
        }
        Map { entries: out }
    }
}

impl IntoIterator for Map {
    type Item = (Term, Term);
    type IntoIter = std::vec::IntoIter<(Term, Term)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

// --- builders ---------------------------------------------------------------

impl Term {
    /// The atom `name` (see [`Atom::new`]: panics past 255 characters).
    pub fn atom(name: &str) -> Term {
        Term::Atom(Atom::new(name))
    }

    /// A tuple of `elements`.
    pub fn tuple(elements: impl IntoIterator<Item = Term>) -> Term {
        Term::Tuple(elements.into_iter().collect())
    }

    /// A proper list of `elements`.
    pub fn list(elements: impl IntoIterator<Item = Term>) -> Term {
        Term::List(elements.into_iter().collect())
    }

    /// `[]`, the empty list (nil).
    pub fn nil() -> Term {
        Term::List(Vec::new())
    }

    /// The list `elements` ending in `tail`: `[E1, ..., En | Tail]`. A list
    /// tail is spliced in, and with no elements the result is `tail` itself,
    /// so the result keeps the list invariants.
    pub fn improper_list(elements: impl IntoIterator<Item = Term>, tail: Term) -> Term {
        let mut elements: Vec<Term> = elements.into_iter().collect();
        match tail {
            Term::List(rest) => {
                elements.extend(rest);
                Term::List(elements)
            }
            Term::ImproperList(rest, tail) => {
                elements.extend(rest);
                Term::ImproperList(elements, tail)
            }
            tail if elements.is_empty() => tail,
            tail => Term::ImproperList(elements, Box::new(tail)),
        }
    }

    /// A map of `entries`; a later entry replaces an earlier one with the
    /// same key.
    pub fn map(entries: impl IntoIterator<Item = (Term, Term)>) -> Term {
        Term::Map(entries.into_iter().collect())
    }

    /// A binary holding `bytes`.
    pub fn binary(bytes: impl Into<Vec<u8>>) -> Term {
        Term::Binary(bytes.into())
    }

    /// An integer from a bignum, as [`Term::Int`] when it fits in `i64`.
    pub fn from_bigint(value: BigInt) -> Term {
        match value.to_i64() {
            Some(small) => Term::Int(small),
            None => Term::BigInt(value),
        }
    }
}

// --- accessors --------------------------------------------------------------

impl Term {
    /// The atom's text, if this is an atom.
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Term::Atom(a) => Some(a.as_str()),
            _ => None,
        }
    }

    /// Whether this is the atom `name`.
    pub fn is_atom(&self, name: &str) -> bool {
        self.as_atom() == Some(name)
    }

    /// The elements, if this is a tuple.
    pub fn as_tuple(&self) -> Option<&[Term]> {
        match self {
            Term::Tuple(t) => Some(t),
            _ => None,
        }
    }

    /// The elements, if this is a proper list (including `[]`).
    pub fn as_list(&self) -> Option<&[Term]> {
        match self {
            Term::List(l) => Some(l),
            _ => None,
        }
    }

    /// The map, if this is a map.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Term::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The bytes, if this is a binary (not a bitstring with a partial byte).
    pub fn as_binary(&self) -> Option<&[u8]> {
        match self {
            Term::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// The text, if this is a binary holding UTF-8 (an Elixir string).
    pub fn as_str(&self) -> Option<&str> {
        self.as_binary().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The value, if this is an integer that fits in `i64`.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Term::Int(i) => Some(*i),
            Term::BigInt(b) => b.to_i64(),
            _ => None,
        }
    }

    /// The value, if this is an integer of any size.
    pub fn as_bigint(&self) -> Option<BigInt> {
        match self {
            Term::Int(i) => Some(BigInt::from(*i)),
            Term::BigInt(b) => Some(b.clone()),
            _ => None,
        }
    }

    /// The value, if this is a float.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Term::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value, if this is the atom `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match self.as_atom() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        }
    }

    /// The pid, if this is one.
    pub fn as_pid(&self) -> Option<&Pid> {
        match self {
            Term::Pid(p) => Some(p),
            _ => None,
        }
    }

    /// The reference, if this is one.
    pub fn as_reference(&self) -> Option<&Reference> {
        match self {
            Term::Reference(r) => Some(r),
            _ => None,
        }
    }

    /// Whether this is `[]`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Term::List(l) if l.is_empty())
    }
}

// --- conversions into terms -------------------------------------------------

macro_rules! from_small_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Term {
            /// An integer.
            fn from(value: $t) -> Term {
                Term::Int(i64::from(value))
            }
        }
    )*};
}
from_small_int!(i8, i16, i32, i64, u16, u32);

macro_rules! from_wide_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Term {
            /// An integer (a bignum past `i64::MAX`).
            fn from(value: $t) -> Term {
                match i64::try_from(value) {
                    Ok(small) => Term::Int(small),
                    Err(_) => Term::BigInt(BigInt::from(value)),
                }
            }
        }
    )*};
}
from_wide_int!(u64, usize, i128, u128, isize);

impl From<BigInt> for Term {
    /// An integer; see [`Term::from_bigint`].
    fn from(value: BigInt) -> Term {
        Term::from_bigint(value)
    }
}

impl From<f64> for Term {
    /// A float.
    fn from(value: f64) -> Term {
        Term::Float(value)
    }
}

impl From<f32> for Term {
    /// A float.
    fn from(value: f32) -> Term {
        Term::Float(f64::from(value))
    }
}

impl From<bool> for Term {
    /// The atom `true` or `false`.
    fn from(value: bool) -> Term {
        Term::atom(if value { "true" } else { "false" })
    }
}

impl From<&str> for Term {
    /// A binary holding the UTF-8 text, like an Elixir string (not an atom,
    /// not a charlist: use [`Term::atom`] for those).
    fn from(value: &str) -> Term {
        Term::Binary(value.as_bytes().to_vec())
    }
}

impl From<String> for Term {
    /// A binary holding the UTF-8 text (see `From<&str>`).
    fn from(value: String) -> Term {
        Term::Binary(value.into_bytes())
    }
}

impl From<Vec<u8>> for Term {
    /// A binary.
    fn from(value: Vec<u8>) -> Term {
        Term::Binary(value)
    }
}

impl From<&[u8]> for Term {
    /// A binary.
    fn from(value: &[u8]) -> Term {
        Term::Binary(value.to_vec())
    }
}

impl From<Atom> for Term {
    /// The atom.
    fn from(value: Atom) -> Term {
        Term::Atom(value)
    }
}

impl From<Pid> for Term {
    /// The pid.
    fn from(value: Pid) -> Term {
        Term::Pid(value)
    }
}

impl From<Port> for Term {
    /// The port.
    fn from(value: Port) -> Term {
        Term::Port(value)
    }
}

impl From<Reference> for Term {
    /// The reference.
    fn from(value: Reference) -> Term {
        Term::Reference(value)
    }
}

impl From<Map> for Term {
    /// The map.
    fn from(value: Map) -> Term {
        Term::Map(value)
    }
}

impl From<Fun> for Term {
    /// The fun.
    fn from(value: Fun) -> Term {
        Term::Fun(value)
    }
}

impl From<BitBinary> for Term {
    /// The bitstring.
    fn from(value: BitBinary) -> Term {
        Term::BitBinary(value)
    }
}

impl From<()> for Term {
    /// The empty tuple `{}`.
    fn from((): ()) -> Term {
        Term::Tuple(Vec::new())
    }
}

impl<T: Into<Term>> From<Vec<T>> for Term {
    /// A proper list. (`Vec<u8>` is a binary, which is why `u8` alone has no
    /// conversion: write `i64::from(byte)`.)
    fn from(value: Vec<T>) -> Term {
        Term::List(value.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<Term>> From<Option<T>> for Term {
    /// The value, or the atom `nil` (Elixir's; Erlang code often uses
    /// `undefined`, which [`crate::from_term`] also reads as `None`).
    fn from(value: Option<T>) -> Term {
        match value {
            Some(v) => v.into(),
            None => Term::atom("nil"),
        }
    }
}

macro_rules! from_tuple {
    ($($name:ident),+) => {
        impl<$($name: Into<Term>),+> From<($($name,)+)> for Term {
            /// A tuple of the same size.
            #[allow(non_snake_case)]
            fn from(($($name,)+): ($($name,)+)) -> Term {
                Term::Tuple(vec![$($name.into()),+])
            }
        }
    };
}
from_tuple!(A);
from_tuple!(A, B);
from_tuple!(A, B, C);
from_tuple!(A, B, C, D);
from_tuple!(A, B, C, D, E);
from_tuple!(A, B, C, D, E, F);
from_tuple!(A, B, C, D, E, F, G);
from_tuple!(A, B, C, D, E, F, G, H);

// --- conversions out of terms -----------------------------------------------

/// A term that is not of the type asked for; it hands the term back.
#[derive(Clone, Debug, PartialEq)]
pub struct WrongType {
    /// What was asked for.
    pub expected: &'static str,
    /// The term, unchanged.
    pub term: Term,
}

impl fmt::Display for WrongType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}, got {}", self.expected, self.term)
    }
}

impl std::error::Error for WrongType {}

impl TryFrom<Term> for i64 {
    type Error = WrongType;

    /// The integer, if it fits.
    fn try_from(term: Term) -> Result<i64, WrongType> {
        term.as_int().ok_or(WrongType {
            expected: "an integer in i64",
            term,
        })
    }
}

impl TryFrom<Term> for BigInt {
    type Error = WrongType;

    /// The integer.
    fn try_from(term: Term) -> Result<BigInt, WrongType> {
        term.as_bigint().ok_or(WrongType {
            expected: "an integer",
            term,
        })
    }
}

impl TryFrom<Term> for f64 {
    type Error = WrongType;

    /// The float.
    fn try_from(term: Term) -> Result<f64, WrongType> {
        term.as_float().ok_or(WrongType {
            expected: "a float",
            term,
        })
    }
}

impl TryFrom<Term> for bool {
    type Error = WrongType;

    /// `true` or `false`.
    fn try_from(term: Term) -> Result<bool, WrongType> {
        term.as_bool().ok_or(WrongType {
            expected: "true or false",
            term,
        })
    }
}

impl TryFrom<Term> for String {
    type Error = WrongType;

    /// The text of a UTF-8 binary.
    fn try_from(term: Term) -> Result<String, WrongType> {
        match term {
            Term::Binary(b) => String::from_utf8(b).map_err(|e| WrongType {
                expected: "a UTF-8 binary",
                term: Term::Binary(e.into_bytes()),
            }),
            term => Err(WrongType {
                expected: "a UTF-8 binary",
                term,
            }),
        }
    }
}

impl TryFrom<Term> for Vec<u8> {
    type Error = WrongType;

    /// The bytes of a binary.
    fn try_from(term: Term) -> Result<Vec<u8>, WrongType> {
        match term {
            Term::Binary(b) => Ok(b),
            term => Err(WrongType {
                expected: "a binary",
                term,
            }),
        }
    }
}

// --- printing ---------------------------------------------------------------

impl fmt::Display for Term {
    /// Erlang syntax, as `io:format("~w")` prints it (funs, pids, ports and
    /// references in their `#Fun<...>`/`<...>` forms, node as a name).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, items: &[Term]) -> fmt::Result {
            for (i, t) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{t}")?;
            }
            Ok(())
        }
        match self {
            Term::Int(i) => write!(f, "{i}"),
            Term::BigInt(b) => write!(f, "{b}"),
            Term::Float(x) => {
                // Shortest round-trip digits, with Erlang's mandatory
                // fraction: 1e300 is written 1.0e300.
                let text = format!("{x:?}");
                match text.split_once('e') {
                    Some((m, e)) if !m.contains('.') => write!(f, "{m}.0e{e}"),
                    _ => f.write_str(&text),
                }
            }
            Term::Atom(a) => write!(f, "{a}"),
            Term::Reference(r) => {
                write!(f, "#Ref<{}.{}", r.node, r.creation)?;
                for id in r.ids.iter().rev() {
                    write!(f, ".{id}")?;
                }
                f.write_str(">")
            }
            Term::Fun(Fun::Export {
                module,
                function,
                arity,
            }) => write!(f, "fun {module}:{function}/{arity}"),
            Term::Fun(Fun::Closure(c)) => {
                write!(f, "#Fun<{}.{}.{}>", c.module, c.index, c.old_uniq)
            }
            Term::Port(p) => write!(f, "#Port<{}.{}>", p.node, p.id),
            Term::Pid(p) => write!(f, "<{}.{}.{}>", p.node, p.id, p.serial),
            Term::Tuple(t) => {
                f.write_str("{")?;
                seq(f, t)?;
                f.write_str("}")
            }
            Term::Map(m) => {
                f.write_str("#{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{k} => {v}")?;
                }
                f.write_str("}")
            }
            Term::List(l) => {
                f.write_str("[")?;
                seq(f, l)?;
                f.write_str("]")
            }
            Term::ImproperList(l, tail) => {
                f.write_str("[")?;
                seq(f, l)?;
                write!(f, "|{tail}]")
            }
            Term::Binary(b) => {
                f.write_str("<<")?;
                for (i, byte) in b.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{byte}")?;
                }
                f.write_str(">>")
            }
            Term::BitBinary(b) => {
                f.write_str("<<")?;
                let (last, whole) = b.bytes.split_last().expect("a bitstring has a byte");
                for byte in whole {
                    write!(f, "{byte},")?;
                }
                let bits = b.last_bits;
                write!(f, "{}:{bits}>>", last >> (8 - bits))
            }
        }
    }
}
