//! MariaDB helpers: the URL of the test server, a connection to run SQL with, and a
//! pipeline from one table to a JSON-lines file.
#![allow(dead_code)]

use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::{wait_until, Workspace};

/// A pipeline `name` from `app.table` of the test server to `out.jsonl`; `extra` adds source
/// settings (`snapshot = "never"` unless it sets `snapshot`). Returns the config path.
pub fn pipeline(ws: &Workspace, name: &str, table: &str, extra: &str) -> String {
    pipeline_at(&url(), ws, name, table, extra)
}

/// [`pipeline`] from the server at `url`.
pub fn pipeline_at(url: &str, ws: &Workspace, name: &str, table: &str, extra: &str) -> String {
    pipeline_of(url, ws, name, &[table], extra)
}

/// [`pipeline`] from the server at `url`, of several tables of `app`.
pub fn pipeline_of(url: &str, ws: &Workspace, name: &str, tables: &[&str], extra: &str) -> String {
    let snapshot = if extra.contains("snapshot =") {
        ""
    } else {
        "snapshot = \"never\"\n"
    };
    let tables: Vec<String> = tables.iter().map(|t| format!("\"app.{t}\"")).collect();
    ws.config(&format!(
        "[[pipeline]]\nname = \"{name}\"\n[pipeline.source]\nkind = \"mysql\"\nurl = \"{url}\"\nserver_id = {}\ntables = [{}]\n{snapshot}{extra}\n\
         [pipeline.sink]\nkind = \"file\"\npath = \"out.jsonl\"\n[pipeline.batch]\nlinger_ms = 5\n",
        5000 + std::process::id() % 1000,
        tables.join(", ")
    ))
    .to_str()
    .unwrap()
    .to_owned()
}

/// Starts the bridge and waits until it streams from the binlog.
pub fn start_streaming(ws: &Workspace, config: &str) -> std::process::Child {
    let child = ws.spawn(&["run", "--config", config]);
    wait_until(
        Duration::from_secs(30),
        "the bridge to start streaming",
        || {
            std::fs::read_to_string(ws.path("bridge.log"))
                .unwrap_or_default()
                .contains("streaming the binlog")
        },
    );
    child
}

pub fn url() -> String {
    std::env::var("CDC_BRIDGE_MYSQL_URL")
        .expect("CDC_BRIDGE_MYSQL_URL is not set: run the tests with scripts/test.sh")
}

pub async fn connect() -> mysql_async::Conn {
    mysql_async::Conn::new(mysql_async::Opts::from_url(&url()).unwrap())
        .await
        .expect("connect to MariaDB")
}

pub async fn sql(conn: &mut mysql_async::Conn, statements: &str) {
    conn.query_drop(statements)
        .await
        .unwrap_or_else(|e| panic!("{statements}: {e}"));
}

/// The flow of the MySQL type-family tests, through both paths with the same values.
///
/// Creates `app.<family>_<pid>` with `id INT PRIMARY KEY` and `columns` (DDL), inserts `rows`
/// (each: its values after the id as SQL, and the `after` columns it must produce, without the
/// id) as ids 1.. plus an all-NULL row, and starts a pipeline with `snapshot = "initial"`: they
/// arrive as `snapshot` events. While it streams, the same rows are inserted again as ids
/// 101.. (`insert` events); then one transaction updates 101 to the second row's values and
/// deletes 1. Checks every `after` and `before` against the expected objects (plus the id),
/// each snapshot row against its streamed copy, keys, ops, their order and the source fields,
/// and fails listing every difference. `session` runs on the writing connection first (its
/// time zone is already UTC), e.g. `SET SESSION sql_mode = ''`.
pub async fn type_round_trip(
    family: &str,
    session: &str,
    columns: &str,
    rows: &[(&str, serde_json::Value)],
) {
    type_round_trip_with(family, session, columns, rows, None).await;
}

