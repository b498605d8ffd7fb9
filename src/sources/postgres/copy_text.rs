//! Rows in the text format of `COPY ... TO STDOUT`, the form a copy reads its chunks in.
//!
//! The server sends each row as one line: its fields in column order, separated by tabs, each
//! the column's text output (what a query in the text format returns), `\N` for NULL, and a
//! backslash before the characters that would otherwise end a field or the line
//! (`\t`, `\n`, `\r`, the backslash itself, and `\b`, `\f`, `\v`). [`CopyRow`] splits a line
//! into its fields and undoes the escapes, reusing its buffers from one row to the next, so a
//! chunk of any length costs no allocation per row once the widest row was read.
//!
//! A line that is not UTF-8 (the connection's client encoding is UTF-8), or that ends in the
//! middle of an escape, is refused with [`PostgresError::Protocol`]: the server never sends one.

use std::ops::Range;

use super::error::PostgresError;

/// One row of a copy, read from its line; the next [`CopyRow::read`] replaces it.
#[derive(Debug, Default)]
pub struct CopyRow {
    /// The fields' text, unescaped, one after another.
    text: String,
    /// Each field's range in `text`, `None` for NULL.
    fields: Vec<Option<Range<usize>>>,
}

impl CopyRow {
    /// Reads `line` (one CopyData message: a row and its newline) into this row.
    pub fn read(&mut self, line: &[u8]) -> Result<(), PostgresError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = std::str::from_utf8(line)
            .map_err(|e| PostgresError::Protocol(format!("a copied row is not UTF-8: {e}")))?;
        self.text.clear();
        self.fields.clear();
        // Fields are short: one vectorized search for the next tab or backslash at a time
        // costs less than looking at each byte.
        let bytes = line.as_bytes();
        let mut start = 0;
        let mut first_escape = None;
        let mut from = 0;
        while let Some(found) = memchr::memchr2(b'\t', b'\\', &bytes[from..]) {
            let at = from + found;
            if bytes[at] == b'\t' {
                self.push(&line[start..at], first_escape.map(|e| e - start))?;
                start = at + 1;
                first_escape = None;
                from = at + 1;
            } else {
                first_escape.get_or_insert(at);
                // An escaped character (a tab too) is part of the field.
                from = (at + 2).min(bytes.len());
            }
        }
        self.push(&line[start..], first_escape.map(|e| e - start))
    }

    /// Adds `field`, whose first backslash is at `first_escape`.
    fn push(&mut self, field: &str, first_escape: Option<usize>) -> Result<(), PostgresError> {
        if field == "\\N" {
            self.fields.push(None);
            return Ok(());
        }
        let start = self.text.len();
        match first_escape {
            None => self.text.push_str(field),
            Some(first) => unescape(field, first, &mut self.text)?,
        }
        self.fields.push(Some(start..self.text.len()));
        Ok(())
    }

    /// The text of field `index`; `None` for NULL or past the last field.
    pub fn get(&self, index: usize) -> Option<&str> {
        self.fields
            .get(index)?
            .as_ref()
            .map(|range| &self.text[range.clone()])
    }
}

/// Appends `field`, whose first backslash is at `first`, to `out` with its escapes undone.
fn unescape(field: &str, first: usize, out: &mut String) -> Result<(), PostgresError> {
    out.push_str(&field[..first]);
    let mut chars = field[first..].chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let escaped = chars.next().ok_or_else(|| {
            PostgresError::Protocol("a copied row ends in the middle of an escape".into())
        })?;
        match escaped {
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            // Octal and hex byte escapes are accepted on input; a server does not send them.
            // Any other character stands for itself.
            other => out.push(other),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &[u8]) -> Vec<Option<String>> {
        let mut row = CopyRow::default();
        row.read(line).unwrap();
        (0..row.fields.len())
            .map(|i| row.get(i).map(str::to_owned))
            .collect()
    }

    #[test]
    fn a_line_splits_at_tabs_with_null_as_backslash_n() {
        assert_eq!(
            fields(b"7\t\\N\trow-7\t\n"),
            vec![
                Some("7".into()),
                None,
                Some("row-7".into()),
                Some(String::new())
            ]
        );
        assert_eq!(fields(b"only\n"), vec![Some("only".into())]);
    }

    #[test]
    fn escapes_become_the_characters_they_stand_for() {
        assert_eq!(
            fields(b"a\\tb\\nc\\\\d\\re\\bf\\fg\\vh\\Ni\tx\\\\N\n"),
            vec![
                Some("a\tb\nc\\d\re\u{8}f\u{c}g\u{b}hNi".into()),
                // An escaped backslash before N is text, not NULL.
                Some("x\\N".into()),
            ]
        );
        assert_eq!(fields("é\\tü\n".as_bytes()), vec![Some("é\tü".into())]);
    }

    #[test]
    fn a_row_read_after_another_holds_only_its_own_fields() {
        let mut row = CopyRow::default();
        row.read(b"1\tlong value with\\ttab\t\\N\n").unwrap();
        row.read(b"2\tb\n").unwrap();
        assert_eq!(
            (row.fields.len(), row.get(0), row.get(1), row.get(2)),
            (2, Some("2"), Some("b"), None)
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_or_ends_inside_an_escape_is_refused() {
        let mut row = CopyRow::default();
        assert!(matches!(
            row.read(b"\xff\n"),
            Err(PostgresError::Protocol(_))
        ));
        assert!(matches!(row.read(b"a\\"), Err(PostgresError::Protocol(_))));
    }
}
