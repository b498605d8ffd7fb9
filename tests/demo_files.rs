//! What can be checked of the Docker demo and the Redshift SQL without Docker or Redshift:
//! the compose file is complete and consistent with the repository (every mounted file exists,
//! services start in order through health checks, the pipelines it runs are valid with the
//! environment it gives them), the Dockerfile builds the way the README says, and the Redshift
//! SQL only uses objects it creates and event fields cdc-bridge writes.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use cdc_bridge::config::Config;
use cdc_bridge::format::JsonFormat;
use cdc_bridge::sources::generator::{GeneratorConfig, GeneratorSource};
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_services_start_in_order_from_files_that_exist() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for required in [
        "postgres",
        "mysql",
        "localstack",
        "kafka",
        "cdc-bridge-kinesis",
        "cdc-bridge-kafka",
        "cdc-bridge-mysql",
        "cdc-bridge-dynamodb",
        "kafka-init",
        "prometheus",
        "grafana",
    ] {
        assert!(
            names.contains(required),
            "service {required} missing: {names:?}"
        );
    }
    assert_eq!(
        compose["services"]["localstack"]["image"].as_str(),
        Some("localstack/localstack:4.14.0")
    );
    let postgres = strings(&compose["services"]["postgres"]["command"]).join(" ");
    assert!(postgres.contains("wal_level=logical"), "{postgres}");
    let mysql = strings(&compose["services"]["mysql"]["command"]).join(" ");
    for setting in [
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",
        "--log-bin",
    ] {
        assert!(mysql.contains(setting), "mysql lacks {setting}: {mysql}");
    }

    for (name, service) in services {
        let name = name.as_str().unwrap();
        for volume in strings(&service["volumes"]) {
            let source = volume.split(':').next().unwrap();
            if let Some(relative) = source.strip_prefix("./") {
                assert!(
                    root().join(relative).exists(),
                    "{name} mounts {source}, which does not exist"
                );
            }
        }
        if let Some(build) = service.get("build") {
            let context = build.as_str().unwrap_or(".");
            assert!(
                root().join(context).join("Dockerfile").exists(),
                "{name}: no Dockerfile in {context}"
            );
        }
        if let Some(depends) = service["depends_on"].as_mapping() {
            for (target, condition) in depends {
                let target = target.as_str().unwrap();
                assert!(names.contains(target), "{name} depends on unknown {target}");
                match condition["condition"].as_str() {
                    // Wait for a long-running service to be ready...
                    Some("service_healthy") => assert!(
                        compose["services"][target].get("healthcheck").is_some(),
                        "{target} has no health check for {name} to wait on"
                    ),
                    // ...or for a one-shot init step to have done its work.
                    Some("service_completed_successfully") => assert_eq!(
                        compose["services"][target]["restart"].as_str(),
                        Some("no"),
                        "{target} is an init step: it must not restart"
                    ),
                    other => panic!("{name} -> {target}: starts on {other:?}, not on readiness"),
                }
            }
        }
    }
}

