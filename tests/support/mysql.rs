//! MariaDB helpers: the URL of the test server, a connection to run SQL with, and a
//! pipeline from one table to a JSON-lines file.
#![allow(dead_code)]

use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::{wait_until, Workspace};

/// A pipeline `name` from `app.table` to `out.jsonl`; `extra` adds source settings
/// (`snapshot = "never"` unless it sets `snapshot`). Returns the config path.
pub fn pipeline(ws: &Workspace, name: &str, table: &str, extra: &str) -> String {
    let snapshot = if extra.contains("snapshot =") {
        ""
    } else {
        "snapshot = \"never\"\n"
    };
    ws.config(&format!(
        "[[pipeline]]\nname = \"{name}\"\n[pipeline.source]\nkind = \"mysql\"\nurl = \"{}\"\nserver_id = {}\ntables = [\"app.{table}\"]\n{snapshot}{extra}\n\
         [pipeline.sink]\nkind = \"file\"\npath = \"out.jsonl\"\n[pipeline.batch]\nlinger_ms = 5\n",
        url(),
        5000 + std::process::id() % 1000
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
