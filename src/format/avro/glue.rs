//! A client of the AWS Glue Schema Registry: registers a schema definition under a schema name
//! in a registry and returns the schema version's UUID, the id a record's Glue framing carries.
//!
//! Flow per new (schema name, definition), as AWS's own serializers do it: look the definition
//! up (`GetSchemaByDefinition`); when the schema has no such version, register one
//! (`RegisterSchemaVersion`), and when there is no such schema yet, create it
//! (`CreateSchema`, Avro, with the configured compatibility). A version Glue is still checking
//! (`PENDING`) is polled until it is `AVAILABLE`. The registry itself is never created: it is
//! the operator's, with its own tags and permissions.
//!
//! Region, endpoint and credentials come from the standard AWS chain, `region` and
//! `endpoint_url` override them. Errors carry a disposition: throttling, Glue's internal
//! errors, timeouts and unreachable endpoints are transient (nothing is acknowledged, the
//! pipeline retries); missing credentials, denied access, a missing registry and a version
//! Glue refused as incompatible are fatal and say what to fix.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_glue::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_glue::types::{Compatibility, DataFormat, RegistryId, SchemaId, SchemaVersionStatus};
use aws_sdk_glue::Client;
use serde::Deserialize;

use crate::error::{ConnectorError, Disposition};

/// How long a version may stay `PENDING` (Glue checking compatibility) before the call counts
/// as failed (transient: the pipeline asks again).
const PENDING_LIMIT: Duration = Duration::from_secs(30);
const PENDING_POLL: Duration = Duration::from_millis(250);

/// The compression byte of Glue's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlueCompression {
    /// The Avro body as it is (byte 0).
    #[default]
    None,
    /// The Avro body zlib-compressed (byte 5), as AWS's serializers' `ZLIB` setting.
    Zlib,
}

/// The compatibility mode a schema is created with (Glue's names, lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlueCompatibility {
    None,
    Disabled,
    /// AWS's serializers' default: a new version reads data written with the previous one.
    #[default]
    Backward,
    BackwardAll,
    Forward,
    ForwardAll,
    Full,
    FullAll,
}

impl GlueCompatibility {
    fn sdk(self) -> Compatibility {
        match self {
            GlueCompatibility::None => Compatibility::None,
            GlueCompatibility::Disabled => Compatibility::Disabled,
            GlueCompatibility::Backward => Compatibility::Backward,
            GlueCompatibility::BackwardAll => Compatibility::BackwardAll,
            GlueCompatibility::Forward => Compatibility::Forward,
            GlueCompatibility::ForwardAll => Compatibility::ForwardAll,
            GlueCompatibility::Full => Compatibility::Full,
            GlueCompatibility::FullAll => Compatibility::FullAll,
        }
    }
}

/// Which registry, where, and how records are framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlueSettings {
    pub registry_name: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub compression: GlueCompression,
    pub compatibility: GlueCompatibility,
}

/// Why Glue did not give a schema version.
#[derive(Debug, thiserror::Error)]
pub enum GlueError {
    #[error("AWS Glue Schema Registry {registry}: no AWS credentials: {reason}")]
    NoCredentials { registry: String, reason: String },
    #[error("AWS Glue Schema Registry {registry}: no region: set `region` in the format, AWS_REGION, or a profile's region")]
    NoRegion { registry: String },
    #[error("AWS Glue Schema Registry {registry}: {call} failed, will retry: {reason}")]
    Unavailable {
        registry: String,
        call: &'static str,
        reason: String,
    },
    #[error("AWS Glue Schema Registry {registry} does not exist in this account and region: create it (aws glue create-registry --registry-name {registry}) or name another in registry_name")]
    NoRegistry { registry: String },
    #[error("AWS Glue Schema Registry {registry}: {call} was denied ({code}: {message}): the credentials need glue:GetSchemaByDefinition, glue:RegisterSchemaVersion, glue:CreateSchema, glue:GetSchemaVersion and glue:GetRegistry on the registry and its schemas")]
    Denied {
        registry: String,
        call: &'static str,
        code: String,
        message: String,
    },
    #[error("AWS Glue Schema Registry {registry}: schema {schema} refused the new version {version} as incompatible with its compatibility mode: change the schema's compatibility (aws glue update-schema) or the table change")]
    Incompatible {
        registry: String,
        schema: String,
        version: String,
    },
    #[error("AWS Glue Schema Registry {registry}: {call} for schema {schema} was refused ({code}: {message})")]
    Refused {
        registry: String,
        schema: String,
        call: &'static str,
        code: String,
        message: String,
    },
}

impl ConnectorError for GlueError {
    fn disposition(&self) -> Disposition {
        match self {
            GlueError::Unavailable { .. } => Disposition::Transient,
            _ => Disposition::Fatal,
        }
    }
}

/// What a failed call was.
enum Failure {
    /// `EntityNotFoundException`: the schema, version or registry asked for does not exist.
    NotFound,
    /// `AlreadyExistsException`: another writer created the schema first.
    AlreadyExists,
    Error(GlueError),
}

