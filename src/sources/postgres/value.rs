//! PostgreSQL values, in their text output form, to envelope values.
//!
//! Both the snapshot (simple-query rows) and pgoutput (text tuples) deliver values as the
//! type's text output under fixed session settings (ISO dates, UTC, ISO-8601 intervals, hex
//! bytea; see [`super::server::SESSION_OPTIONS`]). A [`Decoder`] is chosen per column type:
//! built-in types by OID, the rest from `pg_type` (enums as text, domains as their base type,
//! arrays by element type). Any type without a decoder keeps its text and its type name as
//! [`Value::Other`]; a value a decoder cannot read falls back the same way, never to an error.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};

use super::array;
use super::error::PostgresError;
use crate::envelope::{Decimal, Json, Value};

/// How to read one type's text form.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoder {
    Bool,
    Int,
    Numeric,
    Float,
    Text,
    Bytea,
    Json,
    Uuid,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    /// A type kept as text with its name (interval, inet, money, timetz, bit, ...).
    Named(Arc<str>),
    Array {
        element: Box<Decoder>,
        delimiter: u8,
    },
}

/// Decoders of the built-in scalar types, by OID.
fn builtin(oid: u32) -> Option<Decoder> {
    Some(match oid {
        16 => Decoder::Bool,
        20 | 21 | 23 | 26 => Decoder::Int,
        1700 => Decoder::Numeric,
        700 | 701 => Decoder::Float,
        18 | 19 | 25 | 142 | 1042 | 1043 => Decoder::Text,
        17 => Decoder::Bytea,
        114 | 3802 => Decoder::Json,
        2950 => Decoder::Uuid,
        1082 => Decoder::Date,
        1083 => Decoder::Time,
        1114 => Decoder::Timestamp,
        1184 => Decoder::TimestampTz,
        1266 => Decoder::Named("timetz".into()),
        1186 => Decoder::Named("interval".into()),
        869 => Decoder::Named("inet".into()),
        650 => Decoder::Named("cidr".into()),
        829 => Decoder::Named("macaddr".into()),
        774 => Decoder::Named("macaddr8".into()),
        1560 => Decoder::Named("bit".into()),
        1562 => Decoder::Named("varbit".into()),
        790 => Decoder::Named("money".into()),
        _ => return None,
    })
}

/// A row of `pg_type`.
#[derive(Debug, Clone)]
pub struct TypeRow {
    pub oid: u32,
    pub name: String,
    /// `b` base, `e` enum, `d` domain, `c` composite, `r` range, `p` pseudo, `m` multirange.
    pub kind: u8,
    pub base: u32,
    pub element: u32,
    pub delimiter: u8,
    pub category: u8,
}

/// Decoders known so far, filled from the catalog as new types appear.
#[derive(Debug, Default)]
pub struct TypeRegistry {
    decoders: HashMap<u32, Decoder>,
}

impl TypeRegistry {
    pub fn get(&self, oid: u32) -> Decoder {
        builtin(oid)
            .or_else(|| self.decoders.get(&oid).cloned())
            .unwrap_or_else(|| Decoder::Named(format!("oid:{oid}").into()))
    }

    /// Loads from `pg_type` whatever `oids` (and their base and element types) need.
    pub async fn ensure(
        &mut self,
        client: &tokio_postgres::Client,
        oids: &[u32],
    ) -> Result<(), PostgresError> {
        let mut wanted: Vec<u32> = oids.iter().copied().filter(|o| self.missing(*o)).collect();
        let mut rows: HashMap<u32, TypeRow> = HashMap::new();
        while !wanted.is_empty() {
            wanted.sort_unstable();
            wanted.dedup();
            let found = client
                .query(
                    "SELECT oid, typname::text, typtype::text, typbasetype, typelem, typdelim::text, typcategory::text \
                     FROM pg_catalog.pg_type WHERE oid = ANY($1)",
                    &[&wanted],
                )
                .await
                .map_err(|e| PostgresError::sql("reading column types from pg_type", e))?;
            let mut next = Vec::new();
            for row in found {
                let first_byte = |i: usize| row.get::<_, String>(i).bytes().next().unwrap_or(b' ');
                let type_row = TypeRow {
                    oid: row.get(0),
                    name: row.get(1),
                    kind: first_byte(2),
                    base: row.get(3),
                    element: row.get(4),
                    delimiter: first_byte(5),
                    category: first_byte(6),
                };
                for dependency in [type_row.base, type_row.element] {
                    if dependency != 0
                        && self.missing(dependency)
                        && !rows.contains_key(&dependency)
                    {
                        next.push(dependency);
                    }
                }
                rows.insert(type_row.oid, type_row);
            }
            wanted = next;
        }
        for oid in oids {
            if self.missing(*oid) {
                let decoder = resolve(*oid, &rows, 0);
                self.decoders.insert(*oid, decoder);
            }
        }
        Ok(())
    }

