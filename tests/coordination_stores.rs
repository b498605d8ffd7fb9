//! The shared stores (Postgres, DynamoDB Local) pass the same checks of checkpoints, leases
//! and fencing (per pipeline and per partition), each against its real server; every test uses
//! its own schema or table.

mod support;

use std::sync::Arc;

use cdc_bridge::checkpoint::{CheckpointError, Checkpoints, Fence, FencedStore, Position, Store};
use cdc_bridge::coordination::{
    partition_lease, Lease, PartitionFencedStore, PartitionLeases, SharedStore,
};
use cdc_bridge::stores::{DynamoDbStore, DynamoDbStoreConfig, PostgresStore, PostgresStoreConfig};

/// Opens the store of one test: again and again, each time with a connection of its own.
#[derive(Clone)]
enum Opener {
    Postgres { schema: String },
    Dynamodb { table: String },
}

impl Opener {
    fn postgres(test: &str) -> Self {
        let schema = format!(
            "store_{}_{}",
            &test[..test.len().min(24)],
            std::process::id()
        );
        Opener::Postgres { schema }
    }

    fn dynamodb(test: &str) -> Self {
        let table = support::dynamodb::table_name(&format!("store-{}", test.replace('_', "-")));
        Opener::Dynamodb { table }
    }

    async fn open(&self) -> Arc<dyn SharedStore> {
        match self.clone() {
            Opener::Postgres { schema } => {
                let config = PostgresStoreConfig {
                    url: cdc_bridge::config::Secret::new(support::pg::pg_url()),
                    schema,
                    allow_cleartext_password: false,
                };
                Arc::new(
                    PostgresStore::open(config, std::time::Duration::from_secs(10))
                        .await
                        .expect("open the Postgres store"),
                )
            }
            Opener::Dynamodb { table } => {
                let config = DynamoDbStoreConfig {
                    table,
                    region: Some("us-east-1".into()),
                    endpoint_url: Some(support::dynamodb::endpoint()),
                };
                Arc::new(
                    DynamoDbStore::open(config, std::time::Duration::from_secs(10))
                        .await
                        .expect("open the DynamoDB store"),
                )
            }
        }
    }
}

fn at(counter: u64) -> Position {
    Position::from_counter(counter.to_string(), counter)
}

fn single(counter: u64) -> Checkpoints {
    Checkpoints::from([(String::new(), at(counter))])
}

async fn lease(store: &dyn SharedStore, key: &str) -> Lease {
    store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.key == key)
        .expect("lease row exists")
}

async fn checkpoints_round_trip_and_never_move_backward(opener: Opener) {
    let store = opener.open().await;
    assert!(store.load("p").await.unwrap().is_empty());
    store.apply("p", &single(7), &[], None).await.unwrap();
    store.apply("q", &single(3), &[], None).await.unwrap();
    assert_eq!(store.load("p").await.unwrap(), single(7));
    assert_eq!(store.list().await.unwrap().len(), 2);

    let err = store.apply("p", &single(6), &[], None).await.unwrap_err();
    assert!(matches!(err, CheckpointError::Regression { .. }), "{err}");
    assert_eq!(
        store.load("p").await.unwrap(),
        single(7),
        "a refused commit changes nothing"
    );
    store.apply("p", &single(7), &[], None).await.unwrap();

    // Ranks compare bytewise: 256 (0x..0100) is above 255 (0x..00ff).
    store.apply("p", &single(255), &[], None).await.unwrap();
    store.apply("p", &single(256), &[], None).await.unwrap();
    assert_eq!(store.load("p").await.unwrap(), single(256));

    let shards = Checkpoints::from([("shard-1".to_owned(), at(5)), ("shard-2".to_owned(), at(2))]);
    store.apply("ddb", &shards, &[], None).await.unwrap();
    let update = Checkpoints::from([("shard-2".to_owned(), at(3))]);
    store
        .apply("ddb", &update, &["shard-1".into()], None)
        .await
        .unwrap();
    assert_eq!(store.load("ddb").await.unwrap(), update);

    // More partitions than one DynamoDB transaction holds.
    let many: Checkpoints = (0..150).map(|i| (format!("s{i:03}"), at(i))).collect();
    store.apply("many", &many, &[], None).await.unwrap();
    assert_eq!(store.load("many").await.unwrap(), many);

    assert_eq!(store.reset("ddb").await.unwrap(), 1);
    assert!(store.load("ddb").await.unwrap().is_empty());
    assert_eq!(
        store.load("q").await.unwrap(),
        single(3),
        "other pipelines untouched"
    );
}

