//! Kafka's default key partitioner: the partition a keyed record goes to, as Kafka's Java
//! client and librdkafka's `murmur2_random` compute it (`murmur2(key) & 0x7fffffff`, modulo
//! the partition count). The sink assigns partitions itself so that it can hold records per
//! partition ([`super::gate`]); a key still lands where Kafka's own clients would put it.

/// MurmurHash2, 32-bit, with the seed and byte order of Kafka's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes(word.try_into().expect("four bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// The partition of `key` in a topic of `partitions` partitions (at least one).
pub fn partition_for(key: &[u8], partitions: u32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's own `UtilsTest.testMurmur2`, as signed Java ints.
    #[test]
    fn murmur2_matches_kafkas_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input) as i32,
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn the_partition_is_the_positive_hash_modulo_the_count() {
        // murmur2("foobar") & 0x7fffffff = 1357151166, which is 16 modulo 50.
        assert_eq!(partition_for(b"foobar", 50), 16);
        assert_eq!(partition_for(b"foobar", 1), 0);
    }
}
