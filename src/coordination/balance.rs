//! The lease-taking policy of one instance: expiry by local observation, an even share, and
//! slow stealing toward it. Pure: it reads lease rows and a clock and says what to take.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use super::Lease;

/// What one round decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Rows to take, as read (the take is conditional on them being unchanged).
    pub take: Vec<Lease>,
    /// Instances that hold a live lease, this one included.
    pub instances: usize,
    /// The even share: leases / instances, rounded up.
    pub target: usize,
}

/// A row's state and when this instance first saw it in that state.
#[derive(Debug)]
struct Seen {
    state: (Option<String>, u64, u64),
    since: Instant,
}

/// One instance's view of the lease table across rounds.
#[derive(Debug)]
pub struct Balance {
    me: String,
    duration: Duration,
    seen: HashMap<String, Seen>,
}

impl Balance {
    pub fn new(me: impl Into<String>, duration: Duration) -> Self {
        Balance {
            me: me.into(),
            duration,
            seen: HashMap::new(),
        }
    }

    /// Decides from one reading of every row. `held` are the keys this instance holds (rows
    /// naming it that it does not hold, e.g. after a take whose answer was lost, expire like
    /// anyone else's).
    pub fn decide(&mut self, leases: &[Lease], held: &HashSet<String>, now: Instant) -> Decision {
        self.seen
            .retain(|key, _| leases.iter().any(|l| &l.key == key));
        let mut expired = Vec::new();
        let mut live: HashMap<&str, usize> = HashMap::new();
        for lease in leases {
            let state = (lease.owner.clone(), lease.epoch, lease.heartbeat);
            let seen = self.seen.entry(lease.key.clone()).or_insert(Seen {
                state: state.clone(),
                since: now,
            });
            if seen.state != state {
                *seen = Seen { state, since: now };
            }
            if held.contains(&lease.key) {
                continue;
            }
            match &lease.owner {
                None => expired.push(lease),
                Some(_) if now.duration_since(seen.since) >= self.duration => expired.push(lease),
                Some(owner) => *live.entry(owner.as_str()).or_default() += 1,
            }
        }
        live.remove(self.me.as_str());
        let instances = live.len() + 1;
        let target = leases.len().div_ceil(instances);
        let mine = held.len();
        // Free rows before expired ones; otherwise an order of this instance's own, so that
        // instances starting together reach for different rows first.
        expired.sort_by_key(|l| (l.owner.is_some(), self.spread(&l.key)));
        let mut take: Vec<Lease> = expired
            .into_iter()
            .take(target.saturating_sub(mine))
            .cloned()
            .collect();
        if take.is_empty() && mine < target {
            if let Some(lease) = self.steal(leases, held, &live, mine) {
                take.push(lease);
            }
        }
        Decision {
            take,
            instances,
            target,
        }
    }

    /// One lease of the busiest instance, if it holds at least two more than this one.
    fn steal(
        &self,
        leases: &[Lease],
        held: &HashSet<String>,
        live: &HashMap<&str, usize>,
        mine: usize,
    ) -> Option<Lease> {
        let (busiest, count) = live
            .iter()
            .max_by_key(|(owner, count)| (**count, self.spread(owner)))?;
        if *count < mine + 2 {
            return None;
        }
        leases
            .iter()
            .filter(|l| l.owner.as_deref() == Some(*busiest) && !held.contains(&l.key))
            .min_by_key(|l| self.spread(&l.key))
            .cloned()
    }

