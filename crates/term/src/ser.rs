//! serde: any `Serialize` value to a [`Term`]. The mapping is the table in
//! the crate docs.

use std::fmt;

use serde::ser::{self, Serialize};

use crate::term::{Atom, Map, Term};

/// Why a value could not be turned into a term or a term into a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerdeError {
    message: String,
}

impl SerdeError {
    pub(crate) fn new(message: impl fmt::Display) -> SerdeError {
        SerdeError {
            message: message.to_string(),
        }
    }
}

impl fmt::Display for SerdeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SerdeError {}

impl ser::Error for SerdeError {
    fn custom<T: fmt::Display>(msg: T) -> SerdeError {
        SerdeError::new(msg)
    }
}

impl serde::de::Error for SerdeError {
    fn custom<T: fmt::Display>(msg: T) -> SerdeError {
        SerdeError::new(msg)
    }
}

/// Turns `value` into a term (see the crate docs for the mapping).
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Job { id: u32, tags: Vec<String> }
///
/// let t = ember_term::to_term(&Job { id: 7, tags: vec!["a".into()] }).unwrap();
/// assert_eq!(t.to_string(), "#{id => 7,tags => [<<97>>]}");
/// ```
pub fn to_term<T: Serialize + ?Sized>(value: &T) -> Result<Term, SerdeError> {
    value.serialize(Serializer)
}

fn atom(name: &str) -> Result<Term, SerdeError> {
    Atom::try_new(name).map(Term::Atom).map_err(SerdeError::new)
}

fn nil() -> Term {
    Term::atom("nil")
}

/// The serde serializer whose output is a [`Term`].
struct Serializer;

impl ser::Serializer for Serializer {
    type Ok = Term;
    type Error = SerdeError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = MapBuilder;

    fn serialize_bool(self, v: bool) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Term, SerdeError> {
        Ok(Term::Int(i64::from(v)))
    }
    fn serialize_u16(self, v: u16) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_char(self, v: char) -> Result<Term, SerdeError> {
        Ok(Term::from(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Term, SerdeError> {
        Ok(Term::from(v))
    }
    fn serialize_none(self) -> Result<Term, SerdeError> {
        Ok(nil())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Term, SerdeError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Term, SerdeError> {
        Ok(nil())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Term, SerdeError> {
        Ok(nil())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Term, SerdeError> {
        atom(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Term, SerdeError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Term, SerdeError> {
        Ok(Term::Tuple(vec![atom(variant)?, value.serialize(self)?]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, SerdeError> {
        Ok(SeqBuilder::new(SeqKind::List, len.unwrap_or(0)))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, SerdeError> {
        Ok(SeqBuilder::new(SeqKind::Tuple, len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, SerdeError> {
        Ok(SeqBuilder::new(SeqKind::Tuple, len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, SerdeError> {
        let mut b = SeqBuilder::new(SeqKind::Tuple, len + 1);
        b.items.push(atom(variant)?);
        Ok(b)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapBuilder, SerdeError> {
        Ok(MapBuilder::default())
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<MapBuilder, SerdeError> {
        Ok(MapBuilder::default())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<MapBuilder, SerdeError> {
        Ok(MapBuilder {
            variant: Some(atom(variant)?),
            ..MapBuilder::default()
        })
    }
}

enum SeqKind {
    List,
    Tuple,
}

/// Collects the elements of a list or tuple.
struct SeqBuilder {
    kind: SeqKind,
    items: Vec<Term>,
}

impl SeqBuilder {
    fn new(kind: SeqKind, len: usize) -> SeqBuilder {
        SeqBuilder {
            kind,
            items: Vec::with_capacity(len.min(4096)),
        }
    }

    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerdeError> {
        self.items.push(to_term(value)?);
        Ok(())
    }

    fn finish(self) -> Result<Term, SerdeError> {
        Ok(match self.kind {
            SeqKind::List => Term::List(self.items),
            SeqKind::Tuple => Term::Tuple(self.items),
        })
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Term;
    type Error = SerdeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerdeError> {
        self.push(value)
    }
    fn end(self) -> Result<Term, SerdeError> {
        self.finish()
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Term;
    type Error = SerdeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerdeError> {
        self.push(value)
    }
    fn end(self) -> Result<Term, SerdeError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Term;
    type Error = SerdeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerdeError> {
        self.push(value)
    }
    fn end(self) -> Result<Term, SerdeError> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for SeqBuilder {
    type Ok = Term;
    type Error = SerdeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerdeError> {
        self.push(value)
    }
    fn end(self) -> Result<Term, SerdeError> {
        self.finish()
    }
}

/// Collects map or struct entries; `variant` is set for a struct variant.
#[derive(Default)]
struct MapBuilder {
    map: Map,
    key: Option<Term>,
    variant: Option<Term>,
}

impl MapBuilder {
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), SerdeError> {
        self.map.insert(atom(key)?, to_term(value)?);
        Ok(())
    }

    fn finish(self) -> Result<Term, SerdeError> {
        Ok(match self.variant {
            Some(variant) => Term::Tuple(vec![variant, Term::Map(self.map)]),
            None => Term::Map(self.map),
        })
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Term;
    type Error = SerdeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), SerdeError> {
        self.key = Some(to_term(key)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerdeError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| SerdeError::new("map value without a key"))?;
        self.map.insert(key, to_term(value)?);
        Ok(())
    }
    fn end(self) -> Result<Term, SerdeError> {
        self.finish()
    }
}

impl ser::SerializeStruct for MapBuilder {
    type Ok = Term;
    type Error = SerdeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SerdeError> {
        self.field(key, value)
    }
    fn end(self) -> Result<Term, SerdeError> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for MapBuilder {
    type Ok = Term;
    type Error = SerdeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SerdeError> {
        self.field(key, value)
    }
    fn end(self) -> Result<Term, SerdeError> {
        self.finish()
    }
}
