//! The type-matrix tests' second look: the same table through the Debezium format (with its
//! Kafka Connect schemas), the DMS format and the Avro format (into Kafka, schemas in the
//! registry), in pipelines beside the JSON one, every column value of every record checked
//! against the shape the README documents for its type; Avro records decoded by apache-avro.
#![allow(dead_code)]

use base64::Engine as _;
use serde_json::Value;

/// The formats beside `json`: (prefix of the pipeline, slot and output, `format` setting).
const FORMATS: [(&str, &str); 2] = [
    ("dbz", "{ kind = \"debezium\", schemas = true }"),
    ("dms", "\"dms\""),
];

/// `config` (one pipeline to a file) with one more pipeline per format, each a copy under
/// names prefixed by the format (pipeline, Postgres slot and publication, output file) and,
/// for MySQL, its own server id; `swap` replaces a table name in the copies' `tables`.
/// Returns the config and the Avro pipeline's topic.
pub fn with_format_pipelines(config: &str, swap: Option<(&str, &str)>) -> (String, String) {
    let mut out = config.to_owned();
    let pipeline = config
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("a pipeline name");
    let topic = format!("avr-{pipeline}-{}", std::process::id());
    for (i, (prefix, format)) in FORMATS.iter().enumerate() {
        let mut copy = String::new();
        for line in config.lines() {
            let line = if let Some(rest) = line.strip_prefix("server_id = ") {
                let id: u32 = rest.trim().parse().expect("a server id");
                // Far from the range other tests' pipelines take (5000 + pid % 1000).
                format!("server_id = {}", id + 1000 * (1 + i as u32))
            } else if line.starts_with("[daemon]") || line.starts_with("state_dir") {
                continue;
            } else if let (Some((from, to)), true) = (swap, line.starts_with("tables = ")) {
                line.replace(from, to)
            } else {
                line.replacen("name = \"", &format!("name = \"{prefix}-"), 1)
                    .replacen("slot = \"", &format!("slot = \"{prefix}_"), 1)
                    .replacen("publication = \"", &format!("publication = \"{prefix}_"), 1)
                    .replacen("path = \"", &format!("path = \"{prefix}-"), 1)
            };
            copy.push_str(&line);
            copy.push('\n');
            if line.starts_with("path = ") {
                copy.push_str(&format!("format = {format}\n"));
            }
        }
        out.push('\n');
        out.push_str(&copy);
    }
    let mut avro = String::new();
    for line in config.lines() {
        if line.starts_with("[daemon]")
            || line.starts_with("state_dir")
            || line.starts_with("path = ")
        {
            continue;
        }
        let line = if let Some(rest) = line.strip_prefix("server_id = ") {
            let id: u32 = rest.trim().parse().expect("a server id");
            format!("server_id = {}", id + 1000 * (1 + FORMATS.len() as u32))
        } else if line == "kind = \"file\"" {
            format!(
                "kind = \"kafka\"\nbrokers = \"{}\"\ncreate_topics = true\ntopic_partitions = 1\ntopic = \"{topic}\"\n\
                 format = {{ kind = \"avro\", registry_url = \"{}\", subject_name_strategy = \"topic_record\" }}",
                super::kafka::brokers(),
                super::avro::registry()
            )
        } else if let (Some((from, to)), true) = (swap, line.starts_with("tables = ")) {
            line.replace(from, to)
        } else {
            line.replacen("name = \"", "name = \"avr-", 1)
                .replacen("slot = \"", "slot = \"avr_", 1)
                .replacen("publication = \"", "publication = \"avr_", 1)
        };
        avro.push_str(&line);
        avro.push('\n');
    }
    out.push('\n');
    out.push_str(&avro);
    (out, topic)
}

/// The Postgres slots (and publications) the format pipelines of pipeline `slot` create.
pub fn format_slots(slot: &str) -> Vec<String> {
    FORMATS
        .iter()
        .map(|(prefix, _)| *prefix)
        .chain(["avr"])
        .map(|prefix| format!("{prefix}_{slot}"))
        .collect()
}

