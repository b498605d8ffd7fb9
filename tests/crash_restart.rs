//! The crash test: the daemon (generator -> file) is killed with SIGKILL at random moments
//! and restarted, again and again. The output must hold every sequence number with no gap,
//! every line intact, and duplicates only of rows after the checkpoint stored before a crash.

mod support;

use std::time::Duration;

use support::{output_seqs, stderr, Rng, Workspace};

const KILLS: usize = 25;
const COUNT: u64 = 120_000;

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    let ws = Workspace::new();
    let config = ws.config(&format!(
        "[[pipeline]]\nname = \"crash\"\n[pipeline.source]\nkind = \"generator\"\ncount = {COUNT}\nrate_per_sec = 20000\nkeys = 101\n\
         [pipeline.sink]\nkind = \"file\"\npath = \"out/crash.jsonl\"\n[pipeline.batch]\nmax_events = 250\nlinger_ms = 2\n"
    ));
    let config = config.to_str().unwrap();
    let out = ws.path("out/crash.jsonl");
    let mut rng = Rng::seeded();

    let mut checkpoints = vec![0u64];
    let mut kills_while_running = 0;
    for _ in 0..KILLS {
        let mut child = ws.spawn(&["run", "--config", config]);
        std::thread::sleep(Duration::from_millis(20 + rng.below(280)));
        if child.try_wait().unwrap().is_none() {
            kills_while_running += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let stored = ws.stored_seq("crash");
        assert!(
            stored >= *checkpoints.last().unwrap(),
            "stored progress moved backward"
        );
        checkpoints.push(stored);
    }
    assert_eq!(
        kills_while_running, KILLS,
        "every kill must hit a running daemon"
    );
    assert!(
        checkpoints.last().unwrap() > &0 && checkpoints.last().unwrap() < &COUNT,
        "kills must land mid-run: {checkpoints:?}"
    );

    let last = ws.run(&["run", "--config", config]);
    assert!(last.status.success(), "{}", stderr(&last));
    assert_eq!(ws.stored_seq("crash"), COUNT);

    // Every line parses (torn writes were repaired), and runs are contiguous.
    let seqs = output_seqs(&out);
    let mut resumes = Vec::new();
    for pair in seqs.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        if next != prev + 1 {
            assert!(next <= prev, "gap: {prev} followed by {next}");
            resumes.push((prev, next));
        }
    }
    assert_eq!(seqs.first(), Some(&1));
    assert_eq!(seqs.last(), Some(&COUNT));
    for (prev, next) in &resumes {
        // A restart resumes right after a checkpoint that was stored when the daemon died, so
        // the duplicates (next..=prev) all lie after that checkpoint.
        assert!(
            checkpoints.contains(&(next - 1)),
            "resumed at {next}, not after a stored checkpoint {checkpoints:?}"
        );
        assert!(next - 1 <= *prev);
    }
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (1..=COUNT).collect::<Vec<_>>());
    eprintln!(
        "{} lines, {} duplicates across {} visible restarts",
        seqs.len(),
        seqs.len() as u64 - COUNT,
        resumes.len()
    );
}
