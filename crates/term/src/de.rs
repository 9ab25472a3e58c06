//! serde: a [`Term`] to any `Deserialize` value. The mapping is the table in
//! the crate docs; reading is more lenient than writing where Erlang code
//! has several spellings (see [`from_term`]).

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use num_traits::ToPrimitive;

use crate::ser::SerdeError;
use crate::term::Term;

/// Turns `term` into a value (see the crate docs for the mapping).
///
/// Besides what [`to_term`](crate::to_term) writes, it reads: `undefined`
/// as `None` or `()`; atoms and charlists where text is wanted; a list of
/// bytes where bytes are wanted; integers where floats are wanted; tuples
/// as sequences; binary map keys as field names.
///
/// ```
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// #[serde(rename_all = "snake_case")]
/// enum Reply { Ok(u32), Error(String), Timeout }
///
/// use ember_term::{from_term, term};
/// assert_eq!(from_term::<Reply>(term!({ok, 3})).unwrap(), Reply::Ok(3));
/// assert_eq!(from_term::<Reply>(term!(timeout)).unwrap(), Reply::Timeout);
/// ```
pub fn from_term<T: DeserializeOwned>(term: Term) -> Result<T, SerdeError> {
    T::deserialize(Deserializer(term))
}

/// The serde deserializer that reads one [`Term`].
struct Deserializer(Term);

fn unexpected(term: &Term, what: &str) -> SerdeError {
    SerdeError::new(format!("expected {what}, got {term}"))
}

fn is_none(t: &Term) -> bool {
    t.is_atom("nil") || t.is_atom("undefined")
}

/// The text of a charlist, if `items` is one.
fn charlist(items: &[Term]) -> Option<String> {
    items
        .iter()
        .map(|t| {
            t.as_int()
                .and_then(|i| u32::try_from(i).ok())
                .and_then(char::from_u32)
        })
        .collect()
}

