//! Shared checkpoint stores: tables in systems users already run, holding the checkpoints and
//! the leases of several cdc-bridge instances (see `crate::coordination`). Each implements
//! [`Store`](crate::checkpoint::Store) and [`LeaseTable`](crate::coordination::LeaseTable)
//! with conditional writes; the daemon's registry (`daemon::connectors`) picks one by the
//! `kind` of `[daemon.coordination]`.

pub mod dynamodb;
pub mod postgres;

pub use dynamodb::{DynamoDbStore, DynamoDbStoreConfig};
pub use postgres::{PostgresStore, PostgresStoreConfig};