    fn missing(&self, oid: u32) -> bool {
        builtin(oid).is_none() && !self.decoders.contains_key(&oid)
    }
}

/// The decoder of `oid` from catalog rows (depth guards against catalog cycles).
pub fn resolve(oid: u32, rows: &HashMap<u32, TypeRow>, depth: u8) -> Decoder {
    if let Some(decoder) = builtin(oid) {
        return decoder;
    }
    let Some(row) = rows.get(&oid).filter(|_| depth < 8) else {
        return Decoder::Named(format!("oid:{oid}").into());
    };
    match row.kind {
        b'e' => Decoder::Text,
        b'd' => resolve(row.base, rows, depth + 1),
        _ if row.category == b'A' && row.element != 0 => Decoder::Array {
            element: Box::new(resolve(row.element, rows, depth + 1)),
            delimiter: row.delimiter,
        },
        _ => Decoder::Named(row.name.as_str().into()),
    }
}

/// Reads one value from its text form.
pub fn decode(decoder: &Decoder, text: &str) -> Value {
    decode_typed(decoder, text).unwrap_or_else(|| Value::Other {
        type_name: type_name(decoder).into(),
        text: text.to_owned(),
    })
}

fn type_name(decoder: &Decoder) -> String {
    match decoder {
        Decoder::Named(name) => name.to_string(),
        Decoder::Array { element, .. } => format!("{}[]", type_name(element)),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn decode_typed(decoder: &Decoder, text: &str) -> Option<Value> {
    Some(match decoder {
        Decoder::Bool => Value::Bool(match text {
            "t" => true,
            "f" => false,
            _ => return None,
        }),
        Decoder::Int => Value::Int(text.parse().ok()?),
        Decoder::Numeric => Value::Decimal(Decimal::parse(text).ok()?),
        Decoder::Float => Value::Float(match text {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => text.parse().ok()?,
        }),
        Decoder::Text => Value::Text(text.to_owned()),
        Decoder::Bytea => Value::Bytes(decode_hex(text.strip_prefix("\\x")?)?),
        Decoder::Json => Value::Json(Json::parse(text).ok()?),
        Decoder::Uuid => Value::Uuid(decode_hex(&text.replace('-', ""))?.try_into().ok()?),
        Decoder::Date => Value::Date(parse_date(text)?),
        Decoder::Time => Value::Time(parse_time(text)?),
        Decoder::Timestamp => Value::Timestamp(parse_timestamp(text)?),
        Decoder::TimestampTz => Value::TimestampTz(parse_timestamptz(text)?),
        Decoder::Named(name) if &**name == "timetz" => Value::Other {
            type_name: name.clone(),
            text: iso_timetz(text)?,
        },
        Decoder::Named(name) => Value::Other {
            type_name: name.clone(),
            text: text.to_owned(),
        },
        Decoder::Array { element, delimiter } => {
            array::parse(text, *delimiter, &|item| decode(element, item))?
        }
    })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Splits a trailing ` BC` and turns the year into ISO (astronomical) numbering: 1 BC = 0.
fn bc_adjusted(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (text, false),
    }
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    let (text, bc) = bc_adjusted(text);
    let date = match fast_date(text) {
        Some(date) => date,
        None => NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?,
    };
    if bc {
        use chrono::Datelike;
        date.with_year(1 - date.year())
    } else {
        Some(date)
    }
}

fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    let (body, bc) = bc_adjusted(text);
    timestamp_of(body, bc)
}

/// `body` (a timestamp without ` BC`), in the era `bc` says.
fn timestamp_of(body: &str, bc: bool) -> Option<NaiveDateTime> {
    if let (false, Some(timestamp)) = (bc, fast_timestamp(body)) {
        return Some(timestamp);
    }
    let (date, time) = body.split_once(' ')?;
    let date = if bc {
        parse_date(&format!("{date} BC"))?
    } else {
        parse_date(date)?
    };
    Some(date.and_time(parse_time(time)?))
}

fn parse_time(text: &str) -> Option<NaiveTime> {
    fast_time(text).or_else(|| NaiveTime::parse_from_str(text, "%H:%M:%S%.f").ok())
}

/// Two ASCII digits at `at` as a number.
fn two_digits(bytes: &[u8], at: usize) -> Option<u32> {
    let (tens, ones) = (*bytes.get(at)?, *bytes.get(at + 1)?);
    (tens.is_ascii_digit() && ones.is_ascii_digit())
        .then(|| u32::from(tens - b'0') * 10 + u32::from(ones - b'0'))
}

/// `YYYY-MM-DD` read by hand: the common form, without chrono's format parsing (the hot
/// path of a snapshot's dates and timestamps). Anything else falls back to chrono.
fn fast_date(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year = two_digits(bytes, 0)? * 100 + two_digits(bytes, 2)?;
    NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        two_digits(bytes, 5)?,
        two_digits(bytes, 8)?,
    )
}

