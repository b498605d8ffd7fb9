//! `cdc-bridge checkpoints export` and `import` through the binary: a pipeline moved to a new
//! state_dir resumes after its exported position; an import never moves a stored position
//! backward, never writes part of a file, and refuses pipelines the configuration lacks; and
//! positions move from the local store to a shared (Postgres) one.

mod support;

use support::{output_seqs, stderr, Workspace};

fn pipeline(name: &str, count: u64) -> String {
    format!(
        "[[pipeline]]\nname = \"{name}\"\n[pipeline.source]\nkind = \"generator\"\ncount = {count}\nkeys = 7\n\
         [pipeline.sink]\nkind = \"file\"\npath = \"out/{name}.jsonl\"\n"
    )
}

/// Imports `file` into `config`'s store, which must refuse it: what it said on stderr.
fn refused_import(ws: &Workspace, config: &str, file: &str) -> String {
    let output = ws.run(&["checkpoints", "import", "--config", config, "--file", file]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    stderr(&output)
}

/// Runs `args` against `config`; its standard output, after checking it succeeded.
fn ok(ws: &Workspace, args: &[&str]) -> String {
    let output = ws.run(args);
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn an_exported_position_moves_a_pipeline_to_a_new_state_dir() {
    let old = Workspace::new();
    let config = old.config(&(pipeline("shop", 300) + &pipeline("other", 50)));
    let config = config.to_str().unwrap();
    ok(&old, &["run", "--config", config]);
    let export = ok(
        &old,
        &[
            "checkpoints",
            "export",
            "--config",
            config,
            "--pipeline",
            "shop",
        ],
    );
    let parsed: serde_json::Value = serde_json::from_str(&export).unwrap();
    let entries = parsed["checkpoints"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "only the pipeline asked for: {export}");
    assert_eq!(entries[0]["position"]["token"], "300");

    // A new machine: the same pipelines, an empty state_dir, the export imported.
    let new = Workspace::new();
    let config = new.config(&(pipeline("shop", 500) + &pipeline("other", 50)));
    let config = config.to_str().unwrap();
    std::fs::write(new.path("shop.json"), &export).unwrap();
    let said = ok(
        &new,
        &[
            "checkpoints",
            "import",
            "--config",
            config,
            "--file",
            "shop.json",
        ],
    );
    assert!(said.contains("imported 1 checkpoint"), "{said}");
    assert_eq!(new.stored_seq("shop"), 300);
    ok(&new, &["run", "--config", config]);
    // It resumed after the imported position; the pipeline without one started over.
    assert_eq!(
        output_seqs(&new.path("out/shop.jsonl")),
        (301..=500).collect::<Vec<_>>()
    );
    assert_eq!(
        output_seqs(&new.path("out/other.jsonl")),
        (1..=50).collect::<Vec<_>>()
    );

    // The old export is behind what is stored now: refused, and nothing changes.
    let err = refused_import(&new, config, "shop.json");
    assert!(
        err.contains("pipeline \"shop\" partition \"\" (300) is behind the one stored (500)"),
        "{err}"
    );
    assert!(err.contains("checkpoints reset --pipeline shop"), "{err}");
    assert_eq!(new.stored_seq("shop"), 500);
}

#[test]
fn an_import_with_an_unknown_pipeline_or_a_bad_file_writes_nothing() {
    let ws = Workspace::new();
    let config = ws.config(&pipeline("shop", 10));
    let config = config.to_str().unwrap();
    let position = r#"{"token": "7", "rank": [0, 0, 0, 0, 0, 0, 0, 7]}"#;
    let file = format!(
        r#"{{"cdc_bridge_checkpoints": 1, "checkpoints": [
            {{"pipeline": "shop", "partition": "", "position": {position}}},
            {{"pipeline": "gone", "partition": "", "position": {position}}}]}}"#
    );
    std::fs::write(ws.path("two.json"), file).unwrap();
    let err = refused_import(&ws, config, "two.json");
    assert!(err.contains("no pipeline is named \"gone\""), "{err}");
    let listed = ok(&ws, &["checkpoints", "--config", config]);
    assert!(!listed.contains("shop"), "nothing imported: {listed}");

    std::fs::write(ws.path("bad.json"), "{\"checkpoints\": []}").unwrap();
    let err = refused_import(&ws, config, "bad.json");
    assert!(err.contains("is not a checkpoint export"), "{err}");
}

/// From the local store to a shared one: positions exported with the local configuration and
/// imported with one whose `[daemon.coordination]` is the Postgres store; a daemon on the
/// shared store then resumes after them.
#[test]
fn an_export_moves_positions_from_the_local_store_to_a_shared_one() {
    let local = Workspace::new();
    let config = local.config(&pipeline("moved", 120));
    let config = config.to_str().unwrap();
    ok(&local, &["run", "--config", config]);
    let export = ok(&local, &["checkpoints", "export", "--config", config]);

    let shared = Workspace::new();
    let schema = format!("transfer_store_{}", std::process::id());
    let body = format!(
        "[daemon.coordination]\nkind = \"postgres\"\nurl = \"${{CDC_BRIDGE_PG_URL}}\"\nschema = \"{schema}\"\n\n{}",
        pipeline("moved", 200)
    );
    let config = shared.config(&body);
    let config = config.to_str().unwrap();
    std::fs::write(shared.path("all.json"), &export).unwrap();
    let import = [
        "checkpoints",
        "import",
        "--config",
        config,
        "--file",
        "all.json",
    ];
    assert!(ok(&shared, &import).contains("imported 1 checkpoint"));
    let listed = ok(&shared, &["checkpoints", "--config", config]);
    assert!(
        listed.contains("moved") && listed.contains("120"),
        "{listed}"
    );

    // A daemon on the shared store takes the lease and resumes after 120, then keeps
    // running (standing by for other instances) until stopped.
    let mut daemon = shared.spawn(&["run", "--config", config]);
    support::wait_until(
        std::time::Duration::from_secs(30),
        "the copy to finish",
        || output_seqs(&shared.path("out/moved.jsonl")).len() >= 80,
    );
    support::terminate(&daemon);
    assert!(daemon.wait().unwrap().success(), "{}", shared.log_tail());
    assert_eq!(
        output_seqs(&shared.path("out/moved.jsonl")),
        (121..=200).collect::<Vec<_>>()
    );
    let listed = ok(&shared, &["checkpoints", "--config", config]);
    assert!(listed.contains("200"), "{listed}");
}
