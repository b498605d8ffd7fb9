//! Row images of WRITE / UPDATE / DELETE_ROWS events (v1 and v2, MySQL and MariaDB), decoded
//! from the event's bytes straight into envelope rows.
//!
//! Data flow: when a table's TABLE_MAP is first needed, [`TableRows::new`] turns each column's
//! type and TABLE_MAP metadata into a [`Plan`] (how many bytes, which encoding), once; every
//! rows event of that table then runs [`TableRows::decode`]: per row, the before image (UPDATE,
//! DELETE) then the after image (WRITE, UPDATE), each a null bitmap over the columns present
//! in the event's column bitmap followed by the non-null values in column order. Each value
//! is read by its plan into primitive pieces, which [`super::value`]'s conversions (the same
//! the snapshot and the library path use) turn into a [`Value`] by the column's shape.
//!
//! Errors: every read is bounds-checked; damaged or truncated bytes, and a type or metadata
//! the plan cannot read, are an `Err(reason)` naming the column (the stream adds table and
//! position). Nothing here panics or indexes unchecked: the bytes come from the network.
//! A column absent from an image (binlog_row_image MINIMAL / NOBLOB) is null.

use mysql_common::binlog::events::{RowsEventData, TableMapEvent};
use mysql_common::constants::ColumnType;

use super::table::{ColumnShape, TableShape};
use super::value;
use crate::envelope::{Row, Value};

/// How one column's value is stored in a row image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// A little-endian signed integer of this many bytes (TINYINT .. BIGINT, MEDIUMINT).
    Int(usize),
    Float,
    Double,
    /// DECIMAL: MySQL's binary form, `size` bytes.
    Decimal {
        precision: usize,
        scale: usize,
        size: usize,
    },
    /// YEAR: one byte, years since 1900.
    Year,
    /// DATE: 3 little-endian bytes, day | month << 5 | year << 9.
    Date,
    /// TIME before MySQL 5.6 / MariaDB 10.0 (MariaDB still writes it): 3 bytes, HHMMSS.
    Time,
    /// DATETIME before 5.6: 8 bytes, YYYYMMDDHHMMSS.
    DateTime,
    /// TIMESTAMP before 5.6: 4 little-endian bytes of seconds.
    Timestamp,
    /// TIME(fsp), DATETIME(fsp), TIMESTAMP(fsp): big-endian, with the fraction's bytes.
    Time2(u8),
    DateTime2(u8),
    Timestamp2(u8),
    /// BIT(n): this many big-endian bytes.
    Bit(usize),
    /// ENUM: an index of 1 or 2 bytes.
    Enum(usize),
    /// SET: a bitmap of this many bytes.
    Set(usize),
    /// Strings and BLOBs: a little-endian length of this many bytes, then the bytes.
    Prefixed(usize),
    /// MySQL's binary JSON: a 4-byte length, then the document.
    Json,
    /// Cannot be read: the reason (an error when the column holds a value).
    Unreadable(&'static str),
}

/// A table's columns and how to read each, for the rows events after one TABLE_MAP.
#[derive(Debug)]
pub struct TableRows {
    pub shape: TableShape,
    plans: Vec<Plan>,
}

/// One row's before and after images (`None` where the event has no such image).
pub type Images = (Option<Row>, Option<Row>);

