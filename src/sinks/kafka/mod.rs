//! The `kafka` sink: change events to Kafka (or Amazon MSK) topics, keyed by primary key.
//!
//! Flow per batch: topic from the template (checked to exist, or created with
//! `create_topics`) -> key (the primary key as JSON; with the table too when the template lets
//! tables share a topic, see [`TopicTemplate::separates_tables`]) and value (the formatted
//! event) -> size policy ([`RecordLimit`]) -> a tombstone after each delete of a keyed row ->
//! the partition of the key, as Kafka's own clients choose it ([`partitioner`]) -> the
//! partition's queue ([`gate`]), which hands librdkafka's idempotent producer (`acks=all`,
//! per-partition order through its own retries) one request's worth at a time -> the batch's
//! [`Delivery`] resolves only when every delivery report is a success. A failed report fails
//! the batch: it is never acknowledged, and the pipeline restarts from its checkpoint. Headers
//! carry `op`, `table` and `position`.
//!
//! Errors ([`KafkaSinkError`]): unreachable brokers and failed deliveries are transient;
//! authentication, authorization, a missing topic and an invalid configuration are fatal.
//!
//! With `sasl_mechanism = "AWS_MSK_IAM"` the producer authenticates with SASL/OAUTHBEARER:
//! librdkafka asks the client context for a token at start and again before each one expires,
//! and the context signs one ([`msk_iam`]) with credentials fresh from the AWS chain.

mod config;
mod delivery;
mod error;
mod gate;
mod msk_iam;
mod partitioner;
mod records;
mod topic;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{Producer as _, ProducerContext, ThreadedProducer};

pub use config::{KafkaSinkConfig, SaslMechanism, SecurityProtocol};
pub use error::KafkaSinkError;
pub use topic::TopicTemplate;

use crate::check::Finding;
use crate::envelope::{ChangeEvent, Op};
use crate::error::BoxError;
use crate::format::{format_for, Format};
use crate::sink::{Batch, Delivery, Sink};
use crate::sinks::oversize::RecordLimit;
use crate::telemetry::PipelineProbe;
use delivery::BatchAcks;
use gate::{ChunkLimits, Gate};
use records::{Encoder, TableNames};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for the headers and the protocol overhead of one record.
const RECORD_OVERHEAD: usize = 256;
/// How long a topic's partition count is trusted before it is looked up again (librdkafka's
/// own metadata refresh interval).
const PARTITIONS_REFRESH: Duration = Duration::from_secs(300);

/// The first authentication or TLS failure librdkafka reported (later "all brokers down" errors
/// must not hide it), to say why a connection failed.
type LastError = Arc<Mutex<Option<(RDKafkaErrorCode, String)>>>;

/// What signs MSK IAM tokens: the region and the AWS credential chain.
pub struct MskIamAuth {
    region: String,
    credentials: SharedCredentialsProvider,
    runtime: tokio::runtime::Handle,
}

impl MskIamAuth {
    /// Loads the standard AWS credential chain; the region is `region` or the chain's.
    pub async fn load(region: Option<&str>) -> Result<Arc<Self>, KafkaSinkError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region.to_owned()));
        }
        let sdk = loader.load().await;
        let region = sdk
            .region()
            .ok_or(KafkaSinkError::MskIamRegion)?
            .to_string();
        let credentials = sdk
            .credentials_provider()
            .ok_or_else(|| KafkaSinkError::MskIamCredentials("no credential provider".into()))?;
        Ok(Arc::new(MskIamAuth {
            region,
            credentials,
            runtime: tokio::runtime::Handle::current(),
        }))
    }

    /// A fresh token. Called by librdkafka's threads; the credentials are fetched on a
    /// thread of its own, so this works whatever thread calls it.
    fn token(&self) -> Result<OAuthToken, KafkaSinkError> {
        let credentials = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.runtime
                        .block_on(self.credentials.provide_credentials())
                })
                .join()
                .expect("credential thread does not panic")
        })
        .map_err(|e| KafkaSinkError::MskIamCredentials(crate::error::report(&e)))?;
        let signed = msk_iam::token(&self.region, &credentials, SystemTime::now())
            .map_err(|e| KafkaSinkError::MskIamCredentials(e.to_string()))?;
        let expires_ms = signed
            .expires_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        Ok(OAuthToken {
            token: signed.token,
            principal_name: "cdc-bridge".into(),
            lifetime_ms: expires_ms,
        })
    }
}

