//! The table schema every event carries, read from real servers: a Postgres table and a
//! MariaDB table with a key, NOT NULL and nullable columns, decimals with precision and scale,
//! timestamps with fractional digits and (Postgres) an array, through the snapshot and the
//! stream; an ALTER TABLE mid-stream gives the following events the new schema. The pipeline
//! runs in-process, so the test reads the events' schemas rather than a format's rendering.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cdc_bridge::checkpoint::CheckpointStore;
use cdc_bridge::config::{BatchConfig, BufferConfig};
use cdc_bridge::envelope::{ChangeEvent, ColumnSchema, ColumnType, Op, TableSchema};
use cdc_bridge::error::BoxError;
use cdc_bridge::pipeline::{self, PipelineSettings};
use cdc_bridge::shutdown::ShutdownTrigger;
use cdc_bridge::sink::{delivered, Batch, Delivery, Sink};
use cdc_bridge::source::Source;
use cdc_bridge::sources::mysql::{MysqlConfig, MysqlSource};
use cdc_bridge::sources::postgres::{PostgresConfig, PostgresSource};
use support::pg::PgFixture;

/// Keeps every event it is given.
struct Recording(Arc<Mutex<Vec<ChangeEvent>>>);

#[async_trait]
impl Sink for Recording {
    async fn submit(&mut self, batch: Arc<Batch>) -> Result<Delivery, BoxError> {
        self.0.lock().unwrap().extend(batch.events.iter().cloned());
        Ok(delivered())
    }
}

