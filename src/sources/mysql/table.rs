//! A table's shape from its TABLE_MAP event: column names, types, signedness, binary-ness,
//! ENUM/SET labels and the primary key, all from the event's optional metadata
//! (`binlog_row_metadata = FULL`). Without column names in the binlog, the types still come
//! from the event and the rest from the server's catalog ([`super::catalog`]).

use std::sync::Arc;

use mysql_common::binlog::events::{OptionalMetadataField, TableMapEvent};
use mysql_common::constants::ColumnType;
use mysql_common::proto::MySerialize;

use super::column_types::{column_schema, Declared};
use crate::envelope::{ColumnName, TableSchema};

/// The binary pseudo-charset: such columns hold bytes, not text.
const BINARY_CHARSET: u16 = 63;

#[derive(Debug, Clone)]
pub struct ColumnShape {
    pub name: ColumnName,
    pub kind: ColumnType,
    pub unsigned: bool,
    pub binary: bool,
    /// ENUM or SET labels, in declaration order.
    pub labels: Vec<String>,
    /// Fractional-second digits of TIME / DATETIME / TIMESTAMP (binlog metadata; 0 otherwise).
    pub decimals: u8,
    /// How text bytes decode (by the column's character set).
    pub text: TextEncoding,
    /// BINARY(n): n. The binlog leaves out trailing zero bytes; they are put back.
    pub fixed_width: Option<usize>,
    /// MariaDB's JSON: a LONGTEXT constrained by a `json_valid` check, whose values are
    /// JSON documents (MySQL's JSON has a type of its own).
    pub json: bool,
}

/// The character sets text is decoded from. Others stay bytes (base64 in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// utf8mb4, utf8mb3, ascii (and anything not listed: bytes if not valid UTF-8).
    Utf8,
    /// MySQL's latin1, which is Windows-1252.
    Latin1,
}

/// latin1 collation ids (latin1_german1_ci, _swedish_ci, _danish_ci, _german2_ci, _bin,
/// _general_ci, _general_cs, _spanish_ci).
const LATIN1_COLLATIONS: [u16; 8] = [5, 8, 15, 31, 47, 48, 49, 94];

fn encoding_of(collation: Option<u16>) -> TextEncoding {
    match collation {
        Some(c) if LATIN1_COLLATIONS.contains(&c) => TextEncoding::Latin1,
        _ => TextEncoding::Utf8,
    }
}

/// The declared width of a BINARY(n) column: MYSQL_TYPE_STRING metadata holds the real type
/// and the byte length, with the length's two high bits folded into the type byte.
fn fixed_width(tme: &TableMapEvent<'_>, i: usize, kind: ColumnType, binary: bool) -> Option<usize> {
    if kind != ColumnType::MYSQL_TYPE_STRING || !binary {
        return None;
    }
    let meta = tme.get_column_metadata(i)?;
    let (&byte0, &byte1) = (meta.first()?, meta.get(1)?);
    let high = if byte0 & 0x30 != 0x30 {
        usize::from((byte0 & 0x30) ^ 0x30) << 4
    } else {
        0
    };
    Some(high | usize::from(byte1))
}

#[derive(Debug, Clone)]
pub struct TableShape {
    pub database: String,
    pub table: String,
    pub columns: Vec<ColumnShape>,
    /// Indexes of the primary-key columns.
    pub key: Vec<usize>,
    /// The table's schema for the envelope, shared by its events.
    pub schema: Arc<TableSchema>,
}

impl TableShape {
    /// Whether a column could be MariaDB's JSON (a text BLOB): only then is it worth asking
    /// the catalog.
    pub fn may_hold_json(&self) -> bool {
        self.columns.iter().any(could_be_json)
    }

    /// Marks `json_columns` (names) as MariaDB JSON, in the columns and the table schema.
    pub fn mark_json(&mut self, json_columns: &[String]) {
        let mut schema = (*self.schema).clone();
        let mut marked = false;
        for (column, declared) in self.columns.iter_mut().zip(&mut schema.columns) {
            if could_be_json(column) && json_columns.iter().any(|j| **j == *column.name) {
                column.json = true;
                declared.kind = crate::envelope::ColumnType::Json;
                declared.source_type = "json".into();
                marked = true;
            }
        }
        if marked {
            self.schema = Arc::new(schema);
        }
    }
}

fn could_be_json(column: &ColumnShape) -> bool {
    column.kind == ColumnType::MYSQL_TYPE_BLOB && !column.binary
}

