//! Exact decimals as Kafka Connect's `Decimal` carries them: the unscaled integer (the digits
//! with the decimal point moved `scale` places right) in big-endian two's complement, in as
//! few bytes as hold it with its sign bit (Java's `BigInteger.toByteArray`).

/// A decimal's digits, its sign and where its point is, read from the envelope's text form.
#[derive(Debug, PartialEq, Eq)]
pub struct Unscaled {
    pub negative: bool,
    /// The digits without leading zeros (empty for zero).
    pub digits: Vec<u8>,
    /// How many of `digits` are right of the decimal point (negative: zeros to append).
    pub scale: i64,
}

/// Why a decimal cannot be carried exactly.
#[derive(Debug, PartialEq, Eq)]
pub enum DecimalProblem {
    /// NaN or an infinity: Connect's `Decimal` has no such values.
    NotANumber,
    /// More fractional digits than the column's scale (not seen from a declared column).
    ScaleExceeded {
        needed: i64,
        scale: u32,
    },
    Unreadable,
}

impl std::fmt::Display for DecimalProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecimalProblem::NotANumber => f.write_str(
                "NaN and infinite numerics have no exact decimal form (decimal_handling = \"string\" or \"double\" carries them)",
            ),
            DecimalProblem::ScaleExceeded { needed, scale } => write!(
                f,
                "the value has {needed} fractional digits, more than the column's scale {scale}"
            ),
            DecimalProblem::Unreadable => f.write_str("the value is not a decimal number"),
        }
    }
}

/// The unscaled value of a plain decimal (`-12.34`, no exponent) at `scale`, when it fits an
/// `i128` (38 digits) and has no more fractional digits than `scale`: the common case, without
/// the allocations of [`parse`]. `None` sends the caller to the general path.
pub fn small_unscaled(text: &str, scale: u32) -> Option<i128> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let padding = scale.checked_sub(u32::try_from(fraction.len()).ok()?)?;
    if whole.is_empty() && fraction.is_empty()
        || whole.len() + fraction.len() + padding as usize > 38
    {
        return None;
    }
    let mut value: i128 = 0;
    for byte in whole.bytes().chain(fraction.bytes()) {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i128::from(byte - b'0');
    }
    value = value.checked_mul(10i128.checked_pow(padding)?)?;
    Some(if negative { -value } else { value })
}

/// `value`'s minimal big-endian two's complement bytes, as Java's `BigInteger.toByteArray`.
pub fn minimal_bytes(value: i128) -> ([u8; 16], usize) {
    let bytes = value.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (first, next) = (bytes[start], bytes[start + 1]);
        let redundant = (first == 0x00 && next & 0x80 == 0) || (first == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    (bytes, start)
}

/// Reads `-12.340`, `1e-3`, `5`; not NaN or the infinities.
pub fn parse(text: &str) -> Result<Unscaled, DecimalProblem> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Err(DecimalProblem::NotANumber);
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().map_err(|_| DecimalProblem::Unreadable)?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits = Vec::with_capacity(whole.len() + fraction.len());
    for byte in whole.bytes().chain(fraction.bytes()) {
        if !byte.is_ascii_digit() {
            return Err(DecimalProblem::Unreadable);
        }
        if !(digits.is_empty() && byte == b'0') {
            digits.push(byte - b'0');
        }
    }
    if whole.is_empty() && fraction.is_empty() {
        return Err(DecimalProblem::Unreadable);
    }
    let scale = fraction.len() as i64 - exponent;
    Ok(Unscaled {
        negative: negative && !digits.is_empty(),
        digits,
        scale,
    })
}

impl Unscaled {
    /// The unscaled value at `scale` (the column's), as two's complement bytes.
    pub fn bytes_at_scale(&self, scale: u32) -> Result<Vec<u8>, DecimalProblem> {
        let extra = i64::from(scale) - self.scale;
        let mut digits = self.digits.clone();
        if extra >= 0 {
            if !digits.is_empty() {
                digits.extend(std::iter::repeat_n(0, extra as usize));
            }
        } else {
            // Fewer digits may still do when the ones cut off are zeros (`1.50` at scale 1).
            let cut = (-extra) as usize;
            if digits.len() < cut || digits[digits.len() - cut..].iter().any(|d| *d != 0) {
                return Err(DecimalProblem::ScaleExceeded {
                    needed: self.scale,
                    scale,
                });
            }
            digits.truncate(digits.len() - cut);
        }
        Ok(twos_complement(self.negative, &digits))
    }

    /// The value's own scale without trailing fractional zeros, as Debezium strips them
    /// (`1.50` is 15 at scale 1; never negative: `1e3` is 1000 at scale 0), and its unscaled
    /// bytes, for Debezium's `VariableScaleDecimal`.
    pub fn with_own_scale(&self) -> (u32, Vec<u8>) {
        let zeros = self.digits.iter().rev().take_while(|d| **d == 0).count() as i64;
        let scale = (self.scale - zeros.min(self.scale.max(0))).max(0);
        let bytes = self
            .bytes_at_scale(u32::try_from(scale).unwrap_or(u32::MAX))
            .expect("a value always fits its own scale");
        (scale as u32, bytes)
    }
}

