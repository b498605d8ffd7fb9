//! The harness of the high-availability tests: a cluster of instances sharing one store (the
//! Postgres store or the DynamoDB store), its pipelines (Postgres, MariaDB, DynamoDB Local,
//! and a stream of several shards from `support::streams`) to Kinesis streams, a workload
//! writing to all of them, and the checks that every change arrived in order per key.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support;
use support::pg::{connect, pg_url, PgFixture};
use support::streams::StreamServer;
use support::{free_port, http_get_within, kinesis, Rng, Workspace};

pub const LEASE_MS: u64 = 2000;
/// Takeover bound: the lease, a renewal round, and a restart of the pipeline.
pub const TAKEOVER_LIMIT: Duration = Duration::from_millis(LEASE_MS + 5000);

#[derive(Clone, Copy, Debug)]
pub enum StoreKind {
    Postgres,
    Dynamodb,
}

impl StoreKind {
    pub fn tag(self) -> &'static str {
        match self {
            StoreKind::Postgres => "pg",
            StoreKind::Dynamodb => "dy",
        }
    }

    /// The store's section; its address comes from `CDC_BRIDGE_STORE_URL`, set per instance
    /// (so that one can reach it through a proxy that the test cuts).
    pub fn section(self, store_name: &str) -> String {
        match self {
            StoreKind::Postgres => format!(
                "kind = \"postgres\"\nurl = \"${{CDC_BRIDGE_STORE_URL}}\"\nschema = \"{store_name}\"\n"
            ),
            StoreKind::Dynamodb => format!(
                "kind = \"dynamodb\"\ntable = \"{store_name}\"\nregion = \"us-east-1\"\nendpoint_url = \"${{CDC_BRIDGE_STORE_URL}}\"\n",
            ),
        }
    }

    /// The schema (Postgres) or table (DynamoDB) of the cluster `prefix`.
    pub fn store_name(self, prefix: &str) -> String {
        match self {
            StoreKind::Postgres => format!("{prefix}_store"),
            StoreKind::Dynamodb => support::dynamodb::table_name(prefix),
        }
    }

    /// The store's address, directly.
    pub fn url(self) -> String {
        match self {
            StoreKind::Postgres => pg_url(),
            StoreKind::Dynamodb => support::dynamodb::endpoint(),
        }
    }

    /// The store's `host:port`, and its address with that replaced by 127.0.0.1:`port`.
    pub fn through(self, port: u16) -> (String, String) {
        let url = self.url();
        let (scheme, rest) = url.split_once("://").unwrap();
        let (user, rest) = match rest.split_once('@') {
            Some((user, rest)) => (format!("{user}@"), rest),
            None => (String::new(), rest),
        };
        let (target, path) = rest.split_once('/').unwrap_or((rest, ""));
        let proxied = format!("{scheme}://{user}127.0.0.1:{port}/{path}");
        (target.to_owned(), proxied)
    }
}

/// Pipelines `<prefix>_<i>`, each a Postgres table `kv` in its own schema, to its own stream.
pub struct Cluster {
    pub ws: Workspace,
    /// The DynamoDB table of each DynamoDB pipeline.
    pub dynamodb_tables: HashMap<String, String>,
    pub config: PathBuf,
    pub store: StoreKind,
    pub pipelines: Vec<String>,
    pub streams: Vec<String>,
    pub instances: Vec<Instance>,
    /// The pipeline spread shard by shard, and its stream.
    pub spread: Option<(String, Arc<StreamServer>)>,
    /// The store's schema (Postgres) or table (DynamoDB).
    pub store_name: String,
}

pub struct Instance {
    pub child: Child,
    pub port: u16,
}

impl Cluster {
    /// `postgres` Postgres pipelines, a MySQL one (`<prefix>_my`, table `app.<prefix>_my` on
    /// MariaDB) when `mysql`, and a DynamoDB Streams one (`<prefix>_dy`, a table of DynamoDB
    /// Local) when `dynamodb`.
    pub async fn new(
        prefix: &str,
        store: StoreKind,
        postgres: usize,
        mysql: bool,
        dynamodb: bool,
    ) -> Self {
        Self::with_lease(prefix, store, postgres, mysql, dynamodb, LEASE_MS).await
    }