/// `HH:MM:SS[.fraction]` read by hand, like [`fast_date`]; a leap second or `24:00:00` falls
/// back to chrono.
fn fast_time(text: &str) -> Option<NaiveTime> {
    let bytes = text.as_bytes();
    if bytes.len() < 8 || bytes[2] != b':' || bytes[5] != b':' {
        return None;
    }
    let nanos = match &bytes[8..] {
        [] => 0,
        [b'.', digits @ ..]
            if !digits.is_empty() && digits.len() <= 9 && digits.iter().all(u8::is_ascii_digit) =>
        {
            let value = digits
                .iter()
                .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            value * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    NaiveTime::from_hms_nano_opt(
        two_digits(bytes, 0)?,
        two_digits(bytes, 3)?,
        two_digits(bytes, 6)?,
        nanos,
    )
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` read by hand ([`fast_date`], [`fast_time`]).
fn fast_timestamp(text: &str) -> Option<NaiveDateTime> {
    if text.len() < 19 || text.as_bytes()[10] != b' ' {
        return None;
    }
    Some(fast_date(&text[..10])?.and_time(fast_time(&text[11..])?))
}

/// `2025-11-22 03:04:05.123+00` (any offset, with TimeZone=UTC normally `+00`).
fn parse_timestamptz(text: &str) -> Option<DateTime<chrono::Utc>> {
    let (body, bc) = bc_adjusted(text);
    let split = body.rfind(['+', '-']).filter(|&i| i > 10)?;
    let (local, offset) = body.split_at(split);
    let local = timestamp_of(local, bc)?;
    // The session's time zone is UTC: the usual value needs no offset arithmetic.
    if offset == "+00" {
        return Some(local.and_utc());
    }
    let offset = chrono::TimeDelta::try_seconds(offset_seconds(offset)?)?;
    Some(local.checked_sub_signed(offset)?.and_utc())
}

/// `+05`, `-03:30`, `+05:30:15` to seconds east of UTC; `None` beyond PostgreSQL's zone
/// offsets (15:59:59 either way) or with anything but digits in a part.
fn offset_seconds(offset: &str) -> Option<i64> {
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let part = |p: &str, max: i64| -> Option<i64> {
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok().filter(|&n| n <= max)
    };
    let mut parts = offset[1..].split(':');
    let hours = part(parts.next()?, 15)?;
    let minutes = parts.next().map_or(Some(0), |p| part(p, 59))?;
    let seconds = parts.next().map_or(Some(0), |p| part(p, 59))?;
    if parts.next().is_some() {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60 + seconds))
}

/// `12:34:56.5+02` to ISO-8601 `12:34:56.5+02:00`.
fn iso_timetz(text: &str) -> Option<String> {
    let split = text.rfind(['+', '-'])?;
    let (time, offset) = text.split_at(split);
    NaiveTime::parse_from_str(time, "%H:%M:%S%.f").ok()?;
    let secs = offset_seconds(offset)?;
    let (sign, secs) = if secs < 0 { ('-', -secs) } else { ('+', secs) };
    let mut out = format!("{time}{sign}{:02}:{:02}", secs / 3600, secs / 60 % 60);
    if secs % 60 != 0 {
        out.push_str(&format!(":{:02}", secs % 60));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_and_times_read_by_hand_match_chronos_reading() {
        for time in [
            "00:00:00",
            "23:59:59.999999",
            "12:34:56.5",
            "03:04:05.000001",
            "24:00:00",
            "12:60:00",
            "1:02:03",
        ] {
            assert_eq!(
                parse_time(time),
                NaiveTime::parse_from_str(time, "%H:%M:%S%.f").ok(),
                "{time}"
            );
        }
        for date in [
            "2025-11-22",
            "0001-01-01",
            "9999-12-31",
            "2025-02-30",
            "12025-01-01",
            "2025-1-01",
        ] {
            assert_eq!(
                parse_date(date),
                NaiveDate::parse_from_str(date, "%Y-%m-%d").ok(),
                "{date}"
            );
        }
    }

    use super::*;

    #[test]
    fn scalars_decode_exactly() {
        assert_eq!(
            decode(&Decoder::Int, "-9223372036854775808"),
            Value::Int(i64::MIN)
        );
        assert_eq!(
            decode(&Decoder::Numeric, "NaN"),
            Value::Decimal(Decimal::parse("NaN").unwrap())
        );
        assert_eq!(
            decode(&Decoder::Bytea, "\\x00ff"),
            Value::Bytes(vec![0, 255])
        );
        assert!(decode(&Decoder::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").approx_size() > 0);
        assert!(
            matches!(decode(&Decoder::Float, "-Infinity"), Value::Float(f) if f == f64::NEG_INFINITY)
        );
    }

    #[test]
    fn dates_handle_bc_and_infinity_falls_back_to_text() {
        assert_eq!(
            decode(&Decoder::Date, "0044-03-15 BC"),
            Value::Date(NaiveDate::from_ymd_opt(-43, 3, 15).unwrap())
        );
        assert_eq!(
            decode(&Decoder::Date, "infinity"),
            Value::Other {
                type_name: "date".into(),
                text: "infinity".into()
            }
        );
        let ts = decode(&Decoder::TimestampTz, "2025-11-22 03:04:05.5+05:30");
        let expected = NaiveDate::from_ymd_opt(2025, 11, 21)
            .unwrap()
            .and_hms_milli_opt(21, 34, 5, 500)
            .unwrap()
            .and_utc();
        assert_eq!(ts, Value::TimestampTz(expected));
    }

    #[test]
    fn timestamps_in_the_usual_form_read_the_same_as_any_other() {
        let utc = |text: &str| match decode(&Decoder::TimestampTz, text) {
            Value::TimestampTz(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(utc("2025-11-22 03:04:05+00"), "2025-11-22T03:04:05Z");
        assert_eq!(
            utc("2025-11-22 03:04:05.123456+00"),
            "2025-11-22T03:04:05.123456Z"
        );
        assert_eq!(utc("2025-11-22 03:04:05+00:30"), "2025-11-22T02:34:05Z");
        assert_eq!(utc("0044-03-15 10:00:00+00 BC"), "-0043-03-15T10:00:00Z");
        assert_eq!(
            decode(&Decoder::Timestamp, "2025-11-22 03:04:05.5"),
            Value::Timestamp(
                NaiveDate::from_ymd_opt(2025, 11, 22)
                    .unwrap()
                    .and_hms_milli_opt(3, 4, 5, 500)
                    .unwrap()
            )
        );
        assert_eq!(
            decode(&Decoder::Timestamp, "0044-03-15 10:00:00 BC"),
            Value::Timestamp(
                NaiveDate::from_ymd_opt(-43, 3, 15)
                    .unwrap()
                    .and_hms_opt(10, 0, 0)
                    .unwrap()
            )
        );
        assert!(matches!(
            decode(&Decoder::TimestampTz, "2025-11-22 24:00:01+00"),
            Value::Other { .. }
        ));
    }

    #[test]
    fn timetz_becomes_iso() {
        assert_eq!(iso_timetz("12:34:56+02").unwrap(), "12:34:56+02:00");
        assert_eq!(
            iso_timetz("12:34:56.25-03:30").unwrap(),
            "12:34:56.25-03:30"
        );
    }

    #[test]
    fn catalog_resolution_follows_domains_and_arrays() {
        let rows: HashMap<u32, TypeRow> = [
            TypeRow {
                oid: 90001,
                name: "mood".into(),
                kind: b'e',
                base: 0,
                element: 0,
                delimiter: b',',
                category: b'E',
            },
            TypeRow {
                oid: 90002,
                name: "_mood".into(),
                kind: b'b',
                base: 0,
                element: 90001,
                delimiter: b',',
                category: b'A',
            },
            TypeRow {
                oid: 90003,
                name: "posint".into(),
                kind: b'd',
                base: 23,
                element: 0,
                delimiter: b',',
                category: b'N',
            },
            TypeRow {
                oid: 90004,
                name: "point".into(),
                kind: b'b',
                base: 0,
                element: 0,
                delimiter: b',',
                category: b'G',
            },
        ]
        .into_iter()
        .map(|r| (r.oid, r))
        .collect();
        assert_eq!(
            resolve(90002, &rows, 0),
            Decoder::Array {
                element: Box::new(Decoder::Text),
                delimiter: b','
            }
        );
        assert_eq!(resolve(90003, &rows, 0), Decoder::Int);
        assert_eq!(resolve(90004, &rows, 0), Decoder::Named("point".into()));
    }

    #[test]
    fn huge_zone_offsets_fall_back_to_text() {
        for text in [
            "2025-11-22 03:04:05+9999999999999999",
            "2025-11-22 03:04:05+2562047788015215",
            "2025-11-22 03:04:05-99999999",
            "262142-12-31 23:59:59+00:00:-1",
            "2025-11-22 03:04:05+00:00:9223372036854775807",
        ] {
            assert!(
                matches!(decode(&Decoder::TimestampTz, text), Value::Other { .. }),
                "{text}"
            );
        }
        assert!(iso_timetz("12:34:56+9999999999999999").is_none());
    }
}