async fn leases_fence_the_commits_of_a_former_holder(opener: Opener) {
    let store = opener.open().await;
    store.create("pipeline/p").await.unwrap();
    store.create("pipeline/p").await.unwrap();
    let free = lease(&*store, "pipeline/p").await;
    assert_eq!((free.owner.as_deref(), free.epoch), (None, 0));

    let a = store
        .take(&free, "a")
        .await
        .unwrap()
        .expect("a takes the free lease");
    assert_eq!(a.epoch, 1);
    assert!(
        store.take(&free, "b").await.unwrap().is_none(),
        "a stale reading takes nothing"
    );
    assert!(store.renew(&a).await.unwrap());
    store.apply("p", &single(10), &[], Some(&a)).await.unwrap();

    // b takes the lease over from the row as it is now.
    let current = lease(&*store, "pipeline/p").await;
    assert_eq!(current.owner.as_deref(), Some("a"));
    let b = store
        .take(&current, "b")
        .await
        .unwrap()
        .expect("b takes over");
    assert_eq!(b.epoch, 2);

    // a is fenced: no renewal, no commit, no new run (loading through its fence fails), no
    // release.
    assert!(!store.renew(&a).await.unwrap());
    store.check_fence(&b).await.unwrap();
    let through_a = FencedStore::new(store.clone(), a.clone());
    let err = through_a.load("p").await.unwrap_err();
    assert!(
        matches!(err, CheckpointError::Fenced { epoch: 1, .. }),
        "{err}"
    );
    let err = store
        .apply("p", &single(20), &[], Some(&a))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::Fenced { epoch: 1, .. }),
        "{err}"
    );
    assert_eq!(
        store.load("p").await.unwrap(),
        single(10),
        "a fenced commit stores nothing"
    );
    store.release(&a).await.unwrap();
    assert_eq!(
        lease(&*store, "pipeline/p").await.owner.as_deref(),
        Some("b")
    );

    store.apply("p", &single(15), &[], Some(&b)).await.unwrap();
    store.release(&b).await.unwrap();
    let released = lease(&*store, "pipeline/p").await;
    assert_eq!((released.owner.as_deref(), released.epoch), (None, 2));
    let err = store
        .apply("p", &single(16), &[], Some(&b))
        .await
        .unwrap_err();
    assert!(matches!(err, CheckpointError::Fenced { .. }), "{err}");
    let again = store
        .take(&released, "a")
        .await
        .unwrap()
        .expect("a takes the released lease");
    assert_eq!(again.epoch, 3);
}

/// Partitions of one pipeline are leased one by one: each position is stored under its own
/// partition's lease, a copy whose lease on one partition is stale stores nothing for that
/// one, and a partition done for good has its row deleted by its holder only.
async fn each_partition_is_fenced_by_its_own_lease(opener: Opener) {
    let store = opener.open().await;
    let (key_a, key_b) = (
        partition_lease("spread", "a"),
        partition_lease("spread", "b"),
    );
    store.create(&key_a).await.unwrap();
    store.create(&key_b).await.unwrap();
    let x_a = store
        .take(&lease(&*store, &key_a).await, "x")
        .await
        .unwrap()
        .unwrap();
    let x_b = store
        .take(&lease(&*store, &key_b).await, "x")
        .await
        .unwrap()
        .unwrap();
    // y takes b over; x's copy has not noticed yet.
    let y_b = store
        .take(&lease(&*store, &key_b).await, "y")
        .await
        .unwrap()
        .unwrap();
    let inner: Arc<dyn Store> = store.clone();
    let leases = Arc::new(PartitionLeases::new("spread", inner.clone()));
    leases.grant("a", x_a.clone());
    leases.grant("b", x_b.clone());
    let copy_of_x = PartitionFencedStore::new(inner, leases.clone());
    let both = Checkpoints::from([
        ("a".to_owned(), Position::from_counter("5", 5)),
        ("b".to_owned(), Position::from_counter("5", 5)),
    ]);
    let err = copy_of_x
        .apply("spread", &both, &[], None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Fenced { lease, epoch: 1 } if *lease == key_b),
        "{err}"
    );
    let stored = store.load("spread").await.unwrap();
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        ["a"],
        "a is x's, b is not"
    );
    // Once x knows, it leaves b out and goes on storing a.
    leases.revoke("b");
    let later = Checkpoints::from([
        ("a".to_owned(), Position::from_counter("6", 6)),
        ("b".to_owned(), Position::from_counter("6", 6)),
    ]);
    copy_of_x.apply("spread", &later, &[], None).await.unwrap();
    let stored = store.load("spread").await.unwrap();
    assert_eq!(stored["a"].token, "6");
    assert!(!stored.contains_key("b"));
    // Only the holder deletes a row.
    assert!(!store.delete(&x_b).await.unwrap(), "x no longer holds b");
    assert!(store.delete(&x_a).await.unwrap());
    let keys: Vec<String> = store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert!(!keys.contains(&key_a) && keys.contains(&key_b), "{keys:?}");
    assert!(store.delete(&y_b).await.unwrap());
}