#[test]
fn the_compose_pipelines_are_valid_with_the_environment_compose_gives_them() {
    let compose = compose();
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("COPY connectors /etc/cdc-bridge/connectors"));
    let mut checked = 0;
    let prometheus: Value =
        serde_yaml::from_str(&read("deploy/prometheus/prometheus.yml")).unwrap();
    let mut scraped_targets =
        strings(&prometheus["scrape_configs"][0]["static_configs"][0]["targets"]);
    assert_eq!(scraped_targets.len(), 4);
    for (name, service) in compose["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let command = strings(&service["command"]);
        let Some(config) = command
            .iter()
            .find_map(|arg| arg.strip_prefix("/etc/cdc-bridge/"))
        else {
            continue;
        };
        let env: HashMap<String, String> = service["environment"]
            .as_mapping()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let v = v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| serde_yaml::to_string(v).unwrap().trim().to_owned());
                        (k.as_str().unwrap().to_owned(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let text = read(config);
        // Every variable the connector uses comes from the service (no silent defaults that
        // would point at localhost inside a container).
        for var in [
            "PG_URL",
            "MYSQL_URL",
            "KAFKA_BROKERS",
            "KINESIS_ENDPOINT",
            "KINESIS_STREAM",
            "DYNAMODB_ENDPOINT",
            "DYNAMODB_TABLE",
            "CDC_BRIDGE_HTTP_LISTEN",
        ] {
            if text.contains(&format!("${{{var}")) {
                assert!(
                    env.contains_key(var),
                    "{name} runs {config}, which reads {var}, but does not set it"
                );
            }
        }
        let parsed = Config::from_toml(&text, Path::new(config), &|var| env.get(var).cloned())
            .unwrap_or_else(|e| panic!("{name}: {config}: {e}"));
        assert_eq!(parsed.pipelines.len(), 1);
        cdc_bridge::daemon::plan(&parsed, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let listen = parsed
            .daemon
            .http_listen
            .expect("the bridge serves /metrics");
        if service.get("profiles").is_some() {
            // The HA pair runs only with `--profile ha`: Prometheus does not expect it.
            assert!(
                parsed.daemon.coordination.is_some(),
                "{name} shares a store"
            );
        } else {
            // Prometheus scrapes every bridge at the address it serves its metrics on.
            scraped_targets.retain(|target| *target != format!("{name}:{}", listen.port()));
        }
        checked += 1;
    }
    assert_eq!(checked, 6, "every cdc-bridge service runs a connector");
    assert!(
        scraped_targets.is_empty(),
        "Prometheus scrapes targets no bridge serves: {scraped_targets:?}"
    );

    // The stream the LocalStack hook creates is the one the pipeline writes and Redshift reads.
    let stream = compose["services"]["cdc-bridge-kinesis"]["environment"]["KINESIS_STREAM"]
        .as_str()
        .unwrap();
    assert!(read("scripts/localstack-init.sh").contains(&format!("--stream-name {stream}")));
    assert!(read("migrations/redshift/001_kinesis_source.sql")
        .contains(&format!("cdc_kinesis.\"{stream}\"")));
}

#[test]
fn the_dockerfile_builds_as_the_readme_says_and_runs_as_non_root() {
    let dockerfile = read("Dockerfile");
    let readme = read("README.md");
    // What precedes the first FROM (comments) is not a stage.
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    assert!(stages.len() >= 2, "a multi-stage build");
    let build_commands: Vec<&str> = stages[0]
        .lines()
        .filter_map(|l| l.strip_prefix("RUN "))
        .collect();
    assert!(!build_commands.is_empty());
    for command in &build_commands {
        assert!(
            readme.contains(command),
            "README does not show the build step `{command}`"
        );
    }
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                root().join(source).exists(),
                "Dockerfile copies missing {source}"
            );
        }
    }
    let runtime = stages.last().unwrap();
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(user.trim() != "root" && user.trim() != "0");
}

