//! The loosely-typed shape of an event as it comes off the wire, borrowing
//! from the input buffer wherever it can. Syntax (JSON, Parquet) is turned into
//! a [`RawEvent`]; [`crate::Decoder`] then validates it into an [`crate::Event`].

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A string that borrows from the input when it has no escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl<'a> Str<'a> {
    /// Borrows a string.
    pub fn borrowed(s: &'a str) -> Self {
        Str(Cow::Borrowed(s))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON scalar: what a feature value, a class, a label or a segment value may be.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(Cow<'a, str>),
}

impl Scalar<'_> {
    /// The scalar as a class or category name; `None` for null.
    pub fn to_category(&self) -> Option<String> {
        match self {
            Scalar::Null => None,
            Scalar::Bool(b) => Some(b.to_string()),
            Scalar::Int(i) => Some(i.to_string()),
            Scalar::Float(x) => Some(x.to_string()),
            Scalar::Str(s) => Some(s.to_string()),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, string, boolean or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(match i64::try_from(v) {
                    Ok(i) => Scalar::Int(i),
                    Err(_) => Scalar::Float(v as f64),
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON object of scalars, in the order sent (duplicates kept, checked later).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScalarMap<'a>(pub Vec<(Str<'a>, Scalar<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for ScalarMap<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ScalarMap<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of numbers, strings, booleans or nulls")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(32));
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    out.push((key, map.next_value::<Scalar<'de>>()?));
                }
                Ok(ScalarMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// `timestamp`: an RFC 3339 string or epoch milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub enum RawTime<'a> {
    /// A string, to be parsed as RFC 3339.
    Text(Str<'a>),
    /// A number, to be read as epoch milliseconds.
    Number(Scalar<'a>),
}

impl<'de: 'a, 'a> Deserialize<'de> for RawTime<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Scalar::deserialize(d)? {
            Scalar::Str(s) => Ok(RawTime::Text(Str(s))),
            Scalar::Bool(_) => Err(de::Error::invalid_type(
                de::Unexpected::Other("boolean"),
                &"an RFC 3339 string or epoch milliseconds",
            )),
            other => Ok(RawTime::Number(other)),
        }
    }
}

/// `prediction`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct RawPrediction<'a> {
    /// Probability of the positive class.
    #[serde(default)]
    pub score: Option<f64>,
    /// Predicted class.
    #[serde(borrow, default)]
    pub class: Option<Scalar<'a>>,
    /// Predicted value.
    #[serde(default)]
    pub value: Option<f64>,
    /// Class probabilities.
    #[serde(borrow, default)]
    pub probabilities: Option<ScalarMap<'a>>,
}

/// One event before validation.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct RawEvent<'a> {
    /// `event_id`.
    #[serde(borrow, default)]
    pub event_id: Option<Str<'a>>,
    /// `model_id`.
    #[serde(borrow, default)]
    pub model_id: Option<Str<'a>>,
    /// `model_version`.
    #[serde(borrow, default)]
    pub model_version: Option<Str<'a>>,
    /// `timestamp`.
    #[serde(borrow, default)]
    pub timestamp: Option<RawTime<'a>>,
    /// `features`.
    #[serde(borrow, default)]
    pub features: Option<ScalarMap<'a>>,
    /// `prediction`.
    #[serde(borrow, default)]
    pub prediction: Option<RawPrediction<'a>>,
    /// `segments`.
    #[serde(borrow, default)]
    pub segments: Option<ScalarMap<'a>>,
    /// `label`.
    #[serde(borrow, default)]
    pub label: Option<Scalar<'a>>,
}
