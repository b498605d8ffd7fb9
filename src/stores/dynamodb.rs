//! The DynamoDB shared store: checkpoints and leases as items of one table (partition key
//! `pk`, sort key `sk`, both strings), created on first use with on-demand billing.
//!
//! - A checkpoint: `pk = "checkpoint#<pipeline>"`, `sk = "#<partition>"` (a key cannot be the
//!   empty string), `token` (S), `rank` (B).
//! - A lease: `pk = "lease#<key>"`, `sk = "lease"`, `owner` (S, absent when free), `epoch` and
//!   `heartbeat` (N).
//!
//! A commit is a `TransactWriteItems`: a condition check that the lease still names this
//! owner at this epoch (when fenced), then one put per position, conditional on the stored
//! rank not being higher (DynamoDB compares binary values bytewise, as ranks are compared),
//! and one delete per removed partition. A transaction holds at most 100 items, so a commit of
//! more partitions is split, each part fenced. Reads are strongly consistent.
//!
//! Errors: throttling, internal errors, transaction conflicts and network failures are
//! transient; access denied, missing credentials and validation errors are refused with the
//! fix (the IAM actions the store needs).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, KeySchemaElement,
    KeyType, Put, ScalarAttributeType, TableStatus, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use serde::Deserialize;

use crate::checkpoint::{
    CheckpointError, Checkpoints, Fence, Position, Store, StoreCause, StoredCheckpoint,
};
use crate::coordination::{Lease, LeaseTable};

/// `[daemon.coordination]` with `kind = "dynamodb"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbStoreConfig {
    /// The table (created with on-demand billing if missing).
    pub table: String,
    #[serde(default)]
    pub region: Option<String>,
    /// Another endpoint (DynamoDB Local, LocalStack).
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

/// A commit's condition check and this instance's renewal touch the same lease item: when
/// DynamoDB reports them conflicting, the call is tried again this many times, after this
/// pause times the attempt, before it counts as a failure.
const CONFLICT_RETRIES: u32 = 4;
const CONFLICT_PAUSE: Duration = Duration::from_millis(15);

/// Whether a single-item write failed only because a transaction held its item.
fn conflicted<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    err.code() == Some("TransactionConflictException")
}

/// The reasons a transaction was cancelled for, item by item (empty for other failures).
fn cancellation_codes(err: &SdkError<TransactWriteItemsError>) -> Vec<Option<&str>> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
            e.cancellation_reasons().iter().map(|r| r.code()).collect()
        }
        _ => Vec::new(),
    }
}

/// Whether a transaction was cancelled only because another one held one of its items.
fn transaction_conflicted(err: &SdkError<TransactWriteItemsError>) -> bool {
    let codes = cancellation_codes(err);
    codes.contains(&Some("TransactionConflict")) && !codes.contains(&Some("ConditionalCheckFailed"))
}

/// Items per transaction: DynamoDB's limit.
const TRANSACTION_ITEMS: usize = 100;
const CHECKPOINT: &str = "checkpoint#";
const LEASE: &str = "lease#";
const LEASE_SK: &str = "lease";
/// What the store needs, for the message of an access denied.
const NEEDED: &str = "the store needs dynamodb:DescribeTable, CreateTable (or create the table beforehand, see the README), GetItem, PutItem, UpdateItem, DeleteItem, Query, Scan and TransactWriteItems on the table";

#[derive(Debug)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn checkpoint_key(pipeline: &str, partition: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), s(&format!("{CHECKPOINT}{pipeline}"))),
        ("sk".to_owned(), s(&format!("#{partition}"))),
    ])
}