    /// Adds pipeline `<prefix>_ds`, reading a stream of `shards` shards spread over the
    /// instances shard by shard (written again: the instances are started after this).
    pub async fn with_spread_stream(mut self, prefix: &str, shards: usize) -> Self {
        let name = format!("{prefix}_ds");
        let server = Arc::new(StreamServer::start(&name.replace('_', "-"), shards).await);
        let source = format!(
            "kind = \"dynamodb\"\nstream_arn = \"{}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\npoll_interval_ms = 200\n",
            server.arn(),
            server.endpoint()
        );
        let mut body = std::fs::read_to_string(&self.config).unwrap();
        let stream = pipeline_to_a_stream(&mut body, &name, &source).await;
        std::fs::write(&self.config, body).unwrap();
        self.pipelines.push(name.clone());
        self.streams.push(stream);
        self.spread = Some((name, server));
        self
    }

    pub async fn with_lease(
        prefix: &str,
        store: StoreKind,
        postgres: usize,
        mysql: bool,
        dynamodb: bool,
        lease_ms: u64,
    ) -> Self {
        let ws = Workspace::new();
        let store_name = store.store_name(prefix);
        if let StoreKind::Postgres = store {
            // A store left by an earlier run would resume from its positions.
            let client = connect(&pg_url()).await;
            let drop = format!("DROP SCHEMA IF EXISTS {prefix}_store CASCADE");
            client.batch_execute(&drop).await.unwrap();
        }
        let mut names = Vec::new();
        let mut streams = Vec::new();
        let mut body = format!(
            "http_listen = \"${{CDC_BRIDGE_HTTP_LISTEN:-}}\"\n\n[daemon.coordination]\n{}lease_duration_ms = {lease_ms}\n\n",
            store.section(&store_name)
        );
        for i in 0..postgres {
            let name = format!("{prefix}_{i}");
            let fixture = PgFixture::new(&name).await;
            fixture
                .sql(&format!(
                    "CREATE TABLE {name}.kv (id int PRIMARY KEY, g bigint NOT NULL)"
                ))
                .await;
            let source = format!(
                "kind = \"postgres\"\nurl = \"${{CDC_BRIDGE_PG_URL}}\"\nslot = \"{name}\"\npublication = \"{name}\"\n\
                 tables = [\"{name}.kv\"]\nheartbeat_interval_ms = 500\nstatus_interval_ms = 1000\n"
            );
            let stream = pipeline_to_a_stream(&mut body, &name, &source).await;
            names.push(name);
            streams.push(stream);
        }
        if mysql {
            let name = format!("{prefix}_my");
            let mut conn = support::mysql::connect().await;
            let ddl = format!("DROP TABLE IF EXISTS app.{name}; CREATE TABLE app.{name} (id int PRIMARY KEY, g bigint NOT NULL)");
            support::mysql::sql(&mut conn, &ddl).await;
            let server_id = 6000 + std::process::id() % 1000 + 1000 * (store as u32);
            let source = format!(
                "kind = \"mysql\"\nurl = \"${{CDC_BRIDGE_MYSQL_URL}}\"\nserver_id = {server_id}\ntables = [\"app.{name}\"]\n"
            );
            let stream = pipeline_to_a_stream(&mut body, &name, &source).await;
            names.push(name);
            streams.push(stream);
        }
        let mut dynamodb_tables = HashMap::new();
        if dynamodb {
            let name = format!("{prefix}_dy");
            let table = support::dynamodb::table_name(&name.replace('_', "-"));
            let view = aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages;
            support::dynamodb::create_table(
                &support::dynamodb::client().await,
                &table,
                false,
                view,
            )
            .await;
            let source = format!(
                "kind = \"dynamodb\"\ntable = \"{table}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\npoll_interval_ms = 200\n",
                support::dynamodb::endpoint()
            );
            let stream = pipeline_to_a_stream(&mut body, &name, &source).await;
            dynamodb_tables.insert(name.clone(), table);
            names.push(name);
            streams.push(stream);
        }
        let config = ws.config(&body);
        Cluster {
            dynamodb_tables,
            ws,
            config,
            store,
            pipelines: names,
            streams,
            instances: Vec::new(),
            spread: None,
            store_name,
        }
    }