impl TableRows {
    /// The plans for `shape`'s columns from `tme`'s types and metadata.
    pub fn new(shape: TableShape, tme: &TableMapEvent<'_>) -> Self {
        let plans = shape
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| plan(column.kind, tme.get_column_metadata(i).unwrap_or(&[])))
            .collect();
        TableRows { shape, plans }
    }

    /// The rows of `event` (not a PARTIAL_UPDATE_ROWS event: its JSON diffs are not read here).
    pub fn decode(&self, event: &RowsEventData<'_>) -> Result<Vec<Images>, String> {
        if matches!(event, RowsEventData::PartialUpdateRowsEvent(_)) {
            return Err(value::PARTIAL_JSON.into());
        }
        let count = self.plans.len();
        if event.num_columns() != count as u64 {
            return Err(format!(
                "the rows event has {} columns, its TABLE_MAP {count}",
                event.num_columns()
            ));
        }
        // Which columns each image holds (one bit per column, least significant first).
        let before: Option<Vec<bool>> = event
            .columns_before_image()
            .map(|bits| bits.iter().map(|bit| *bit).collect());
        let after: Option<Vec<bool>> = event
            .columns_after_image()
            .map(|bits| bits.iter().map(|bit| *bit).collect());
        let mut data = Reader(event.rows_data());
        let mut rows = Vec::new();
        while !data.0.is_empty() {
            let left = data.0.len();
            let before = before
                .as_deref()
                .map(|present| self.image(present, &mut data))
                .transpose()?;
            let after = after
                .as_deref()
                .map(|present| self.image(present, &mut data))
                .transpose()?;
            if before.is_none() && after.is_none() {
                return Err("a rows event with neither a before nor an after image".into());
            }
            if data.0.len() == left {
                // Images of no columns take no bytes: the rest would be endless rows.
                return Err("row images with no columns and bytes after them".into());
            }
            rows.push((before, after));
        }
        Ok(rows)
    }

    /// One row image: the null bitmap over the present columns, then their values.
    fn image(&self, present: &[bool], data: &mut Reader<'_>) -> Result<Row, String> {
        let in_image = present.iter().filter(|p| **p).count();
        let nulls = data
            .take(in_image.div_ceil(8))
            .map_err(|e| format!("null bitmap: {e}"))?;
        let mut row = Row::with_capacity(self.plans.len());
        let mut n = 0;
        for ((column, plan), &present) in self.shape.columns.iter().zip(&self.plans).zip(present) {
            let value = if !present {
                Value::Null
            } else {
                let null = nulls
                    .get(n / 8)
                    .is_none_or(|byte| byte & (1 << (n % 8)) != 0);
                n += 1;
                if null {
                    Value::Null
                } else {
                    read(*plan, column, data).map_err(|e| format!("column {}: {e}", column.name))?
                }
            };
            row.push(column.name.clone(), value);
        }
        Ok(row)
    }
}

/// The bytes of a row image not read yet. Every read checks the length first.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!(
                "the row data ends {} bytes short",
                n - self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// `n` (up to 8) bytes as a little-endian unsigned number.
    fn le(&mut self, n: usize) -> Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// `n` (up to 8) bytes as a big-endian unsigned number.
    fn be(&mut self, n: usize) -> Result<u64, String> {
        Ok(be(self.take(n)?))
    }

    /// `n` (1 to 4) bytes as a big-endian signed number.
    fn be_signed(&mut self, n: usize) -> Result<i64, String> {
        Ok(sign_extend(self.be(n)?, n))
    }
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// The `n`-byte two's complement number in `value`'s low bytes.
fn sign_extend(value: u64, n: usize) -> i64 {
    let unused = 64 - 8 * n as u32;
    ((value << unused) as i64) >> unused
}

/// Bytes of the fraction of a TIME2 / DATETIME2 / TIMESTAMP2 with `fsp` digits.
fn fraction_len(fsp: u8) -> usize {
    usize::from(fsp).div_ceil(2).min(3) * usize::from(fsp <= 6)
}