/// Eight instances, each on a connection of its own, take the same free lease at once.
async fn one_of_many_simultaneous_takes_wins(opener: Opener) {
    let store = opener.open().await;
    store.create("pipeline/race").await.unwrap();
    let seen = lease(&*store, "pipeline/race").await;
    let mut contenders = Vec::new();
    for _ in 0..8 {
        contenders.push(opener.open().await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let takes: Vec<_> = contenders
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let (seen, start) = (seen.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                store.take(&seen, &format!("i{i}")).await.unwrap()
            })
        })
        .collect();
    let mut winners: Vec<Fence> = Vec::new();
    for take in takes {
        winners.extend(take.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let row = lease(&*store, "pipeline/race").await;
    assert_eq!(row.owner.as_deref(), Some(winners[0].owner.as_str()));
    assert_eq!(row.epoch, 1);
}

/// A holder committing as fast as it can while another instance takes over: nothing it
/// commits after the takeover is stored, and the position never moves backward.
async fn commits_racing_a_takeover_stop_at_the_takeover(opener: Opener) {
    let store = opener.open().await;
    let other = opener.open().await;
    store.create("pipeline/busy").await.unwrap();
    let free = lease(&*store, "pipeline/busy").await;
    let a = store.take(&free, "a").await.unwrap().unwrap();
    let committer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut accepted = 0;
            for n in 1..=400u64 {
                match store.apply("busy", &single(n), &[], Some(&a)).await {
                    Ok(()) => accepted = n,
                    Err(CheckpointError::Fenced { .. }) => return (accepted, n),
                    Err(other) => panic!("{other}"),
                }
            }
            (accepted, 0)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let current = lease(&*other, "pipeline/busy").await;
    let b = other
        .take(&current, "b")
        .await
        .unwrap()
        .expect("b takes over");
    let stored_at_takeover = store.load("busy").await.unwrap();
    let (accepted, refused) = committer.await.unwrap();
    assert!(
        refused > 0,
        "the committer was never fenced (took {accepted} commits)"
    );
    assert!(
        accepted > 0,
        "the takeover came before any commit; the test proves nothing"
    );
    assert_eq!(store.load("busy").await.unwrap(), stored_at_takeover);
    assert_eq!(store.load("busy").await.unwrap(), single(accepted));
    store
        .apply("busy", &single(accepted), &[], Some(&b))
        .await
        .unwrap();
}

macro_rules! both_stores {
    ($($name:ident),*) => {
        mod postgres_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Opener::postgres(stringify!($name))).await;
                }
            )*
        }
        mod dynamodb_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Opener::dynamodb(stringify!($name))).await;
                }
            )*
        }
    };
}

both_stores!(
    checkpoints_round_trip_and_never_move_backward,
    leases_fence_the_commits_of_a_former_holder,
    one_of_many_simultaneous_takes_wins,
    commits_racing_a_takeover_stop_at_the_takeover,
    each_partition_is_fenced_by_its_own_lease
);
