//! The `generator` source: synthetic, deterministic changes for demos, tests and benchmarks.
//!
//! Row `seq` (1, 2, 3, ...) belongs to key `id = (seq - 1) % keys + 1`. Each key cycles
//! through insert, update, delete (then insert again), so every operation and per-key ordering
//! can be checked downstream; `before` is the key's previous row. Every value follows from
//! `seq` alone, so a resumed run produces exactly the rows a run without restart would have.
//! The position is `seq`; each row is followed by its checkpoint mark.
//!
//! Errors: a stored position that is not a sequence number is fatal (the checkpoint belongs to
//! a different source; reset it).

mod config;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;

pub use config::GeneratorConfig;

use crate::checkpoint::Position;
use crate::envelope::{
    now_ms, ChangeEvent, ColumnName, ColumnSchema, ColumnType, Decimal, Op, Row, SourceInfo,
    SourceKind, SourcePosition, TableSchema, Value,
};
use crate::error::{BoxError, ConnectorError, Disposition};
use crate::source::{Mark, Source, SourceContext};

/// The generator's single partition.
const PARTITION: &str = "";
/// Commit timestamps of generated rows start here (2025-01-01T00:00:00Z) and advance 1 ms per row.
const EPOCH_MS: i64 = 1_735_689_600_000;

#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    #[error("stored position {0:?} is not a generator sequence number; reset this pipeline's checkpoints")]
    BadPosition(String),
}

impl ConnectorError for GeneratorError {
    fn disposition(&self) -> Disposition {
        Disposition::Fatal
    }
}

pub struct GeneratorSource {
    config: GeneratorConfig,
    columns: Columns,
    schema: Arc<TableSchema>,
    payload: String,
}

struct Columns {
    id: ColumnName,
    seq: ColumnName,
    name: ColumnName,
    amount: ColumnName,
    payload: ColumnName,
    updated_at: ColumnName,
}

impl Columns {
    /// The generated table as a database would declare it: `id` is the key, `amount` a
    /// `numeric(20,2)`, `updated_at` a `timestamptz(3)`; every column is NOT NULL.
    fn schema(&self) -> TableSchema {
        let column = |name: &ColumnName, source_type: &str, kind: ColumnType| ColumnSchema {
            name: name.clone(),
            source_type: source_type.into(),
            kind,
            nullable: false,
            key: false,
        };
        let bigint = ColumnType::Int {
            bits: 64,
            unsigned: false,
        };
        let text = ColumnType::Text { length: None };
        let mut columns = vec![
            column(&self.id, "bigint", bigint.clone()),
            column(&self.seq, "bigint", bigint),
            column(&self.name, "text", text.clone()),
            column(
                &self.amount,
                "numeric(20,2)",
                ColumnType::Decimal {
                    precision: Some(20),
                    scale: Some(2),
                },
            ),
            column(&self.payload, "text", text),
            column(
                &self.updated_at,
                "timestamptz(3)",
                ColumnType::TimestampTz { precision: 3 },
            ),
        ];
        columns[0].key = true;
        TableSchema { columns }
    }
}

impl GeneratorSource {
    pub fn new(config: GeneratorConfig) -> Self {
        let payload = "abcdefghijklmnopqrstuvwxyz0123456789"
            .chars()
            .cycle()
            .take(config.payload_bytes)
            .collect();
        let columns = Columns {
            id: "id".into(),
            seq: "seq".into(),
            name: "name".into(),
            amount: "amount".into(),
            payload: "payload".into(),
            updated_at: "updated_at".into(),
        };
        GeneratorSource {
            config,
            schema: Arc::new(columns.schema()),
            columns,
            payload,
        }
    }

    fn row(&self, seq: u64) -> Row {
        let c = &self.columns;
        let id = self.key_of(seq);
        let amount =
            Decimal::parse(&format!("{}.{:02}", seq / 100, seq % 100)).expect("a valid decimal");
        let updated = DateTime::from_timestamp_millis(commit_ms(seq)).expect("in range");
        [
            (c.id.clone(), Value::Int(id as i64)),
            (c.seq.clone(), Value::Int(seq as i64)),
            (c.name.clone(), Value::Text(format!("item-{id}"))),
            (c.amount.clone(), Value::Decimal(amount)),
            (c.payload.clone(), Value::Text(self.payload.clone())),
            (c.updated_at.clone(), Value::TimestampTz(updated)),
        ]
        .into_iter()
        .collect()
    }

    /// Row `seq` of a generator over `keys` keys, as table `db.items` (for unit tests).
    #[cfg(test)]
    pub(crate) fn sample_event(keys: u64, seq: u64) -> ChangeEvent {
        let config: GeneratorConfig = toml::from_str(&format!("keys = {keys}")).expect("valid");
        GeneratorSource::new(config).event(&"p".into(), &"db".into(), &"items".into(), seq)
    }