/// The plan for a column of `kind` with TABLE_MAP metadata `meta`.
fn plan(kind: ColumnType, meta: &[u8]) -> Plan {
    use ColumnType::*;
    let byte = |i: usize| meta.get(i).copied().map(usize::from);
    let short_meta = Plan::Unreadable("TABLE_MAP metadata too short for the type");
    match kind {
        MYSQL_TYPE_TINY => Plan::Int(1),
        MYSQL_TYPE_SHORT => Plan::Int(2),
        MYSQL_TYPE_INT24 => Plan::Int(3),
        MYSQL_TYPE_LONG => Plan::Int(4),
        MYSQL_TYPE_LONGLONG => Plan::Int(8),
        MYSQL_TYPE_FLOAT => Plan::Float,
        MYSQL_TYPE_DOUBLE => Plan::Double,
        MYSQL_TYPE_NEWDECIMAL => match (byte(0), byte(1)) {
            (Some(precision), Some(scale))
                if (1..=65).contains(&precision) && scale <= 30 && scale <= precision =>
            {
                Plan::Decimal {
                    precision,
                    scale,
                    size: decimal_size(precision, scale),
                }
            }
            _ => Plan::Unreadable("malformed DECIMAL metadata"),
        },
        MYSQL_TYPE_YEAR => Plan::Year,
        MYSQL_TYPE_NEWDATE | MYSQL_TYPE_DATE => Plan::Date,
        MYSQL_TYPE_TIME => Plan::Time,
        MYSQL_TYPE_DATETIME => Plan::DateTime,
        MYSQL_TYPE_TIMESTAMP => Plan::Timestamp,
        MYSQL_TYPE_TIME2 | MYSQL_TYPE_DATETIME2 | MYSQL_TYPE_TIMESTAMP2 => {
            let Some(&fsp) = meta.first() else {
                return short_meta;
            };
            match kind {
                MYSQL_TYPE_TIME2 => Plan::Time2(fsp),
                MYSQL_TYPE_DATETIME2 => Plan::DateTime2(fsp),
                _ => Plan::Timestamp2(fsp),
            }
        }
        MYSQL_TYPE_BIT => match (byte(0), byte(1)) {
            (Some(bits), Some(bytes)) => Plan::Bit((bytes * 8 + bits).div_ceil(8)),
            _ => short_meta,
        },
        MYSQL_TYPE_ENUM => match byte(1) {
            Some(n @ (1 | 2)) => Plan::Enum(n),
            Some(_) => Plan::Unreadable("ENUM of an unknown size"),
            None => short_meta,
        },
        MYSQL_TYPE_SET => byte(1).map_or(short_meta, Plan::Set),
        MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_GEOMETRY
        | MYSQL_TYPE_VECTOR => match byte(0) {
            Some(n @ 1..=4) => Plan::Prefixed(n),
            Some(_) => Plan::Unreadable("BLOB with an unknown length size"),
            None => short_meta,
        },
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => match (byte(0), byte(1)) {
            (Some(low), Some(high)) => Plan::Prefixed(if low | high << 8 < 256 { 1 } else { 2 }),
            _ => short_meta,
        },
        MYSQL_TYPE_STRING => match (byte(0), byte(1)) {
            // The declared length's two high bits are folded, inverted, into the type byte.
            (Some(byte0 @ 1..), Some(byte1)) => {
                let high = if byte0 & 0x30 != 0x30 {
                    ((byte0 & 0x30) ^ 0x30) << 4
                } else {
                    0
                };
                Plan::Prefixed(if byte1 | high < 256 { 1 } else { 2 })
            }
            (Some(0), Some(byte1)) => Plan::Prefixed(if byte1 << 8 < 256 { 1 } else { 2 }),
            _ => short_meta,
        },
        MYSQL_TYPE_JSON => Plan::Json,
        _ => Plan::Unreadable("a column type the binlog does not use for rows"),
    }
}

/// Bytes of a DECIMAL(precision, scale) in binary form: 4 per 9 digits, and fewer for the
/// digits left over on each side of the point.
fn decimal_size(precision: usize, scale: usize) -> usize {
    const PARTIAL: [usize; 9] = [0, 1, 1, 2, 2, 3, 3, 4, 4];
    let integer = precision - scale;
    integer / 9 * 4 + PARTIAL[integer % 9] + scale / 9 * 4 + PARTIAL[scale % 9]
}