fn lease_key(key: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), s(&format!("{LEASE}{key}"))),
        ("sk".to_owned(), s(LEASE_SK)),
    ])
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl DynamoDbStore {
    /// Connects (the AWS credential chain) and creates the table if it is missing. A call,
    /// retries included, gives up after a third of `lease` (the lease duration), so that one
    /// unreachable store cannot stall a round of the lease loop past a renewal.
    pub async fn open(
        config: DynamoDbStoreConfig,
        lease: Duration,
    ) -> Result<Self, CheckpointError> {
        let timeouts = TimeoutConfig::builder()
            .operation_timeout(lease / 3)
            .connect_timeout(lease / 6)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        let store = DynamoDbStore {
            client: Client::new(&sdk),
            table: config.table,
        };
        store.create_table().await?;
        Ok(store)
    }

    async fn create_table(&self) -> Result<(), CheckpointError> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await;
        match described {
            Ok(_) => return self.wait_active().await,
            Err(err) if err.code() == Some("ResourceNotFoundException") => {}
            Err(err) => return Err(self.fail("describing the table", err)),
        }
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("complete")
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .expect("complete")
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attribute("pk"))
            .attribute_definitions(attribute("sk"))
            .key_schema(key("pk", KeyType::Hash))
            .key_schema(key("sk", KeyType::Range))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match created {
            // Another instance created it first.
            Err(err) if err.code() == Some("ResourceInUseException") => {}
            Err(err) => return Err(self.fail("creating the table", err)),
            Ok(_) => tracing::info!(table = %self.table, "created the DynamoDB coordination table"),
        }
        self.wait_active().await
    }

    async fn wait_active(&self) -> Result<(), CheckpointError> {
        for _ in 0..120 {
            let table = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| self.fail("describing the table", e))?;
            if table.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        Err(CheckpointError::Unavailable {
            store: self.describe(),
            action: "waiting for the table to become active",
            source: "still not ACTIVE after 60 s".into(),
        })
    }

    fn fail<E>(&self, action: &'static str, err: SdkError<E>) -> CheckpointError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let store = self.describe();
        let code = err.code().unwrap_or_default().to_owned();
        let credentials = crate::error::aws_credentials_error(&err);
        let refused = |fix: String, source: StoreCause| CheckpointError::Refused {
            store: store.clone(),
            action,
            fix,
            source,
        };
        let passing = crate::error::aws_credentials_passing(&err) == Some(true);
        let source: StoreCause = Box::new(err);
        if let Some(credentials) = credentials {
            if passing {
                return CheckpointError::Unavailable {
                    store,
                    action,
                    source,
                };
            }
            return refused(
                format!("no AWS credentials ({credentials}): set them as for any AWS SDK (environment, profile, instance role)"),
                source,
            );
        }
        match code.as_str() {
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "MissingAuthenticationToken" => refused(NEEDED.into(), source),
            "ValidationException" | "ResourceNotFoundException" => refused(
                format!(
                    "the table {:?} must have the string keys pk (partition) and sk (sort)",
                    self.table
                ),
                source,
            ),
            _ => CheckpointError::Unavailable {
                store,
                action,
                source,
            },
        }
    }

    async fn scan(
        &self,
        prefix: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, CheckpointError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression("begins_with(pk, :prefix)")
                .expression_attribute_values(":prefix", s(prefix))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.fail("scanning", e))?;
            items.extend(page.items().iter().cloned());
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    fn fence_check(&self, fence: &Fence) -> TransactWriteItem {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(lease_key(&fence.lease)))
            .condition_expression("#owner = :owner AND epoch = :epoch")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(&fence.owner))
            .expression_attribute_values(":epoch", n(fence.epoch))
            .build()
            .expect("complete");
        TransactWriteItem::builder().condition_check(check).build()
    }

    fn put_position(
        &self,
        pipeline: &str,
        partition: &str,
        position: &Position,
    ) -> TransactWriteItem {
        let mut item = checkpoint_key(pipeline, partition);
        item.insert("token".into(), s(&position.token));
        item.insert(
            "rank".into(),
            AttributeValue::B(Blob::new(position.rank.clone())),
        );
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #rank <= :rank")
            .expression_attribute_names("#rank", "rank")
            .expression_attribute_values(
                ":rank",
                AttributeValue::B(Blob::new(position.rank.clone())),
            )
            .build()
            .expect("complete");
        TransactWriteItem::builder().put(put).build()
    }

    fn delete_position(&self, pipeline: &str, partition: &str) -> TransactWriteItem {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(checkpoint_key(pipeline, partition)))
            .build()
            .expect("complete");
        TransactWriteItem::builder().delete(delete).build()
    }

    /// Writes one transaction; `targets[i]` names the position item `i` puts (`None` for the
    /// fence check and deletes, which have no condition), to say which condition failed.
    async fn transact(
        &self,
        pipeline: &str,
        items: Vec<TransactWriteItem>,
        targets: Vec<Option<(&String, &Position)>>,
        fence: Option<&Fence>,
    ) -> Result<(), CheckpointError> {
        let mut attempt = 0;
        let err = loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(err) if attempt < CONFLICT_RETRIES && transaction_conflicted(&err) => {
                    attempt += 1;
                    tokio::time::sleep(CONFLICT_PAUSE * attempt).await;
                }
                Err(err) => break err,
            }
        };
        let failed = cancellation_codes(&err)
            .iter()
            .position(|code| *code == Some("ConditionalCheckFailed"));
        match (failed, fence) {
            (Some(i), Some(fence)) if targets[i].is_none() => Err(CheckpointError::Fenced {
                lease: fence.lease.clone(),
                epoch: fence.epoch,
            }),
            (Some(i), _) => {
                let (partition, proposed) = targets[i].expect("a position's put");
                let stored = self.load(pipeline).await?;
                Err(CheckpointError::Regression {
                    pipeline: pipeline.to_owned(),
                    partition: partition.clone(),
                    stored: stored
                        .get(partition)
                        .map(|p| p.token.clone())
                        .unwrap_or_default(),
                    proposed: proposed.token.clone(),
                })
            }
            (None, _) => Err(self.fail("storing checkpoints", err)),
        }
    }
}

