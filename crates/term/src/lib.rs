//! Erlang's external term format.
#![forbid(unsafe_code)]

mod decode;
mod encode;
mod macros;
pub mod order;
mod tag;
mod term;

pub use decode::{decode, decode_prefix, decode_with, DecodeError, DecodeErrorKind, DecodeLimits};
pub use encode::{encode, encode_compressed, encode_into, EncodeError};
pub use term::{
    Atom, AtomTooLong, BitBinary, Closure, Fun, Map, Pid, Port, Reference, Term, WrongType,
    MAX_ATOM_CHARS,
};
