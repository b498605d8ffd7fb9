//! A table's shape from its TABLE_MAP event: column names, types, signedness, binary-ness,
//! ENUM/SET labels and the primary key, all from the event's optional metadata
//! (`binlog_row_metadata = FULL`, which the source requires).

use mysql_common::binlog::events::{OptionalMetadataField, TableMapEvent};
use mysql_common::constants::ColumnType;

use crate::envelope::ColumnName;

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
}

#[derive(Debug, Clone)]
pub struct TableShape {
    pub database: String,
    pub table: String,
    pub columns: Vec<ColumnShape>,
    /// Indexes of the primary-key columns.
    pub key: Vec<usize>,
}

/// The shape of `tme`'s table; `Err` names what is missing.
pub fn shape(tme: &TableMapEvent<'_>) -> Result<TableShape, String> {
    let count = tme.columns_count() as usize;
    let mut kinds = Vec::with_capacity(count);
    for i in 0..count {
        let kind = tme
            .get_column_type(i)
            .map_err(|e| format!("column {i}: {e}"))?
            .ok_or_else(|| format!("column {i} has no type"))?;
        kinds.push(kind);
    }
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
        return Err("the binlog has no column names: set binlog_row_metadata = FULL".into());
    }
    let (mut enums, mut sets) = (enum_labels.into_iter(), set_labels.into_iter());
    let columns = (0..count)
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
            decimals: match kinds[i] {
                ColumnType::MYSQL_TYPE_TIME2
                | ColumnType::MYSQL_TYPE_DATETIME2
                | ColumnType::MYSQL_TYPE_TIMESTAMP2 => tme
                    .get_column_metadata(i)
                    .and_then(|meta| meta.first().copied())
                    .unwrap_or(0),
                _ => 0,
            },
        })
        .collect();
    Ok(TableShape {
        database: tme.database_name().into_owned(),
        table: tme.table_name().into_owned(),
        columns,
        key,
    })
}
