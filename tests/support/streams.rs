//! A DynamoDB Streams endpoint with several shards that split on demand, served on loopback
//! over the service's own JSON protocol (the AWS SDK talks to it as to AWS).
//!
//! Why: DynamoDB Local gives a table one shard that never splits during a test, and nothing
//! else here serves DynamoDB Streams; spreading shards over instances needs several, and
//! parents before children needs splits. The table itself is not emulated: the test appends
//! item changes with [`StreamServer::put`], and they are routed as DynamoDB routes them: an
//! item stays in its shard until that shard splits, then moves to one of its children, so
//! one item's changes follow its shard lineage in order.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

struct Shard {
    id: String,
    parent: Option<String>,
    /// Each record with its sequence number.
    records: Vec<(u64, Value)>,
    start: u64,
    /// The last sequence number, once the shard is closed.
    end: Option<u64>,
    children: Vec<String>,
}

#[derive(Default)]
struct Stream {
    shards: Vec<Shard>,
    /// Where each item's changes go now.
    items: HashMap<String, String>,
    /// The item images as last written, for OldImage.
    images: HashMap<String, Value>,
    sequence: u64,
    table: String,
}

impl Stream {
    fn shard(&mut self, id: &str) -> Option<&mut Shard> {
        self.shards.iter_mut().find(|s| s.id == id)
    }

    fn open_shards(&self) -> Vec<&Shard> {
        self.shards.iter().filter(|s| s.end.is_none()).collect()
    }

    fn add_shard(&mut self, parent: Option<String>) -> String {
        let id = format!(
            "shardId-{:020}-{:08x}",
            1_700_000_000_000u64 + self.shards.len() as u64,
            self.shards.len()
        );
        self.sequence += 1;
        self.shards.push(Shard {
            id: id.clone(),
            parent,
            records: Vec::new(),
            start: self.sequence,
            end: None,
            children: Vec::new(),
        });
        id
    }

    /// The open shard an item's change goes to: its shard's descendant, or any open shard.
    fn route(&mut self, key: &str) -> String {
        let hash = |salt: &str| {
            let mut h = DefaultHasher::new();
            (key, salt).hash(&mut h);
            h.finish() as usize
        };
        let mut shard = match self.items.get(key) {
            Some(shard) => shard.clone(),
            None => {
                let open = self.open_shards();
                open[hash("") % open.len()].id.clone()
            }
        };
        loop {
            let s = self.shards.iter().find(|s| s.id == shard).expect("known");
            if s.end.is_none() {
                break;
            }
            shard = s.children[hash(&shard) % s.children.len()].clone();
        }
        self.items.insert(key.to_owned(), shard.clone());
        shard
    }
}