/// The envelope schema of `columns` as `tme` declares them: NULL-ability from its NULL
/// bitmap, DECIMAL precision and scale and BIT lengths from its column metadata.
fn table_schema(tme: &TableMapEvent<'_>, columns: &[ColumnShape], key: &[usize]) -> TableSchema {
    let nulls = tme.null_bitmask();
    let columns = columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let meta = tme.get_column_metadata(i).unwrap_or_default();
            let declared = Declared {
                nullable: nulls.get(i).is_none_or(|bit| *bit),
                precision_scale: match (column.kind, meta) {
                    (ColumnType::MYSQL_TYPE_NEWDECIMAL, &[precision, scale, ..]) => {
                        Some((u32::from(precision), u32::from(scale)))
                    }
                    _ => None,
                },
                // MySQL writes a BIT(n) column's n % 8, then n / 8.
                bits: match (column.kind, meta) {
                    (ColumnType::MYSQL_TYPE_BIT, &[bits, bytes, ..]) => {
                        Some(u32::from(bytes) * 8 + u32::from(bits))
                    }
                    _ => None,
                },
            };
            column_schema(column, declared, key.contains(&i))
        })
        .collect();
    TableSchema { columns }
}

/// A column as the catalog (information_schema) describes it now.
#[derive(Debug, Clone)]
pub struct CatalogColumn {
    pub name: String,
    pub unsigned: bool,
    pub binary: bool,
    pub latin1: bool,
    pub labels: Vec<String>,
    /// A `json_valid` check constrains it (MariaDB's JSON).
    pub json: bool,
}

/// The binlog types of `tme`'s columns. Each column's metadata must be as long as MySQL
/// writes it for the type (the row reader indexes it unchecked), and a DECIMAL's must be one
/// MySQL writes (precision 1-65, scale 0-30 and at most the precision): the row reader sizes
/// its buffer from it, and a scale over the precision makes that size overflow.
fn kinds(tme: &TableMapEvent<'_>) -> Result<Vec<ColumnType>, String> {
    (0..tme.columns_count() as usize)
        .map(|i| {
            let kind = tme
                .get_column_type(i)
                .map_err(|e| format!("column {i}: {e}"))?
                .ok_or_else(|| format!("column {i} has no type"))?;
            let meta = tme.get_column_metadata(i).unwrap_or_default();
            let needed = match kind {
                // An array of another type: its type byte, then that type's metadata.
                ColumnType::MYSQL_TYPE_TYPED_ARRAY => meta
                    .first()
                    .and_then(|&t| ColumnType::try_from(t).ok())
                    .map_or(1, |inner| metadata_len(inner).max(1)),
                kind => metadata_len(kind),
            };
            if meta.len() < needed {
                return Err(format!(
                    "column {i}: {kind:?} with {} metadata bytes, not {needed}",
                    meta.len()
                ));
            }
            if kind == ColumnType::MYSQL_TYPE_NEWDECIMAL {
                let valid = matches!(meta, &[precision, scale, ..]
                    if (1..=65).contains(&precision) && scale <= 30 && scale <= precision);
                if !valid {
                    return Err(format!("column {i}: malformed DECIMAL metadata {meta:?}"));
                }
            }
            Ok(kind)
        })
        .collect()
}

/// How many metadata bytes MySQL writes for a column of `kind` in a TABLE_MAP.
fn metadata_len(kind: ColumnType) -> usize {
    use ColumnType::*;
    match kind {
        MYSQL_TYPE_FLOAT
        | MYSQL_TYPE_DOUBLE
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_GEOMETRY
        | MYSQL_TYPE_JSON
        | MYSQL_TYPE_TIME2
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIMESTAMP2 => 1,
        MYSQL_TYPE_STRING
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_BIT
        | MYSQL_TYPE_NEWDECIMAL
        | MYSQL_TYPE_ENUM
        | MYSQL_TYPE_SET => 2,
        _ => 0,
    }
}

/// Fractional-second digits of a TIME / DATETIME / TIMESTAMP column (0 for other types).
fn decimals(tme: &TableMapEvent<'_>, i: usize, kind: ColumnType) -> u8 {
    match kind {
        ColumnType::MYSQL_TYPE_TIME2
        | ColumnType::MYSQL_TYPE_DATETIME2
        | ColumnType::MYSQL_TYPE_TIMESTAMP2 => tme
            .get_column_metadata(i)
            .and_then(|meta| meta.first().copied())
            .unwrap_or(0),
        _ => 0,
    }
}

