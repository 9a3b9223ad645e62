//! A caller's sections from a TOML table. This deserializer (not toml's own) keeps the dotted
//! path of every value, so that an error names its key, and builds its errors from serde's
//! structured reports, so that no error quotes the value it is about.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};
use toml::Value;

use crate::error::Problem;

/// A failure while deserializing, located at its key once known.
#[derive(Debug)]
pub(crate) struct DeError {
    /// The dotted key path; `None` until the value that failed knows where it is.
    pub(crate) key: Option<String>,
    /// The field a struct reported missing, unknown or twice, under the key.
    field: Option<String>,
    /// What is wrong.
    pub(crate) problem: Problem,
}

impl DeError {
    fn new(problem: Problem) -> Self {
        DeError {
            key: None,
            field: None,
            problem,
        }
    }

    fn field(field: &str, problem: Problem) -> Self {
        DeError {
            key: None,
            field: Some(field.to_owned()),
            problem,
        }
    }

    /// Places an error not located yet at `key` (at its field under `key`, if it has one).
    fn at(mut self, key: &str) -> Self {
        if self.key.is_none() {
            self.key = Some(match self.field.take() {
                Some(f) => join(key, &f),
                None => key.to_owned(),
            });
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at {:?}", self.problem, self.key)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let text = msg.to_string();
        DeError::new(Problem::Other(
            text.split_whitespace().collect::<Vec<_>>().join(" "),
        ))
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(Problem::Type {
            found: type_name(&unexp),
            expected: exp.to_string(),
        })
    }

    fn invalid_value(_unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(Problem::Value {
            expected: exp.to_string(),
        })
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        DeError::new(Problem::Length {
            found: len,
            expected: exp.to_string(),
        })
    }

    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(Problem::Variant { expected })
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::field(field, Problem::Unknown { expected })
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::field(field, Problem::Missing)
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::field(field, Problem::Duplicate)
    }
}

/// The kind of a value, never the value.
fn type_name(u: &Unexpected<'_>) -> &'static str {
    match u {
        Unexpected::Bool(_) => "boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "integer",
        Unexpected::Float(_) => "float",
        Unexpected::Char(_) | Unexpected::Str(_) => "string",
        Unexpected::Bytes(_) => "bytes",
        Unexpected::Seq => "array",
        Unexpected::Map => "table",
        Unexpected::Unit => "nothing",
        Unexpected::Option => "optional value",
        Unexpected::NewtypeStruct => "newtype struct",
        Unexpected::Enum
        | Unexpected::UnitVariant
        | Unexpected::NewtypeVariant
        | Unexpected::TupleVariant
        | Unexpected::StructVariant => "variant",
        Unexpected::Other(_) => "value",
    }
}

/// `parent.child`, or `child` at the top.
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// A value and the key path it stands at.
pub(crate) struct At {
    pub(crate) value: Value,
    pub(crate) key: String,
}

impl<'de> de::Deserializer<'de> for At {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let key = self.key;
        let answer = match self.value {
            Value::String(s) => visitor.visit_string(s),
            Value::Integer(i) => visitor.visit_i64(i),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Boolean(b) => visitor.visit_bool(b),
            Value::Datetime(d) => visitor.visit_string(d.to_string()),
            Value::Array(items) => visitor.visit_seq(Seq {
                items: items.into_iter().enumerate(),
                key: key.clone(),
            }),
            Value::Table(table) => visitor.visit_map(Map {
                entries: table.into_iter(),
                key: key.clone(),
                pending: None,
            }),
        };
        answer.map_err(|e| e.at(&key))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let key = self.key.clone();
        visitor.visit_some(self).map_err(|e| e.at(&key))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let key = self.key.clone();
        visitor.visit_newtype_struct(self).map_err(|e| e.at(&key))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let key = self.key;
        let answer = match self.value {
            Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            Value::Table(table) if table.len() == 1 => {
                let mut entries = table.into_iter();
                match entries.next() {
                    Some((variant, value)) => visitor.visit_enum(Variant {
                        variant,
                        value,
                        key: key.clone(),
                    }),
                    // Invariant: the table has one entry, checked by the guard.
                    None => Err(de::Error::invalid_length(0, &"one entry")),
                }
            }
            Value::Table(_) => Err(de::Error::invalid_type(
                Unexpected::Map,
                &"a name, or a table of one entry",
            )),
            other => Err(de::Error::invalid_type(
                type_of(&other),
                &"a name, or a table of one entry",
            )),
        };
        answer.map_err(|e| e.at(&key))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

fn type_of(v: &Value) -> Unexpected<'static> {
    match v {
        Value::String(_) | Value::Datetime(_) => Unexpected::Str(""),
        Value::Integer(_) => Unexpected::Signed(0),
        Value::Float(_) => Unexpected::Float(0.0),
        Value::Boolean(_) => Unexpected::Bool(false),
        Value::Array(_) => Unexpected::Seq,
        Value::Table(_) => Unexpected::Map,
    }
}

/// A table's entries, each at `key.<name>`.
struct Map {
    entries: toml::map::IntoIter,
    key: String,
    pending: Option<(String, Value)>,
}

impl<'de> de::MapAccess<'de> for Map {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((name, value)) = self.entries.next() else {
            return Ok(None);
        };
        let child = join(&self.key, &name);
        let k = seed
            .deserialize(IntoDeserializer::<DeError>::into_deserializer(name))
            .map_err(|e| e.at(&self.key))?;
        self.pending = Some((child, value));
        Ok(Some(k))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.pending.take() {
            Some((key, value)) => seed.deserialize(At { value, key }),
            None => Err(de::Error::custom("a value was asked for before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() + usize::from(self.pending.is_some()))
    }
}

/// An array's items, each at `key[<index>]`.
struct Seq {
    items: std::iter::Enumerate<std::vec::IntoIter<Value>>,
    key: String,
}

impl<'de> de::SeqAccess<'de> for Seq {
    type Error = DeError;

    fn next_element_seed<T>(&mut self, seed: T) -> Result<Option<T::Value>, DeError>
    where
        T: DeserializeSeed<'de>,
    {
        let Some((i, value)) = self.items.next() else {
            return Ok(None);
        };
        let key = format!("{}[{i}]", self.key);
        seed.deserialize(At { value, key }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// An enum written as a table of one entry: `{ <variant> = <content> }`.
struct Variant {
    variant: String,
    value: Value,
    key: String,
}

impl<'de> de::EnumAccess<'de> for Variant {
    type Error = DeError;
    type Variant = At;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, At), DeError> {
        let v = seed.deserialize(IntoDeserializer::<DeError>::into_deserializer(
            self.variant.clone(),
        ))?;
        Ok((
            v,
            At {
                value: self.value,
                key: join(&self.key, &self.variant),
            },
        ))
    }
}

impl<'de> de::VariantAccess<'de> for At {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Err(
            <DeError as de::Error>::invalid_type(type_of(&self.value), &"a name alone")
                .at(&self.key),
        )
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}
