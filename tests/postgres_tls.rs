//! TLS to PostgreSQL: without `sslmode` both connections are encrypted when the server offers
//! TLS (`prefer`, as libpq) and plain when it does not; `require` encrypts both connections,
//! `verify-ca` and `verify-full` check the certificate against `sslrootcert`, and a
//! certificate from another CA is refused. A password the server asks for in cleartext is
//! sent only over TLS, or when `allow_cleartext_password` says so.

mod support;

use std::time::Duration;

use support::pg::{env_url, pg_url, PgFixture, REPLICA_WAL};
use support::stderr;

fn with_params(url: &str, params: &str) -> String {
    if params.is_empty() {
        url.to_owned()
    } else {
        format!("{url}?{params}")
    }
}

fn with_url_params(fx: &PgFixture, params: &str) -> std::path::PathBuf {
    fx.config_with_url(&["t"], "", &with_params("${CDC_BRIDGE_PG_URL}", params))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sslmode_both_connections_are_encrypted() {
    replicates_over_tls("tls_default", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_verify_ca_accepts_the_right_ca() {
    let ca = std::env::var("CDC_BRIDGE_PG_CA").expect("CDC_BRIDGE_PG_CA: run scripts/test.sh");
    replicates_over_tls(
        "tls_verify_ca",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    )
    .await;
}

#[tokio::test]
async fn sslmode_verify_ca_refuses_a_certificate_from_another_ca() {
    let other = std::env::var("CDC_BRIDGE_PG_OTHER_CA")
        .expect("CDC_BRIDGE_PG_OTHER_CA: run scripts/test.sh");
    let fx = PgFixture::new("tls_ca_refuse").await;
    fx.sql("CREATE TABLE tls_ca_refuse.t (id int PRIMARY KEY)")
        .await;
    let config = with_url_params(&fx, &format!("sslmode=verify-ca&sslrootcert={other}"));
    let output = fx.ws.run(&["run", "--config", config.to_str().unwrap()]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("TLS") && err.contains("UnknownIssuer"),
        "{err}"
    );
}

/// Without a CA file, `verify-ca` would accept any publicly trusted certificate for any host.
#[test]
fn sslmode_verify_ca_without_sslrootcert_is_a_config_error() {
    let ws = support::Workspace::new();
    let config = ws.config(
        "[[pipeline]]\nname = \"p\"\n[pipeline.source]\nkind = \"postgres\"\n\
         url = \"postgres://cdc@127.0.0.1/app?sslmode=verify-ca\"\nslot = \"s\"\npublication = \"p\"\n\
         tables = [\"public.t\"]\n[pipeline.sink]\nkind = \"null\"\n",
    );
    let output = ws.run(&["check", "--config", config.to_str().unwrap()]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("pipeline[0].source.url")
            && err.contains("sslmode=verify-ca needs sslrootcert"),
        "{err}"
    );
}

/// A server without TLS (the `wal_level = replica` cluster has `ssl = off`): the default
/// falls back to a plain connection; `require` refuses it.
#[tokio::test]
async fn without_sslmode_a_server_without_tls_is_reached_in_plain() {
    let fx = PgFixture::on(REPLICA_WAL, "tls_fallback").await;
    let url = env_url(REPLICA_WAL);
    let check = |params: &str| {
        let config = fx.config_with_url(&["t"], "", &with_params(&url, params));
        let output = fx.ws.run(&["check", "--config", config.to_str().unwrap()]);
        String::from_utf8_lossy(&output.stdout).into_owned() + &stderr(&output)
    };
    let report = check("");
    assert!(report.contains("PostgreSQL 1"), "connected: {report}");
    let report = check("sslmode=require");
    assert!(report.contains("does not accept TLS"), "{report}");
}

/// The role `cdc_clear` authenticates with `password` (cleartext) in pg_hba.conf.
fn cleartext_report(fx: &PgFixture, params: &str, source_extra: &str) -> String {
    let url = pg_url().replacen("://cdc:cdc@", "://cdc_clear:cdc_clear@", 1);
    let config = fx.config_with_url(&["t"], source_extra, &with_params(&url, params));
    let output = fx.ws.run(&["check", "--config", config.to_str().unwrap()]);
    String::from_utf8_lossy(&output.stdout).into_owned() + &stderr(&output)
}

#[tokio::test]
async fn a_cleartext_password_is_never_sent_unencrypted_unless_allowed() {
    let fx = PgFixture::new("tls_cleartext").await;
    let refused = cleartext_report(&fx, "sslmode=disable", "");
    assert!(
        refused.contains("cleartext") && refused.contains("allow_cleartext_password"),
        "{refused}"
    );
    assert!(!refused.contains("PostgreSQL 1"), "{refused}");
    for (params, extra) in [
        ("sslmode=require", ""),
        ("", ""),
        ("sslmode=disable", "allow_cleartext_password = true"),
    ] {
        let report = cleartext_report(&fx, params, extra);
        assert!(
            report.contains("PostgreSQL 1"),
            "{params} {extra}: {report}"
        );
    }
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