/// The shape of `tme`'s table from the event's types and the catalog's columns (in order)
/// and primary key (column indexes). The catalog describes the table as it is now: when its
/// columns no longer fit the event (a schema change lies ahead in the binlog), that is the
/// error.
pub fn shape_from_catalog(
    tme: &TableMapEvent<'_>,
    catalog: &[CatalogColumn],
    key: &[usize],
) -> Result<TableShape, String> {
    let kinds = kinds(tme)?;
    let mismatch = |what: String| {
        format!("{what}: the table changed since this event (binlog_row_metadata is not FULL, so its shape is read from information_schema); set binlog_row_metadata = FULL")
    };
    if catalog.len() != kinds.len() {
        return Err(mismatch(format!(
            "the event has {} columns, the table now {}",
            kinds.len(),
            catalog.len()
        )));
    }
    let mut columns = Vec::with_capacity(kinds.len());
    for (i, (kind, column)) in kinds.iter().zip(catalog).enumerate() {
        let labelled = matches!(
            kind,
            ColumnType::MYSQL_TYPE_ENUM | ColumnType::MYSQL_TYPE_SET
        );
        if labelled == column.labels.is_empty() {
            return Err(mismatch(format!(
                "column {} is {kind:?} in the event",
                column.name
            )));
        }
        columns.push(ColumnShape {
            name: column.name.as_str().into(),
            kind: *kind,
            unsigned: column.unsigned,
            binary: column.binary,
            labels: column.labels.clone(),
            decimals: decimals(tme, i, *kind),
            text: if column.latin1 {
                TextEncoding::Latin1
            } else {
                TextEncoding::Utf8
            },
            fixed_width: fixed_width(tme, i, *kind, column.binary),
            json: column.json,
        });
    }
    Ok(TableShape {
        database: tme.database_name().into_owned(),
        table: tme.table_name().into_owned(),
        schema: Arc::new(table_schema(tme, &columns, key)),
        columns,
        key: key.to_vec(),
    })
}

/// The shape of `tme`'s table from its metadata; `None` when the binlog carries no column
/// names (binlog_row_metadata is not FULL); `Err` when the metadata cannot be read.
pub fn shape(tme: &TableMapEvent<'_>) -> Result<Option<TableShape>, String> {
    let kinds = kinds(tme)?;
    let count = kinds.len();
    let mut names: Vec<String> = Vec::new();
    let mut unsigned = vec![false; count];
    let mut charsets: Vec<Option<u16>> = vec![None; count];
    let mut enum_labels: Vec<Vec<String>> = Vec::new();
    let mut set_labels: Vec<Vec<String>> = Vec::new();
    let mut key = Vec::new();
    let character: Vec<usize> = (0..count)
        .filter(|&i| kinds[i].is_character_type())
        .collect();
    for field in tme.iter_optional_meta() {
        match field.map_err(|e| format!("optional metadata: {e}"))? {
            OptionalMetadataField::ColumnName(columns) => {
                for name in columns.iter_names() {
                    names.push(name.map_err(|e| e.to_string())?.name().into_owned());
                }
            }
            OptionalMetadataField::Signedness(bits) => {
                let numeric = (0..count).filter(|&i| kinds[i].is_numeric_type());
                for (bit, i) in bits.iter().zip(numeric) {
                    unsigned[i] = *bit;
                }
            }
            OptionalMetadataField::DefaultCharset(default) => {
                for &i in &character {
                    charsets[i] = Some(default.default_charset());
                }
                for non_default in default.iter_non_default() {
                    let non_default = non_default.map_err(|e| e.to_string())?;
                    if let Some(&i) = character.get(non_default.column_index() as usize) {
                        charsets[i] = Some(non_default.charset());
                    }
                }
            }
            OptionalMetadataField::ColumnCharset(list) => {
                for (charset, &i) in list.iter_charsets().zip(&character) {
                    charsets[i] = Some(charset.map_err(|e| e.to_string())?);
                }
            }
            OptionalMetadataField::EnumStrValue(values) => {
                check_label_lists(&values, "ENUM")?;
                for labels in values.iter_values() {
                    let labels = labels.map_err(|e| e.to_string())?;
                    enum_labels.push(
                        labels
                            .values()
                            .iter()
                            .map(|v| v.value().into_owned())
                            .collect(),
                    );
                }
            }
            OptionalMetadataField::SetStrValue(values) => {
                check_label_lists(&values, "SET")?;
                for labels in values.iter_values() {
                    let labels = labels.map_err(|e| e.to_string())?;
                    set_labels.push(
                        labels
                            .values()
                            .iter()
                            .map(|v| v.value().into_owned())
                            .collect(),
                    );
                }
            }
            OptionalMetadataField::SimplePrimaryKey(pk) => {
                for index in pk.iter_indexes() {
                    key.push(index.map_err(|e| e.to_string())? as usize);
                }
            }
            OptionalMetadataField::PrimaryKeyWithPrefix(pk) => {
                for entry in pk.iter_keys() {
                    key.push(entry.map_err(|e| e.to_string())?.column_index() as usize);
                }
            }
            _ => {}
        }
    }
    if names.len() != count {
        return Ok(None);
    }
    let (mut enums, mut sets) = (enum_labels.into_iter(), set_labels.into_iter());
    let columns: Vec<ColumnShape> = (0..count)
        .map(|i| ColumnShape {
            name: names[i].as_str().into(),
            kind: kinds[i],
            unsigned: unsigned[i],
            binary: charsets[i] == Some(BINARY_CHARSET),
            labels: match kinds[i] {
                ColumnType::MYSQL_TYPE_ENUM => enums.next().unwrap_or_default(),
                ColumnType::MYSQL_TYPE_SET => sets.next().unwrap_or_default(),
                _ => Vec::new(),
            },
            decimals: decimals(tme, i, kinds[i]),
            text: encoding_of(charsets[i]),
            fixed_width: fixed_width(tme, i, kinds[i], charsets[i] == Some(BINARY_CHARSET)),
            json: false,
        })
        .collect();
    Ok(Some(TableShape {
        database: tme.database_name().into_owned(),
        table: tme.table_name().into_owned(),
        schema: Arc::new(table_schema(tme, &columns, &key)),
        columns,
        key,
    }))
}

