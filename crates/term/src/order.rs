//! Erlang's term order, in the three strengths Ember needs.
//!
//! Types rank `number < atom < reference < fun < port < pid < tuple < map <
//! [] < list < bitstring`. Within a type:
//!
//! * numbers compare by value, an integer against a float exactly (no
//!   rounding of big integers);
//! * atoms by their text (UTF-8 byte order is code point order);
//! * tuples by size, then element by element; maps by size, then their keys
//!   in map-key order, then their values in that order;
//! * lists element by element, `[]` first; an improper tail compares as a term;
//! * bitstrings bit by bit, a prefix first;
//! * pids by serial, number, node name, creation; ports by node name,
//!   creation, number; references by node name, creation, then their words
//!   as one number (so `[0]` and `[0, 0, 0]` are the same reference, as in
//!   `erl`); all as OTP 25 orders them, checked against `erl`;
//! * funs: closures before exports (as OTP 25 sorts them), exports by
//!   module, function, arity, closures by module, then their other fields
//!   (Erlang does not specify fun order further).
//!
//! The strengths differ only for numbers:
//!
//! | strength | `1` vs `1.0` | `0.0` vs `-0.0` | used by |
//! |---|---|---|---|
//! | [`Term::erl_cmp`] (`==`) | equal | equal | Erlang comparisons |
//! | `Ord` (`=:=` as equality) | `1` first | `-0.0` first | sorting, `BTreeMap` |
//! | map-key order | every integer before every float | `-0.0` first | [`Map`](crate::Map), encoding |

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use num_bigint::BigInt;
use num_traits::{FromPrimitive, ToPrimitive};

use crate::term::{Fun, Term};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Strength {
    /// Erlang's `==` order.
    Erl,
    /// The total order behind `Ord`.
    Total,
    /// The order of map keys.
    MapKey,
}

impl Term {
    /// Erlang's comparison (`<`, `==`, `>`): numbers by value, so `1` and
    /// `1.0` are `Equal`. See the [module docs](crate::order) for the order.
    pub fn erl_cmp(&self, other: &Term) -> Ordering {
        cmp(self, other, Strength::Erl)
    }
}

/// The order of keys in a map (integers before floats).
pub(crate) fn map_key_cmp(a: &Term, b: &Term) -> Ordering {
    cmp(a, b, Strength::MapKey)
}

impl Ord for Term {
    /// Erlang's term order made total: where Erlang finds `1 == 1.0`, the
    /// integer comes first.
    fn cmp(&self, other: &Term) -> Ordering {
        cmp(self, other, Strength::Total)
    }
}

impl PartialOrd for Term {
    fn partial_cmp(&self, other: &Term) -> Option<Ordering> {
        Some(Ord::cmp(self, other))
    }
}

impl PartialEq for Term {
    /// Exact equality, Erlang's `=:=`.
    fn eq(&self, other: &Term) -> bool {
        cmp(self, other, Strength::Total) == Ordering::Equal
    }
}

impl Eq for Term {}

impl Hash for Term {
    fn hash<H: Hasher>(&self, state: &mut H) {
        rank(self).hash(state);
        match self {
            Term::Int(i) => i.hash(state),
            Term::BigInt(b) => match b.to_i64() {
                Some(i) => i.hash(state),
                None => b.hash(state),
            },
            Term::Float(f) => f.to_bits().hash(state),
            Term::Atom(a) => a.hash(state),
            Term::Reference(r) => {
                (&r.node, r.creation).hash(state);
                significant(&r.ids).hash(state);
            }
            Term::Fun(Fun::Export {
                module,
                function,
                arity,
            }) => (module, function, arity).hash(state),
            Term::Fun(Fun::Closure(c)) => (&c.module, c.index, c.uniq).hash(state),
            Term::Port(p) => p.hash(state),
            Term::Pid(p) => p.hash(state),
            Term::Tuple(t) => t.hash(state),
            Term::Map(m) => m.hash(state),
            Term::List(l) if l.is_empty() => {}
            Term::List(_) | Term::ImproperList(..) => {
                let mut cursor = Cons::of(self);
                while let Some(head) = cursor.head() {
                    head.hash(state);
                    cursor = cursor.tail();
                }
                if let Cons::Other(tail) = cursor {
                    if !tail.is_nil() {
                        tail.hash(state);
                    }
                }
            }
            Term::Binary(b) => b.hash(state),
            Term::BitBinary(b) => b.hash(state),
        }
    }
}

