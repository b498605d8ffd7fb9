//! The text form of PostgreSQL arrays: `{1,2,NULL}`, `{"a b","c\"d"}`, `{{1,2},{3,4}}`, and
//! arrays with explicit bounds (`[0:1]={1,2}`, bounds dropped). Elements are handed to a
//! decoder; unquoted `NULL` is a null. PostgreSQL arrays have at most 6 dimensions: deeper
//! nesting is malformed (and would otherwise recurse without bound).

use crate::envelope::Value;

/// PostgreSQL's MAXDIM.
const MAX_DIMENSIONS: usize = 6;

/// Parses an array literal; `None` if it is malformed.
pub fn parse(text: &str, delimiter: u8, element: &dyn Fn(&str) -> Value) -> Option<Value> {
    let body = if text.starts_with('[') {
        &text[text.find('=')? + 1..]
    } else {
        text
    };
    let mut parser = Parser {
        bytes: body.as_bytes(),
        text: body,
        pos: 0,
        delimiter,
    };
    let value = parser.level(element, 1)?;
    parser.skip_ws();
    (parser.pos == parser.bytes.len()).then_some(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    delimiter: u8,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self
            .bytes
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_ws();
        (self.bytes.get(self.pos) == Some(&byte)).then(|| self.pos += 1)
    }

    fn level(&mut self, element: &dyn Fn(&str) -> Value, depth: usize) -> Option<Value> {
        if depth > MAX_DIMENSIONS {
            return None;
        }
        self.eat(b'{')?;
        let mut items = Vec::new();
        if self.eat(b'}').is_some() {
            return Some(Value::Array(items));
        }
        loop {
            self.skip_ws();
            let item = match self.bytes.get(self.pos)? {
                b'{' => self.level(element, depth + 1)?,
                b'"' => element(&self.quoted()?),
                _ => {
                    let start = self.pos;
                    while !matches!(self.bytes.get(self.pos), Some(&b) if b == self.delimiter || b == b'}')
                    {
                        self.bytes.get(self.pos)?;
                        self.pos += 1;
                    }
                    // A non-ASCII delimiter byte may stop inside a character: malformed.
                    let raw = self.text.get(start..self.pos)?.trim();
                    if raw.eq_ignore_ascii_case("NULL") {
                        Value::Null
                    } else {
                        element(raw)
                    }
                }
            };
            items.push(item);
            self.skip_ws();
            match *self.bytes.get(self.pos)? {
                b'}' => {
                    self.pos += 1;
                    return Some(Value::Array(items));
                }
                b if b == self.delimiter => self.pos += 1,
                _ => return None,
            }
        }
    }

    fn quoted(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match *self.bytes.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return String::from_utf8(out).ok();
                }
                b'\\' => {
                    out.push(*self.bytes.get(self.pos + 1)?);
                    self.pos += 2;
                }
                b => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    fn int(s: &str) -> Value {
        Value::Int(s.parse().unwrap())
    }

    #[test]
    fn flat_nested_quoted_null_and_bounds() {
        assert_eq!(
            parse("{1,2,NULL}", b',', &int),
            Some(Value::Array(vec![
                Value::Int(1),
                Value::Int(2),
                Value::Null
            ]))
        );
        assert_eq!(parse("{}", b',', &int), Some(Value::Array(vec![])));
        assert_eq!(
            parse(r#"{"a b","c\"d","NULL",x}"#, b',', &text),
            Some(Value::Array(vec![
                text("a b"),
                text("c\"d"),
                text("NULL"),
                text("x")
            ]))
        );
        let nested = parse("{{1,2},{3,4}}", b',', &int).unwrap();
        assert_eq!(
            nested,
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![Value::Int(3), Value::Int(4)])
            ])
        );
        assert_eq!(
            parse("[0:1]={7,8}", b',', &int),
            Some(Value::Array(vec![Value::Int(7), Value::Int(8)]))
        );
        assert_eq!(
            parse("{(0,0),(1,1);(2,2),(3,3)}", b';', &text),
            Some(Value::Array(vec![text("(0,0),(1,1)"), text("(2,2),(3,3)")]))
        );
    }

    #[test]
    fn malformed_literals_are_none() {
        for bad in ["{1,2", "1,2}", "{1,,", "{\"abc}", "{1}x"] {
            assert_eq!(parse(bad, b',', &text), None, "{bad}");
        }
    }

    #[test]
    fn nesting_beyond_postgres_dimensions_is_none() {
        let deep = format!("{}1{}", "{".repeat(100_000), "}".repeat(100_000));
        assert_eq!(parse(&deep, b',', &int), None);
        let six = format!("{}1{}", "{".repeat(6), "}".repeat(6));
        assert!(parse(&six, b',', &int).is_some());
        let seven = format!("{}1{}", "{".repeat(7), "}".repeat(7));
        assert_eq!(parse(&seven, b',', &int), None);
    }

    #[test]
    fn a_delimiter_inside_a_character_is_none() {
        // 0xA9 is the second byte of "é": splitting there would cut the character.
        assert_eq!(parse("{é}", 0xA9, &text), None);
    }
}
