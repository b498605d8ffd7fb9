//! Several instances sharing pipelines through leases on a shared store (the Postgres store
//! and the DynamoDB store, the same tests for both), against real PostgreSQL and MariaDB
//! sources, a real Kinesis emulator as the sink and the store's real server:
//! - three instances share two Postgres pipelines and a MySQL one pipeline by pipeline, and
//!   two DynamoDB Streams pipelines shard by shard: one on DynamoDB Local (one shard), one on a
//!   stream of four shards served by `support::streams`, which splits shards during the test
//!   (children are read only after their parent, across instances);
//!   a loop of 30 SIGKILLs over random instances (each restarted at once, so it steals its
//!   share back) under a live workload loses no change, keeps per-key order once duplicates
//!   are removed, every takeover completes within the lease duration plus a few seconds, and
//!   the leases end evenly spread;
//! - a holder paused (SIGSTOP) past its lease, or cut off from the store, is taken over;
//!   resumed or reconnected, it stores nothing more, stops its copy and says why, and the
//!   stored position never moves backward.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::pg::{connect, pg_url, PgFixture};
use support::streams::StreamServer;
use support::{free_port, http_get, http_get_within, kinesis, Rng, Workspace};

const LEASE_MS: u64 = 2000;
/// Takeover bound: the lease, a renewal round, and a restart of the pipeline.
const TAKEOVER_LIMIT: Duration = Duration::from_millis(LEASE_MS + 5000);

#[derive(Clone, Copy, Debug)]
enum StoreKind {
    Postgres,
    Dynamodb,
}

