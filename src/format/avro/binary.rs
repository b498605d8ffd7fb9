//! Avro's binary encoding of a Debezium payload, walked along its Connect schema in the order
//! [`super::schema`] gives the Avro schema: optional values as unions (the branch index, then
//! the value), records as their fields in order, arrays as one block and its end, integers as
//! zig-zag varints, floats little-endian, strings and bytes length-prefixed. The payload is
//! the JSON the Debezium format writes, so every value already has Debezium's form (decimals
//! are the base64 of their unscaled bytes, times are numbers or UTC text).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::Value;

use super::schema::null_is_second;
use crate::format::debezium::Schema;

/// Appends `value` as Avro binary of `schema`'s Avro form; an error names the field.
pub fn write(schema: &Schema, value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    let present = !value.is_null();
    if schema.optional {
        let (value_index, null_index) = if null_is_second(schema) {
            (0, 1)
        } else {
            (1, 0)
        };
        if !present {
            write_long(null_index, out);
            return Ok(());
        }
        write_long(value_index, out);
    } else if !present {
        return Err(format!("{}: null in a required field", field_name(schema)));
    }
    let misfit = || {
        format!(
            "{}: a value that is not {}",
            field_name(schema),
            schema.kind
        )
    };
    match schema.kind {
        "boolean" => out.push(u8::from(value.as_bool().ok_or_else(misfit)?)),
        "int8" | "int16" | "int32" | "int64" => {
            let n = value.as_i64().ok_or_else(|| {
                if value.is_u64() {
                    format!(
                        "{}: an unsigned value beyond Avro's long",
                        field_name(schema)
                    )
                } else {
                    misfit()
                }
            })?;
            write_long(n, out);
        }
        "float" => out.extend_from_slice(&(float(value).ok_or_else(misfit)? as f32).to_le_bytes()),
        "double" => out.extend_from_slice(&float(value).ok_or_else(misfit)?.to_le_bytes()),
        "string" => write_bytes(value.as_str().ok_or_else(misfit)?.as_bytes(), out),
        "bytes" => {
            let text = value.as_str().ok_or_else(misfit)?;
            let bytes = BASE64.decode(text).map_err(|_| misfit())?;
            write_bytes(&bytes, out);
        }
        "array" => {
            let items = value.as_array().ok_or_else(misfit)?;
            let item_schema = schema.items.as_deref().ok_or_else(misfit)?;
            if !items.is_empty() {
                write_long(items.len() as i64, out);
                for item in items {
                    write(item_schema, item, out)?;
                }
            }
            write_long(0, out);
        }
        "struct" => {
            let object = value.as_object().ok_or_else(misfit)?;
            for field in &schema.fields {
                let name = field.field.as_deref().unwrap_or("");
                write(field, object.get(name).unwrap_or(&Value::Null), out)?;
            }
        }
        other => return Err(format!("{}: no Avro form for {other}", field_name(schema))),
    }
    Ok(())
}

fn field_name(schema: &Schema) -> &str {
    schema.field.as_deref().unwrap_or("the record")
}

/// A JSON number, or the strings Debezium writes for NaN and the infinities.
fn float(value: &Value) -> Option<f64> {
    match value {
        Value::String(s) if s == "NaN" => Some(f64::NAN),
        Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
        Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
        other => other.as_f64(),
    }
}

/// A zig-zag varint.
pub fn write_long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn write_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    write_long(bytes.len() as i64, out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_are_zig_zag_varints() {
        let encode = |n| {
            let mut out = Vec::new();
            write_long(n, &mut out);
            out
        };
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(-1), [0x01]);
        assert_eq!(encode(1), [0x02]);
        assert_eq!(encode(-64), [0x7f]);
        assert_eq!(encode(64), [0x80, 0x01]);
        assert_eq!(
            encode(i64::MIN),
            [0xff; 9].into_iter().chain([0x01]).collect::<Vec<_>>()
        );
    }
}