/// One non-null value of `column`, read by `plan`.
fn read(plan: Plan, column: &ColumnShape, data: &mut Reader<'_>) -> Result<Value, String> {
    Ok(match plan {
        Plan::Int(n) => value::integer(column, sign_extend(data.le(n)?, n)),
        Plan::Float => value::float(f32::from_bits(data.le(4)? as u32)),
        Plan::Double => Value::Float(f64::from_bits(data.le(8)?)),
        Plan::Decimal {
            precision,
            scale,
            size,
        } => value::decimal(&decimal_text(data.take(size)?, precision, scale))?,
        Plan::Year => value::year(1900 + data.le(1)? as i64),
        Plan::Date => {
            let v = data.le(3)?;
            let (y, m, d) = ((v >> 9) as u16, ((v >> 5) & 15) as u8, (v & 31) as u8);
            value::date_time(column.kind, (y, m, d), (0, 0, 0, 0))?
        }
        Plan::Time => {
            let v = data.le(3)?;
            value::time(
                false,
                0,
                (v / 10000) as u8,
                (v % 10000 / 100) as u8,
                (v % 100) as u8,
                0,
            )
        }
        Plan::DateTime => {
            let v = data.le(8)?;
            let (date, time) = (v / 1_000_000, v % 1_000_000);
            value::date_time(
                column.kind,
                (
                    (date / 10000) as u16,
                    (date % 10000 / 100) as u8,
                    (date % 100) as u8,
                ),
                (
                    (time / 10000) as u8,
                    (time % 10000 / 100) as u8,
                    (time % 100) as u8,
                    0,
                ),
            )?
        }
        Plan::Timestamp => value::integer(column, data.le(4)? as i64),
        Plan::Time2(fsp) => {
            let (negative, days, h, m, s, us) = time_parts(time2_packed(data, fsp)?);
            value::time(negative, days, h, m, s, us)
        }
        Plan::DateTime2(fsp) => {
            let seconds = data.be(5)? as i64 - 0x80_0000_0000;
            let packed = (seconds << 24).wrapping_add(fraction(data, fsp)?);
            let (date, time) = datetime_parts(packed);
            value::date_time(column.kind, date, time)?
        }
        Plan::Timestamp2(fsp) => {
            // Seconds as the server's signed 32 bits, then the fraction in microseconds.
            let secs = i64::from(data.be(4)? as u32 as i32);
            let micros = fraction(data, fsp)?;
            let text = || match micros {
                0 => secs.to_string(),
                us => format!("{secs}.{us:06}"),
            };
            if !(0..1_000_000).contains(&micros) {
                return Err(value::undecodable("timestamp", &text()));
            }
            value::timestamp(secs, micros as u32, text)?
        }
        Plan::Bit(n) => value::bit(data.take(n)?),
        Plan::Enum(n) => value::label(&column.labels, data.le(n)? as usize),
        Plan::Set(n) => value::set_labels(&column.labels, value::little_endian(data.take(n)?)),
        Plan::Prefixed(n) => {
            let len = usize::try_from(data.le(n)?).map_err(|e| e.to_string())?;
            let bytes = data.take(len)?;
            match column.kind {
                ColumnType::MYSQL_TYPE_GEOMETRY => value::geometry(bytes)?,
                _ => value::bytes(column, bytes.to_vec()),
            }
        }
        Plan::Json => {
            let len = usize::try_from(data.le(4)?).map_err(|e| e.to_string())?;
            let mut doc = mysql_common::io::ParseBuf(data.take(len)?);
            let jsonb = doc
                .parse::<mysql_common::binlog::jsonb::Value<'_>>(())
                .map_err(|e| format!("binary JSON: {e}"))?;
            value::binary_json(jsonb)?
        }
        Plan::Unreadable(reason) => return Err(format!("{:?}: {reason}", column.kind)),
    })
}

/// The fraction of a TIME2 / DATETIME2 / TIMESTAMP2 in microseconds (signed, as stored).
fn fraction(data: &mut Reader<'_>, fsp: u8) -> Result<i64, String> {
    let n = fraction_len(fsp);
    if n == 0 {
        return Ok(0);
    }
    let scale = [0, 10_000, 100, 1][n];
    Ok(data.be_signed(n)? * scale)
}

/// TIME2 as MySQL's packed number: hours << 36 | minutes << 30 | seconds << 24, plus
/// microseconds, negated for a negative time. The stored integer part is offset by 2^23; with
/// 1-4 fraction digits a negative time stores the fraction as a negative remainder (the
/// integer part then one nearer zero), with 5-6 the 48 bits are the whole packed number,
/// offset by 2^47.
fn time2_packed(data: &mut Reader<'_>, fsp: u8) -> Result<i64, String> {
    const INT_OFFSET: i64 = 0x80_0000;
    Ok(match fraction_len(fsp) {
        3 => data.be(6)? as i64 - 0x8000_0000_0000,
        0 => (data.be(3)? as i64 - INT_OFFSET) << 24,
        n => {
            let mut int = data.be(3)? as i64 - INT_OFFSET;
            let mut frac = data.be(n)? as i64;
            if int < 0 && frac > 0 {
                int += 1;
                frac -= 1 << (8 * n);
            }
            (int << 24) + frac * [0, 10_000, 100][n]
        }
    })
}

