//! `format = "dms"` end to end: real Postgres changes through the daemon into Kinesis
//! (kinesalite), read back with the AWS SDK and checked against the record AWS DMS writes.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::kinesis::{client, create_stream, endpoint, read_all, stream_name, wait_active};
use support::pg::PgFixture;
use support::{terminate, wait_until};

async fn records(stream: &str) -> Vec<(String, Value)> {
    read_all(&client().await, stream)
        .await
        .into_iter()
        .map(|r| (r.partition_key, serde_json::from_slice(&r.data).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_changes_reach_kinesis_as_dms_records() {
    let name = format!("dms_pg_{}", std::process::id());
    let fx = PgFixture::new(&name).await;
    fx.client
        .batch_execute(&format!(
            "CREATE TABLE {name}.orders (id bigint PRIMARY KEY, amount numeric(10,2), note text,
               blob bytea, placed timestamp(3));
             ALTER TABLE {name}.orders REPLICA IDENTITY FULL;
             INSERT INTO {name}.orders VALUES (1, 19.99, 'first', '\\xdead01', '2025-11-22 03:10:00.12');"
        ))
        .await
        .unwrap();
    let stream = stream_name("dms");
    let kinesis = client().await;
    create_stream(&kinesis, &stream, 1).await;
    wait_active(&kinesis, &stream).await;
    let config = fx.config(&["orders"], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let file_sink = format!("[pipeline.sink]\nkind = \"file\"\npath = \"out/{name}.jsonl\"\n");
    let sink = format!(
        "[pipeline.sink]\nkind = \"kinesis\"\nstream = \"{stream}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n\
         format = {{ kind = \"dms\", before_image = \"all\", include_transaction_details = true }}\n",
        endpoint()
    );
    std::fs::write(&config, text.replace(&file_sink, &sink)).unwrap();
    let mut bridge = fx.spawn(&config);
    let mut got = Vec::new();
    let wait = |count: usize| {
        let stream = stream.clone();
        move |got: &mut Vec<(String, Value)>| {
            let runtime = tokio::runtime::Handle::current();
            wait_until(Duration::from_secs(60), &format!("{count} records"), || {
                *got = tokio::task::block_in_place(|| runtime.block_on(records(&stream)));
                got.len() >= count
            });
        }
    };
    wait(1)(&mut got);
    fx.client
        .batch_execute(&format!(
            "INSERT INTO {name}.orders (id, amount) VALUES (2, -1.5);
             UPDATE {name}.orders SET note = 'second' WHERE id = 2;
             DELETE FROM {name}.orders WHERE id = 2;
             TRUNCATE {name}.orders;"
        ))
        .await
        .unwrap();
    wait(5)(&mut got);
    terminate(&bridge);
    bridge.wait().unwrap();

    // Kinesis keeps order per partition key: the row's three changes in order, the truncate
    // (no key) anywhere after the snapshot row.
    let operation = |r: &Value| r["metadata"]["operation"].as_str().unwrap().to_owned();
    let of_row_2: Vec<String> = got
        .iter()
        .filter(|(key, _)| key.ends_with(":{\"id\":2}"))
        .map(|(_, r)| operation(r))
        .collect();
    assert_eq!(
        of_row_2,
        ["insert", "update", "delete"],
        "{got:?}\nlog:\n{}",
        fx.ws.log_tail()
    );
    let find = |op: &str| &got.iter().find(|(_, r)| operation(r) == op).unwrap().1;
    let (key, load) = &got[0];
    assert_eq!(
        key,
        &format!("{name}.orders:{{\"id\":1}}"),
        "Kinesis partitions by table and primary key"
    );
    assert_eq!(
        load["data"],
        json!({"id": 1, "amount": 19.99, "note": "first", "blob": "0xDEAD01",
               "placed": "2025-11-22T03:10:00.120"})
    );
    let metadata = &load["metadata"];
    assert_eq!(
        (
            &metadata["record-type"],
            &metadata["partition-key-type"],
            &metadata["schema-name"],
            &metadata["table-name"]
        ),
        (
            &json!("data"),
            &json!("primary-key"),
            &json!(name),
            &json!("orders")
        )
    );
    assert!(metadata["timestamp"].as_str().unwrap().ends_with('Z'));
    let insert = find("insert");
    assert!(insert["metadata"]["transaction-id"].as_u64().unwrap() > 0);
    assert!(insert["metadata"]["stream-position"]
        .as_str()
        .unwrap()
        .contains('/'));
    let update = find("update");
    assert_eq!(update["before-image"]["note"], Value::Null);
    assert_eq!(update["data"]["note"], "second");
    let delete = find("delete");
    assert_eq!(delete["data"]["id"], 2, "a delete carries the row before");
    assert_eq!(delete["data"]["amount"], -1.5);
    let truncate = find("truncate-table");
    assert_eq!(
        (&truncate["metadata"]["record-type"], &truncate["control"]),
        (&json!("control"), &json!({}))
    );
}