    fn key_of(&self, seq: u64) -> u64 {
        (seq - 1) % self.config.keys.get() + 1
    }

    /// The change for row `seq`: deterministic in `seq`.
    pub fn event(
        &self,
        pipeline: &Arc<str>,
        database: &Arc<str>,
        table: &Arc<str>,
        seq: u64,
    ) -> ChangeEvent {
        let keys = self.config.keys.get();
        let generation = (seq - 1) / keys;
        let op = match generation % 3 {
            0 => Op::Insert,
            1 => Op::Update,
            _ => Op::Delete,
        };
        let before = (op != Op::Insert).then(|| self.row(seq - keys));
        let after = (op != Op::Delete).then(|| self.row(seq));
        let key = [(self.columns.id.clone(), Value::Int(self.key_of(seq) as i64))]
            .into_iter()
            .collect();
        ChangeEvent {
            op,
            source: SourceInfo {
                connector: SourceKind::Generator,
                pipeline: pipeline.clone(),
                database: database.clone(),
                schema: None,
                table: table.clone(),
                table_schema: Some(self.schema.clone()),
                position: SourcePosition::Generator { seq },
                commit_ts_ms: Some(commit_ms(seq)),
                snapshot: false,
                ttl_expired: false,
            },
            key,
            before,
            after,
            unchanged: Vec::new(),
            key_change: None,
            ts_ms: now_ms(),
        }
    }
}

fn commit_ms(seq: u64) -> i64 {
    EPOCH_MS + seq as i64
}

#[async_trait]
impl Source for GeneratorSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<(), BoxError> {
        let first = match ctx.resume.get(PARTITION) {
            Some(stored) => {
                stored
                    .token
                    .parse::<u64>()
                    .map_err(|_| GeneratorError::BadPosition(stored.token.clone()))?
                    + 1
            }
            None => 1,
        };
        let database: Arc<str> = self.config.database.as_str().into();
        let table: Arc<str> = self.config.table.as_str().into();
        let started = tokio::time::Instant::now();
        let mut seq = first;
        while self.config.count.is_none_or(|count| seq <= count) && !ctx.shutdown.is_requested() {
            if let Some(rate) = self.config.rate_per_sec {
                let due =
                    started + Duration::from_secs_f64((seq - first) as f64 / f64::from(rate.get()));
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = ctx.shutdown.requested() => break,
                }
            }
            let event = self.event(&ctx.pipeline, &database, &table, seq);
            let mark = Mark {
                partition: PARTITION.to_owned(),
                position: Position::from_counter(seq.to_string(), seq),
            };
            if ctx.emit.event_then_checkpoint(event, mark).await.is_err() {
                break;
            }
            seq += 1;
        }
        tracing::info!(pipeline = %ctx.pipeline, last_seq = seq - 1, "generator stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(keys: u64) -> GeneratorSource {
        let config: GeneratorConfig = toml::from_str(&format!("keys = {keys}")).unwrap();
        GeneratorSource::new(config)
    }

    #[test]
    fn keys_cycle_through_insert_update_delete_with_previous_rows() {
        let g = generator(2);
        let (p, d, t) = (Arc::from("p"), Arc::from("d"), Arc::from("t"));
        let ops: Vec<_> = (1..=8).map(|seq| g.event(&p, &d, &t, seq).op).collect();
        use Op::*;
        assert_eq!(
            ops,
            [Insert, Insert, Update, Update, Delete, Delete, Insert, Insert]
        );
        let update = g.event(&p, &d, &t, 3);
        assert_eq!(update.key.get("id"), Some(&Value::Int(1)));
        assert_eq!(
            update.before.as_ref().unwrap().get("seq"),
            Some(&Value::Int(1))
        );
        assert_eq!(
            update.after.as_ref().unwrap().get("seq"),
            Some(&Value::Int(3))
        );
        let delete = g.event(&p, &d, &t, 6);
        assert!(delete.after.is_none());
        assert_eq!(
            delete.before.as_ref().unwrap().get("seq"),
            Some(&Value::Int(4))
        );
    }

    #[test]
    fn rows_are_deterministic_in_seq() {
        let g = generator(10);
        let (p, d, t) = (Arc::from("p"), Arc::from("d"), Arc::from("t"));
        let (a, b) = (g.event(&p, &d, &t, 1234), g.event(&p, &d, &t, 1234));
        assert_eq!(a.after, b.after);
        assert_eq!(
            a.after.as_ref().unwrap().get("amount"),
            Some(&Value::Decimal(Decimal::parse("12.34").unwrap()))
        );
    }
}
