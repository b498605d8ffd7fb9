//! Misconfigurations stop the pipeline with a message that names the fix.

mod support;

use std::time::Duration;

use support::pg::{connect, env_url, PgFixture, ADMIN, REPLICA_WAL};
use support::stderr;

fn run_fails_with(fx: &PgFixture, config: &std::path::Path, needle: &str) {
    let output = fx.ws.run(&["run", "--config", config.to_str().unwrap()]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
}

#[tokio::test]
async fn a_missing_table_is_named() {
    let fx = PgFixture::new("bad_missing").await;
    let config = fx.config(&["nope"], "");
    run_fails_with(
        &fx,
        &config,
        "table(s) not found: bad_missing.nope; create them, or fix `tables`",
    );
    let check = fx.ws.run(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stdout)
        .contains("FAIL table(s) not found: bad_missing.nope"));
}

#[tokio::test]
async fn a_role_without_replication_is_told_the_grant() {
    let admin = connect(&env_url(ADMIN)).await;
    admin
        .batch_execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'norepl') THEN CREATE ROLE norepl LOGIN PASSWORD 'pw'; END IF; END $$")
        .await
        .unwrap();
    let fx = PgFixture::new("bad_norepl").await;
    fx.sql("CREATE TABLE bad_norepl.t (id int PRIMARY KEY)")
        .await;
    let config = fx.config_with_url(
        &["t"],
        "",
        &env_url("CDC_BRIDGE_PG_URL").replace("cdc:cdc@", "norepl:pw@"),
    );
    run_fails_with(
        &fx,
        &config,
        "role \"norepl\" lacks the REPLICATION attribute: run ALTER ROLE norepl REPLICATION",
    );
}