/// Decimal digits (most significant first) to minimal big-endian two's complement.
fn twos_complement(negative: bool, digits: &[u8]) -> Vec<u8> {
    let mut magnitude = magnitude_bytes(digits);
    if negative {
        // -m = !m + 1, over one more byte when m's top bit is set (it would read as negative).
        if magnitude.first().is_some_and(|b| b & 0x80 != 0) {
            magnitude.insert(0, 0);
        }
        let mut carry = true;
        for byte in magnitude.iter_mut().rev() {
            let (sum, overflow) = (!*byte).overflowing_add(u8::from(carry));
            *byte = sum;
            carry = overflow;
        }
        // Drop leading 0xff bytes the sign does not need.
        while magnitude.len() > 1 && magnitude[0] == 0xff && magnitude[1] & 0x80 != 0 {
            magnitude.remove(0);
        }
        magnitude
    } else {
        if magnitude.first().is_none_or(|b| b & 0x80 != 0) {
            magnitude.insert(0, 0);
        }
        magnitude
    }
}

/// The magnitude's bytes, big-endian, without leading zeros (empty for zero).
fn magnitude_bytes(digits: &[u8]) -> Vec<u8> {
    if digits.len() <= 38 {
        let value = digits
            .iter()
            .fold(0u128, |acc, d| acc * 10 + u128::from(*d));
        let bytes = value.to_be_bytes();
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        return bytes[first..].to_vec();
    }
    // Long numerics: base-10 digits to base-256 by repeated division.
    let mut number = digits.to_vec();
    let mut out = Vec::with_capacity(digits.len() / 2 + 1);
    while !number.is_empty() {
        let mut remainder = 0u32;
        let mut quotient = Vec::with_capacity(number.len());
        for digit in &number {
            let current = remainder * 10 + u32::from(*digit);
            let q = (current / 256) as u8;
            remainder = current % 256;
            if !(quotient.is_empty() && q == 0) {
                quotient.push(q);
            }
        }
        out.push(remainder as u8);
        number = quotient;
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, scale: u32) -> Vec<u8> {
        parse(text).unwrap().bytes_at_scale(scale).unwrap()
    }

    #[test]
    fn the_unscaled_value_is_minimal_twos_complement_as_java_writes_it() {
        // BigInteger.valueOf(n).toByteArray() for each unscaled n.
        assert_eq!(at("0", 2), [0x00]);
        assert_eq!(at("0.00", 2), [0x00]);
        assert_eq!(at("1.27", 2), [0x7f]);
        assert_eq!(at("1.28", 2), [0x00, 0x80]);
        assert_eq!(at("-1.28", 2), [0x80]);
        assert_eq!(at("-1.29", 2), [0xff, 0x7f]);
        assert_eq!(at("-0.01", 2), [0xff]);
        assert_eq!(at("19.99", 2), [0x07, 0xcf]);
        assert_eq!(at("-256", 0), [0xff, 0x00]);
        assert_eq!(at("255", 0), [0x00, 0xff]);
        assert_eq!(at("1.5", 3), 1500u16.to_be_bytes());
        assert_eq!(at("1.50", 1), [0x0f]);
        assert_eq!(at("12e-1", 1), [0x0c]);
    }

    #[test]
    fn numbers_beyond_128_bits_convert_exactly() {
        // 2^130 = 1361129467683753853853498429727072845824: bytes 0x04 then 16 zeros.
        let mut expected = vec![0x04];
        expected.extend([0; 16]);
        assert_eq!(at("1361129467683753853853498429727072845824", 0), expected);
        // -(2^135) is 0x80 then 16 zero bytes, the sign bit its top bit.
        let mut negative = vec![0x80];
        negative.extend([0; 16]);
        assert_eq!(
            at("-43556142965880123323311949751266331066368", 0),
            negative
        );
    }

    #[test]
    fn the_small_path_gives_the_general_paths_bytes() {
        for (text, scale) in [
            ("0", 2),
            ("1.27", 2),
            ("1.28", 2),
            ("-1.28", 2),
            ("-1.29", 2),
            ("-0.01", 2),
            ("19.99", 2),
            ("-256", 0),
            ("255", 0),
            ("1.5", 3),
            ("99999999999999999999999999999999999.99", 2),
            ("-99999999999999999999999999999999999.99", 2),
        ] {
            let value = small_unscaled(text, scale).unwrap_or_else(|| panic!("{text}"));
            let (bytes, start) = minimal_bytes(value);
            assert_eq!(
                bytes[start..],
                at(text, scale)[..],
                "{text} at scale {scale}"
            );
        }
        assert_eq!(
            small_unscaled("1.234", 2),
            None,
            "more digits than the scale"
        );
        assert_eq!(small_unscaled("1e3", 0), None, "an exponent");
        assert_eq!(
            small_unscaled("1361129467683753853853498429727072845824", 0),
            None
        );
    }

    #[test]
    fn special_values_and_excess_digits_are_refused() {
        assert_eq!(parse("NaN"), Err(DecimalProblem::NotANumber));
        assert_eq!(parse("-Infinity"), Err(DecimalProblem::NotANumber));
        assert_eq!(parse("1.2.3"), Err(DecimalProblem::Unreadable));
        assert_eq!(
            parse("1.234").unwrap().bytes_at_scale(2),
            Err(DecimalProblem::ScaleExceeded {
                needed: 3,
                scale: 2
            })
        );
    }

    #[test]
    fn a_variable_scale_decimal_keeps_its_own_scale() {
        assert_eq!(parse("-1.50").unwrap().with_own_scale(), (1, vec![0xf1]));
        assert_eq!(
            parse("123.45").unwrap().with_own_scale(),
            (2, vec![0x30, 0x39])
        );
        assert_eq!(parse("100").unwrap().with_own_scale(), (0, vec![0x64]));
        assert_eq!(
            parse("1e3").unwrap().with_own_scale(),
            (0, vec![0x03, 0xe8])
        );
        assert_eq!(parse("0").unwrap().with_own_scale(), (0, vec![0x00]));
    }
}