impl StoreKind {
    fn tag(self) -> &'static str {
        match self {
            StoreKind::Postgres => "pg",
            StoreKind::Dynamodb => "dy",
        }
    }

    /// The store's section; its address comes from `CDC_BRIDGE_STORE_URL`, set per instance
    /// (so that one can reach it through a proxy that the test cuts).
    fn section(self, store_name: &str) -> String {
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
    fn store_name(self, prefix: &str) -> String {
        match self {
            StoreKind::Postgres => format!("{prefix}_store"),
            StoreKind::Dynamodb => support::dynamodb::table_name(prefix),
        }
    }

    /// The store's address, directly.
    fn url(self) -> String {
        match self {
            StoreKind::Postgres => pg_url(),
            StoreKind::Dynamodb => support::dynamodb::endpoint(),
        }
    }

    /// The store's `host:port`, and its address with that replaced by 127.0.0.1:`port`.
    fn through(self, port: u16) -> (String, String) {
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
struct Cluster {
    ws: Workspace,
    /// The DynamoDB table of each DynamoDB pipeline.
    dynamodb_tables: HashMap<String, String>,
    config: PathBuf,
    store: StoreKind,
    pipelines: Vec<String>,
    streams: Vec<String>,
    instances: Vec<Instance>,
    /// The pipeline spread shard by shard, and its stream.
    spread: Option<(String, Arc<StreamServer>)>,
    /// The store's schema (Postgres) or table (DynamoDB).
    store_name: String,
}

struct Instance {
    child: Child,
    port: u16,
}

impl Cluster {
    /// `postgres` Postgres pipelines, a MySQL one (`<prefix>_my`, table `app.<prefix>_my` on
    /// MariaDB) when `mysql`, and a DynamoDB Streams one (`<prefix>_dy`, a table of DynamoDB
    /// Local) when `dynamodb`.
    async fn new(
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
    async fn with_spread_stream(mut self, prefix: &str, shards: usize) -> Self {
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

    async fn with_lease(
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

    fn spawn(&self) -> Instance {
        self.spawn_with_store(&self.store.url())
    }

    fn spawn_with_store(&self, store_url: &str) -> Instance {
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

    fn start(&mut self, count: usize) {
        for _ in 0..count {
            let instance = self.spawn();
            self.instances.push(instance);
        }
    }

    /// The pipelines that move whole (one pipeline lease each); the DynamoDB ones spread by
    /// shard.
    fn whole_pipelines(&self) -> usize {
        self.pipelines.iter().filter(|p| !is_spread(p)).count()
    }

    /// Which instance (index) runs each pipeline that moves whole: holds its lease and streams.
    fn runners(&self) -> HashMap<String, usize> {
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
    fn wait_all_running(&self, limit: Duration) -> Duration {
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
    fn shards_held(&self) -> Vec<Vec<String>> {
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
    fn shards_held_of(&self, pipeline: &str) -> Vec<Vec<String>> {
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
    fn every_open_shard_held(&self) -> bool {
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
    async fn lease_rows(&self) -> Vec<String> {
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
    fn wait_standby(&self, i: usize) {
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
    fn wait_runner(&self, pipeline: &str, i: usize, limit: Duration) {
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
    fn wait_even_spread(&self) {
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
    fn status_command(&self, i: usize) -> String {
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.ws.path("bridge.log")).unwrap_or_default()
    }

    fn stop_all(&mut self) {
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
async fn pipeline_to_a_stream(body: &mut String, name: &str, source: &str) -> String {
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
fn is_spread(pipeline: &str) -> bool {
    pipeline.ends_with("_dy") || pipeline.ends_with("_ds")
}

fn statuses(port: u16) -> Vec<Value> {
    match http_get_within(port, "/status", Duration::from_millis(300)) {
        Some((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A workload running against every pipeline of a cluster.
struct Workload {
    stop: Arc<AtomicBool>,
    written: Written,
    task: tokio::task::JoinHandle<()>,
}

impl Workload {
    /// Stops writing; the changes written, by pipeline, in write order.
    async fn finish(self) -> BTreeMap<String, Vec<(i64, i64)>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let written = self.written.lock().unwrap().clone();
        written
    }
}

impl Cluster {
    fn start_workload(&self) -> Workload {
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
type Written = Arc<Mutex<BTreeMap<String, Vec<(i64, i64)>>>>;

/// Upserts `(id, g)` into a random pipeline's table, `g` counting per table; records them.
async fn workload(
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
async fn delivered(stream: &str) -> Vec<(i64, i64)> {
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
async fn check_delivery(cluster: &Cluster, written: &BTreeMap<String, Vec<(i64, i64)>>) -> usize {
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

async fn kills_under_load_lose_nothing_and_take_over_in_time(store: StoreKind) {
    let prefix = format!("ha_{}_kill", store.tag());
    // Two Postgres pipelines, a MySQL one and a DynamoDB Streams one over three instances,
    // and a DynamoDB stream of four shards spread shard by shard.
    let mut cluster = Cluster::new(&prefix, store, 2, true, true)
        .await
        .with_spread_stream(&prefix, 4)
        .await;
    cluster.start(3);
    cluster.wait_all_running(Duration::from_secs(60));
    // One whole pipeline each, the four shards two, one and one, the single shard of DynamoDB
    // Local somewhere, once stealing has evened it out.
    cluster.wait_even_spread();

    let load = cluster.start_workload();
    let mut rng = Rng::seeded();
    let mut takeovers = Vec::new();
    for kill in 0..30 {
        if kill % 8 == 4 {
            // A shard splits: its children wait for it to be read to its end, wherever.
            let (_, server) = cluster.spread.as_ref().unwrap();
            server.split();
            cluster.wait_all_running(Duration::from_secs(30));
        }
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        let victim = rng.below(3) as usize;
        let mut held: Vec<String> = cluster
            .runners()
            .into_iter()
            .filter(|(_, i)| *i == victim)
            .map(|(p, _)| p)
            .collect();
        held.extend(cluster.shards_held()[victim].clone());
        let killed_at = Instant::now();
        cluster.instances[victim].child.kill().unwrap();
        cluster.instances[victim].child.wait().unwrap();
        cluster.instances[victim] = cluster.spawn();
        if !held.is_empty() {
            cluster.wait_all_running(TAKEOVER_LIMIT);
            takeovers.push(killed_at.elapsed());
        }
    }
    let written = load.finish().await;
    cluster.wait_even_spread();
    let (spread, server) = cluster.spread.clone().unwrap();
    let shards: Vec<usize> = cluster
        .shards_held_of(&spread)
        .iter()
        .map(Vec::len)
        .collect();
    // The rows of the split shards are deleted by their holders once read to their ends.
    let mut open = server.open_shards();
    open.sort();
    let by = Instant::now() + Duration::from_secs(15);
    loop {
        let mut rows: Vec<String> = cluster
            .lease_rows()
            .await
            .into_iter()
            .filter_map(|key| {
                Some(
                    key.strip_prefix(&format!("partition/{spread}/"))?
                        .to_owned(),
                )
            })
            .collect();
        rows.sort();
        if rows == open || Instant::now() > by {
            assert_eq!(rows, open, "the lease rows of {spread}'s shards");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let total: usize = written.values().map(Vec::len).sum();
    let duplicates = check_delivery(&cluster, &written).await;
    takeovers.sort();
    eprintln!(
        "{store:?} store: {total} changes, {duplicates} duplicates, {} takeovers: median {:?}, max {:?}; shards held at the end {shards:?}",
        takeovers.len(),
        takeovers[takeovers.len() / 2],
        takeovers.last().unwrap()
    );
    assert!(
        takeovers.len() >= 5,
        "too few kills hit a holder: {}",
        takeovers.len()
    );
    assert!(total > 1000, "the workload wrote only {total} changes");
}

/// The stored position of `pipeline`, as an LSN number, as `cdc-bridge checkpoints` lists it.
async fn stored_lsn(cluster: &Cluster, pipeline: &str) -> Option<u64> {
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

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// How the first holder is cut off from the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CutOff {
    /// SIGSTOP, later SIGCONT.
    Paused,
    /// Its connections to the store are cut (a proxy in between), later restored.
    StoreUnreachable,
}

impl CutOff {
    /// Cuts `child` off (it reaches the store through `proxy`).
    fn begin(self, child: &Child, proxy: &support::kinesis::TcpProxy) {
        match self {
            CutOff::Paused => signal(child, "STOP"),
            CutOff::StoreUnreachable => proxy.cut(),
        }
    }

    /// Lets `child` go on.
    fn end(self, child: &Child, proxy: &support::kinesis::TcpProxy) {
        match self {
            CutOff::Paused => signal(child, "CONT"),
            CutOff::StoreUnreachable => proxy.restore(),
        }
    }
}

async fn a_cut_off_holder_stores_nothing_after_a_takeover(store: StoreKind, cut_off: CutOff) {
    let prefix = match cut_off {
        CutOff::Paused => format!("ha_{}_pause", store.tag()),
        CutOff::StoreUnreachable => format!("ha_{}_cut", store.tag()),
    };
    let mut cluster = Cluster::new(&prefix, store, 1, false, false).await;
    let pipeline = cluster.pipelines[0].clone();
    let (target, _) = store.through(0);
    let proxy = support::kinesis::TcpProxy::start(&target).await;
    let (_, through_proxy) = store.through(proxy.port);
    let first = cluster.spawn_with_store(&through_proxy);
    cluster.instances.push(first);
    cluster.wait_all_running(Duration::from_secs(60));
    cluster.start(1);
    // The second instance sees the lease held and stands by.
    cluster.wait_standby(1);

    let load = cluster.start_workload();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cut_off.begin(&cluster.instances[0].child, &proxy);
    let paused_at = Instant::now();
    let at_pause = stored_lsn(&cluster, &pipeline).await;
    cluster.wait_runner(&pipeline, 1, TAKEOVER_LIMIT);
    let took = paused_at.elapsed();
    // The new holder advances the stored position.
    let advanced_by = Instant::now() + Duration::from_secs(20);
    let before_resume = loop {
        let now = stored_lsn(&cluster, &pipeline).await;
        if now > at_pause {
            break now;
        }
        assert!(
            Instant::now() < advanced_by,
            "the new holder stores nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("{store:?} store: takeover from a holder cut off ({cut_off:?}) after {took:?}");

    cut_off.end(&cluster.instances[0].child, &proxy);
    // The resumed instance finds out, stops its copy, and the position never goes back.
    let mut last = before_resume;
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        let now = stored_lsn(&cluster, &pipeline).await;
        assert!(
            now >= last,
            "the stored position moved backward: {last:?} -> {now:?}"
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let written = load.finish().await;
    let resumed = statuses(cluster.instances[0].port);
    assert_eq!(resumed[0]["state"], "standby", "{resumed:?}");
    assert_eq!(resumed[0]["lease"]["held_here"], false);
    let metrics = http_get(cluster.instances[0].port, "/metrics").unwrap().1;
    let lost = format!("cdc_bridge_lease_lost_total{{pipeline=\"{pipeline}\"}} 1");
    assert!(metrics.contains(&lost), "{metrics}");
    // `cdc-bridge status` asked of either instance says who runs the pipeline.
    let holder = statuses(cluster.instances[1].port)[0]["lease"]["holder"]
        .as_str()
        .unwrap()
        .to_owned();
    let on_resumed = cluster.status_command(0);
    assert!(on_resumed.contains("standby"), "{on_resumed}");
    assert!(
        on_resumed.contains(&format!("lease: held by {holder} (epoch 2)")),
        "{on_resumed}"
    );
    let on_holder = cluster.status_command(1);
    assert!(on_holder.contains("streaming"), "{on_holder}");
    assert!(
        on_holder.contains(&format!("lease: held here as {holder} (epoch 2)")),
        "{on_holder}"
    );
    let log = cluster.log();
    assert!(log.contains("lost the pipeline's lease"), "{log}");
    if cut_off == CutOff::StoreUnreachable {
        // It stopped its copy on its own, before another instance could take over.
        assert!(log.contains("not renewed for"), "{log}");
    }
    assert!(
        !log.contains("backward"),
        "a regression was attempted:\n{log}"
    );
    check_delivery(&cluster, &written).await;
    assert_eq!(
        cluster.runners()[&pipeline],
        1,
        "the new holder keeps running"
    );
}

/// The stored sequence number of each shard of `pipeline` (`END`: `u64::MAX`), as
/// `cdc-bridge checkpoints` lists them.
fn stored_shards(cluster: &Cluster, pipeline: &str) -> BTreeMap<String, u64> {
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

/// Shard leases are fenced like pipeline leases: an instance paused past its leases, or cut
/// off from the store, loses its shards to the other; resumed, it stores nothing more for
/// them, says so, no shard's stored position moves backward, and the shards spread evenly
/// again.
async fn a_cut_off_instance_stores_nothing_for_the_shards_taken_over(
    store: StoreKind,
    cut_off: CutOff,
) {
    let prefix = match cut_off {
        CutOff::Paused => format!("ha_{}_spause", store.tag()),
        CutOff::StoreUnreachable => format!("ha_{}_scut", store.tag()),
    };
    let mut cluster = Cluster::new(&prefix, store, 0, false, false)
        .await
        .with_spread_stream(&prefix, 2)
        .await;
    let pipeline = cluster.spread.clone().unwrap().0;
    let (target, _) = store.through(0);
    let proxy = support::kinesis::TcpProxy::start(&target).await;
    let (_, through_proxy) = store.through(proxy.port);
    let first = cluster.spawn_with_store(&through_proxy);
    cluster.instances.push(first);
    cluster.wait_all_running(Duration::from_secs(60));
    cluster.start(1);
    // One shard each, once the second instance has stolen its share.
    cluster.wait_even_spread();
    let paused_shard = cluster.shards_held_of(&pipeline)[0][0].clone();

    let load = cluster.start_workload();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cut_off.begin(&cluster.instances[0].child, &proxy);
    let paused_at = Instant::now();
    let at_pause = stored_shards(&cluster, &pipeline);
    let by = paused_at + TAKEOVER_LIMIT;
    while cluster.shards_held_of(&pipeline)[1].len() < 2 {
        assert!(
            Instant::now() < by,
            "no takeover\n{}",
            cluster.ws.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = paused_at.elapsed();
    let advanced_by = Instant::now() + Duration::from_secs(20);
    while stored_shards(&cluster, &pipeline).get(&paused_shard) <= at_pause.get(&paused_shard) {
        assert!(
            Instant::now() < advanced_by,
            "the new holder stores nothing for {paused_shard}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{store:?} store: shard {paused_shard} taken over from an instance cut off ({cut_off:?}) after {took:?}");

    cut_off.end(&cluster.instances[0].child, &proxy);
    let mut last = stored_shards(&cluster, &pipeline);
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        let now = stored_shards(&cluster, &pipeline);
        for (shard, seq) in &last {
            assert!(
                now.get(shard) >= Some(seq),
                "the stored position of {shard} moved backward: {seq} -> {:?}",
                now.get(shard)
            );
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let written = load.finish().await;
    // The resumed instance lost its shard, then steals one back toward an even share.
    cluster.wait_even_spread();
    let metrics = http_get(cluster.instances[0].port, "/metrics").unwrap().1;
    let lost = format!("cdc_bridge_lease_lost_total{{pipeline=\"{pipeline}\"}}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(&lost) && !l.ends_with(" 0")),
        "{metrics}"
    );
    let on_resumed = cluster.status_command(0);
    assert!(
        on_resumed.contains("spread over the instances; 1 partition(s) held here as"),
        "{on_resumed}"
    );
    let log = cluster.log();
    assert!(log.contains("lost a partition's lease"), "{log}");
    assert!(
        !log.contains("backward"),
        "a regression was attempted:\n{log}"
    );
    check_delivery(&cluster, &written).await;
}

/// An orderly stop (SIGTERM) releases the holder's leases after its last checkpoint: the
/// instance standing by starts the pipeline within a round (at most a second), long before the
/// lease (here 10 s) would have expired.
async fn a_stopped_holder_hands_its_pipeline_over_at_once(store: StoreKind) {
    let prefix = format!("ha_{}_handoff", store.tag());
    let mut cluster = Cluster::with_lease(&prefix, store, 1, false, false, 10_000).await;
    let pipeline = cluster.pipelines[0].clone();
    cluster.start(1);
    cluster.wait_all_running(Duration::from_secs(60));
    cluster.start(1);
    cluster.wait_standby(1);
    let stopped_at = Instant::now();
    support::terminate(&cluster.instances[0].child);
    let status = cluster.instances[0].child.wait().unwrap();
    assert!(status.success(), "{}", cluster.ws.log_tail());
    cluster.wait_runner(&pipeline, 1, Duration::from_secs(7));
    eprintln!(
        "{store:?} store: handover after SIGTERM in {:?}",
        stopped_at.elapsed()
    );
    assert!(cluster.log().contains("released the lease"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_a_stopped_holder_hands_its_pipeline_over_at_once() {
    a_stopped_holder_hands_its_pipeline_over_at_once(StoreKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_a_stopped_holder_hands_its_pipeline_over_at_once() {
    a_stopped_holder_hands_its_pipeline_over_at_once(StoreKind::Dynamodb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_kills_under_load_lose_nothing_and_take_over_in_time() {
    kills_under_load_lose_nothing_and_take_over_in_time(StoreKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_kills_under_load_lose_nothing_and_take_over_in_time() {
    kills_under_load_lose_nothing_and_take_over_in_time(StoreKind::Dynamodb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_a_paused_holder_stores_nothing_after_a_takeover() {
    a_cut_off_holder_stores_nothing_after_a_takeover(StoreKind::Postgres, CutOff::Paused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_a_paused_holder_stores_nothing_after_a_takeover() {
    a_cut_off_holder_stores_nothing_after_a_takeover(StoreKind::Dynamodb, CutOff::Paused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_a_paused_instance_stores_nothing_for_the_shards_taken_over() {
    let cut_off = CutOff::Paused;
    a_cut_off_instance_stores_nothing_for_the_shards_taken_over(StoreKind::Postgres, cut_off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_a_paused_instance_stores_nothing_for_the_shards_taken_over() {
    let cut_off = CutOff::Paused;
    a_cut_off_instance_stores_nothing_for_the_shards_taken_over(StoreKind::Dynamodb, cut_off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_an_instance_cut_off_from_the_store_stores_nothing_for_the_shards_taken_over(
) {
    let cut_off = CutOff::StoreUnreachable;
    a_cut_off_instance_stores_nothing_for_the_shards_taken_over(StoreKind::Postgres, cut_off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_an_instance_cut_off_from_the_store_stores_nothing_for_the_shards_taken_over(
) {
    let cut_off = CutOff::StoreUnreachable;
    a_cut_off_instance_stores_nothing_for_the_shards_taken_over(StoreKind::Dynamodb, cut_off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_a_holder_cut_off_from_the_store_stores_nothing_after_a_takeover() {
    let cut_off = CutOff::StoreUnreachable;
    a_cut_off_holder_stores_nothing_after_a_takeover(StoreKind::Postgres, cut_off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_a_holder_cut_off_from_the_store_stores_nothing_after_a_takeover() {
    let cut_off = CutOff::StoreUnreachable;
    a_cut_off_holder_stores_nothing_after_a_takeover(StoreKind::Dynamodb, cut_off).await;
}
