//! Erlang's external term format: the bytes `term_to_binary/1` writes and
//! `binary_to_term/1` reads, and what Erlang distribution carries.
//!
//! No I/O here: a [`Term`] type, [`decode`] (hardened for bytes from the
//! network), [`encode`], Erlang's term order, and a serde mapping.
//!
//! # Terms
//!
//! ```
//! use ember_term::{decode, encode, term, Term};
//!
//! // {ok, [1, 2, 3], <<"hi">>}
//! let t = Term::tuple([Term::atom("ok"), Term::from(vec![1, 2, 3]), Term::from("hi")]);
//! assert_eq!(t, term!({ok, [1, 2, 3], "hi"}));
//! assert_eq!(t.to_string(), "{ok,[1,2,3],<<104,105>>}");
//!
//! let bytes = encode(&t).unwrap();
//! assert_eq!(&bytes[..5], [131, 104, 3, 119, 2]); // version, {_,_,_}, 'ok'...
//! assert_eq!(decode(&bytes).unwrap(), t);
//!
//! // Taking terms apart: match, or the accessors.
//! match t.as_tuple() {
//!     Some([tag, list, _]) if tag.is_atom("ok") => assert_eq!(list.as_list().unwrap().len(), 3),
//!     _ => unreachable!(),
//! }
//! ```
//!
//! Choices worth knowing:
//!
//! * `&str` and `String` become **binaries** (Elixir strings), not atoms or
//!   charlists; [`Term::atom`] makes atoms.
//! * `STRING_EXT` decodes to a plain [`Term::List`] of small integers (there
//!   is no separate "byte list" variant to forget), and a proper list of at
//!   most 65,535 integers in `0..=255` is encoded as `STRING_EXT` again, so
//!   what `erl` sends re-encodes to the same bytes.
//! * [`encode`] writes what OTP 26+ `term_to_binary(T, [deterministic])`
//!   writes (OTP 25 needs `{minor_version, 2}` for its UTF-8 atoms): map
//!   entries in map-key order ([`Map`] keeps them so), pids as
//!   `NEW_PID_EXT`, references as `NEWER_REFERENCE_EXT`.
//! * Funs are opaque but whole ([`Fun`]): a fun received re-encodes to the
//!   bytes it came as.
//! * Old encodings are read: `FLOAT_EXT`, Latin-1 atoms, `PID_EXT`,
//!   `PORT_EXT`, `REFERENCE_EXT`, `NEW_REFERENCE_EXT`, compressed terms.
//!   `FUN_EXT` (gone since OTP 23) and OTP 26's node-local `LOCAL_EXT` are
//!   rejected.
//!
//! # Order
//!
//! `Ord` is Erlang's term order (`number < atom < reference < fun < port <
//! pid < tuple < map < [] < list < bitstring`, numbers by value), made total
//! by putting `1` just before `1.0`; `Eq` is `=:=`. [`Term::erl_cmp`] is
//! Erlang's `==`-level comparison. The details are in [`order`].
//!
//! ```
//! use ember_term::Term;
//! use std::cmp::Ordering;
//! let mut v = vec![Term::atom("a"), Term::from(2.5), Term::nil(), Term::from(1)];
//! v.sort();
//! assert_eq!(v, [Term::from(1), Term::from(2.5), Term::atom("a"), Term::nil()]);
//! assert_eq!(Term::from(1).erl_cmp(&Term::from(1.0)), Ordering::Equal);
//! assert_ne!(Term::from(1), Term::from(1.0));
//! ```
//!
//! # Untrusted input
//!
//! [`decode`] never panics and never allocates for a length the input does
//! not back. [`DecodeLimits`] bounds nesting depth (512), bignums (64 KiB)
//! and inflated compressed terms (64 MiB); errors carry the byte offset.
//!
//! ```
//! use ember_term::{decode, DecodeErrorKind};
//! // A binary claiming 4 GiB, with 2 bytes behind it.
//! let err = decode(&[131, 109, 255, 255, 255, 255, 1, 2]).unwrap_err();
//! assert_eq!(err.offset, 6);
//! assert!(matches!(err.kind, DecodeErrorKind::Truncated { .. }));
//! ```
//!
//! # serde
//!
//! [`to_term`] and [`from_term`] map Rust data the way Elixir and Erlang
//! code would write it:
//!
//! | Rust | term |
//! |---|---|
//! | `bool` | `true`, `false` |
//! | integers (`i8`..`u128`) | integer (a bignum past `i64`) |
//! | `f32`, `f64` | float |
//! | `char`, `&str`, `String` | UTF-8 binary (`"text"` in Elixir) |
//! | bytes (`serde_bytes`) | binary |
//! | `Vec<T>`, sequences (note: plain `Vec<u8>` too) | list |
//! | `None`, `()`, unit struct | `nil` (`undefined` is read as `None` too) |
//! | `Some(x)`, newtype struct | `x` |
//! | tuple, tuple struct | tuple |
//! | map | map |
//! | struct | map with atom keys: `#{id => 7}` (`%{id: 7}`) |
//! | unit variant `Enum::Ok` | atom `'Ok'` (use `#[serde(rename_all = "snake_case")]` for `ok`) |
//! | newtype variant `Error(e)` | `{'Error', e}` |
//! | tuple variant `Move(x, y)` | `{'Move', x, y}` |
//! | struct variant `Tick { n }` | `{'Tick', #{n => ...}}` |
//!
//! Pids, ports, references, funs and bitstrings have no serde form:
//! keep them as [`Term`]s.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use ember_term::{from_term, to_term};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! #[serde(rename_all = "snake_case")]
//! enum Event { Started { id: u64 }, Stopped(String), Idle }
//!
//! let e = Event::Started { id: 1 };
//! let t = to_term(&e).unwrap();
//! assert_eq!(t.to_string(), "{started,#{id => 1}}");
//! assert_eq!(from_term::<Event>(t).unwrap(), e);
//! ```
//!
//! # Distribution framing
//!
//! [`dist`] reads and writes the distribution header (`DIST_HEADER`, with
//! the per-connection atom cache) and reassembles fragments
//! (`DIST_FRAG_HEADER`/`DIST_FRAG_CONT`). The connection itself (handshake,
//! ticks, control-message semantics) belongs to a later `dist` crate.
#![forbid(unsafe_code)]

mod de;
mod decode;
pub mod dist;
mod encode;
mod macros;
pub mod order;
mod ser;
mod tag;
mod term;

pub use de::from_term;
pub use decode::{decode, decode_prefix, decode_with, DecodeError, DecodeErrorKind, DecodeLimits};
pub use encode::{encode, encode_compressed, encode_into, EncodeError};
/// The bignum type of [`Term::BigInt`], re-exported.
pub use num_bigint::BigInt;
pub use ser::{to_term, SerdeError};
pub use term::{
    Atom, AtomTooLong, BitBinary, Closure, Fun, Map, Pid, Port, Reference, Term, WrongType,
    MAX_ATOM_CHARS,
};