    pub fn spawn(&self) -> Instance {
        self.spawn_with_store(&self.store.url())
    }

    pub fn spawn_with_store(&self, store_url: &str) -> Instance {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.ws.path("bridge.log"))
            .unwrap();
        let child = Command::new(support::BIN)
            .args(["run", "--config", self.config.to_str().unwrap()])
            .current_dir(self.ws.dir.path())
            .env("CDC_BRIDGE_LOG", "info")
            .env("CDC_BRIDGE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("CDC_BRIDGE_STORE_URL", store_url)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Instance { child, port }
    }

    pub fn start(&mut self, count: usize) {
        for _ in 0..count {
            let instance = self.spawn();
            self.instances.push(instance);
        }
    }

    /// The pipelines that move whole (one pipeline lease each); the DynamoDB ones spread by
    /// shard.
    pub fn whole_pipelines(&self) -> usize {
        self.pipelines.iter().filter(|p| !is_spread(p)).count()
    }

    /// Which instance (index) runs each pipeline that moves whole: holds its lease and streams.
    pub fn runners(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for (i, instance) in self.instances.iter().enumerate() {
            for status in statuses(instance.port) {
                if !status["lease"]["partitions"].is_null() {
                    continue;
                }
                let held = status["lease"]["held_here"].as_bool() == Some(true);
                if held && status["state"] == "streaming" {
                    out.insert(status["pipeline"].as_str().unwrap().to_owned(), i);
                }
            }
        }
        out
    }