impl DynamoDbStore {
    /// One conditional renewal: the heartbeat rises if `fence` still holds the lease.
    async fn renew_once(
        &self,
        fence: &Fence,
    ) -> Result<UpdateItemOutput, SdkError<UpdateItemError>> {
        self.update_held(fence, "SET heartbeat = heartbeat + :one")
            .send()
            .await
    }

    /// `update` (which may use `#owner` and `:one`) of the lease row, if `fence` holds it.
    fn update_held(&self, fence: &Fence, update: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(lease_key(&fence.lease)))
            .update_expression(update)
            .condition_expression("#owner = :owner AND epoch = :epoch")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(&fence.owner))
            .expression_attribute_values(":epoch", n(fence.epoch))
            .expression_attribute_values(":one", n(1))
    }
}

fn stored_checkpoint(item: &HashMap<String, AttributeValue>) -> Option<StoredCheckpoint> {
    let pipeline = text(item, "pk")?.strip_prefix(CHECKPOINT)?.to_owned();
    let partition = text(item, "sk")?.strip_prefix('#')?.to_owned();
    let rank = item.get("rank")?.as_b().ok()?.as_ref().to_vec();
    Some(StoredCheckpoint {
        pipeline,
        partition,
        position: Position {
            token: text(item, "token")?,
            rank,
        },
    })
}

#[async_trait]
impl Store for DynamoDbStore {
    fn describe(&self) -> String {
        format!("dynamodb table {}", self.table)
    }

    async fn load(&self, pipeline: &str) -> Result<Checkpoints, CheckpointError> {
        let mut out = Checkpoints::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&format!("{CHECKPOINT}{pipeline}")))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.fail("reading checkpoints", e))?;
            for checkpoint in page.items().iter().filter_map(stored_checkpoint) {
                out.insert(checkpoint.partition, checkpoint.position);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    async fn list(&self) -> Result<Vec<StoredCheckpoint>, CheckpointError> {
        let mut out: Vec<_> = self
            .scan(CHECKPOINT)
            .await?
            .iter()
            .filter_map(stored_checkpoint)
            .collect();
        out.sort_by(|a, b| (&a.pipeline, &a.partition).cmp(&(&b.pipeline, &b.partition)));
        Ok(out)
    }

    async fn apply(
        &self,
        pipeline: &str,
        updates: &Checkpoints,
        removed: &[String],
        fence: Option<&Fence>,
    ) -> Result<(), CheckpointError> {
        let per_transaction = TRANSACTION_ITEMS - usize::from(fence.is_some());
        // Positions first, deletions last: a commit split into several transactions that
        // fails halfway has then deleted nothing whose successor it did not store.
        let mut writes: Vec<(TransactWriteItem, Option<(&String, &Position)>)> = updates
            .iter()
            .map(|(partition, position)| {
                let put = self.put_position(pipeline, partition, position);
                (put, Some((partition, position)))
            })
            .collect();
        writes.extend(
            removed
                .iter()
                .map(|partition| (self.delete_position(pipeline, partition), None)),
        );
        if writes.is_empty() {
            return Ok(());
        }
        for chunk in writes.chunks(per_transaction) {
            let mut items = Vec::with_capacity(chunk.len() + 1);
            let mut targets = Vec::with_capacity(chunk.len() + 1);
            if let Some(fence) = fence {
                items.push(self.fence_check(fence));
                targets.push(None);
            }
            for (item, target) in chunk {
                items.push(item.clone());
                targets.push(*target);
            }
            self.transact(pipeline, items, targets, fence).await?;
        }
        Ok(())
    }

    async fn check_fence(&self, fence: &Fence) -> Result<(), CheckpointError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(lease_key(&fence.lease)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.fail("checking a lease", e))?;
        let held = item.item().is_some_and(|item| {
            text(item, "owner").as_deref() == Some(fence.owner.as_str())
                && number(item, "epoch") == fence.epoch
        });
        if held {
            Ok(())
        } else {
            Err(CheckpointError::Fenced {
                lease: fence.lease.clone(),
                epoch: fence.epoch,
            })
        }
    }

    async fn reset(&self, pipeline: &str) -> Result<usize, CheckpointError> {
        let partitions: Vec<String> = self.load(pipeline).await?.into_keys().collect();
        for partition in &partitions {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(checkpoint_key(pipeline, partition)))
                .send()
                .await
                .map_err(|e| self.fail("resetting checkpoints", e))?;
        }
        Ok(partitions.len())
    }
}