pub struct GlueRegistry {
    client: Client,
    settings: GlueSettings,
}

impl GlueRegistry {
    /// A client with the AWS chain's region and credentials (no call is made yet).
    pub async fn connect(settings: &GlueSettings) -> Result<Self, GlueError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(GlueError::NoRegion {
                registry: settings.registry_name.clone(),
            });
        }
        Ok(GlueRegistry {
            client: Client::new(&sdk),
            settings: settings.clone(),
        })
    }

    /// The UUID of the version of schema `name` whose definition is `definition`, registering
    /// it (and creating the schema) if new.
    pub async fn register(&self, name: &str, definition: &str) -> Result<[u8; 16], GlueError> {
        let (version, status) = match self.find(name, definition).await? {
            Some(found) => found,
            None => match self.add_version(name, definition).await? {
                Some(added) => added,
                None => match self.create(name, definition).await? {
                    Some(created) => created,
                    // Created by another writer since: a version of that schema, then.
                    None => self.add_version(name, definition).await?.ok_or_else(|| {
                        self.unavailable("RegisterSchemaVersion", "the schema vanished")
                    })?,
                },
            },
        };
        if status != SchemaVersionStatus::Available {
            self.await_available(name, &version).await?;
        }
        uuid_bytes(&version).ok_or_else(|| GlueError::Unavailable {
            registry: self.registry().to_owned(),
            call: "GetSchemaByDefinition",
            reason: format!("the schema version id {version} is not a UUID"),
        })
    }

    /// Whether the registry exists and the credentials may read it (`cdc-bridge check`).
    pub async fn describe_registry(&self) -> Result<(), GlueError> {
        let call = "GetRegistry";
        match self
            .client
            .get_registry()
            .registry_id(self.registry_id())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match self.failure(call, "", err) {
                Failure::NotFound => Err(GlueError::NoRegistry {
                    registry: self.registry().to_owned(),
                }),
                Failure::AlreadyExists => Err(self.unavailable(call, "AlreadyExistsException")),
                Failure::Error(err) => Err(err),
            },
        }
    }

    fn registry(&self) -> &str {
        &self.settings.registry_name
    }

    fn registry_id(&self) -> RegistryId {
        RegistryId::builder().registry_name(self.registry()).build()
    }

    fn schema_id(&self, name: &str) -> SchemaId {
        SchemaId::builder()
            .registry_name(self.registry())
            .schema_name(name)
            .build()
    }

    async fn find(
        &self,
        name: &str,
        definition: &str,
    ) -> Result<Option<(String, SchemaVersionStatus)>, GlueError> {
        let call = "GetSchemaByDefinition";
        let found = self
            .client
            .get_schema_by_definition()
            .schema_id(self.schema_id(name))
            .schema_definition(definition)
            .send()
            .await;
        match found {
            Ok(out) => self
                .version(call, name, out.schema_version_id(), out.status())
                .map(Some),
            Err(err) => match self.failure(call, name, err) {
                Failure::NotFound => Ok(None),
                Failure::AlreadyExists => Err(self.unavailable(call, "AlreadyExistsException")),
                Failure::Error(err) => Err(err),
            },
        }
    }

    async fn add_version(
        &self,
        name: &str,
        definition: &str,
    ) -> Result<Option<(String, SchemaVersionStatus)>, GlueError> {
        let call = "RegisterSchemaVersion";
        let added = self
            .client
            .register_schema_version()
            .schema_id(self.schema_id(name))
            .schema_definition(definition)
            .send()
            .await;
        match added {
            Ok(out) => {
                tracing::info!(registry = self.registry(), schema = name, version = ?out.version_number(), "schema version registered with AWS Glue");
                self.version(call, name, out.schema_version_id(), out.status())
                    .map(Some)
            }
            Err(err) => match self.failure(call, name, err) {
                Failure::NotFound => Ok(None),
                Failure::AlreadyExists => Err(self.unavailable(call, "AlreadyExistsException")),
                Failure::Error(err) => Err(err),
            },
        }
    }

    /// `None`: the schema exists already.
    async fn create(
        &self,
        name: &str,
        definition: &str,
    ) -> Result<Option<(String, SchemaVersionStatus)>, GlueError> {
        let call = "CreateSchema";
        let created = self
            .client
            .create_schema()
            .registry_id(self.registry_id())
            .schema_name(name)
            .data_format(DataFormat::Avro)
            .compatibility(self.settings.compatibility.sdk())
            .schema_definition(definition)
            .description("Registered by cdc-bridge")
            .send()
            .await;
        match created {
            Ok(out) => {
                tracing::info!(
                    registry = self.registry(),
                    schema = name,
                    "schema created in AWS Glue"
                );
                self.version(
                    call,
                    name,
                    out.schema_version_id(),
                    out.schema_version_status(),
                )
                .map(Some)
            }
            Err(err) => match self.failure(call, name, err) {
                Failure::NotFound => Err(GlueError::NoRegistry {
                    registry: self.registry().to_owned(),
                }),
                Failure::AlreadyExists => Ok(None),
                Failure::Error(err) => Err(err),
            },
        }
    }

    /// Polls a `PENDING` version until Glue has checked it.
    async fn await_available(&self, name: &str, version: &str) -> Result<(), GlueError> {
        let call = "GetSchemaVersion";
        let deadline = tokio::time::Instant::now() + PENDING_LIMIT;
        loop {
            let status = self
                .client
                .get_schema_version()
                .schema_version_id(version)
                .send()
                .await
                .map_err(|err| match self.failure(call, name, err) {
                    Failure::NotFound | Failure::AlreadyExists => {
                        self.unavailable(call, "the new version vanished")
                    }
                    Failure::Error(err) => err,
                })?
                .status()
                .cloned();
            match status {
                Some(SchemaVersionStatus::Available) => return Ok(()),
                Some(SchemaVersionStatus::Failure) => {
                    return Err(GlueError::Incompatible {
                        registry: self.registry().to_owned(),
                        schema: name.to_owned(),
                        version: version.to_owned(),
                    })
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(self.unavailable(call, "the new version is still PENDING"))
                }
                _ => tokio::time::sleep(PENDING_POLL).await,
            }
        }
    }

    fn version(
        &self,
        call: &'static str,
        name: &str,
        id: Option<&str>,
        status: Option<&SchemaVersionStatus>,
    ) -> Result<(String, SchemaVersionStatus), GlueError> {
        match (id, status) {
            (_, Some(SchemaVersionStatus::Failure)) => Err(GlueError::Incompatible {
                registry: self.registry().to_owned(),
                schema: name.to_owned(),
                version: id.unwrap_or("?").to_owned(),
            }),
            (Some(id), status) => Ok((
                id.to_owned(),
                status.cloned().unwrap_or(SchemaVersionStatus::Available),
            )),
            (None, _) => Err(self.unavailable(call, "the answer has no SchemaVersionId")),
        }
    }

    fn unavailable(&self, call: &'static str, reason: &str) -> GlueError {
        GlueError::Unavailable {
            registry: self.registry().to_owned(),
            call,
            reason: reason.to_owned(),
        }
    }

    /// Classifies a failed call by its error code (Glue's exception names).
    fn failure<E, R>(&self, call: &'static str, schema: &str, err: SdkError<E, R>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let registry = self.registry().to_owned();
        if let Some(reason) = crate::error::aws_credentials_error(&err) {
            return Failure::Error(GlueError::NoCredentials { registry, reason });
        }
        let SdkError::ServiceError(service) = &err else {
            // Timeouts, unreachable endpoints, unreadable answers: ask again later.
            return Failure::Error(GlueError::Unavailable {
                registry,
                call,
                reason: DisplayErrorContext(&err).to_string(),
            });
        };
        let code = service.err().code().unwrap_or("Unknown").to_owned();
        let message = service.err().message().unwrap_or_default().to_owned();
        match code.as_str() {
            "EntityNotFoundException" => Failure::NotFound,
            "AlreadyExistsException" => Failure::AlreadyExists,
            "ThrottlingException"
            | "InternalServiceException"
            | "ConcurrentModificationException"
            | "OperationTimeoutException"
            | "ServiceUnavailableException"
            | "RequestTimeout"
            | "ExpiredTokenException" => Failure::Error(GlueError::Unavailable {
                registry,
                call,
                reason: format!("{code}: {message}"),
            }),
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "InvalidClientTokenId"
            | "MissingAuthenticationToken"
            | "SignatureDoesNotMatch" => Failure::Error(GlueError::Denied {
                registry,
                call,
                code,
                message,
            }),
            _ => Failure::Error(GlueError::Refused {
                registry,
                schema: schema.to_owned(),
                call,
                code,
                message,
            }),
        }
    }
}

