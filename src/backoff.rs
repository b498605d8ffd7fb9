//! Retry delays shared by the supervisor and the sinks: exponential growth with a cap, and
//! jitter so that many retrying clients spread out instead of retrying in step.

use std::time::{Duration, Instant};

/// `base * 2^attempt`, at most `max` (`attempt` 0 is the first retry).
pub fn exponential(attempt: u32, base: Duration, max: Duration) -> Duration {
    base.saturating_mul(1u32 << attempt.min(20)).min(max)
}

/// `base` scaled by a random factor in [0.5, 1.0].
pub fn with_jitter(base: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    let unit = (hasher.finish() % 1000) as f64 / 1000.0;
    base.mul_f64(0.5 + unit / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_jitter_stays_within_half() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(exponential(0, base, max), base);
        assert_eq!(exponential(3, base, max), Duration::from_millis(800));
        assert_eq!(exponential(40, base, max), max);
        for _ in 0..100 {
            let d = with_jitter(base);
            assert!(d >= base / 2 && d <= base, "{d:?}");
        }
    }
}
