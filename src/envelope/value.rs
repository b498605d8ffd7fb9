//! Column values: the one value type every source maps into and every format maps out of.
//!
//! Each variant keeps what the source knew exactly: integers stay integers (signed and unsigned
//! 64-bit), decimals keep their digits as text, JSON documents keep their original text, and a
//! type no variant fits is carried as [`Value::Other`] with its text form and its type name, so
//! nothing is ever coerced into a placeholder.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::value::RawValue;

/// One column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// An exact decimal (e.g. Postgres `numeric`, MySQL `DECIMAL`); never rounded through a float.
    Decimal(Decimal),
    /// A binary float; NaN and the infinities are kept.
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    /// A time of day without a zone.
    Time(NaiveTime),
    /// A timestamp without a zone (wall-clock time as stored).
    Timestamp(NaiveDateTime),
    /// An instant, normalised to UTC.
    TimestampTz(DateTime<Utc>),
    Uuid([u8; 16]),
    Json(Json),
    Array(Vec<Value>),
    /// A value of a type no other variant represents: its text form and the source's type name.
    Other {
        type_name: Arc<str>,
        text: String,
    },
}

impl Value {
    /// Whether the two values are the same and look the same to a consumer: like `==`, but
    /// floats compare by their bits (NaN is the same as NaN, `-0.0` is not `0.0`).
    pub fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.same_as(b))
            }
            (a, b) => a == b,
        }
    }

    /// A rough count of the heap and inline bytes this value occupies; used for memory budgets
    /// and batch sizes, not for anything that must be exact.
    pub fn approx_size(&self) -> usize {
        const INLINE: usize = std::mem::size_of::<Value>();
        INLINE
            + match self {
                Value::Decimal(d) => d.as_str().len(),
                Value::Text(s) => s.len(),
                Value::Bytes(b) => b.len(),
                Value::Json(j) => j.as_str().len(),
                Value::Array(items) => items.iter().map(Value::approx_size).sum(),
                Value::Other { type_name, text } => type_name.len() + text.len(),
                _ => 0,
            }
    }
}

/// An exact decimal number kept as its canonical text (`-12.3400`, `NaN`, `Infinity`).
#[derive(Clone, PartialEq, Eq)]
pub struct Decimal(String);

/// The text given to [`Decimal::parse`] is not a decimal number. The text is row data: it is
/// kept here but not shown by the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an exact decimal number")]
pub struct InvalidDecimal(pub String);

impl Decimal {
    /// Accepts plain and exponent notation (`-1.50`, `1e-3`) and the special values `NaN`,
    /// `Infinity` and `-Infinity` that Postgres `numeric` can hold.
    pub fn parse(text: &str) -> Result<Self, InvalidDecimal> {
        if matches!(text, "NaN" | "Infinity" | "-Infinity") || is_decimal_literal(text) {
            Ok(Decimal(text.to_owned()))
        } else {
            Err(InvalidDecimal(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_decimal_literal(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (unsigned, None),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok =
        !(int_part.is_empty() && frac_part.is_empty()) && digits(int_part) && digits(frac_part);
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decimal({})", self.0)
    }
}

/// A JSON document kept as its original text, so numbers of any size and key order survive.
#[derive(Clone)]
pub struct Json(Box<RawValue>);

impl Json {
    /// Validates `text` as one JSON document.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text.trim().to_owned()).map(Json)
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json({})", self.as_str())
    }
}

/// Formats a UUID in its canonical hyphenated lower-case form.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_accepts_exact_forms_and_rejects_others() {
        for ok in [
            "0",
            "-12.3400",
            "+1",
            ".5",
            "1.",
            "1e-3",
            "2.5E+10",
            "NaN",
            "Infinity",
            "-Infinity",
        ] {
            assert!(Decimal::parse(ok).is_ok(), "{ok} should parse");
        }
        for bad in [
            "", "-", ".", "1.2.3", "1e", "abc", "1,5", "nan", "0x10", "1e+",
        ] {
            assert!(Decimal::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn json_keeps_big_numbers_and_key_order() {
        let doc = Json::parse(r#"{"b":123456789012345678901234567890,"a":[1.10]}"#).unwrap();
        assert_eq!(
            doc.as_str(),
            r#"{"b":123456789012345678901234567890,"a":[1.10]}"#
        );
        assert!(Json::parse("{not json").is_err());
    }

    #[test]
    fn uuid_formats_hyphenated() {
        let bytes = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 0xff,
        ];
        assert_eq!(format_uuid(&bytes), "12345678-9abc-def0-0001-0203040506ff");
    }
}
