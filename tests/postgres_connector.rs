//! The shipped postgres -> file connector, run as the README says, against a database prepared
//! by the shipped migrations.

mod support;

use std::time::Duration;

use serde_json::json;
use support::pg::{
    apply_migrations, connect, drop_slot, env_url, migrated_role_url, read_events, ADMIN,
};
use support::{terminate, wait_until, Workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_file_connector_replicates_the_demo_tables() {
    apply_migrations().await;
    let admin = connect(&env_url(ADMIN)).await;
    drop_slot(&admin, "cdc_bridge_file").await;
    admin.batch_execute("DELETE FROM public.orders WHERE id = 424242; DELETE FROM public.customers WHERE id = 424242").await.unwrap();
    admin
        .batch_execute("INSERT INTO public.customers (id, email) VALUES (424242, 'c@x.org')")
        .await
        .unwrap();

    let ws = Workspace::new();
    let connector =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/postgres-file.toml");
    std::fs::copy(&connector, ws.path("postgres-file.toml")).unwrap();
    let log = std::fs::File::create(ws.path("bridge.log")).unwrap();
    let child = ws
        .command(&["run", "--config", "postgres-file.toml"])
        .env("PG_URL", migrated_role_url())
        .stderr(log)
        .spawn()
        .unwrap();
    let out = ws.path("out/postgres.jsonl");
    let has = |pred: &dyn Fn(&serde_json::Value) -> bool| read_events(&out).iter().any(pred);
    wait_until(
        Duration::from_secs(30),
        "the snapshot of customer 424242",
        || {
            has(&|e| {
                e["op"] == "snapshot"
                    && e["key"]["id"] == 424242
                    && e["source"]["table"] == "customers"
            })
        },
    );
    admin
        .batch_execute(
            "INSERT INTO public.orders (id, customer_id, amount, tags, details) VALUES (424242, 424242, 12.5, '{gift}', '{\"n\": 1}'); \
             UPDATE public.orders SET status = 'paid' WHERE id = 424242",
        )
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "the order update", || {
        has(&|e| e["op"] == "update" && e["key"]["id"] == 424242)
    });
    terminate(&child);
    let mut child = child;
    assert_eq!(child.wait().unwrap().code(), Some(0));
    drop_slot(&admin, "cdc_bridge_file").await;

    let events = read_events(&out);
    let insert = events
        .iter()
        .find(|e| e["op"] == "insert" && e["key"]["id"] == 424242)
        .unwrap();
    assert_eq!(insert["source"]["schema"], "public");
    assert_eq!(insert["source"]["table"], "orders");
    assert_eq!(insert["after"]["amount"], "12.50");
    assert_eq!(insert["after"]["tags"], json!(["gift"]));
    assert_eq!(insert["after"]["details"], json!({"n": 1}));
    let update = events
        .iter()
        .find(|e| e["op"] == "update" && e["key"]["id"] == 424242)
        .unwrap();
    assert_eq!(update["after"]["status"], "paid");
}
