//! Every configuration shipped in `connectors/` and `config/` is valid, and the generator ->
//! file connector runs as the README says.

mod support;

use std::path::PathBuf;

use support::{output_seqs, stderr, Workspace};

fn shipped() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = ["connectors", "config"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Connectors point at the test services (PostgreSQL prepared by the shipped migrations, the
/// Kafka-protocol broker, the Kinesis emulator with a stream and DynamoDB Local with a table
/// made for this run) through environment variables, as a user points them at theirs.
#[tokio::test]
async fn every_shipped_config_passes_check() {
    support::pg::apply_migrations().await;
    let stream = support::kinesis::stream_name("shipped");
    support::kinesis::create_stream(&support::kinesis::client().await, &stream, 1).await;
    let table = support::dynamodb::table_name("shipped");
    support::dynamodb::create_table(
        &support::dynamodb::client().await,
        &table,
        false,
        aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages,
    )
    .await;
    let files = shipped();
    assert!(files.len() >= 5, "{files:?}");
    let ws = Workspace::new();
    for file in files {
        let output = ws
            .command(&["check", "--config", file.to_str().unwrap()])
            .env("PG_URL", support::pg::migrated_role_url())
            .env("KAFKA_BROKERS", support::kafka::brokers())
            .env("KINESIS_ENDPOINT", support::kinesis::endpoint())
            .env("KINESIS_STREAM", &stream)
            .env("DYNAMODB_ENDPOINT", support::dynamodb::endpoint())
            .env("DYNAMODB_TABLE", &table)
            .env("MYSQL_URL", support::mysql::url())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}: {}{}",
            file.display(),
            stdout,
            stderr(&output)
        );
        assert!(
            !stdout.contains("FAIL") && !stdout.contains("warn"),
            "{}: {stdout}",
            file.display()
        );
    }
}

#[test]
fn the_generator_file_connector_runs_from_a_working_directory() {
    let ws = Workspace::new();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("connectors/generator-file.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("rate_per_sec = 2000", "rate_per_sec = 100000");
    std::fs::write(ws.path("generator-file.toml"), text).unwrap();
    let output = ws.run(&["run", "--config", "generator-file.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        output_seqs(&ws.path("out/generator.jsonl")),
        (1..=10_000).collect::<Vec<_>>()
    );
}
