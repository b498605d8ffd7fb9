//! A sink that stalls for longer than `wal_sender_timeout` must not cost the replication
//! session: the source keeps confirming its stored position while it waits for buffer room,
//! the walsender keeps its connection, the pipeline never restarts, and nothing is lost.

mod support;

use std::time::{Duration, Instant};

use support::pg::{connect, env_url, PgFixture, ADMIN, MAIN};

/// A role of its own carries the short timeout, so other tests on the server keep theirs.
const ROLE: &str = "cdc_backpressure";
const ROWS: i64 = 30_000;
const STALL: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_keeps_the_walsender_session() {
    let fx = PgFixture::new("backpressure").await;
    let admin = connect(&env_url(ADMIN)).await;
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {ROLE}; \
             CREATE ROLE {ROLE} LOGIN REPLICATION PASSWORD 'cdc' IN ROLE cdc; \
             ALTER ROLE {ROLE} SET wal_sender_timeout = '10s'"
        ))
        .await
        .unwrap();
    fx.sql(
        "CREATE TABLE backpressure.t (id int PRIMARY KEY, pad text NOT NULL); \
         CREATE PUBLICATION backpressure FOR TABLE backpressure.t",
    )
    .await;
    let url = env_url(MAIN).replace("cdc:cdc@", &format!("{ROLE}:cdc@"));
    let config = fx.ws.config(&format!(
        "[[pipeline]]\nname = \"backpressure\"\n[pipeline.source]\nkind = \"postgres\"\nurl = \"{url}\"\n\
         slot = \"backpressure\"\npublication = \"backpressure\"\ntables = [\"backpressure.t\"]\n\
         [pipeline.sink]\nkind = \"stdout\"\n[pipeline.batch]\nlinger_ms = 5\n"
    ));
    let (mut child, out) = fx
        .ws
        .spawn_read_stdout(&["run", "--config", config.to_str().unwrap()]);
    let walsender = || async {
        fx.client
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'backpressure'",
                &[],
            )
            .await
            .unwrap()
            .and_then(|row| row.get::<_, Option<i32>>(0))
    };
    // Streaming has started once the slot is in use.
    let started = Instant::now();
    let mut first = walsender().await;
    while first.is_none() && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        first = walsender().await;
    }
    // The slot can be in use by a connection that is not the streaming one yet (creating the
    // slot, checking the publication): a row delivered proves the stream's walsender holds it.
    fx.sql("INSERT INTO backpressure.t VALUES (0, 'first')")
        .await;
    while out.len() == 0 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first = walsender().await;
    if first.is_none() || out.len() == 0 {
        child.kill().unwrap();
        panic!("the bridge did not start streaming:\n{}", fx.ws.log_tail());
    }

    // Stall the sink, write 30,000 rows during the first 60 s, watch the walsender for 90 s.
    out.pause();
    let stalled = Instant::now();
    let mut written = 0;
    let mut other_walsender = None;
    while stalled.elapsed() < STALL {
        if written < ROWS {
            fx.sql(&format!(
                "INSERT INTO backpressure.t SELECT g, repeat('x', 200) FROM generate_series({}, {}) g",
                written + 1,
                written + 100
            ))
            .await;
            written += 100;
        }
        let now = walsender().await;
        if now != first {
            other_walsender = Some((stalled.elapsed(), now));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let confirmed_behind = fx
        .client
        .query_one(
            "SELECT confirmed_flush_lsn < pg_current_wal_lsn() FROM pg_replication_slots \
             WHERE slot_name = 'backpressure'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, bool>(0);
    out.resume();

    let drained = Instant::now();
    while other_walsender.is_none()
        && out.len() <= ROWS as usize
        && drained.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = walsender().await;
    support::terminate(&child);
    let status = child.wait().unwrap();
    support::pg::drop_slot(&fx.client, "backpressure").await;
    fx.sql("DROP PUBLICATION backpressure").await;
    admin
        .batch_execute(&format!("DROP ROLE {ROLE}"))
        .await
        .unwrap();

    let log = std::fs::read_to_string(fx.ws.path("bridge.log")).unwrap();
    assert_eq!(
        other_walsender, None,
        "the walsender ({first:?}) went away during the stall (elapsed, new pid); log:\n{log}"
    );
    assert!(
        confirmed_behind,
        "the sink did not stall: everything was confirmed"
    );
    assert_eq!(after, first, "walsender after the stall; log:\n{log}");
    assert!(
        !log.contains("restarting"),
        "the pipeline restarted:\n{log}"
    );
    let ids: Vec<i64> = out
        .records()
        .iter()
        .map(|e| e["key"]["id"].as_i64().expect("an id"))
        .collect();
    assert_eq!(ids, (0..=ROWS).collect::<Vec<_>>(), "log:\n{log}");
    assert_eq!(status.code(), Some(0), "bridge exit status");
}
