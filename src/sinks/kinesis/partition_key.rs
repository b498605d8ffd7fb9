//! The partition key of an event: the row's identity, so that every change of one row goes to
//! the same shard, in order.
//!
//! Form: `<schema or database>.<table>:<primary key as JSON>`, e.g. `public.orders:{"id":42}`
//! (the same JSON as the Kafka message key). It depends only on the table name and the key
//! values, so it is stable across restarts and versions. Kinesis accepts at most 256
//! characters: a longer key keeps its first 219 characters and appends `#` and the MD5 of the
//! whole key in hex. A table without a primary key (and without a replica identity) uses the
//! table name alone: all its changes share one shard and stay in order.
//!
//! Kinesis routes a record by the MD5 of its partition key read as a 128-bit number;
//! [`hash_key`] computes it, for the shard map and for tests.

use md5::{Digest, Md5};

use crate::envelope::ChangeEvent;
use crate::format::JsonFormat;

pub const MAX_PARTITION_KEY_CHARS: usize = 256;
const KEPT_PREFIX_CHARS: usize = MAX_PARTITION_KEY_CHARS - 1 - 32 - 4;

pub fn partition_key(event: &ChangeEvent) -> String {
    let mut key = event.qualified_table();
    if !event.key.is_empty() {
        key.push(':');
        let mut json = Vec::with_capacity(32);
        JsonFormat::write_key(event, &mut json);
        key.push_str(std::str::from_utf8(&json).expect("JSON is UTF-8"));
    }
    shorten(key)
}

/// Keeps a key within the limit; a longer one becomes its prefix plus the MD5 of all of it.
fn shorten(key: String) -> String {
    if key.chars().count() <= MAX_PARTITION_KEY_CHARS {
        return key;
    }
    let digest = Md5::digest(key.as_bytes());
    let prefix: String = key.chars().take(KEPT_PREFIX_CHARS).collect();
    let mut short = format!("{prefix}#");
    for byte in digest {
        short.push_str(&format!("{byte:02x}"));
    }
    short
}

/// The 128-bit hash key Kinesis derives from a partition key.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Row, Value};
    use crate::sources::generator::GeneratorSource;

    fn event() -> ChangeEvent {
        GeneratorSource::sample_event(5, 7)
    }

    #[test]
    fn table_and_key_values() {
        assert_eq!(partition_key(&event()), "db.items:{\"id\":2}");
        let mut keyless = event();
        keyless.key = Row::new();
        assert_eq!(partition_key(&keyless), "db.items");
    }

    #[test]
    fn long_keys_are_hashed_and_stay_distinct_and_stable() {
        let mut a = event();
        a.key = Row::new();
        a.key.push("name".into(), Value::Text("é".repeat(300)));
        let mut b = a.clone();
        b.key = Row::new();
        b.key
            .push("name".into(), Value::Text(format!("{}x", "é".repeat(299))));
        let (ka, kb) = (partition_key(&a), partition_key(&b));
        assert!(
            ka.chars().count() <= MAX_PARTITION_KEY_CHARS,
            "{}",
            ka.chars().count()
        );
        assert_ne!(ka, kb);
        assert_eq!(ka, partition_key(&a));
        assert!(ka.starts_with("db.items:{\"name\":\"éé"));
    }

    #[test]
    fn hash_key_is_the_md5_as_a_big_endian_number() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(hash_key("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }
}
