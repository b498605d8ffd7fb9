//! Percent-encoding of a URL component (RFC 3986): every byte but the unreserved characters
//! (letters, digits, `-`, `_`, `.`, `~`) as `%XX`. Used for SigV4 query strings (MSK IAM) and
//! for schema registry subjects in URL paths.

/// `value` with every byte outside RFC 3986's unreserved set percent-encoded.
pub fn encode(value: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_unreserved_characters_stay() {
        assert_eq!(super::encode("a.b-c_d~e/f g=h"), "a.b-c_d~e%2Ff%20g%3Dh");
        assert_eq!(super::encode("é"), "%C3%A9");
    }
}