/// The endpoint; dropped, it stops serving.
pub struct StreamServer {
    pub port: u16,
    stream: Arc<Mutex<Stream>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StreamServer {
    /// A stream of table `table` with `shards` open shards.
    pub async fn start(table: &str, shards: usize) -> Self {
        let mut stream = Stream {
            table: table.to_owned(),
            ..Stream::default()
        };
        for _ in 0..shards {
            stream.add_shard(None);
        }
        let stream = Arc::new(Mutex::new(stream));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = stream.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let stream = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let stream = stream.clone();
                        async move { Ok::<_, Infallible>(answer(&stream, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        StreamServer { port, stream, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn arn(&self) -> String {
        let table = self.stream.lock().unwrap().table.clone();
        format!(
            "arn:aws:dynamodb:us-east-1:000000000000:table/{table}/stream/2026-12-06T00:00:00.000"
        )
    }

    /// Appends the change of item `pk` to `g` (INSERT the first time, MODIFY after).
    pub fn put(&self, pk: &str, g: i64) {
        let mut stream = self.stream.lock().unwrap();
        let shard = stream.route(pk);
        stream.sequence += 1;
        let sequence = stream.sequence;
        let image = json!({"pk": {"S": pk}, "g": {"N": g.to_string()}});
        let old = stream.images.insert(pk.to_owned(), image.clone());
        let mut data = json!({
            "ApproximateCreationDateTime": 1_765_000_000.0,
            "Keys": {"pk": {"S": pk}},
            "NewImage": image,
            "SequenceNumber": format!("{sequence:021}"),
            "SizeBytes": 40,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        });
        if let Some(old) = &old {
            data["OldImage"] = old.clone();
        }
        let record = json!({
            "eventID": format!("{sequence:x}"),
            "eventName": if old.is_some() { "MODIFY" } else { "INSERT" },
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": data,
        });
        stream
            .shard(&shard)
            .unwrap()
            .records
            .push((sequence, record));
    }

    /// Closes one open shard (the oldest) and opens two children; returns the closed one.
    pub fn split(&self) -> String {
        let mut stream = self.stream.lock().unwrap();
        stream.sequence += 1;
        let end = stream.sequence;
        let parent = stream.open_shards()[0].id.clone();
        stream.shard(&parent).unwrap().end = Some(end);
        let children = vec![
            stream.add_shard(Some(parent.clone())),
            stream.add_shard(Some(parent.clone())),
        ];
        stream.shard(&parent).unwrap().children = children;
        parent
    }

    /// The shards still open.
    pub fn open_shards(&self) -> Vec<String> {
        let stream = self.stream.lock().unwrap();
        stream.open_shards().iter().map(|s| s.id.clone()).collect()
    }
}

async fn answer(
    stream: &Mutex<Stream>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = &mut *stream.lock().unwrap();
    let outcome = match target.as_str() {
        "DescribeStream" => Ok(describe(stream)),
        "GetShardIterator" => iterator(stream, &input),
        "GetRecords" => records(stream, &input),
        other => Err((
            "UnknownOperationException",
            format!("not served here: {other}"),
        )),
    };
    let (status, body) = match outcome {
        Ok(body) => (StatusCode::OK, body),
        Err((code, message)) => (
            StatusCode::BAD_REQUEST,
            json!({"__type": format!("com.amazonaws.dynamodb.v20120810#{code}"), "message": message}),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-requestid", "fixture")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn describe(stream: &Stream) -> Value {
    let shards: Vec<Value> = stream
        .shards
        .iter()
        .map(|s| {
            let mut range = json!({"StartingSequenceNumber": format!("{:021}", s.start)});
            if let Some(end) = s.end {
                range["EndingSequenceNumber"] = json!(format!("{end:021}"));
            }
            let mut shard = json!({"ShardId": s.id, "SequenceNumberRange": range});
            if let Some(parent) = &s.parent {
                shard["ParentShardId"] = json!(parent);
            }
            shard
        })
        .collect();
    json!({"StreamDescription": {
        "StreamArn": format!("arn:aws:dynamodb:us-east-1:000000000000:table/{}/stream/2026-12-06T00:00:00.000", stream.table),
        "StreamLabel": "2026-12-06T00:00:00.000",
        "StreamStatus": "ENABLED",
        "StreamViewType": "NEW_AND_OLD_IMAGES",
        "CreationRequestDateTime": 1_765_000_000.0,
        "TableName": stream.table,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "Shards": shards,
    }})
}

type Answer = Result<Value, (&'static str, String)>;

fn iterator(stream: &mut Stream, input: &Value) -> Answer {
    let id = input["ShardId"].as_str().unwrap_or_default();
    let shard = stream
        .shard(id)
        .ok_or(("ResourceNotFoundException", format!("no shard {id}")))?;
    let after = |seq: &Value| -> Result<u64, (&'static str, String)> {
        seq.as_str()
            .and_then(|s| s.parse().ok())
            .ok_or(("ValidationException", format!("bad sequence number {seq}")))
    };
    let index = match input["ShardIteratorType"].as_str() {
        Some("TRIM_HORIZON") => 0,
        Some("LATEST") => shard.records.len(),
        Some("AFTER_SEQUENCE_NUMBER") => {
            let seq = after(&input["SequenceNumber"])?;
            shard.records.partition_point(|(s, _)| *s <= seq)
        }
        Some("AT_SEQUENCE_NUMBER") => {
            let seq = after(&input["SequenceNumber"])?;
            shard.records.partition_point(|(s, _)| *s < seq)
        }
        other => return Err(("ValidationException", format!("iterator type {other:?}"))),
    };
    Ok(json!({"ShardIterator": format!("{id}|{index}")}))
}

fn records(stream: &mut Stream, input: &Value) -> Answer {
    let iterator = input["ShardIterator"].as_str().unwrap_or_default();
    let (id, index) = iterator
        .split_once('|')
        .and_then(|(id, i)| Some((id, i.parse::<usize>().ok()?)))
        .ok_or(("ValidationException", format!("bad iterator {iterator}")))?;
    let limit = input["Limit"].as_u64().unwrap_or(1000) as usize;
    let shard = stream
        .shard(id)
        .ok_or(("ResourceNotFoundException", format!("no shard {id}")))?;
    let end = (index + limit).min(shard.records.len());
    let page: Vec<Value> = shard.records[index.min(end)..end]
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    let mut out = json!({"Records": page});
    if !(shard.end.is_some() && end == shard.records.len()) {
        out["NextShardIterator"] = json!(format!("{id}|{end}"));
    }
    Ok(out)
}