fn rank(t: &Term) -> u8 {
    match t {
        Term::Int(_) | Term::BigInt(_) | Term::Float(_) => 0,
        Term::Atom(_) => 1,
        Term::Reference(_) => 2,
        Term::Fun(_) => 3,
        Term::Port(_) => 4,
        Term::Pid(_) => 5,
        Term::Tuple(_) => 6,
        Term::Map(_) => 7,
        Term::List(l) if l.is_empty() => 8,
        Term::List(_) | Term::ImproperList(..) => 9,
        Term::Binary(_) | Term::BitBinary(_) => 10,
    }
}

fn cmp(a: &Term, b: &Term, s: Strength) -> Ordering {
    let (ra, rb) = (rank(a), rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Term::Int(x), Term::Int(y)) => x.cmp(y),
        (Term::Float(x), Term::Float(y)) => match s {
            Strength::Erl => x.partial_cmp(y).unwrap_or_else(|| x.total_cmp(y)),
            Strength::Total | Strength::MapKey => x.total_cmp(y),
        },
        (Term::Float(x), _) => match s {
            Strength::MapKey => Ordering::Greater,
            _ => int_float(b, *x).reverse().then(tie(s).reverse()),
        },
        (_, Term::Float(y)) => match s {
            Strength::MapKey => Ordering::Less,
            _ => int_float(a, *y).then(tie(s)),
        },
        (Term::Int(_) | Term::BigInt(_), Term::Int(_) | Term::BigInt(_)) => big(a).cmp(&big(b)),
        (Term::Atom(x), Term::Atom(y)) => x.as_str().cmp(y.as_str()),
        (Term::Reference(x), Term::Reference(y)) => x
            .node
            .as_str()
            .cmp(y.node.as_str())
            .then(x.creation.cmp(&y.creation))
            .then_with(|| cmp_words(&x.ids, &y.ids)),
        (Term::Fun(x), Term::Fun(y)) => cmp_fun(x, y, s),
        (Term::Port(x), Term::Port(y)) => x
            .node
            .as_str()
            .cmp(y.node.as_str())
            .then(x.creation.cmp(&y.creation))
            .then(x.id.cmp(&y.id)),
        (Term::Pid(x), Term::Pid(y)) => x
            .serial
            .cmp(&y.serial)
            .then(x.id.cmp(&y.id))
            .then_with(|| x.node.as_str().cmp(y.node.as_str()))
            .then(x.creation.cmp(&y.creation)),
        (Term::Tuple(x), Term::Tuple(y)) => x.len().cmp(&y.len()).then_with(|| seq(x, y, s)),
        (Term::Map(x), Term::Map(y)) => x.len().cmp(&y.len()).then_with(|| {
            let keys = x
                .iter()
                .zip(y.iter())
                .map(|((ka, _), (kb, _))| map_key_cmp(ka, kb))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal);
            keys.then_with(|| {
                x.iter()
                    .zip(y.iter())
                    .map(|((_, va), (_, vb))| cmp(va, vb, s))
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            })
        }),
        // Both `[]` (same rank 8).
        _ if ra == 8 => Ordering::Equal,
        (Term::List(_) | Term::ImproperList(..), _) => cmp_list(a, b, s),
        _ => {
            let (xa, la) = bits(a);
            let (xb, lb) = bits(b);
            cmp_bits(xa, la, xb, lb)
        }
    }
}

/// How an integer and a float that are numerically equal compare.
fn tie(s: Strength) -> Ordering {
    match s {
        Strength::Erl => Ordering::Equal,
        _ => Ordering::Less,
    }
}

fn big(t: &Term) -> BigInt {
    match t {
        Term::Int(i) => BigInt::from(*i),
        Term::BigInt(b) => b.clone(),
        _ => unreachable!("big() is only called on integers"),
    }
}

/// An integer term against a float, by exact value.
fn int_float(int: &Term, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less;
    }
    if let Term::Int(i) = int {
        // Every integer of magnitude below 2^53 is exact as a float.
        if i.unsigned_abs() < (1 << 53) {
            return (*i as f64).partial_cmp(&f).unwrap_or(Ordering::Less);
        }
    }
    let whole = f.trunc();
    let Some(whole_int) = BigInt::from_f64(whole) else {
        // An infinity.
        return if f > 0.0 {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    };
    // Equal whole parts: the float's fraction decides.
    big(int)
        .cmp(&whole_int)
        .then_with(|| 0.0.partial_cmp(&(f - whole)).unwrap_or(Ordering::Equal))
}

/// A reference's words without the high zero words, which do not count.
fn significant(ids: &[u32]) -> &[u32] {
    let len = ids.iter().rposition(|&w| w != 0).map_or(0, |i| i + 1);
    &ids[..len]
}

/// Reference words as one number, least significant word first.
fn cmp_words(x: &[u32], y: &[u32]) -> Ordering {
    let (x, y) = (significant(x), significant(y));
    x.len()
        .cmp(&y.len())
        .then_with(|| x.iter().rev().cmp(y.iter().rev()))
}