/// Checks the ENUM or SET label lists of a TABLE_MAP (per column: a count, then that many
/// length-prefixed labels) before the library reads them: it reserves room for the count
/// first, so a damaged count aborted the process on a huge allocation (found by the
/// mysql_binlog fuzz target). Every count and length must fit in the bytes that follow.
fn check_label_lists(field: &impl MySerialize, kind: &str) -> Result<(), String> {
    let mut raw = Vec::new();
    field.serialize(&mut raw);
    if label_lists_fit(&raw) {
        Ok(())
    } else {
        Err(format!("optional metadata: damaged {kind} labels"))
    }
}

fn label_lists_fit(mut rest: &[u8]) -> bool {
    while !rest.is_empty() {
        let Some(count) = take_lenenc(&mut rest) else {
            return false;
        };
        // Each label takes at least its one-byte length.
        if count > rest.len() as u64 {
            return false;
        }
        for _ in 0..count {
            let len = take_lenenc(&mut rest).and_then(|len| usize::try_from(len).ok());
            match len {
                Some(len) if len <= rest.len() => rest = &rest[len..],
                _ => return false,
            }
        }
    }
    true
}

/// Takes a length-encoded integer off the front of `bytes`; `None` when it is cut short or
/// is not one (0xfb, 0xff).
fn take_lenenc(bytes: &mut &[u8]) -> Option<u64> {
    let (&first, rest) = bytes.split_first()?;
    let width = match first {
        0..=0xfa => {
            *bytes = rest;
            return Some(u64::from(first));
        }
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let digits = rest.get(..width)?;
    *bytes = &rest[width..];
    Some(
        digits
            .iter()
            .rev()
            .fold(0, |value, &b| value << 8 | u64::from(b)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_lists_that_fit_are_accepted() {
        // Two columns: ("a", "bc") and ().
        assert!(label_lists_fit(&[2, 1, b'a', 2, b'b', b'c', 0]));
        assert!(label_lists_fit(&[]));
        // A 2-byte count (0xfc) of 1.
        assert!(label_lists_fit(&[0xfc, 1, 0, 1, b'x']));
    }

    #[test]
    fn damaged_label_lists_are_refused() {
        // A count of 2^56 with nothing behind it: the library reserved room for it and aborted.
        assert!(!label_lists_fit(&[0xfe, 0, 0, 0, 0, 0, 0, 0, 1]));
        // A label longer than what is left, a cut-off count, and a byte that is no length.
        assert!(!label_lists_fit(&[1, 5, b'a']));
        assert!(!label_lists_fit(&[0xfd, 1]));
        assert!(!label_lists_fit(&[1, 0xff]));
    }
}
