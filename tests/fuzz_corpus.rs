//! Replays the committed fuzzing corpus (`fuzz/corpus/<target>/`) through the entry point each
//! fuzz target calls, on stable Rust: every input that once crashed a decoder, or that the
//! fuzzer kept for its coverage, must run through without a panic.

use std::path::Path;

use cdc_bridge::fuzzing::TARGETS;

#[test]
fn every_corpus_input_decodes_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for {name}");
        for file in files {
            let data = std::fs::read(&file).expect("a corpus file");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", file.display());
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} corpus inputs");
}