/// [`type_round_trip`], where the Avro format must refuse column `avro_refuses` (a value the
/// README documents as beyond Avro).
pub async fn type_round_trip_with(
    family: &str,
    session: &str,
    columns: &str,
    rows: &[(&str, serde_json::Value)],
    avro_refuses: Option<&str>,
) {
    use serde_json::{json, Value};
    let table = format!("{family}_{}", std::process::id());
    let mut conn = connect().await;
    sql(&mut conn, "SET SESSION time_zone = '+00:00'").await;
    if !session.is_empty() {
        sql(&mut conn, session).await;
    }
    sql(
        &mut conn,
        &format!("CREATE TABLE {table} (id INT PRIMARY KEY, {columns})"),
    )
    .await;
    let names: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'app' \
             AND TABLE_NAME = ? AND COLUMN_NAME <> 'id' ORDER BY ORDINAL_POSITION",
            (table.as_str(),),
        )
        .await
        .expect("column names");
    let nulls = vec!["NULL"; names.len()].join(", ");
    let null_row: Value = names.iter().map(|n| (n.clone(), Value::Null)).collect();
    let mut all: Vec<(&str, Value)> = rows.iter().map(|(v, e)| (*v, e.clone())).collect();
    all.push((&nulls, null_row));
    let with_id = |expected: &Value, id: i64| {
        let mut object = expected.clone();
        object
            .as_object_mut()
            .expect("expected values are a JSON object")
            .insert("id".into(), json!(id));
        object
    };
    let insert = |first_id: usize| -> String {
        all.iter()
            .enumerate()
            .map(|(i, (values, _))| {
                format!("INSERT INTO {table} VALUES ({}, {values});", first_id + i)
            })
            .collect()
    };
    sql(&mut conn, &insert(1)).await;

    let ws = Workspace::new();
    let config = pipeline(
        &ws,
        &format!("mysql-{family}"),
        &table,
        "snapshot = \"initial\"",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let (formats, avro_topic) = super::formats::with_format_pipelines(&text, None);
    std::fs::write(&config, formats).unwrap();
    let child = start_streaming(&ws, &config);
    let n = all.len();
    let count = || super::read_records(&ws.path("out.jsonl")).len();
    wait_until(Duration::from_secs(30), "the snapshot rows", || {
        count() >= n
    });
    sql(&mut conn, &insert(101)).await;
    let copy: Vec<String> = names.iter().map(|c| format!("d.{c} = s.{c}")).collect();
    sql(
        &mut conn,
        &format!(
            "START TRANSACTION; UPDATE {table} AS d JOIN {table} AS s ON s.id = 2 SET {} WHERE d.id = 101; \
             DELETE FROM {table} WHERE id = 1; COMMIT",
            copy.join(", ")
        ),
    )
    .await;
    wait_until(Duration::from_secs(30), "every event", || {
        count() >= 2 * n + 2
    });
    std::thread::sleep(Duration::from_millis(200));
    let written = super::read_records(&ws.path("out.jsonl"));
    super::formats::check_format_outputs(
        ws.dir.path(),
        &ws.path("out.jsonl"),
        &written,
        &[],
        &avro_topic,
        avro_refuses,
    );
    super::terminate(&child);
    let mut child = child;
    let status = child.wait().unwrap();
    // A pipeline stopped on a refused value makes the daemon's exit status an error.
    assert!(
        status.success() || avro_refuses.is_some(),
        "{}",
        ws.log_tail()
    );
    sql(&mut conn, &format!("DROP TABLE {table}")).await;

    let events = super::read_records(&ws.path("out.jsonl"));
    let mut diffs = Vec::new();
    let mut check = |what: String, actual: &Value, expected: &Value| {
        if actual == expected {
            return;
        }
        match (actual.as_object(), expected.as_object()) {
            (Some(a), Some(e)) => {
                let mut keys: Vec<&String> = a.keys().chain(e.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let (a, e) = (a.get(k), e.get(k));
                    let show = |v: Option<&Value>| {
                        let text = v.map_or("(missing)".into(), Value::to_string);
                        match text.char_indices().nth(100) {
                            Some((cut, _)) => format!("{}... ({} chars)", &text[..cut], text.len()),
                            None => text,
                        }
                    };
                    if a != e {
                        diffs.push(format!(
                            "{what} column {k}: got {}, expected {}",
                            show(a),
                            show(e)
                        ));
                    }
                }
            }
            _ => diffs.push(format!("{what}: got {actual}, expected {expected}")),
        }
    };
    let ops: Vec<&str> = events
        .iter()
        .map(|e| e["op"].as_str().unwrap_or("?"))
        .collect();
    let mut expected_ops = vec!["snapshot"; n];
    expected_ops.extend(vec!["insert"; n]);
    expected_ops.extend(["update", "delete"]);
    assert_eq!(ops, expected_ops, "{events:#?}");
    let id_of = |e: &Value| {
        e["key"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no key: {e}"))
    };
    let mut snapshot_ids: Vec<i64> = events[..n].iter().map(id_of).collect();
    snapshot_ids.sort();
    assert_eq!(snapshot_ids, (1..=n as i64).collect::<Vec<_>>());
    let streamed_ids: Vec<i64> = events[n..2 * n].iter().map(id_of).collect();
    assert_eq!(streamed_ids, (101..101 + n as i64).collect::<Vec<_>>());
    for event in &events {
        let id = id_of(event);
        assert_eq!(event["key"], json!({ "id": id }), "{event}");
        let source = &event["source"];
        assert_eq!(source["connector"], "mysql", "{event}");
        assert_eq!(source["database"], "app", "{event}");
        assert_eq!(source["table"], table.as_str(), "{event}");
        assert_eq!(source["snapshot"], event["op"] == "snapshot", "{event}");
        let position = source["position"].as_str().unwrap_or_default();
        assert!(
            position.starts_with("binlog.") && position.contains(':'),
            "{event}"
        );
        if matches!(event["op"].as_str(), Some("snapshot" | "insert")) {
            assert_eq!(event["before"], Value::Null, "{event}");
            let row = (id as usize - 1) % 100;
            let literal: String = all[row].0.chars().take(100).collect();
            check(
                format!("{} id {id} of ({literal}),", event["op"]),
                &event["after"],
                &with_id(&all[row].1, id),
            );
        }
    }
    for snapshot in &events[..n] {
        let id = id_of(snapshot);
        let streamed = &events[n + id as usize - 1];
        let without_id = |after: &Value| {
            let mut after = after.clone();
            after.as_object_mut().map(|o| o.remove("id"));
            after
        };
        check(
            format!(
                "streamed id {} against snapshot id {id} (expected: the snapshot's)",
                id_of(streamed)
            ),
            &without_id(&streamed["after"]),
            &without_id(&snapshot["after"]),
        );
    }
    let (update, delete) = (&events[2 * n], &events[2 * n + 1]);
    assert_eq!(update["key"], json!({"id": 101}));
    check(
        "update before, id 101,".into(),
        &update["before"],
        &with_id(&all[0].1, 101),
    );
    check(
        "update after, id 101,".into(),
        &update["after"],
        &with_id(&all[1].1, 101),
    );
    assert_eq!(delete["key"], json!({"id": 1}));
    check(
        "delete before, id 1,".into(),
        &delete["before"],
        &with_id(&all[0].1, 1),
    );
    check("delete after, id 1,".into(), &delete["after"], &Value::Null);
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
