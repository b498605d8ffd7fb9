//! Bad configurations exit with status 2 and a message naming the key path.

mod support;

use support::{stderr, Workspace};

const GOOD: &str = r#"
[[pipeline]]
name = "shop"
[pipeline.source]
kind = "generator"
count = 5
[pipeline.sink]
kind = "file"
path = "out/shop.jsonl"
"#;

fn expect_config_error(ws: &Workspace, args: &[&str], needle: &str) {
    let output = ws.run(args);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in stderr: {err}");
}

fn run_with(body: &str, needle: &str) {
    let ws = Workspace::new();
    let config = ws.config(body);
    let config = config.to_str().unwrap();
    expect_config_error(&ws, &["run", "--config", config], needle);
    expect_config_error(&ws, &["check", "--config", config], needle);
}

#[test]
fn unknown_key() {
    run_with(
        &GOOD.replace("count = 5", "count = 5\ncuont = 6"),
        "pipeline[0].source.cuont: unknown setting",
    );
}

#[test]
fn missing_key() {
    run_with(
        &GOOD.replace("path = \"out/shop.jsonl\"", ""),
        "pipeline[0].sink.path: missing",
    );
}

#[test]
fn wrong_type() {
    run_with(
        &GOOD.replace("count = 5", "count = \"five\""),
        "pipeline[0].source.count: invalid type",
    );
}

#[test]
fn unknown_connector_kind() {
    run_with(
        &GOOD.replace("kind = \"file\"", "kind = \"fax\""),
        "pipeline[0].sink.kind: unknown kind \"fax\"",
    );
}

#[test]
fn unknown_format_or_format_option() {
    let with_format = |format: &str| {
        GOOD.replace(
            "path = \"out/shop.jsonl\"",
            &format!("path = \"out/shop.jsonl\"\nformat = {format}"),
        )
    };
    run_with(
        &with_format("\"protobuf\""),
        "pipeline[0].sink.format: unknown variant `protobuf`, expected one of `json`, `debezium`, `dms`, `avro`",
    );
    run_with(
        &with_format("{ kind = \"debezium\", decimal_handling = \"exact\" }"),
        "unknown variant `exact`, expected one of `precise`, `double`, `string`",
    );
    run_with(
        &with_format("{ kind = \"avro\", registry_url = \"http://127.0.0.1:1\" }"),
        "pipeline[0].sink.format: the avro format works with the kafka and kinesis sinks",
    );
    run_with(
        &with_format("{ kind = \"avro\", registry = \"glue\", registry_url = \"http://127.0.0.1:1\" }"),
        "pipeline[0].sink.format: registry_url is an option of a Confluent-compatible registry; registry = \"glue\" takes",
    );
    run_with(
        &with_format("{ kind = \"json\", pretty = true }"),
        "pipeline[0].sink.format.pretty: unknown setting",
    );
}

#[test]
fn unset_environment_variable() {
    run_with(
        &GOOD.replace(
            "out/shop.jsonl",
            "${CDC_BRIDGE_TEST_SURELY_UNSET}/shop.jsonl",
        ),
        "pipeline[0].sink.path: environment variable CDC_BRIDGE_TEST_SURELY_UNSET is not set",
    );
}

#[test]
fn malformed_environment_reference() {
    run_with(
        &GOOD.replace("out/shop.jsonl", "${UNCLOSED/shop.jsonl"),
        "pipeline[0].sink.path: unclosed `${`",
    );
}

#[test]
fn unreadable_file() {
    let ws = Workspace::new();
    expect_config_error(
        &ws,
        &["run", "--config", "does/not/exist.toml"],
        "cannot read configuration file does/not/exist.toml",
    );
    let dir = ws.path("a-directory");
    std::fs::create_dir(&dir).unwrap();
    expect_config_error(
        &ws,
        &["check", "--config", dir.to_str().unwrap()],
        "cannot read configuration file",
    );
}

#[test]
fn toml_syntax_error_names_the_line() {
    run_with("[[pipeline]\nname = 1", "not valid TOML");
}

#[test]
fn unknown_pipeline_on_the_command_line() {
    let ws = Workspace::new();
    let config = ws.config(GOOD);
    expect_config_error(
        &ws,
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--pipeline",
            "nope",
        ],
        "no pipeline is named \"nope\"",
    );
}

#[test]
fn a_good_config_checks_ok() {
    let ws = Workspace::new();
    let config = ws.config(GOOD);
    let output = ws.run(&["check", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "pipeline shop: generator -> file: configuration ok"
    );
}

#[test]
fn a_bad_listen_address_or_log_format_is_named() {
    run_with(
        &format!("http_listen = \"localhost\"\n{GOOD}"),
        "daemon.http_listen: \"localhost\" is not an address such as \"127.0.0.1:9187\"",
    );
    run_with(
        &format!("log_format = \"xml\"\n{GOOD}"),
        "daemon.log_format: unknown variant `xml`",
    );
}

/// `[daemon.coordination]`: a wrong kind, a setting of another store, a lease too short, each
/// named by its key path, from `run` and `check` alike.
#[test]
fn coordination_mistakes_name_their_key() {
    let with = |section: &str| format!("[daemon.coordination]\n{section}\n{GOOD}");
    run_with(
        &with("kind = \"zookeeper\""),
        "daemon.coordination.kind: unknown kind \"zookeeper\"; expected one of: local, postgres, dynamodb",
    );
    run_with(
        &with("kind = \"postgres\"\nurl = \"postgres://a@b/c\"\ntable = \"t\""),
        "daemon.coordination.table: unknown setting",
    );
    run_with(
        &with("kind = \"dynamodb\"\ntable = \"t\"\nlease_duration_ms = 500"),
        "daemon.coordination.lease_duration_ms: must be at least 1000",
    );
    run_with(
        &with("kind = \"local\"\nurl = \"postgres://a@b/c\""),
        "daemon.coordination.url: the local store takes no settings",
    );
}