impl<'de> de::Deserializer<'de> for Deserializer {
    type Error = SerdeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        match self.0 {
            Term::Int(i) => visitor.visit_i64(i),
            Term::BigInt(b) => {
                if let Some(u) = b.to_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = b.to_i128() {
                    visitor.visit_i128(i)
                } else if let Some(u) = b.to_u128() {
                    visitor.visit_u128(u)
                } else {
                    Err(SerdeError::new(format!(
                        "integer {b} is wider than 128 bits"
                    )))
                }
            }
            Term::Float(f) => visitor.visit_f64(f),
            Term::Atom(a) => match a.as_str() {
                "true" => visitor.visit_bool(true),
                "false" => visitor.visit_bool(false),
                "nil" | "undefined" => visitor.visit_unit(),
                s => visitor.visit_str(s),
            },
            Term::Binary(b) => match String::from_utf8(b) {
                Ok(s) => visitor.visit_string(s),
                Err(e) => visitor.visit_byte_buf(e.into_bytes()),
            },
            Term::List(items) | Term::Tuple(items) => visitor.visit_seq(Seq(items.into_iter())),
            Term::Map(m) => visitor.visit_map(Entries {
                entries: m.into_iter(),
                value: None,
            }),
            other => Err(unexpected(&other, "a term serde can represent")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        if is_none(&self.0) {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        match &self.0 {
            t if is_none(t) => visitor.visit_unit(),
            Term::Tuple(t) if t.is_empty() => visitor.visit_unit(),
            t => Err(unexpected(t, "nil")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        match &self.0 {
            Term::Int(i) => match u32::try_from(*i).ok().and_then(char::from_u32) {
                Some(c) => visitor.visit_char(c),
                None => Err(unexpected(&self.0, "a character")),
            },
            _ => self.deserialize_string(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        match self.0 {
            Term::Binary(b) => match String::from_utf8(b) {
                Ok(s) => visitor.visit_string(s),
                Err(e) => Err(unexpected(&Term::Binary(e.into_bytes()), "UTF-8 text")),
            },
            Term::Atom(a) => visitor.visit_str(a.as_str()),
            Term::List(items) => match charlist(&items) {
                Some(s) => visitor.visit_string(s),
                None => Err(unexpected(&Term::List(items), "text")),
            },
            other => Err(unexpected(&other, "text")),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        self.deserialize_byte_buf(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        match self.0 {
            Term::Binary(b) => visitor.visit_byte_buf(b),
            Term::List(items) => {
                let bytes: Option<Vec<u8>> = items
                    .iter()
                    .map(|t| t.as_int().and_then(|i| u8::try_from(i).ok()))
                    .collect();
                match bytes {
                    Some(b) => visitor.visit_byte_buf(b),
                    None => Err(unexpected(&Term::List(items), "bytes")),
                }
            }
            other => Err(unexpected(&other, "a binary")),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        match self.0 {
            Term::List(items) | Term::Tuple(items) => visitor.visit_seq(Seq(items.into_iter())),
            Term::Binary(b) => visitor.visit_seq(Seq(b
                .into_iter()
                .map(|x| Term::Int(i64::from(x)))
                .collect::<Vec<_>>()
                .into_iter())),
            other => Err(unexpected(&other, "a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        match self.0 {
            Term::Map(m) => visitor.visit_map(Entries {
                entries: m.into_iter(),
                value: None,
            }),
            other => Err(unexpected(&other, "a map")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        match self.0 {
            Term::Atom(_) | Term::Binary(_) => visitor.visit_enum(Variant {
                name: self.0,
                rest: None,
            }),
            Term::Tuple(mut items) if items.len() >= 2 => {
                let rest = items.split_off(1);
                let name = items.pop().expect("two or more elements");
                visitor.visit_enum(Variant {
                    name,
                    rest: Some(rest),
                })
            }
            other => Err(unexpected(&other, "an atom or a {variant, ...} tuple")),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        match self.0 {
            Term::Atom(a) => visitor.visit_str(a.as_str()),
            Term::Binary(b) => match String::from_utf8(b) {
                Ok(s) => visitor.visit_string(s),
                Err(e) => Err(unexpected(&Term::Binary(e.into_bytes()), "a name")),
            },
            Term::Int(i) if i >= 0 => visitor.visit_u64(i as u64),
            other => Err(unexpected(&other, "a name")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64
    }
}

impl<'de> IntoDeserializer<'de, SerdeError> for Deserializer {
    type Deserializer = Deserializer;

    fn into_deserializer(self) -> Deserializer {
        self
    }
}

struct Seq(std::vec::IntoIter<Term>);

impl<'de> de::SeqAccess<'de> for Seq {
    type Error = SerdeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, SerdeError> {
        self.0
            .next()
            .map(|t| seed.deserialize(Deserializer(t)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries {
    entries: std::vec::IntoIter<(Term, Term)>,
    value: Option<Term>,
}

impl<'de> de::MapAccess<'de> for Entries {
    type Error = SerdeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, SerdeError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(Deserializer(k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, SerdeError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| SerdeError::new("map value asked for before its key"))?;
        seed.deserialize(Deserializer(v))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum value: the variant's name, and for a tuple the other elements.
struct Variant {
    name: Term,
    rest: Option<Vec<Term>>,
}

impl<'de> de::EnumAccess<'de> for Variant {
    type Error = SerdeError;
    type Variant = Variant;

    fn variant_seed<V: DeserializeSeed<'de>>(
        mut self,
        seed: V,
    ) -> Result<(V::Value, Variant), SerdeError> {
        let name = std::mem::replace(&mut self.name, Term::nil());
        let value = seed.deserialize(Deserializer(name))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant {
    type Error = SerdeError;

    fn unit_variant(self) -> Result<(), SerdeError> {
        match self.rest {
            None => Ok(()),
            Some(rest) => Err(unexpected(&Term::Tuple(rest), "a unit variant (an atom)")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, SerdeError> {
        match self.rest {
            Some(mut rest) if rest.len() == 1 => {
                seed.deserialize(Deserializer(rest.pop().expect("one element")))
            }
            Some(rest) => Err(unexpected(&Term::Tuple(rest), "{variant, value}")),
            None => Err(SerdeError::new("expected {variant, value}, got an atom")),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        match self.rest {
            Some(rest) => visitor.visit_seq(Seq(rest.into_iter())),
            None => Err(SerdeError::new("expected {variant, ...}, got an atom")),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        match self.rest {
            Some(mut rest) if rest.len() == 1 => de::Deserializer::deserialize_map(
                Deserializer(rest.pop().expect("one element")),
                visitor,
            ),
            Some(rest) => Err(unexpected(&Term::Tuple(rest), "{variant, #{...}}")),
            None => Err(SerdeError::new("expected {variant, #{...}}, got an atom")),
        }
    }
}