#[async_trait]
impl LeaseTable for DynamoDbStore {
    async fn leases(&self) -> Result<Vec<Lease>, CheckpointError> {
        let mut leases: Vec<Lease> = self
            .scan(LEASE)
            .await?
            .iter()
            .filter_map(|item| {
                Some(Lease {
                    key: text(item, "pk")?.strip_prefix(LEASE)?.to_owned(),
                    owner: text(item, "owner"),
                    epoch: number(item, "epoch"),
                    heartbeat: number(item, "heartbeat"),
                })
            })
            .collect();
        leases.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(leases)
    }

    async fn create(&self, key: &str) -> Result<(), CheckpointError> {
        let mut item = lease_key(key);
        item.insert("epoch".into(), n(0));
        item.insert("heartbeat".into(), n(0));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Err(err) if err.code() == Some("ConditionalCheckFailedException") => Ok(()),
            other => other
                .map(drop)
                .map_err(|e| self.fail("creating a lease", e)),
        }
    }

    async fn renew(&self, fence: &Fence) -> Result<bool, CheckpointError> {
        let mut attempt = 0;
        loop {
            let renewal = self.renew_once(fence).await;
            match renewal {
                Err(err) if attempt < CONFLICT_RETRIES && conflicted(&err) => {
                    attempt += 1;
                    tokio::time::sleep(CONFLICT_PAUSE * attempt).await;
                }
                other => return conditional(other, "renewing a lease", self),
            }
        }
    }

    async fn take(&self, seen: &Lease, owner: &str) -> Result<Option<Fence>, CheckpointError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(lease_key(&seen.key)))
            .update_expression("SET #owner = :me, epoch = :next, heartbeat = heartbeat + :one")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":epoch", n(seen.epoch))
            .expression_attribute_values(":next", n(seen.epoch + 1))
            .expression_attribute_values(":heartbeat", n(seen.heartbeat))
            .expression_attribute_values(":one", n(1));
        update = match &seen.owner {
            Some(previous) => update
                .condition_expression(
                    "#owner = :previous AND epoch = :epoch AND heartbeat = :heartbeat",
                )
                .expression_attribute_values(":previous", s(previous)),
            None => update.condition_expression(
                "attribute_not_exists(#owner) AND epoch = :epoch AND heartbeat = :heartbeat",
            ),
        };
        let taken = conditional(update.send().await, "taking a lease", self)?;
        Ok(taken.then(|| Fence {
            lease: seen.key.clone(),
            owner: owner.to_owned(),
            epoch: seen.epoch + 1,
        }))
    }

    async fn release(&self, fence: &Fence) -> Result<(), CheckpointError> {
        let update = self
            .update_held(fence, "REMOVE #owner SET heartbeat = heartbeat + :one")
            .send()
            .await;
        conditional(update, "releasing a lease", self).map(drop)
    }

    async fn delete(&self, fence: &Fence) -> Result<bool, CheckpointError> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(lease_key(&fence.lease)))
            .condition_expression("#owner = :owner AND epoch = :epoch")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(&fence.owner))
            .expression_attribute_values(":epoch", n(fence.epoch))
            .send()
            .await;
        conditional(delete, "deleting a lease", self)
    }
}

/// A conditional update's outcome: `true` when applied, `false` when its condition failed.
fn conditional<T, E>(
    result: Result<T, SdkError<E>>,
    action: &'static str,
    store: &DynamoDbStore,
) -> Result<bool, CheckpointError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(err) if err.code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(err) => Err(store.fail(action, err)),
    }
}