/// Logs client errors and keeps the authentication or TLS failure, if any; signs MSK IAM
/// tokens when configured; counts delivery reports into the partition queues, and failed
/// ones into the pipeline's probe.
pub struct SinkContext {
    last_error: LastError,
    msk_iam: Option<Arc<MskIamAuth>>,
    gate: Arc<Gate>,
    delivery_errors: OnceLock<prometheus::IntCounter>,
}

impl SinkContext {
    fn new(msk_iam: Option<Arc<MskIamAuth>>, limits: ChunkLimits) -> Self {
        SinkContext {
            last_error: LastError::default(),
            msk_iam,
            gate: Arc::new(Gate::new(limits)),
            delivery_errors: OnceLock::new(),
        }
    }
}

impl ClientContext for SinkContext {
    // Only asked for when sasl.mechanism is OAUTHBEARER, which only AWS_MSK_IAM sets.
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let auth = self
            .msk_iam
            .as_ref()
            .ok_or("OAUTHBEARER tokens are only made for sasl_mechanism = \"AWS_MSK_IAM\"")?;
        let token = auth.token().inspect_err(|err| {
            tracing::error!(error = %err, "cannot make an MSK IAM token");
        })?;
        tracing::debug!("signed a new MSK IAM token");
        Ok(token)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error");
        if let Some(
            code @ (RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::SSL),
        ) = error.rdkafka_error_code()
        {
            self.last_error
                .lock()
                .expect("not poisoned")
                .get_or_insert((code, reason.to_owned()));
        }
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Arc<gate::Sent>;
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, sent: Arc<gate::Sent>) {
        if result.is_err() {
            if let Some(errors) = self.delivery_errors.get() {
                errors.inc();
            }
        }
        sent.acks.report(result);
        self.gate.reported(&sent);
    }
}

type Producer = Arc<ThreadedProducer<SinkContext>>;

/// A topic known to exist, with its partition count as of `checked`.
struct KnownTopic {
    name: Arc<str>,
    partitions: u32,
    checked: Instant,
}

pub struct KafkaSink {
    producer: Producer,
    gate: Arc<Gate>,
    admin: Option<AdminClient<SinkContext>>,
    config: KafkaSinkConfig,
    template: TopicTemplate,
    format: Box<dyn Format>,
    limit: RecordLimit,
    known_topics: HashMap<String, KnownTopic>,
    /// The encoded size of the last batch: the next batch's buffer starts that large.
    batch_bytes: usize,
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // The gate's handle on the producer is dropped here, never on librdkafka's thread.
        drop(self.gate.detach());
    }
}

impl KafkaSink {
    /// Creates the producer (checked against the brokers) and the admin client if needed.
    pub async fn connect(
        config: &KafkaSinkConfig,
        template: TopicTemplate,
    ) -> Result<Self, BoxError> {
        let client_config = client_config(config);
        let msk_iam = msk_iam_auth(config).await?;
        let limits = config.chunk_limits();
        let producer =
            open_producer(&client_config, &config.brokers, msk_iam.clone(), limits).await?;
        let admin = if config.create_topics {
            Some(
                client_config
                    .create_with_context(SinkContext::new(msk_iam, limits))
                    .map_err(KafkaSinkError::Client)?,
            )
        } else {
            None
        };
        let limit = RecordLimit::new(
            config.max_message_bytes,
            config.oversize,
            config.dead_letter_path.as_deref(),
        )?;
        let gate = producer.context().gate.clone();
        gate.attach(producer.clone());
        Ok(KafkaSink {
            producer,
            gate,
            admin,
            config: config.clone(),
            template,
            format: format_for(&config.format),
            limit,
            known_topics: HashMap::new(),
            batch_bytes: 0,
        })
    }

    /// `topic` (made sure to exist, created when allowed) and its partition count, looked
    /// up again after [`PARTITIONS_REFRESH`].
    async fn topic(&mut self, topic: &str) -> Result<(Arc<str>, u32), KafkaSinkError> {
        if let Some(known) = self.known_topics.get(topic) {
            if known.checked.elapsed() < PARTITIONS_REFRESH {
                return Ok((known.name.clone(), known.partitions));
            }
        }
        let partitions = match topic_partitions(&self.producer, topic).await? {
            Some(partitions) => partitions,
            None => {
                let Some(admin) = &self.admin else {
                    return Err(KafkaSinkError::MissingTopic {
                        topic: topic.to_owned(),
                    });
                };
                let partitions = self.config.topic_partitions.get();
                create_topic(
                    admin,
                    topic,
                    partitions,
                    self.config.topic_replication_factor.get(),
                )
                .await?;
                tracing::info!(topic, partitions, "created topic");
                partitions
            }
        };
        let known = KnownTopic {
            name: topic.into(),
            partitions,
            checked: Instant::now(),
        };
        let name = known.name.clone();
        self.known_topics.insert(topic.to_owned(), known);
        Ok((name, partitions))
    }
}

