//! Values the envelope carries as their source's text (Postgres intervals, `timetz` and bit
//! strings, MySQL TIMEs beyond a day) read into the forms Debezium writes for them, and
//! Debezium's text forms of zoned values. Each reader returns `None` for text it does not
//! understand; the caller turns that into an error naming the column.

use std::sync::LazyLock;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveTime, Timelike, Utc};

/// Days in a month of Debezium's `MicroDuration`.
const DAYS_PER_MONTH: f64 = 365.25 / 12.0;

/// A bit string (`1010`, most significant bit first, as Postgres prints it) as Debezium's
/// `Bits` bytes: little-endian, as Java's `BitSet.toByteArray` gives them, up to the highest
/// set bit (all zeros: no bytes).
pub fn bits_of_text(text: &str) -> Option<Vec<u8>> {
    let mut bytes = vec![0u8; text.len().div_ceil(8)];
    for (i, bit) in text.bytes().rev().enumerate() {
        match bit {
            b'1' => bytes[i / 8] |= 1 << (i % 8),
            b'0' => {}
            _ => return None,
        }
    }
    trim_high_zero_bytes(&mut bytes);
    Some(bytes)
}

/// A MySQL BIT(n) value as Debezium's `Bits` bytes: little-endian, `n / 8` rounded up of
/// them (unlike Postgres bit strings, MySQL's keep their high zero bytes).
pub fn bits_of_number(value: u64, length: u32) -> Vec<u8> {
    value.to_le_bytes()[..length.div_ceil(8).clamp(1, 8) as usize].to_vec()
}

/// `BitSet.toByteArray` ends at the last byte holding a set bit.
fn trim_high_zero_bytes(bytes: &mut Vec<u8>) {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
}

/// A MySQL TIME's text (`-838:59:59.000000`, hours beyond a day) in microseconds.
pub fn signed_time_micros(text: &str) -> Option<i64> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut parts = rest.splitn(3, ':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next()?.parse().ok()?;
    let (seconds, fraction) = split_fraction(parts.next()?)?;
    let micros = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + fraction;
    Some(if negative { -micros } else { micros })
}

/// `SS` or `SS.ffffff` as whole seconds and microseconds.
fn split_fraction(text: &str) -> Option<(i64, i64)> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits = fraction.to_owned();
    digits.truncate(6);
    while digits.len() < 6 {
        digits.push('0');
    }
    Some((whole.parse().ok()?, digits.parse().ok()?))
}

/// An instant as `io.debezium.time.ZonedTimestamp` text for a column with `digits`
/// fractional digits: `2025-11-22T03:10:00.120000Z` for `timestamptz(6)`.
pub fn zoned_timestamp(ts: &DateTime<Utc>, digits: u8) -> String {
    use std::fmt::Write as _;
    // The pattern is parsed once, not on every value (parsing it was most of the cost).
    static DATE_TIME: LazyLock<Vec<Item<'static>>> = LazyLock::new(|| {
        StrftimeItems::new("%Y-%m-%dT%H:%M:%S")
            .parse_to_owned()
            .expect("a valid pattern")
    });
    let mut text = String::with_capacity(32);
    let _ = write!(text, "{}", ts.format_with_items(DATE_TIME.iter()));
    if digits > 0 {
        let digits = usize::from(digits.min(9));
        let fraction = (ts.nanosecond() % 1_000_000_000) / 10u32.pow(9 - digits as u32);
        let _ = write!(text, ".{fraction:0digits$}");
    }
    text.push('Z');
    text
}