    fn spread(&self, key: &str) -> u64 {
        let mut hasher = DefaultHasher::new();
        (&self.me, key).hash(&mut hasher);
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn row(key: &str, owner: Option<&str>, heartbeat: u64) -> Lease {
        Lease {
            key: key.into(),
            owner: owner.map(Into::into),
            epoch: 1,
            heartbeat,
        }
    }

    fn keys(decision: &Decision) -> Vec<&str> {
        decision.take.iter().map(|l| l.key.as_str()).collect()
    }

    #[test]
    fn a_lone_instance_takes_every_free_lease() {
        let rows: Vec<_> = (0..4).map(|i| row(&format!("p{i}"), None, 0)).collect();
        let mut balance = Balance::new("a", LEASE);
        let decision = balance.decide(&rows, &HashSet::new(), Instant::now());
        assert_eq!(decision.take.len(), 4);
        assert_eq!((decision.instances, decision.target), (1, 4));
    }

    #[test]
    fn a_live_lease_is_left_alone_and_an_unchanged_one_expires_after_the_duration() {
        let mut balance = Balance::new("a", LEASE);
        let start = Instant::now();
        let rows = vec![row("p0", Some("b"), 5), row("p1", Some("b"), 9)];
        let first = balance.decide(&rows, &HashSet::new(), start);
        // b holds both and is alive as far as a can tell: the share is 1 and b holds two more
        // than a, so a steals one.
        assert_eq!(first.take.len(), 1, "{first:?}");
        assert_eq!((first.instances, first.target), (2, 1));

        // b renews p0 but not p1: after the lease duration, p1 is expired, p0 is not.
        let later = start + LEASE;
        let rows = vec![row("p0", Some("b"), 6), row("p1", Some("b"), 9)];
        let decision = balance.decide(&rows, &HashSet::new(), later);
        assert_eq!(keys(&decision), ["p1"]);
        assert_eq!(decision.instances, 2, "b is still alive through p0");
    }

    #[test]
    fn an_instance_at_its_share_takes_nothing() {
        let mut balance = Balance::new("a", LEASE);
        let rows = vec![
            row("p0", Some("a"), 1),
            row("p1", Some("b"), 1),
            row("p2", Some("c"), 1),
        ];
        let held = HashSet::from(["p0".to_owned()]);
        let decision = balance.decide(&rows, &held, Instant::now());
        assert!(decision.take.is_empty(), "{decision:?}");
        assert_eq!((decision.instances, decision.target), (3, 1));
    }

    #[test]
    fn stealing_needs_a_gap_of_two_and_takes_one_per_round() {
        let mut balance = Balance::new("c", LEASE);
        let now = Instant::now();
        // a holds 3, b holds 1, c holds 0: share 2; a holds 2 more than c -> steal one of a's.
        let rows = vec![
            row("p0", Some("a"), 1),
            row("p1", Some("a"), 1),
            row("p2", Some("a"), 1),
            row("p3", Some("b"), 1),
        ];
        let decision = balance.decide(&rows, &HashSet::new(), now);
        assert_eq!(decision.take.len(), 1);
        assert_eq!(decision.take[0].owner.as_deref(), Some("a"));

        // a 2, b 1, c 1: nobody holds two more than c -> nothing.
        let rows = vec![
            row("p0", Some("a"), 1),
            row("p1", Some("a"), 1),
            row("p2", Some("c"), 1),
            row("p3", Some("b"), 1),
        ];
        let held = HashSet::from(["p2".to_owned()]);
        assert!(balance.decide(&rows, &held, now).take.is_empty());
    }

    #[test]
    fn a_row_naming_this_instance_that_it_does_not_hold_expires_like_any_other() {
        let mut balance = Balance::new("a", LEASE);
        let start = Instant::now();
        let rows = vec![row("p0", Some("a"), 3)];
        assert!(balance
            .decide(&rows, &HashSet::new(), start)
            .take
            .is_empty());
        let decision = balance.decide(&rows, &HashSet::new(), start + LEASE);
        assert_eq!(keys(&decision), ["p0"]);
    }

    /// Three instances deciding in turn over one table converge to an even spread.
    #[test]
    fn three_instances_spread_seven_leases_evenly() {
        let mut rows: Vec<_> = (0..7).map(|i| row(&format!("p{i}"), None, 0)).collect();
        let names = ["a", "b", "c"];
        let mut balances: Vec<_> = names.iter().map(|n| Balance::new(*n, LEASE)).collect();
        let now = Instant::now();
        // a starts alone and takes everything; b and c join and steal toward the share.
        for round in 0..10 {
            for (i, balance) in balances.iter_mut().enumerate() {
                if round == 0 && i > 0 {
                    continue;
                }
                let held: HashSet<String> = rows
                    .iter()
                    .filter(|l| l.owner.as_deref() == Some(names[i]))
                    .map(|l| l.key.clone())
                    .collect();
                for taken in balance.decide(&rows, &held, now).take {
                    let row = rows.iter_mut().find(|l| l.key == taken.key).unwrap();
                    row.owner = Some(names[i].into());
                    row.epoch += 1;
                }
            }
        }
        let mut counts: Vec<usize> = names
            .iter()
            .map(|n| {
                rows.iter()
                    .filter(|l| l.owner.as_deref() == Some(*n))
                    .count()
            })
            .collect();
        counts.sort();
        assert_eq!(counts, [2, 2, 3]);
    }
}