/// The token signer, when the sink uses MSK IAM.
async fn msk_iam_auth(config: &KafkaSinkConfig) -> Result<Option<Arc<MskIamAuth>>, KafkaSinkError> {
    if config.sasl_mechanism != Some(SaslMechanism::AwsMskIam) {
        return Ok(None);
    }
    let auth = MskIamAuth::load(config.aws_region.as_deref()).await?;
    // Fail here, with the chain's explanation, rather than in librdkafka's thread.
    auth.token()?;
    Ok(Some(auth))
}

fn client_config(config: &KafkaSinkConfig) -> ClientConfig {
    let mut client_config = ClientConfig::new();
    for (key, value) in config.client_settings() {
        client_config.set(key, value);
    }
    client_config
}

/// Fetches cluster metadata; classifies a failure as authentication or reachability.
/// Creates a producer and checks that the brokers answer and accept our credentials.
async fn open_producer(
    client_config: &ClientConfig,
    brokers: &str,
    msk_iam: Option<Arc<MskIamAuth>>,
    limits: ChunkLimits,
) -> Result<Producer, KafkaSinkError> {
    let context = SinkContext::new(msk_iam, limits);
    let last_error = context.last_error.clone();
    let producer: Producer = Arc::new(
        client_config
            .create_with_context(context)
            .map_err(KafkaSinkError::Client)?,
    );
    probe(&producer, &last_error, brokers).await?;
    Ok(producer)
}

async fn probe(
    producer: &Producer,
    last_error: &LastError,
    brokers: &str,
) -> Result<(), KafkaSinkError> {
    let client = producer.clone();
    let result = tokio::task::spawn_blocking(move || {
        client
            .client()
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map(|_| ())
    })
    .await
    .expect("metadata task does not panic");
    let Err(source) = result else {
        return Ok(());
    };
    let brokers = brokers.to_owned();
    Err(match last_error.lock().expect("not poisoned").clone() {
        Some((RDKafkaErrorCode::SSL, reason)) => KafkaSinkError::Tls { brokers, reason },
        Some((_, reason)) => KafkaSinkError::Authentication {
            brokers,
            source: KafkaError::ClientCreation(reason),
        },
        None => KafkaSinkError::Unreachable { brokers, source },
    })
}

/// The partition count of `topic`, or `None` when it does not exist.
async fn topic_partitions(producer: &Producer, topic: &str) -> Result<Option<u32>, KafkaSinkError> {
    let (client, name) = (producer.clone(), topic.to_owned());
    let metadata = tokio::task::spawn_blocking(move || {
        client
            .client()
            .fetch_metadata(Some(&name), METADATA_TIMEOUT)
    })
    .await
    .expect("metadata task does not panic")
    .map_err(|source| KafkaSinkError::Delivery {
        topic: topic.to_owned(),
        source,
    })?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as u32))
}