/// (negative, days, hours, minutes, seconds, microseconds) of a packed TIME.
fn time_parts(packed: i64) -> (bool, u32, u8, u8, u8, u32) {
    let magnitude = packed.wrapping_abs();
    let hms = magnitude >> 24;
    let hours = ((hms >> 12) as u32) % (1 << 10);
    (
        packed < 0,
        hours / 24,
        (hours % 24) as u8,
        ((hms >> 6) as u32 % 64) as u8,
        (hms as u32 % 64) as u8,
        (magnitude % (1 << 24)) as u32,
    )
}

type DateParts = (u16, u8, u8);
type TimeParts = (u8, u8, u8, u32);

/// Date and time of a packed DATETIME: year * 13 + month, day, hours, minutes and seconds in
/// bit fields above the 24 bits of microseconds.
fn datetime_parts(packed: i64) -> (DateParts, TimeParts) {
    let magnitude = packed.wrapping_abs();
    let micros = magnitude % (1 << 24);
    let fields = magnitude >> 24;
    let (ymd, hms) = (fields >> 17, fields % (1 << 17));
    let ym = ymd >> 5;
    (
        ((ym / 13) as u32 as u16, (ym % 13) as u8, (ymd % 32) as u8),
        (
            (hms >> 12) as u32 as u8,
            ((hms >> 6) % 64) as u8,
            (hms % 64) as u8,
            micros as u32,
        ),
    )
}

/// The exact text of a binary DECIMAL(precision, scale), as mysql_common prints it: groups of
/// 9 digits in 4 big-endian bytes (the leftover digits on each side in fewer bytes), the sign
/// in the first bit (set for positive), a negative number stored with every bit inverted;
/// leading zero groups of the integer part left out.
fn decimal_text(stored: &[u8], precision: usize, scale: usize) -> String {
    use std::fmt::Write as _;
    const PARTIAL: [usize; 9] = [0, 1, 1, 2, 2, 3, 3, 4, 4];
    let negative = stored.first().is_some_and(|b| b & 0x80 == 0);
    let mask: i64 = if negative { -1 } else { 0 };
    let mut at = 0;
    // The next group of `n` bytes (a signed number, sign bit restored, inversion undone).
    let mut group = |n: usize| -> i32 {
        let mut bytes = [0u8; 4];
        for (i, b) in bytes[..n].iter_mut().enumerate() {
            *b = stored.get(at + i).copied().unwrap_or(0) ^ if at + i == 0 { 0x80 } else { 0 };
        }
        at += n;
        (sign_extend(be(&bytes[..n]), n) ^ mask) as i32
    };
    let integer_digits = precision - scale;
    let (lead, full) = (integer_digits % 9, integer_digits / 9);
    let mut text = String::new();
    let mut integer_part = String::new();
    let lead_group = (lead > 0).then(|| group(PARTIAL[lead]));
    let full_groups: Vec<i32> = (0..full).map(|_| group(4)).collect();
    for x in lead_group.into_iter().chain(full_groups) {
        if integer_part.is_empty() && x == 0 {
            continue;
        }
        if integer_part.is_empty() {
            let _ = write!(integer_part, "{x}");
        } else {
            let _ = write!(integer_part, "{x:09}");
        }
    }
    if integer_part.is_empty() && scale == 0 {
        // Zero, without a sign.
        return "0".into();
    }
    if negative {
        text.push('-');
    }
    if integer_part.is_empty() {
        text.push('0');
    } else {
        text.push_str(&integer_part);
    }
    if scale > 0 {
        text.push('.');
        for _ in 0..scale / 9 {
            let _ = write!(text, "{:09}", group(4));
        }
        let rest = scale % 9;
        if rest > 0 {
            let power = 10i32.pow(9 - rest as u32);
            let x = group(PARTIAL[rest]).wrapping_mul(power) / power;
            let _ = write!(text, "{x:0rest$}");
        }
    }
    text
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
