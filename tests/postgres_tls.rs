//! TLS to PostgreSQL: `sslmode=require` encrypts both connections, `verify-full` checks the
//! certificate against `sslrootcert`, and a certificate from another CA is refused.

mod support;

use std::time::Duration;

use support::pg::PgFixture;
use support::stderr;

fn with_url_params(fx: &PgFixture, params: &str) -> std::path::PathBuf {
    fx.config_with_url(&["t"], "", &format!("${{CDC_BRIDGE_PG_URL}}?{params}"))
}

async fn replicates_over_tls(name: &str, params: &str) {
    let fx = PgFixture::new(name).await;
    fx.sql(&format!("CREATE TABLE {name}.t (id int PRIMARY KEY)"))
        .await;
    let child = fx.spawn(&with_url_params(&fx, params));
    fx.wait_caught_up(Duration::from_secs(30)).await;
    fx.sql(&format!("INSERT INTO {name}.t VALUES (1)")).await;
    fx.wait_for_events(1, Duration::from_secs(30));
    let rows = fx
        .client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&format!("cdc-bridge {name}")],
        )
        .await
        .unwrap();
    fx.stop(child);
    fx.cleanup().await;
    let encrypted: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        encrypted.len() >= 2,
        "the SQL and the replication connection: {encrypted:?}"
    );
    assert!(
        encrypted.iter().all(|e| *e),
        "every connection must be encrypted: {encrypted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts_both_connections() {
    replicates_over_tls("tls_require", "sslmode=require").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_verify_full_accepts_the_right_ca() {
    let ca = std::env::var("CDC_BRIDGE_PG_CA").expect("CDC_BRIDGE_PG_CA: run scripts/test.sh");
    replicates_over_tls(
        "tls_verify",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    )
    .await;
}

#[tokio::test]
async fn sslmode_verify_full_refuses_a_certificate_from_another_ca() {
    let other = std::env::var("CDC_BRIDGE_PG_OTHER_CA")
        .expect("CDC_BRIDGE_PG_OTHER_CA: run scripts/test.sh");
    let fx = PgFixture::new("tls_refuse").await;
    fx.sql("CREATE TABLE tls_refuse.t (id int PRIMARY KEY)")
        .await;
    let config = with_url_params(&fx, &format!("sslmode=verify-full&sslrootcert={other}"));
    let output = fx.ws.run(&["run", "--config", config.to_str().unwrap()]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("TLS") && err.contains("UnknownIssuer"),
        "{err}"
    );
}