    /// Waits until every pipeline runs somewhere; returns how long that took.
    pub fn wait_all_running(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.runners().len() == self.whole_pipelines() && self.every_open_shard_held() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "not every pipeline runs after {limit:?}: {:?}, shards held {:?} of {:?}\n{}",
                self.runners(),
                self.shards_held(),
                self.spread.as_ref().map(|(_, server)| server.open_shards()),
                self.ws.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The shards of every pipeline spread by shard that each instance holds (and streams).
    pub fn shards_held(&self) -> Vec<Vec<String>> {
        let spread: Vec<&String> = self.pipelines.iter().filter(|p| is_spread(p)).collect();
        (0..self.instances.len())
            .map(|i| {
                let mut held = Vec::new();
                for pipeline in &spread {
                    held.extend(self.shards_held_of(pipeline)[i].clone());
                }
                held
            })
            .collect()
    }

    /// The shards of `pipeline` that each instance holds (and streams).
    pub fn shards_held_of(&self, pipeline: &str) -> Vec<Vec<String>> {
        self.instances
            .iter()
            .map(|instance| {
                statuses(instance.port)
                    .into_iter()
                    .find(|s| s["pipeline"] == pipeline && s["state"] == "streaming")
                    .and_then(|s| serde_json::from_value(s["lease"]["partitions"].clone()).ok())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Whether every open shard of each spread pipeline is held by exactly one instance (the
    /// stream of DynamoDB Local has one shard).
    pub fn every_open_shard_held(&self) -> bool {
        self.pipelines
            .iter()
            .filter(|p| is_spread(p))
            .all(|pipeline| {
                let mut held: Vec<String> = self.shards_held_of(pipeline).concat();
                held.sort();
                match &self.spread {
                    Some((name, server)) if name == pipeline => {
                        let mut open = server.open_shards();
                        open.sort();
                        held == open
                    }
                    _ => held.len() == 1,
                }
            })
    }

    /// The keys of the lease rows in the store, read through the store's own client.
    pub async fn lease_rows(&self) -> Vec<String> {
        use cdc_bridge::coordination::LeaseTable;
        use cdc_bridge::stores::{
            DynamoDbStore, DynamoDbStoreConfig, PostgresStore, PostgresStoreConfig,
        };
        let lease = Duration::from_millis(LEASE_MS);
        let leases = match self.store {
            StoreKind::Postgres => {
                let config = PostgresStoreConfig {
                    url: cdc_bridge::config::Secret::new(pg_url()),
                    schema: self.store_name.clone(),
                    allow_cleartext_password: false,
                };
                PostgresStore::open(config, lease)
                    .await
                    .unwrap()
                    .leases()
                    .await
            }
            StoreKind::Dynamodb => {
                let config = DynamoDbStoreConfig {
                    table: self.store_name.clone(),
                    region: Some("us-east-1".into()),
                    endpoint_url: Some(support::dynamodb::endpoint()),
                };
                DynamoDbStore::open(config, lease)
                    .await
                    .unwrap()
                    .leases()
                    .await
            }
        };
        leases.unwrap().into_iter().map(|l| l.key).collect()
    }

    /// Waits until instance `i` stands by for the (single) pipeline another instance runs.
    pub fn wait_standby(&self, i: usize) {
        let by = Instant::now() + Duration::from_secs(20);
        while statuses(self.instances[i].port)
            .first()
            .is_none_or(|s| s["state"] != "standby")
        {
            assert!(Instant::now() < by, "{}", self.ws.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until instance `i` alone runs `pipeline`.
    pub fn wait_runner(&self, pipeline: &str, i: usize, limit: Duration) {
        let start = Instant::now();
        loop {
            let runners: Vec<usize> = (0..self.instances.len())
                .filter(|k| {
                    statuses(self.instances[*k].port).iter().any(|s| {
                        s["pipeline"] == pipeline
                            && s["lease"]["held_here"] == true
                            && s["state"] == "streaming"
                    })
                })
                .collect();
            if runners == [i] {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{pipeline} is not run by instance {i} alone after {limit:?}: {runners:?}\n{}",
                self.ws.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every pipeline runs and every instance runs as many as any other, give or
    /// take one.
    pub fn wait_even_spread(&self) {
        let by = Instant::now() + Duration::from_secs(30);
        loop {
            let mut per_instance = vec![0usize; self.instances.len()];
            for i in self.runners().values() {
                per_instance[*i] += 1;
            }
            let even = |counts: &[usize]| {
                let (min, max) = (counts.iter().min(), counts.iter().max());
                max.zip(min).is_none_or(|(max, min)| max - min <= 1)
            };
            let shards: Vec<Vec<usize>> = self
                .pipelines
                .iter()
                .filter(|p| is_spread(p))
                .map(|p| self.shards_held_of(p).iter().map(Vec::len).collect())
                .collect();
            if per_instance.iter().sum::<usize>() == self.whole_pipelines()
                && even(&per_instance)
                && self.every_open_shard_held()
                && shards.iter().all(|counts| even(counts))
            {
                return;
            }
            assert!(
                Instant::now() < by,
                "leases not spread evenly: pipelines {per_instance:?}, shards {shards:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What `cdc-bridge status` prints when asked of instance `i`.
    pub fn status_command(&self, i: usize) -> String {
        let output = Command::new(support::BIN)
            .args(["status", "--config", self.config.to_str().unwrap()])
            .env(
                "CDC_BRIDGE_HTTP_LISTEN",
                format!("127.0.0.1:{}", self.instances[i].port),
            )
            .env("CDC_BRIDGE_STORE_URL", self.store.url())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", support::stderr(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.ws.path("bridge.log")).unwrap_or_default()
    }

    pub fn stop_all(&mut self) {
        for mut instance in self.instances.drain(..) {
            let _ = instance.child.kill();
            let _ = instance.child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        if std::thread::panicking() {
            // The whole log, for the failure at hand (the message holds only its tail).
            let kept = std::env::temp_dir().join(format!("cdc-bridge-{}.log", self.store_name));
            if std::fs::copy(self.ws.path("bridge.log"), &kept).is_ok() {
                eprintln!("the instances' log: {}", kept.display());
            }
        }
    }
}

/// Adds pipeline `name` with `source` (its settings) to `body`, to a new one-shard stream
/// (returned).
pub async fn pipeline_to_a_stream(body: &mut String, name: &str, source: &str) -> String {
    let stream = kinesis::stream_name(&name.replace('_', "-"));
    kinesis::create_stream(&kinesis::client().await, &stream, 1).await;
    body.push_str(&format!(
        "[[pipeline]]\nname = \"{name}\"\n[pipeline.source]\n{source}\
         [pipeline.sink]\nkind = \"kinesis\"\nstream = \"{stream}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n\
         [pipeline.batch]\nlinger_ms = 5\n\
         [pipeline.restart]\ninitial_backoff_ms = 200\nmax_backoff_ms = 1000\n\n",
        kinesis::endpoint()
    ));
    stream
}

/// Whether a pipeline of the cluster reads a DynamoDB stream, spread shard by shard.
pub fn is_spread(pipeline: &str) -> bool {
    pipeline.ends_with("_dy") || pipeline.ends_with("_ds")
}

pub fn statuses(port: u16) -> Vec<Value> {
    match http_get_within(port, "/status", Duration::from_millis(300)) {
        Some((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A workload running against every pipeline of a cluster.
pub struct Workload {
    pub stop: Arc<AtomicBool>,
    pub written: Written,
    pub task: tokio::task::JoinHandle<()>,
}

impl Workload {
    /// Stops writing; the changes written, by pipeline, in write order.
    pub async fn finish(self) -> BTreeMap<String, Vec<(i64, i64)>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let written = self.written.lock().unwrap().clone();
        written
    }
}

impl Cluster {
    pub fn start_workload(&self) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(Mutex::new(BTreeMap::new()));
        let task = tokio::spawn(workload(
            self.pipelines.clone(),
            self.dynamodb_tables.clone(),
            self.spread.clone(),
            stop.clone(),
            written.clone(),
        ));
        Workload {
            stop,
            written,
            task,
        }
    }
}

/// The `(id, g)` written, by pipeline, in write order.
pub type Written = Arc<Mutex<BTreeMap<String, Vec<(i64, i64)>>>>;

/// Upserts `(id, g)` into a random pipeline's table, `g` counting per table; records them.
pub async fn workload(
    pipelines: Vec<String>,
    dynamodb_tables: HashMap<String, String>,
    spread: Option<(String, Arc<StreamServer>)>,
    stop: Arc<AtomicBool>,
    written: Written,
) {
    let client = connect(&pg_url()).await;
    let dynamodb = support::dynamodb::client().await;
    let mut mysql = None;
    let mut rng = Rng::seeded();
    let mut g = 0i64;
    while !stop.load(Ordering::Relaxed) {
        g += 1;
        let table = &pipelines[rng.below(pipelines.len() as u64) as usize];
        let id = rng.below(20) as i32 + 1;
        if let Some((_, server)) = spread.as_ref().filter(|(name, _)| name == table) {
            server.put(&id.to_string(), g);
        } else if let Some(dynamodb_table) = dynamodb_tables.get(table) {
            use aws_sdk_dynamodb::types::AttributeValue;
            dynamodb
                .put_item()
                .table_name(dynamodb_table)
                .item("pk", AttributeValue::S(id.to_string()))
                .item("g", AttributeValue::N(g.to_string()))
                .send()
                .await
                .unwrap();
        } else if table.ends_with("_my") {
            if mysql.is_none() {
                mysql = Some(support::mysql::connect().await);
            }
            let upsert = format!("INSERT INTO app.{table} (id, g) VALUES ({id}, {g}) ON DUPLICATE KEY UPDATE g = VALUES(g)");
            support::mysql::sql(mysql.as_mut().unwrap(), &upsert).await;
        } else {
            client
                .execute(
                    &format!("INSERT INTO {table}.kv (id, g) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET g = EXCLUDED.g"),
                    &[&id, &g],
                )
                .await
                .unwrap();
        }
        written
            .lock()
            .unwrap()
            .entry(table.clone())
            .or_default()
            .push((id.into(), g));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// The `(id, g)` of every record of `stream`, in stream order.
pub async fn delivered(stream: &str) -> Vec<(i64, i64)> {
    let client = kinesis::client().await;
    kinesis::read_all(&client, stream)
        .await
        .iter()
        .map(|r| {
            let event: Value = serde_json::from_slice(&r.data).unwrap();
            // DynamoDB items carry their key as `pk` and numbers as strings.
            let number = |v: &Value| v.as_i64().or_else(|| v.as_str()?.parse().ok()).unwrap();
            let key = &event["key"];
            let id = if key["id"].is_null() {
                &key["pk"]
            } else {
                &key["id"]
            };
            (number(id), number(&event["after"]["g"]))
        })
        .collect()
}

/// Every written change arrived, and per key the first copies arrive in write order.
pub async fn check_delivery(
    cluster: &Cluster,
    written: &BTreeMap<String, Vec<(i64, i64)>>,
) -> usize {
    let mut duplicates = 0;
    for (pipeline, stream) in cluster.pipelines.iter().zip(&cluster.streams) {
        let expected = written.get(pipeline).cloned().unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(60);
        let records = loop {
            let records = delivered(stream).await;
            let seen: HashSet<_> = records.iter().copied().collect();
            if expected.iter().all(|c| seen.contains(c)) {
                break records;
            }
            assert!(
                Instant::now() < deadline,
                "pipeline {pipeline}: {} of {} changes arrived\n{}",
                expected.iter().filter(|c| seen.contains(c)).count(),
                expected.len(),
                cluster.ws.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let mut first = HashSet::new();
        let mut order: HashMap<i64, Vec<i64>> = HashMap::new();
        for change in &records {
            if first.insert(*change) {
                order.entry(change.0).or_default().push(change.1);
            } else {
                duplicates += 1;
            }
        }
        let mut want: HashMap<i64, Vec<i64>> = HashMap::new();
        for (id, g) in &expected {
            want.entry(*id).or_default().push(*g);
        }
        for (id, gs) in &want {
            assert_eq!(
                order.get(id),
                Some(gs),
                "pipeline {pipeline}: key {id} arrived out of order or with changes not written"
            );
        }
    }
    duplicates
}

/// The stored position of `pipeline`, as an LSN number, as `cdc-bridge checkpoints` lists it.
pub async fn stored_lsn(cluster: &Cluster, pipeline: &str) -> Option<u64> {
    let output = Command::new(support::BIN)
        .args(["checkpoints", "--config", cluster.config.to_str().unwrap()])
        .env("CDC_BRIDGE_STORE_URL", cluster.store.url())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", support::stderr(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|line| line.split_whitespace().next() == Some(pipeline))
        .and_then(|line| line.split_whitespace().last().map(str::to_owned))
        .map(|lsn| {
            let (hi, lo) = lsn.split_once('/').unwrap();
            (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
        })
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// How the first holder is cut off from the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutOff {
    /// SIGSTOP, later SIGCONT.
    Paused,
    /// Its connections to the store are cut (a proxy in between), later restored.
    StoreUnreachable,
}

impl CutOff {
    /// Cuts `child` off (it reaches the store through `proxy`).
    pub fn begin(self, child: &Child, proxy: &support::kinesis::TcpProxy) {
        match self {
            CutOff::Paused => signal(child, "STOP"),
            CutOff::StoreUnreachable => proxy.cut(),
        }
    }

    /// Lets `child` go on.
    pub fn end(self, child: &Child, proxy: &support::kinesis::TcpProxy) {
        match self {
            CutOff::Paused => signal(child, "CONT"),
            CutOff::StoreUnreachable => proxy.restore(),
        }
    }
}

/// The stored sequence number of each shard of `pipeline` (`END`: `u64::MAX`), as
/// `cdc-bridge checkpoints` lists them.
pub fn stored_shards(cluster: &Cluster, pipeline: &str) -> BTreeMap<String, u64> {
    let output = Command::new(support::BIN)
        .args(["checkpoints", "--config", cluster.config.to_str().unwrap()])
        .env("CDC_BRIDGE_STORE_URL", cluster.store.url())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", support::stderr(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() == 3 && fields[0] == pipeline).then(|| {
                let seq = fields[2].parse().unwrap_or(u64::MAX);
                (fields[1].to_owned(), seq)
            })
        })
        .collect()
}
