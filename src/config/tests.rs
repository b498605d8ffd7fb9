use std::path::Path;

use super::*;

const GOOD: &str = r#"
[daemon]
state_dir = "state"

[[pipeline]]
name = "shop"
[pipeline.source]
kind = "generator"
count = 10
[pipeline.sink]
kind = "file"
path = "${OUT_DIR}/shop.jsonl"
[pipeline.batch]
max_events = 100
"#;

fn env(name: &str) -> Option<String> {
    (name == "OUT_DIR").then(|| "out".to_owned())
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("test.toml"), &env)
}

fn error_of(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    path: String,
}

#[test]
fn a_good_config_loads_with_defaults_and_substitution() {
    let config = load(GOOD).unwrap();
    let pipeline = &config.pipelines[0];
    assert_eq!(pipeline.name, "shop");
    assert_eq!(pipeline.batch.max_events.get(), 100);
    assert_eq!(pipeline.batch.linger_ms, DEFAULT_BATCH_LINGER_MS);
    assert_eq!(pipeline.sink.kind, "file");
    assert_eq!(pipeline.sink.key(), "pipeline[0].sink");
    let sink: FileSettings = pipeline.sink.parse().unwrap();
    assert_eq!(sink.path, "out/shop.jsonl");
}

#[test]
fn unknown_missing_and_mistyped_keys_name_their_path() {
    let unknown = GOOD.replace("max_events = 100", "max_events = 100\nmax_evnts = 1");
    assert!(
        error_of(&unknown).starts_with("pipeline[0].batch.max_evnts: unknown setting"),
        "{}",
        error_of(&unknown)
    );
    let missing_kind = GOOD.replace("kind = \"file\"", "");
    assert_eq!(
        error_of(&missing_kind),
        "pipeline[0].sink.kind: missing (this setting is required)"
    );
    let mistyped = GOOD.replace("max_events = 100", "max_events = \"many\"");
    assert!(
        error_of(&mistyped).starts_with("pipeline[0].batch.max_events: invalid type"),
        "{}",
        error_of(&mistyped)
    );
    let zero = GOOD.replace("max_events = 100", "max_events = 0");
    assert!(
        error_of(&zero).starts_with("pipeline[0].batch.max_events: "),
        "{}",
        error_of(&zero)
    );
    let no_daemon = GOOD.replace("[daemon]\nstate_dir = \"state\"", "");
    assert_eq!(
        error_of(&no_daemon),
        "daemon: missing (this setting is required)"
    );
}

#[test]
fn connector_settings_errors_name_their_path() {
    let config = load(&GOOD.replace("path = ", "pth = ")).unwrap();
    let err = config.pipelines[0]
        .sink
        .parse::<FileSettings>()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("pipeline[0].sink.pth: unknown setting"),
        "{err}"
    );
    let config = load(&GOOD.replace("path = \"${OUT_DIR}/shop.jsonl\"", "path = 3")).unwrap();
    let err = config.pipelines[0]
        .sink
        .parse::<FileSettings>()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("pipeline[0].sink.path: invalid type"),
        "{err}"
    );
}

#[test]
fn names_must_be_valid_and_unique() {
    let twice = format!("{GOOD}\n{}", &GOOD[GOOD.find("[[pipeline]]").unwrap()..]);
    assert_eq!(error_of(&twice), "pipeline[1].name: \"shop\" is used twice");
    let bad = GOOD.replace("name = \"shop\"", "name = \"my shop\"");
    assert!(error_of(&bad).starts_with("pipeline[0].name: "));
}

#[test]
fn syntax_errors_name_the_file() {
    let err = error_of("[daemon\nstate_dir = 1");
    assert!(err.starts_with("test.toml: not valid TOML"), "{err}");
}

#[test]
fn debug_output_never_shows_connector_values() {
    let config = load(&GOOD.replace("count = 10", "password = \"hunter2\"")).unwrap();
    let debug = format!("{config:?}");
    assert!(debug.contains("password"));
    assert!(!debug.contains("hunter2"));
}