/// The output of the format pipeline `prefix` beside `json_output` (`out/x.jsonl`).
fn output_of(
    json_output: &std::path::Path,
    prefix: &str,
    workspace: &std::path::Path,
) -> std::path::PathBuf {
    let relative = json_output
        .strip_prefix(workspace)
        .expect("inside the workspace");
    workspace.join(format!("{prefix}-{}", relative.display()))
}

/// Waits for `count` records in each format's output, then checks every one: Debezium values
/// against their Connect schema fields, DMS `data` holding every column the JSON event holds,
/// null where it is null. `json_events` are the JSON pipeline's events, in the same order.
pub fn check_format_outputs(
    workspace: &std::path::Path,
    json_output: &std::path::Path,
    json_events: &[Value],
    skipped: &[String],
    avro_topic: &str,
    avro_refuses: Option<&str>,
) {
    let count = json_events.len();
    let debezium_path = output_of(json_output, "dbz", workspace);
    let dms_path = output_of(json_output, "dms", workspace);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while super::read_records(&debezium_path).len() < count
        || super::read_records(&dms_path).len() < count
    {
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(workspace.join("bridge.log")).unwrap_or_default();
            let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
            panic!(
                "the format pipelines wrote fewer than {count} records:\n{}",
                errors.join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let debezium = super::read_records(&debezium_path);
    let dms = super::read_records(&dms_path);
    let mut problems = Vec::new();
    // The pipelines run side by side: a record is matched by its row id and how many records
    // of that id came before it.
    let nth = |records: &[Value], id_of: &dyn Fn(&Value) -> Value, id: &Value, n: usize| {
        records.iter().filter(|r| &id_of(r) == id).nth(n).cloned()
    };
    let json_id = |e: &Value| e["key"]["id"].clone();
    let debezium_id = |r: &Value| {
        let payload = &r["payload"];
        let row = if payload["after"].is_null() {
            &payload["before"]
        } else {
            &payload["after"]
        };
        row["id"].clone()
    };
    let dms_id = |r: &Value| r["data"]["id"].clone();
    for (i, json) in json_events.iter().enumerate() {
        let id = json_id(json);
        let n = json_events[..i].iter().filter(|e| json_id(e) == id).count();
        let (Some(record), Some(dms_record)) = (
            nth(&debezium, &debezium_id, &id, n),
            nth(&dms, &dms_id, &id, n),
        ) else {
            problems.push(format!("no record {n} of id {id} in both formats"));
            continue;
        };
        let record = &record;
        let schema = &record["schema"];
        let payload = &record["payload"];
        for part in ["before", "after"] {
            let (Some(row), Some(fields)) = (json[part].as_object(), field_schema(schema, part))
            else {
                continue;
            };
            let fields = fields["fields"].as_array().expect("a struct's fields");
            for (column, value) in row.iter().filter(|(c, _)| !skipped.contains(c)) {
                let Some(field) = fields.iter().find(|f| f["field"] == column.as_str()) else {
                    problems.push(format!("record {i} {part}.{column}: no schema field"));
                    continue;
                };
                let written = &payload[part][column];
                if value.is_null() != written.is_null() {
                    problems.push(format!(
                        "record {i} {part}.{column}: json {value}, debezium {written}"
                    ));
                }
                if let Err(why) = conforms(written, field) {
                    problems.push(format!(
                        "record {i} {part}.{column} ({}): {why}",
                        field["name"]
                            .as_str()
                            .or(field["type"].as_str())
                            .unwrap_or("?")
                    ));
                }
            }
        }
        let data = &dms_record["data"];
        if let Some(row) = json["after"].as_object().or(json["before"].as_object()) {
            for (column, value) in row.iter().filter(|(c, _)| !skipped.contains(c)) {
                match data.get(column) {
                    None => problems.push(format!("dms record {i}: no {column}")),
                    Some(v) if !dms_shape(value, v) => {
                        problems.push(format!("dms record {i} {column}: json {value}, dms {v}"))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    if let Some(column) = avro_refuses {
        // A value the README documents as beyond Avro (a BIGINT UNSIGNED above 2^63): the
        // Avro pipeline stops on it, naming the column.
        let refused = "the avro format cannot encode";
        let named = format!(": {column}: ");
        super::wait_until(
            std::time::Duration::from_secs(30),
            "the Avro refusal",
            || {
                std::fs::read_to_string(workspace.join("bridge.log"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.contains("ERROR") && l.contains(refused) && l.contains(&named))
            },
        );
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        return;
    }
    let avro = std::panic::catch_unwind(|| check_avro(avro_topic, json_events, skipped));
    problems.extend(avro.unwrap_or_else(|_| {
        let log = std::fs::read_to_string(workspace.join("bridge.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("ERROR"))
            .map(|l| format!("avro pipeline: {l}"))
            .collect()
    }));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every Avro record decodes by its registered schema, and holds every column the JSON event
/// holds, null where it is null.
fn check_avro(topic: &str, json_events: &[Value], skipped: &[String]) -> Vec<String> {
    use apache_avro::types::Value as Avro;
    let records = super::kafka::wait_for_records(topic, json_events.len(), false);
    let decoded: Vec<Avro> = records
        .iter()
        .filter_map(|r| r.raw_value.as_deref())
        .map(|v| super::avro::decode(v).1)
        .collect();
    let row_of = |envelope: &Avro| -> Option<Vec<(String, Avro)>> {
        let after = super::avro::field(envelope, "after");
        let row = if *after == Avro::Null {
            super::avro::field(envelope, "before")
        } else {
            after
        };
        match row {
            Avro::Record(fields) => Some(fields.clone()),
            _ => None,
        }
    };
    let id_of = |row: &[(String, Avro)]| {
        row.iter().find(|(n, _)| n == "id").map(|(_, v)| match v {
            Avro::Union(_, inner) => (**inner).clone(),
            other => other.clone(),
        })
    };
    let mut problems = Vec::new();
    for (i, json) in json_events.iter().enumerate() {
        let id = json["key"]["id"].as_i64().expect("an integer id");
        let n = json_events[..i]
            .iter()
            .filter(|e| e["key"]["id"] == json["key"]["id"])
            .count();
        let found = decoded
            .iter()
            .filter_map(row_of)
            .filter(|row| matches!(id_of(row), Some(Avro::Int(v)) if i64::from(v) == id))
            .nth(n);
        let Some(row) = found else {
            problems.push(format!("avro: no record {n} of id {id}"));
            continue;
        };
        let Some(columns) = json["after"].as_object().or(json["before"].as_object()) else {
            continue;
        };
        for (column, value) in columns.iter().filter(|(c, _)| !skipped.contains(c)) {
            match row.iter().find(|(name, _)| name == column) {
                None => problems.push(format!("avro record of id {id}: no {column}")),
                Some((_, written)) => {
                    let null = matches!(written, Avro::Null)
                        || matches!(written, Avro::Union(_, inner) if **inner == Avro::Null);
                    if null != value.is_null() {
                        problems.push(format!(
                            "avro record of id {id} {column}: json {value}, avro {written:?}"
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// Whether DMS's `written` has the shape the README documents for the JSON format's `value`:
/// null, booleans, numbers and arrays alike; an embedded JSON document as its text; a string
/// as a string, or as a number where it is a decimal's digits.
fn dms_shape(value: &Value, written: &Value) -> bool {
    match (value, written) {
        (Value::Null, Value::Null) | (Value::Bool(_), Value::Bool(_)) => true,
        (Value::Number(_), Value::Number(_)) | (Value::Array(_), Value::Array(_)) => true,
        (Value::String(_), Value::String(_)) => true,
        // Compared as doubles, within their rounding: the test reads JSON numbers as f64.
        (Value::String(digits), Value::Number(n)) => match (digits.parse::<f64>(), n.as_f64()) {
            (Ok(a), Some(b)) => a == b || (a - b).abs() <= a.abs().max(b.abs()) * 1e-12,
            _ => false,
        },
        // An embedded JSON document (of any JSON type), as its text.
        (_, Value::String(text)) => {
            serde_json::from_str::<Value>(text).is_ok_and(|doc| &doc == value)
        }
        _ => false,
    }
}

fn field_schema<'a>(envelope: &'a Value, part: &str) -> Option<&'a Value> {
    envelope["fields"]
        .as_array()?
        .iter()
        .find(|f| f["field"] == part)
}

/// Whether `value` has the shape the README's Debezium table documents for `schema`'s type.
pub fn conforms(value: &Value, schema: &Value) -> Result<(), String> {
    if value.is_null() {
        return if schema["optional"] == true {
            Ok(())
        } else {
            Err("null in a required field".into())
        };
    }
    let name = schema["name"].as_str().unwrap_or("");
    let bytes = |v: &Value| {
        v.as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .ok_or_else(|| format!("{v} is not base64"))
    };
    match schema["type"].as_str().unwrap_or("") {
        "int8" | "int16" | "int32" | "int64" => {
            if !(value.is_i64() || value.is_u64()) {
                return Err(format!("{value} is not an integer"));
            }
            let limit = match schema["type"].as_str() {
                Some("int8") => Some(i8::MAX as i64),
                Some("int16") => Some(i16::MAX as i64),
                Some("int32") => Some(i32::MAX as i64),
                _ => None,
            };
            match (limit, value.as_i64()) {
                (Some(limit), Some(n)) if n > limit || n < -limit - 1 => {
                    Err(format!("{n} overflows {}", schema["type"]))
                }
                _ => Ok(()),
            }
        }
        "float" | "double" => match value {
            Value::Number(_) => Ok(()),
            Value::String(s) if ["NaN", "Infinity", "-Infinity"].contains(&s.as_str()) => Ok(()),
            _ => Err(format!("{value} is not a float")),
        },
        "boolean" => value
            .as_bool()
            .map(drop)
            .ok_or(format!("{value} is not a boolean")),
        "string" => {
            let text = value.as_str().ok_or(format!("{value} is not a string"))?;
            match name {
                // Postgres' infinite timestamps pass as they are, as Debezium passes them.
                "io.debezium.time.ZonedTimestamp" if text == "infinity" || text == "-infinity" => {
                    Ok(())
                }
                "io.debezium.time.ZonedTimestamp" | "io.debezium.time.ZonedTime"
                    if !text.ends_with('Z') =>
                {
                    Err(format!("{text} is not in UTC"))
                }
                "io.debezium.data.Uuid" if text.len() != 36 => Err(format!("{text} is not a UUID")),
                "io.debezium.data.Json" => serde_json::from_str::<Value>(text)
                    .map(drop)
                    .map_err(|e| format!("{text} is not JSON: {e}")),
                _ => Ok(()),
            }
        }
        "bytes" => {
            let decoded = bytes(value)?;
            if name == "org.apache.kafka.connect.data.Decimal" {
                if decoded.is_empty() {
                    return Err("an empty unscaled decimal".into());
                }
                if schema["parameters"]["scale"].as_str().is_none() {
                    return Err("a decimal without its scale".into());
                }
            }
            Ok(())
        }
        "array" => {
            let items = value.as_array().ok_or(format!("{value} is not an array"))?;
            items
                .iter()
                .try_for_each(|item| conforms(item, &schema["items"]))
        }
        "struct" => {
            let object = value
                .as_object()
                .ok_or(format!("{value} is not a struct"))?;
            let fields = schema["fields"]
                .as_array()
                .ok_or("a struct without fields")?;
            for field in fields {
                let name = field["field"].as_str().unwrap_or("");
                conforms(object.get(name).unwrap_or(&Value::Null), field)
                    .map_err(|why| format!("{name}: {why}"))?;
            }
            Ok(())
        }
        other => Err(format!("unknown Connect type {other:?}")),
    }
}