/// Runs `source` until `count` events arrived (at most 60 s), then stops it.
async fn run_until(
    name: &str,
    source: Box<dyn Source>,
    count: usize,
    mut write: impl AsyncFnMut(usize),
) -> Vec<ChangeEvent> {
    let settings = PipelineSettings {
        name: name.into(),
        batch: BatchConfig {
            linger_ms: 5,
            ..BatchConfig::default()
        },
        buffer: BufferConfig::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let events = Arc::new(Mutex::new(Vec::new()));
    let trigger = ShutdownTrigger::new();
    let run = tokio::spawn({
        let (store, events, shutdown) = (store.clone(), events.clone(), trigger.subscribe());
        async move {
            pipeline::run(
                &settings,
                source,
                Box::new(Recording(events)),
                store,
                shutdown,
            )
            .await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    loop {
        let now = events.lock().unwrap().len();
        if now >= count {
            break;
        }
        if now > seen {
            seen = now;
            write(now).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline && !run.is_finished(),
            "{now} of {count} events arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    trigger.trigger();
    run.await.unwrap().expect("the pipeline stops cleanly");
    let events = events.lock().unwrap().clone();
    events
}

fn schema_of(event: &ChangeEvent) -> &TableSchema {
    event
        .source
        .table_schema
        .as_deref()
        .unwrap_or_else(|| panic!("no table schema on {:?}", event.op))
}

fn column(name: &str, source_type: &str, kind: ColumnType, nullable: bool) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        source_type: source_type.into(),
        kind,
        nullable,
        key: false,
    }
}

fn int(bits: u8) -> ColumnType {
    ColumnType::Int {
        bits,
        unsigned: false,
    }
}

fn decimal(precision: u32, scale: u32) -> ColumnType {
    ColumnType::Decimal {
        precision: Some(precision),
        scale: Some(scale),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_events_carry_the_declared_columns_and_follow_ddl() {
    let fx = PgFixture::new("schemas_pg").await;
    let t = format!("{}.t", fx.name);
    fx.sql(&format!(
        "CREATE TABLE {t} (id integer PRIMARY KEY, amount numeric(10,2) NOT NULL, \
         label varchar(20), at timestamp(3), tags int4[], note text); \
         INSERT INTO {t} VALUES (1, 1.50, 'a', '2025-01-01 00:00:00.123', '{{1,2}}', 'n')"
    ))
    .await;
    let config: PostgresConfig = toml::from_str(&format!(
        "url = \"{}\"\nslot = \"{n}\"\npublication = \"{n}\"\ntables = [\"{t}\"]\n",
        support::pg::pg_url(),
        n = fx.name
    ))
    .unwrap();
    config.validate("source").unwrap();
    let events = run_until(
        &fx.name,
        Box::new(PostgresSource::new(config)),
        3,
        async |seen| match seen {
            1 => {
                fx.sql(&format!("INSERT INTO {t} (id, amount) VALUES (2, 2)"))
                    .await
            }
            2 => {
                fx.sql(&format!(
                    "ALTER TABLE {t} ADD COLUMN extra bigint NOT NULL DEFAULT 0; \
                     INSERT INTO {t} (id, amount) VALUES (3, 3)"
                ))
                .await
            }
            _ => {}
        },
    )
    .await;
    let ops: Vec<Op> = events.iter().map(|e| e.op).collect();
    assert_eq!(ops, [Op::Snapshot, Op::Insert, Op::Insert]);

    let mut id = column("id", "integer", int(32), false);
    id.key = true;
    let mut expected = TableSchema {
        columns: vec![
            id,
            column("amount", "numeric(10,2)", decimal(10, 2), false),
            column(
                "label",
                "character varying(20)",
                ColumnType::Text { length: Some(20) },
                true,
            ),
            column(
                "at",
                "timestamp(3) without time zone",
                ColumnType::Timestamp { precision: 3 },
                true,
            ),
            column(
                "tags",
                "integer[]",
                ColumnType::Array(Box::new(int(32))),
                true,
            ),
            column("note", "text", ColumnType::Text { length: None }, true),
        ],
    };
    assert_eq!(schema_of(&events[0]), &expected, "the snapshot's schema");
    assert_eq!(schema_of(&events[1]), &expected, "the stream's schema");
    expected
        .columns
        .push(column("extra", "bigint", int(64), false));
    assert_eq!(schema_of(&events[2]), &expected, "after ALTER TABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_events_carry_the_declared_columns_and_follow_ddl() {
    let table = format!("schemas_{}", std::process::id());
    let mut conn = support::mysql::connect().await;
    support::mysql::sql(
        &mut conn,
        &format!(
            "DROP TABLE IF EXISTS app.{table}; \
             CREATE TABLE app.{table} (id INT UNSIGNED PRIMARY KEY, amount DECIMAL(10,2) NOT NULL, \
             at DATETIME(3), size ENUM('small','large'), flags BIT(12), body BLOB); \
             INSERT INTO app.{table} (id, amount) VALUES (1, 1.5)"
        ),
    )
    .await;
    let config: MysqlConfig = toml::from_str(&format!(
        "url = \"{}\"\nserver_id = {}\ntables = [\"app.{table}\"]\nsnapshot = \"initial\"\n",
        support::mysql::url(),
        6000 + std::process::id() % 1000
    ))
    .unwrap();
    let filter = config.validate("source").unwrap();
    let events = run_until(
        &table,
        Box::new(MysqlSource::new(config, filter)),
        3,
        async |seen| match seen {
            1 => {
                support::mysql::sql(
                    &mut conn,
                    &format!("INSERT INTO app.{table} (id, amount) VALUES (2, 2)"),
                )
                .await
            }
            2 => {
                support::mysql::sql(
                    &mut conn,
                    &format!(
                        "ALTER TABLE app.{table} ADD COLUMN extra BIGINT NOT NULL DEFAULT 0; \
                         INSERT INTO app.{table} (id, amount) VALUES (3, 3)"
                    ),
                )
                .await
            }
            _ => {}
        },
    )
    .await;
    let ops: Vec<Op> = events.iter().map(|e| e.op).collect();
    assert_eq!(ops, [Op::Snapshot, Op::Insert, Op::Insert]);

    let mut id = column(
        "id",
        "int unsigned",
        ColumnType::Int {
            bits: 32,
            unsigned: true,
        },
        false,
    );
    id.key = true;
    let labels = vec!["small".to_owned(), "large".to_owned()];
    let mut expected = TableSchema {
        columns: vec![
            id,
            column("amount", "decimal(10,2)", decimal(10, 2), false),
            column(
                "at",
                "datetime(3)",
                ColumnType::Timestamp { precision: 3 },
                true,
            ),
            column(
                "size",
                "enum",
                ColumnType::Enum {
                    labels: labels.into(),
                },
                true,
            ),
            column(
                "flags",
                "bit(12)",
                ColumnType::Bits { length: Some(12) },
                true,
            ),
            column("body", "blob", ColumnType::Bytes { length: None }, true),
        ],
    };
    assert_eq!(schema_of(&events[0]), &expected, "the snapshot's schema");
    assert_eq!(schema_of(&events[1]), &expected, "the stream's schema");
    expected
        .columns
        .push(column("extra", "bigint", int(64), false));
    assert_eq!(schema_of(&events[2]), &expected, "after ALTER TABLE");
    support::mysql::sql(&mut conn, &format!("DROP TABLE app.{table}")).await;
}