/// A Postgres `timetz` (`04:05:06.789+02`, `23:00:00-05:30`) in UTC, as
/// `io.debezium.time.ZonedTime` text: `02:05:06.789Z`.
pub fn zoned_time_in_utc(text: &str) -> Option<String> {
    let sign_at = text.rfind(['+', '-'])?;
    let (time, offset) = text.split_at(sign_at);
    let (sign, offset) = offset.split_at(1);
    let mut fields = offset.split(':');
    let hours: i64 = fields.next()?.parse().ok()?;
    let minutes: i64 = fields.next().map_or(Some(0), |m| m.parse().ok())?;
    let seconds: i64 = fields.next().map_or(Some(0), |s| s.parse().ok())?;
    let offset = (hours * 3600 + minutes * 60 + seconds) * if sign == "-" { -1 } else { 1 };
    let local = NaiveTime::parse_from_str(time, "%H:%M:%S%.f").ok()?;
    let utc = local - chrono::Duration::seconds(offset);
    let mut out = utc.format("%H:%M:%S").to_string();
    let nanos = utc.nanosecond();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

/// A Postgres interval in ISO-8601 (`P1Y2M3DT4H5M6.5S`, parts may be negative) as
/// Debezium's `MicroDuration`, computed as Debezium does (in doubles, truncated): months of
/// 365.25 / 12 days, days of 24 hours.
pub fn interval_micros(text: &str) -> Option<i64> {
    let rest = text.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    // years, months, days, hours, minutes, seconds
    let mut parts = [0f64; 6];
    for (text, in_time) in [(date, false), (time, true)] {
        let mut number = String::new();
        for c in text.chars() {
            if c.is_ascii_digit() || c == '-' || c == '.' {
                number.push(c);
                continue;
            }
            let slot = match (in_time, c) {
                (false, 'Y') => 0,
                (false, 'M') => 1,
                (false, 'D') => 2,
                (true, 'H') => 3,
                (true, 'M') => 4,
                (true, 'S') => 5,
                _ => return None,
            };
            parts[slot] += number.parse::<f64>().ok()?;
            number.clear();
        }
        if !number.is_empty() {
            return None;
        }
    }
    let [years, months, days, hours, minutes, seconds] = parts;
    let days = (years * 12.0 + months) * DAYS_PER_MONTH + days;
    let seconds = ((days * 24.0 + hours) * 60.0 + minutes) * 60.0 + seconds;
    Some((seconds * 1e6) as i64)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn bit_strings_are_little_endian_bytes() {
        assert_eq!(bits_of_text("1"), Some(vec![0x01]));
        assert_eq!(bits_of_text("1000000011"), Some(vec![0x03, 0x02]));
        assert_eq!(bits_of_text("0000"), Some(vec![]));
        assert_eq!(bits_of_text("10x"), None);
        assert_eq!(bits_of_number(0x0102, 16), vec![0x02, 0x01]);
        assert_eq!(
            bits_of_number(23_989_979, 64),
            vec![219, 14, 110, 1, 0, 0, 0, 0]
        );
        assert_eq!(bits_of_number(0, 3), vec![0]);
    }

    #[test]
    fn mysql_times_beyond_a_day_and_negative_ones_count_microseconds() {
        assert_eq!(
            signed_time_micros("838:59:59.000000"),
            Some(3_020_399_000_000)
        );
        assert_eq!(signed_time_micros("-00:00:01.500000"), Some(-1_500_000));
        assert_eq!(signed_time_micros("12:00"), None);
    }

    #[test]
    fn zoned_values_are_utc_text() {
        let ts = Utc.timestamp_opt(1_763_781_000, 120_000_000).unwrap();
        assert_eq!(zoned_timestamp(&ts, 6), "2025-11-22T03:10:00.120000Z");
        assert_eq!(zoned_timestamp(&ts, 0), "2025-11-22T03:10:00Z");
        assert_eq!(zoned_timestamp(&ts, 3), "2025-11-22T03:10:00.120Z");
        let far = Utc.with_ymd_and_hms(21016, 11, 4, 6, 51, 30).unwrap();
        assert_eq!(zoned_timestamp(&far, 6), "+21016-11-04T06:51:30.000000Z");
        assert_eq!(
            zoned_time_in_utc("04:05:06.789+02").unwrap(),
            "02:05:06.789Z"
        );
        assert_eq!(zoned_time_in_utc("23:00:00-05:30").unwrap(), "04:30:00Z");
        assert_eq!(zoned_time_in_utc("noon"), None);
    }

    #[test]
    fn intervals_count_months_as_an_average_month() {
        assert_eq!(interval_micros("PT0S"), Some(0));
        assert_eq!(interval_micros("P1DT2H"), Some(26 * 3_600_000_000));
        assert_eq!(interval_micros("PT-1.5S"), Some(-1_500_000));
        assert_eq!(interval_micros("P1M"), Some(2_629_800_000_000));
        assert_eq!(interval_micros("P1Y-1M"), Some(11 * 2_629_800_000_000));
        assert_eq!(
            interval_micros("P1Y2M3DT4H5M6.78S"),
            Some(37_091_106_780_000)
        );
        assert_eq!(interval_micros("1 day"), None);
    }
}