fn seq(x: &[Term], y: &[Term], s: Strength) -> Ordering {
    x.iter()
        .zip(y)
        .map(|(a, b)| cmp(a, b, s))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn cmp_fun(x: &Fun, y: &Fun, s: Strength) -> Ordering {
    match (x, y) {
        (
            Fun::Export {
                module: m1,
                function: f1,
                arity: a1,
            },
            Fun::Export {
                module: m2,
                function: f2,
                arity: a2,
            },
        ) => m1
            .as_str()
            .cmp(m2.as_str())
            .then_with(|| f1.as_str().cmp(f2.as_str()))
            .then(a1.cmp(a2)),
        (Fun::Export { .. }, Fun::Closure(_)) => Ordering::Greater,
        (Fun::Closure(_), Fun::Export { .. }) => Ordering::Less,
        (Fun::Closure(a), Fun::Closure(b)) => a
            .module
            .as_str()
            .cmp(b.module.as_str())
            .then(a.old_index.cmp(&b.old_index))
            .then(a.old_uniq.cmp(&b.old_uniq))
            .then(a.index.cmp(&b.index))
            .then(a.uniq.cmp(&b.uniq))
            .then(a.arity.cmp(&b.arity))
            .then_with(|| cmp(&Term::Pid(a.pid.clone()), &Term::Pid(b.pid.clone()), s))
            .then(a.free_vars.len().cmp(&b.free_vars.len()))
            .then_with(|| seq(&a.free_vars, &b.free_vars, s)),
    }
}

/// A position in a list: cons cells still to walk, or the non-list tail.
#[derive(Clone, Copy)]
enum Cons<'a> {
    /// Elements left, then the tail to continue with.
    Cells(&'a [Term], Option<&'a Term>),
    /// The walk has reached a term that is not a cons cell (`[]` included).
    Other(&'a Term),
}

impl<'a> Cons<'a> {
    fn of(t: &'a Term) -> Cons<'a> {
        match t {
            Term::List(l) if !l.is_empty() => Cons::Cells(l, None),
            Term::ImproperList(l, tail) if !l.is_empty() => Cons::Cells(l, Some(tail)),
            Term::ImproperList(_, tail) => Cons::of(tail),
            t => Cons::Other(t),
        }
    }

    fn head(self) -> Option<&'a Term> {
        match self {
            Cons::Cells(l, _) => l.first(),
            Cons::Other(_) => None,
        }
    }

    fn tail(self) -> Cons<'a> {
        match self {
            Cons::Cells([_], None) => Cons::Other(&NIL),
            Cons::Cells([_], Some(tail)) => Cons::of(tail),
            Cons::Cells([_, rest @ ..], tail) => Cons::Cells(rest, tail),
            Cons::Cells([], _) | Cons::Other(_) => self,
        }
    }
}

static NIL: Term = Term::List(Vec::new());

fn cmp_list(a: &Term, b: &Term, s: Strength) -> Ordering {
    let (mut x, mut y) = (Cons::of(a), Cons::of(b));
    loop {
        match (x, y) {
            (Cons::Other(ta), Cons::Other(tb)) => return cmp(ta, tb, s),
            // A non-cons tail against a cons cell: ranks decide ([] < list).
            (Cons::Other(ta), _) => return rank(ta).cmp(&9).then(Ordering::Less),
            (_, Cons::Other(tb)) => return 9u8.cmp(&rank(tb)).then(Ordering::Greater),
            _ => {}
        }
        let (ha, hb) = (x.head(), y.head());
        if let (Some(ha), Some(hb)) = (ha, hb) {
            let o = cmp(ha, hb, s);
            if o.is_ne() {
                return o;
            }
        }
        x = x.tail();
        y = y.tail();
    }
}

fn bits(t: &Term) -> (&[u8], u64) {
    match t {
        Term::Binary(b) => (b, b.len() as u64 * 8),
        Term::BitBinary(b) => (b.bytes(), b.bit_len()),
        _ => unreachable!("bits() is only called on bitstrings"),
    }
}

fn cmp_bits(a: &[u8], alen: u64, b: &[u8], blen: u64) -> Ordering {
    let common = alen.min(blen);
    let whole = (common / 8) as usize;
    let o = a[..whole].cmp(&b[..whole]);
    if o.is_ne() {
        return o;
    }
    let rest = (common % 8) as u32;
    if rest > 0 {
        let mask = !(0xffu8 >> rest);
        let o = (a[whole] & mask).cmp(&(b[whole] & mask));
        if o.is_ne() {
            return o;
        }
    }
    alen.cmp(&blen)
}