/// The 16 bytes of a UUID in its text form, most significant first (as Java's
/// `UUID.getMostSignificantBits` then `getLeastSignificantBits`).
pub fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_id_is_read_as_the_uuid_bytes_in_order() {
        assert_eq!(
            uuid_bytes("b7b4a7f0-9c4e-4e2b-8a4a-0123456789ab"),
            Some([
                0xb7, 0xb4, 0xa7, 0xf0, 0x9c, 0x4e, 0x4e, 0x2b, 0x8a, 0x4a, 0x01, 0x23, 0x45, 0x67,
                0x89, 0xab
            ])
        );
        assert_eq!(uuid_bytes("b7b4a7f09c4e4e2b8a4a0123456789ab"), None);
        assert_eq!(uuid_bytes("zzb4a7f0-9c4e-4e2b-8a4a-0123456789ab"), None);
    }

    #[test]
    fn only_an_unavailable_registry_is_transient() {
        let unavailable = GlueError::Unavailable {
            registry: "r".into(),
            call: "CreateSchema",
            reason: "ThrottlingException".into(),
        };
        assert_eq!(unavailable.disposition(), Disposition::Transient);
        let missing = GlueError::NoRegistry {
            registry: "r".into(),
        };
        assert_eq!(missing.disposition(), Disposition::Fatal);
        assert!(missing
            .to_string()
            .contains("create-registry --registry-name r"));
    }
}