async fn create_topic(
    admin: &AdminClient<SinkContext>,
    topic: &str,
    partitions: u32,
    replication: u32,
) -> Result<(), KafkaSinkError> {
    let new = NewTopic::new(
        topic,
        partitions as i32,
        TopicReplication::Fixed(replication as i32),
    );
    let results = admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT)),
        )
        .await
        .map_err(|e| KafkaSinkError::CreateTopic {
            topic: topic.to_owned(),
            reason: e.to_string(),
        })?;
    for result in results {
        if let Err((_, code)) = result {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(KafkaSinkError::CreateTopic {
                    topic: topic.to_owned(),
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Sink for KafkaSink {
    fn observe(&mut self, probe: Arc<PipelineProbe>) {
        self.limit.observe(probe.clone());
        let errors = probe.delivery_errors();
        let _ = self.producer.context().delivery_errors.set(errors);
    }

    async fn submit(&mut self, batch: Arc<Batch>) -> Result<Delivery, BoxError> {
        let (acks, all_reported) = BatchAcks::new();
        let mut encoder = Encoder::new(batch.events.len(), self.batch_bytes);
        let mut tables = TableNames::default();
        let mut position = String::new();
        // The previous event and its topic: a run of events of one table builds its topic
        // name from the template once.
        let mut previous: Option<(&ChangeEvent, Arc<str>, u32)> = None;
        for event in &batch.events {
            let (name, partitions) = match previous.take() {
                Some((last, name, partitions)) if self.template.same_topic(last, event) => {
                    (name, partitions)
                }
                _ => {
                    let event_topic = self.template.topic_for(event).into_owned();
                    self.topic(&event_topic).await?
                }
            };
            let (_, name, partitions) = previous.insert((event, name, partitions));
            let (name, partitions) = (name.clone(), *partitions);
            let table_in_key = !self.template.separates_tables(event);
            if let Some(preparing) = self.format.prepare(event, &name, table_in_key) {
                preparing.await?;
            }
            let encoded = encoder.encode(event, &*self.format, table_in_key)?;
            let bytes = encoded.value.end - encoded.key.start;
            if !self.limit.admit(event, bytes + RECORD_OVERHEAD, &name)? {
                encoder.forget(encoded);
                continue;
            }
            position.clear();
            write!(position, "{}", event.source.position).expect("writing to a String");
            let extra = self.format.headers(event)?;
            let headers = if extra.is_empty() {
                gate::headers(&[
                    ("op", event.op.as_str()),
                    ("table", tables.of(event)),
                    ("position", &position),
                ])
            } else {
                let mut pairs = vec![
                    ("op", event.op.as_str()),
                    ("table", tables.of(event)),
                    ("position", &position),
                ];
                pairs.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
                gate::headers(&pairs)
            };
            let partition = partitioner::partition_for(encoder.bytes(&encoded.key), partitions);
            // A keyless row has no identity of its own: a tombstone for it would remove
            // every row of its table from a compacted topic.
            let tombstone =
                event.op == Op::Delete && self.config.tombstones && !event.key.is_empty();
            encoder.note(name, partition, encoded, headers, tombstone);
        }
        self.batch_bytes = encoder.len();
        let records = encoder.finish(&acks);
        self.gate.offer(records);
        self.limit.sync()?;
        // The sink's own hold ends: the batch is done once every report is in.
        acks.settle_one();
        Ok(Box::pin(async move {
            acks.outcome(all_reported).await.map_err(BoxError::from)
        }))
    }
}

/// `cdc-bridge check` for this sink: brokers reachable, credentials accepted, topics.
pub async fn check(config: &KafkaSinkConfig, template: &TopicTemplate) -> Vec<Finding> {
    let msk_iam = match msk_iam_auth(config).await {
        Ok(auth) => auth,
        Err(err) => return vec![Finding::fail(crate::error::report(&err))],
    };
    let client_config = client_config(config);
    let opened = open_producer(
        &client_config,
        &config.brokers,
        msk_iam,
        config.chunk_limits(),
    );
    let producer = match opened.await {
        Ok(producer) => producer,
        Err(err) => return vec![Finding::fail(crate::error::report(&err))],
    };
    let mut findings = vec![Finding::ok(format!(
        "brokers {} reachable; credentials accepted",
        config.brokers
    ))];
    findings.push(match template.fixed() {
        Some(topic) => match topic_partitions(&producer, topic).await {
            Ok(Some(_)) => Finding::ok(format!("topic {topic} exists")),
            Ok(None) if config.create_topics => {
                Finding::ok(format!("topic {topic} will be created"))
            }
            Ok(None) => Finding::fail(
                KafkaSinkError::MissingTopic {
                    topic: topic.to_owned(),
                }
                .to_string(),
            ),
            Err(err) => Finding::fail(crate::error::report(&err)),
        },
        None if config.create_topics => Finding::ok(format!(
            "topics {} are created as they are needed",
            config.topic
        )),
        None => Finding::warn(format!(
            "topics {} must exist (create_topics = false); each is checked when first used",
            config.topic
        )),
    });
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use base64::Engine as _;

    /// librdkafka asks the context for tokens from its own threads: each is a fresh MSK IAM
    /// token for the configured region that lives 15 minutes.
    #[test]
    fn the_context_signs_msk_iam_tokens_for_librdkafka() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let auth = Arc::new(MskIamAuth {
            region: "us-west-2".into(),
            credentials: SharedCredentialsProvider::new(Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "test",
            )),
            runtime: runtime.handle().clone(),
        });
        let context = SinkContext::new(Some(auth), ChunkLimits::LIBRDKAFKA_DEFAULTS);
        let token = std::thread::spawn(move || context.generate_oauth_token(None).unwrap())
            .join()
            .unwrap();
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&token.token)
                .unwrap(),
        )
        .unwrap();
        assert!(url
            .starts_with("https://kafka.us-west-2.amazonaws.com/?Action=kafka-cluster%3AConnect&"));
        assert!(url.contains("X-Amz-Credential=AKIDEXAMPLE%2F"));
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((token.lifetime_ms - now_ms - 900_000).abs() < 5_000);

        let without = SinkContext::new(None, ChunkLimits::LIBRDKAFKA_DEFAULTS);
        assert!(without.generate_oauth_token(None).is_err());
    }
}
