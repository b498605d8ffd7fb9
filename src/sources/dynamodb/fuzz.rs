//! Entry point for fuzzing the decoding of DynamoDB Streams answers (see `fuzz/` and
//! `tests/fuzz_corpus.rs`): arbitrary bytes are the body of a GetRecords response, read by the
//! SDK and the source's own client code, and every record's keys and images mapped to rows
//! and encoded as JSON. Any panic is a bug. Not part of the supported API.

use aws_sdk_dynamodbstreams::config::retry::RetryConfig;
use aws_sdk_dynamodbstreams::config::{
    BehaviorVersion, Credentials, Region, StalledStreamProtectionConfig,
};
use aws_sdk_dynamodbstreams::Client;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;

use super::server::{AwsStreams, StreamsApi};
use super::value::row;
use crate::format::JsonFormat;

/// An HTTP client that answers every request with one status and body.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: Bytes,
}

impl HttpConnector for Answer {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        let status = self.status.try_into().expect("a valid status code");
        HttpConnectorFuture::ready(Ok(HttpResponse::new(
            status,
            SdkBody::from(self.body.clone()),
        )))
    }
}

impl HttpClient for Answer {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
}

/// `data` as the body of a GetRecords answer: first as a success (200), then as an error (400).
pub fn get_records_response(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    for status in [200, 400] {
        let config = aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("fuzz", "fuzz", None, None, "fuzz"))
            .endpoint_url("http://127.0.0.1:9")
            .retry_config(RetryConfig::disabled())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .http_client(Answer {
                status,
                body: body.clone(),
            })
            .build();
        let api = AwsStreams(Client::from_conf(config));
        let Ok(page) = RUNTIME.with(|rt| rt.block_on(api.records("fuzz", 1000))) else {
            continue;
        };
        for record in &page.records {
            let mut out = Vec::new();
            for image in [
                Some(&record.keys),
                record.new_image.as_ref(),
                record.old_image.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                let row = row(image);
                let event = crate::envelope::ChangeEvent {
                    op: crate::envelope::Op::Insert,
                    source: crate::envelope::SourceInfo {
                        connector: crate::envelope::SourceKind::Dynamodb,
                        pipeline: "fuzz".into(),
                        database: "fuzz".into(),
                        schema: None,
                        table: "t".into(),
                        table_schema: None,
                        position: crate::envelope::SourcePosition::Dynamodb(
                            crate::envelope::DynamodbPosition {
                                shard: "fuzz".into(),
                                sequence: record.sequence_number.as_str().into(),
                            },
                        ),
                        commit_ts_ms: record.created_ms,
                        snapshot: false,
                        ttl_expired: record.ttl,
                    },
                    key: row.clone(),
                    before: None,
                    after: Some(row),
                    unchanged: Vec::new(),
                    key_change: None,
                    ts_ms: 0,
                };
                JsonFormat::write_value(&event, &mut out);
            }
        }
    }
}