#[tokio::test]
async fn wal_level_replica_is_told_how_to_change_it() {
    let fx = PgFixture::on(REPLICA_WAL, "bad_wal").await;
    fx.sql("CREATE TABLE bad_wal.t (id int PRIMARY KEY)").await;
    run_fails_with(&fx, &fx.config(&["t"], ""), "wal_level is \"replica\" but logical replication needs wal_level = logical: run ALTER SYSTEM SET wal_level = logical");
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_error() {
    let fx = PgFixture::new("bad_password").await;
    fx.sql("CREATE TABLE bad_password.t (id int PRIMARY KEY)")
        .await;
    let config = fx.config_with_url(
        &["t"],
        "",
        &env_url("CDC_BRIDGE_PG_URL").replace("cdc:cdc@", "cdc:wrong@"),
    );
    run_fails_with(
        &fx,
        &config,
        "authentication failed: password authentication failed for user \"cdc\"",
    );
}

#[tokio::test]
async fn a_dropped_or_advanced_slot_stops_with_the_recovery_steps() {
    let fx = PgFixture::new("bad_slot").await;
    fx.sql("CREATE TABLE bad_slot.t (id int PRIMARY KEY)").await;
    let config = fx.config(&["t"], "");
    let child = fx.spawn(&config);
    fx.wait_caught_up(Duration::from_secs(30)).await;
    fx.stop(child);

    // The slot confirmed past the stored checkpoint: changes would be lost.
    fx.sql("INSERT INTO bad_slot.t VALUES (1)").await;
    fx.client
        .execute(
            "SELECT pg_replication_slot_advance('bad_slot', pg_current_wal_lsn())",
            &[],
        )
        .await
        .unwrap();
    run_fails_with(&fx, &config, "beyond the stored checkpoint");

    // The slot is gone while a checkpoint is stored.
    fx.cleanup().await;
    run_fails_with(
        &fx,
        &config,
        "replication slot \"bad_slot\" does not exist, but checkpoint",
    );
    run_fails_with(&fx, &config, "cdc-bridge checkpoints reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_says_what_was_lost_and_how_to_recover() {
    use support::pg::{SMALL_WAL, SMALL_WAL_ADMIN};
    let fx = PgFixture::on(SMALL_WAL, "bad_lost").await;
    fx.sql("CREATE TABLE bad_lost.t (id int PRIMARY KEY, pad text)")
        .await;
    let config = fx.config(&["t"], "");
    let child = fx.spawn(&config);
    fx.wait_caught_up(Duration::from_secs(30)).await;
    fx.stop(child);
    // While the pipeline is stopped, WAL grows far beyond max_slot_wal_keep_size (1MB).
    let admin = connect(&env_url(SMALL_WAL_ADMIN)).await;
    for _ in 0..4 {
        fx.sql("INSERT INTO bad_lost.t SELECT g, repeat('x', 500) FROM generate_series(1, 5000) g ON CONFLICT (id) DO UPDATE SET pad = EXCLUDED.pad").await;
        admin
            .batch_execute("SELECT pg_switch_wal(); CHECKPOINT")
            .await
            .unwrap();
    }
    let status: String = admin
        .query_one(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'bad_lost'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "lost", "the server must have invalidated the slot");
    run_fails_with(
        &fx,
        &config,
        "replication slot \"bad_lost\" was invalidated",
    );
    run_fails_with(
        &fx,
        &config,
        "reset this pipeline's checkpoints to take a new snapshot",
    );
    fx.cleanup().await;
}

/// A table of `tables` that an existing publication leaves out would be copied and then never
/// streamed: the pipeline refuses to start and names the statement that adds it. Operations
/// the publication leaves out are the operator's choice: `check` warns about them.
#[tokio::test]
async fn a_table_the_publication_leaves_out_is_refused_with_the_statement_to_run() {
    let fx = PgFixture::new("bad_unpub").await;
    fx.sql(
        "CREATE TABLE bad_unpub.a (id int PRIMARY KEY); CREATE TABLE bad_unpub.b (id int PRIMARY KEY); \
         CREATE PUBLICATION bad_unpub FOR TABLE bad_unpub.a WITH (publish = 'insert')",
    )
    .await;
    let config = fx.config(&["a", "b"], "");
    run_fails_with(
        &fx,
        &config,
        "publication \"bad_unpub\" does not publish \"bad_unpub\".\"b\": the snapshot would copy them and their changes would never be streamed. Run ALTER PUBLICATION \"bad_unpub\" ADD TABLE \"bad_unpub\".\"b\"",
    );
    let check = fx.ws.run(&["check", "--config", config.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "{report}");
    assert!(
        report.contains("FAIL publication \"bad_unpub\" does not publish \"bad_unpub\".\"b\""),
        "{report}"
    );
    assert!(
        report.contains("warn publication bad_unpub does not publish update, delete, truncate"),
        "{report}"
    );
    assert!(
        fx.client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'bad_unpub'",
                &[]
            )
            .await
            .unwrap()
            .is_none(),
        "refused before the slot is created"
    );
}

/// A publication that publishes a partitioned table's changes under its partitions' names
/// (PostgreSQL's default) would split the table: copied rows under its name, changes under the
/// partitions'. The pipeline refuses to start and names the setting that fixes it.
#[tokio::test]
async fn a_publication_naming_partitions_is_refused_with_the_setting_to_change() {
    let fx = PgFixture::new("bad_parted").await;
    fx.sql(
        "CREATE TABLE bad_parted.m (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region); \
         CREATE TABLE bad_parted.m_eu PARTITION OF bad_parted.m FOR VALUES IN ('eu'); \
         CREATE PUBLICATION bad_parted FOR TABLE bad_parted.m",
    )
    .await;
    let config = fx.config(&["m"], "");
    run_fails_with(
        &fx,
        &config,
        "publication \"bad_parted\" has publish_via_partition_root = false, so it publishes the changes of partitioned table(s) \"bad_parted\".\"m\" under each partition's own name",
    );
    let output = fx.ws.run(&["run", "--config", config.to_str().unwrap()]);
    assert!(stderr(&output)
        .contains("ALTER PUBLICATION \"bad_parted\" SET (publish_via_partition_root = true)"));

    fx.sql("ALTER PUBLICATION bad_parted SET (publish_via_partition_root = true)")
        .await;
    let check = fx.ws.run(&["check", "--config", config.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        report.contains("ok   publication bad_parted publishes every table"),
        "{report}"
    );
}

/// A publication whose column list leaves out the key (allowed when it publishes inserts only)
/// cannot be copied in key order without skipping rows: the copy stops and says what to add.
#[tokio::test]
async fn a_column_list_without_the_key_is_refused_by_the_copy() {
    let fx = PgFixture::new("bad_keycols").await;
    fx.sql(
        "CREATE TABLE bad_keycols.t (id int PRIMARY KEY, v int); INSERT INTO bad_keycols.t VALUES (1, 1); \
         CREATE PUBLICATION bad_keycols FOR TABLE bad_keycols.t (v) WITH (publish = 'insert')",
    )
    .await;
    run_fails_with(
        &fx,
        &fx.config(&["t"], ""),
        "publishes only some columns of table bad_keycols.t, without its key column(s) id",
    );
    fx.cleanup().await;
}