/// SQL without comments, split into statements.
fn statements(sql: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .map(|l| l.split("--").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Names after FROM / JOIN that are not subqueries: `schema.object` (object maybe quoted).
fn references(statement: &str) -> Vec<(String, String)> {
    let tokens: Vec<&str> = statement.split(' ').collect();
    tokens
        .windows(2)
        .filter(|w| matches!(w[0].to_ascii_uppercase().as_str(), "FROM" | "JOIN"))
        .filter_map(|w| {
            let name = w[1].trim_end_matches(')');
            let (schema, object) = name.split_once('.')?;
            Some((schema.to_owned(), object.trim_matches('"').to_owned()))
        })
        .collect()
}

#[test]
fn the_redshift_sql_uses_only_objects_it_creates_and_fields_cdc_bridge_writes() {
    let dir = root().join("migrations/redshift");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    let mut external: BTreeSet<String> = BTreeSet::new();
    let mut schemas: BTreeSet<String> = BTreeSet::new();
    let mut objects: BTreeSet<(String, String)> = BTreeSet::new();
    let mut all_sql = String::new();
    for file in &files {
        let sql = std::fs::read_to_string(file).unwrap();
        all_sql.push_str(&sql);
        for statement in statements(&sql) {
            let name = file.display();
            assert_eq!(
                statement.matches('(').count(),
                statement.matches(')').count(),
                "{name}: unbalanced parentheses in {statement}"
            );
            assert_eq!(
                statement.matches('\'').count() % 2,
                0,
                "{name}: unbalanced quotes in {statement}"
            );
            assert!(
                statement.starts_with("CREATE "),
                "{name}: not a CREATE: {statement}"
            );
            for (schema, object) in references(&statement) {
                assert!(
                    external.contains(&schema)
                        || objects.contains(&(schema.clone(), object.clone())),
                    "{name}: {schema}.{object} is used before anything creates it"
                );
            }
            let words: Vec<&str> = statement.split(' ').collect();
            match words.as_slice() {
                ["CREATE", "EXTERNAL", "SCHEMA", schema, ..] => {
                    external.insert(schema.to_string());
                }
                ["CREATE", "SCHEMA", "IF", "NOT", "EXISTS", schema, ..]
                | ["CREATE", "SCHEMA", schema, ..] => {
                    schemas.insert(schema.to_string());
                }
                ["CREATE", "MATERIALIZED", "VIEW", name, ..] | ["CREATE", "VIEW", name, ..] => {
                    let (schema, object) =
                        name.split_once('.').expect("views are schema-qualified");
                    assert!(
                        schemas.contains(schema),
                        "view {name} in a schema nobody creates"
                    );
                    objects.insert((schema.to_owned(), object.to_owned()));
                }
                _ => panic!("unexpected statement: {statement}"),
            }
        }
    }

    // Every `payload.<field>` the SQL reads is in the JSON cdc-bridge writes.
    let generator: GeneratorConfig = toml::from_str("keys = 3").unwrap();
    let event =
        GeneratorSource::new(generator).event(&"p".into(), &"db".into(), &"orders".into(), 1);
    let mut json = Vec::new();
    JsonFormat::write_value(&event, &mut json);
    let written: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let order_columns = read("migrations/postgres/002_demo_tables.sql");
    let mut paths = BTreeSet::new();
    for (i, _) in all_sql.match_indices("payload.") {
        let path: String = all_sql[i + 8..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '"'))
            .collect();
        paths.insert(path.trim_end_matches('.').replace('"', ""));
    }
    assert!(paths.len() >= 8, "{paths:?}");
    for path in paths {
        let mut parts = path.split('.');
        let top = parts.next().unwrap();
        assert!(
            written.get(top).is_some(),
            "payload.{path}: events have no `{top}`"
        );
        match (top, parts.next()) {
            ("source", Some(field)) => assert!(
                written["source"].get(field).is_some(),
                "payload.{path}: no source.{field}"
            ),
            ("after" | "before" | "key", Some(column)) => assert!(
                order_columns.contains(&format!("  {column} ")),
                "payload.{path}: the demo tables have no column {column}"
            ),
            _ => {}
        }
    }
}

/// The Kubernetes manifests: the ConfigMap's configuration is valid with the environment the
/// Deployment gives it, shares a store (several replicas), and the probes and the metrics
/// port point at what the daemon serves.
#[test]
fn the_kubernetes_manifests_run_a_valid_shared_configuration() {
    let configmap: Value = serde_yaml::from_str(&read("deploy/kubernetes/configmap.yaml")).unwrap();
    let deployment: Value =
        serde_yaml::from_str(&read("deploy/kubernetes/deployment.yaml")).unwrap();
    let spec = &deployment["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let env: HashMap<String, String> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            // The one value from a Secret is the source's URL.
            let value = e["value"]
                .as_str()
                .unwrap_or("postgres://cdc:secret@db.example:5432/app");
            (e["name"].as_str().unwrap().to_owned(), value.to_owned())
        })
        .collect();
    let (file, text) = configmap["data"]
        .as_mapping()
        .unwrap()
        .iter()
        .next()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .unwrap();
    let config = Config::from_toml(&text, Path::new(&file), &|var| env.get(var).cloned())
        .unwrap_or_else(|e| panic!("configmap: {e}"));
    cdc_bridge::daemon::plan(&config, None).unwrap();
    let store = cdc_bridge::daemon::StoreSpec::parse(&config.daemon).unwrap();
    assert_ne!(store.kind(), "local", "replicas must share a store");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);

    // The container runs the mounted file; the probes and the port match http_listen.
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    let args = strings(&container["args"]);
    let path = format!("{}/{file}", mount["mountPath"].as_str().unwrap());
    assert!(args.contains(&path), "{args:?} runs {path}");
    let port = config.daemon.http_listen.unwrap().port();
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(port.into())
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let service: Value = serde_yaml::from_str(&read("deploy/kubernetes/service.yaml")).unwrap();
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(spec["serviceAccountName"], "cdc-bridge");
}
