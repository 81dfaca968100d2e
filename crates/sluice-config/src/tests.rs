use super::*;

const GOOD: &str = r#"
name = "orders"

[source]
type = "postgres"
url = "postgres://app:${PGPASS}@127.0.0.1:5432/app"
tables = ["public.*"]
snapshot = "initial"

[[sink]]
type = "postgres"
url = "postgres://user@127.0.0.1:5433/replica"
mode = "replica"
"#;

fn env(name: &str) -> Option<String> {
    (name == "PGPASS").then(|| "s3cr3t".to_string())
}

fn err(text: &str) -> String {
    PipelineConfig::parse(text, &env).unwrap_err().to_string()
}

#[test]
fn documented_example_parses_with_defaults() {
    let c = PipelineConfig::parse(GOOD, &env).unwrap();
    assert_eq!(c.name, "orders");
    assert_eq!(c.slot_name(), "sluice_orders");
    assert_eq!(c.publication_name(), "sluice_orders");
    let SourceConfig::Postgres(src) = &c.source;
    assert_eq!(src.url.expose(), "postgres://app:s3cr3t@127.0.0.1:5432/app");
    assert_eq!(src.snapshot, SnapshotMode::Initial);
    let SinkConfig::Postgres(sink) = &c.sinks[0];
    assert_eq!(sink.mode, SinkMode::Replica);
    assert_eq!(sink.batch.max_rows, DEFAULT_BATCH_MAX_ROWS);
    assert_eq!(sink.batch.max_delay_ms, DEFAULT_BATCH_MAX_DELAY_MS);
}

#[test]
fn secrets_never_appear_in_debug_or_serialized_output() {
    let c = PipelineConfig::parse(GOOD, &env).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("s3cr3t"), "{dbg}");
    let json = format!("{:?}", toml::Value::try_from(&c).unwrap());
    assert!(!json.contains("s3cr3t"), "{json}");
    let SourceConfig::Postgres(src) = &c.source;
    assert_eq!(src.url.redacted(), "postgres://app:***@127.0.0.1:5432/app");
}

#[test]
fn invalid_mode_names_the_key_and_the_allowed_values() {
    let e = err(&GOOD.replace("mode = \"replica\"", "mode = \"mirror\""));
    assert!(e.starts_with("sink[0].mode: "), "{e}");
    assert!(e.contains("replica") && e.contains("changelog"), "{e}");
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let e = err(&GOOD.replace("mode = \"replica\"", "mode = \"replica\"\nmodee = 1"));
    assert!(e.contains("modee"), "{e}");
    assert!(e.starts_with("sink[0]"), "{e}");
    let e = err(&GOOD.replace("snapshot = \"initial\"", "snapshot = \"initial\"\nslott = \"x\""));
    assert!(e.contains("slott") && e.starts_with("source"), "{e}");
    let e = err(&format!("bogus = 1\n{GOOD}"));
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn wrong_type_names_the_key() {
    let e = err(&GOOD.replace("tables = [\"public.*\"]", "tables = \"public.*\""));
    assert!(e.starts_with("source.tables: "), "{e}");
    let e = err(&GOOD.replace("mode = \"replica\"", "mode = \"replica\"\nbatch = { max_rows = \"many\" }"));
    assert!(e.starts_with("sink[0].batch.max_rows: "), "{e}");
}

#[test]
fn invalid_values_name_the_key_and_constraint() {
    let e = err(&GOOD.replace("mode = \"replica\"", "mode = \"replica\"\nbatch = { max_rows = 0 }"));
    assert_eq!(e, "sink[0].batch.max_rows: must be > 0");
    let e = err(&GOOD.replace("name = \"orders\"", "name = \"Orders!\""));
    assert!(e.starts_with("name: "), "{e}");
    let e = err(&GOOD.replace("tables = [\"public.*\"]", "tables = [\"orders\"]"));
    assert!(e.starts_with("source.tables[0]: "), "{e}");
    let e =
        err(&GOOD.replace("type = \"postgres\"\nurl = \"postgres://user", "type = \"postgres\"\nurl = \"mysql://user"));
    assert!(e.starts_with("sink[0].url: "), "{e}");
    let e = err(
        &GOOD.replace("type = \"postgres\"\nurl = \"postgres://user", "type = \"oracle\"\nurl = \"postgres://user")
    );
    assert!(e.starts_with("sink[0]") && e.contains("oracle") && e.contains("postgres"), "{e}");
    let no_sinks = GOOD.split("[[sink]]").next().unwrap();
    assert!(err(no_sinks).starts_with("sink: "), "{}", err(no_sinks));
}

#[test]
fn missing_env_var_names_key_and_variable_without_leaking_value() {
    let e = PipelineConfig::parse(GOOD, &|_| None).unwrap_err().to_string();
    assert!(e.starts_with("source.url: ") && e.contains("PGPASS"), "{e}");
}

#[test]
fn invalid_url_error_redacts_password() {
    let e = err(&GOOD.replace("postgres://user@127.0.0.1:5433", "http://user:hunter2@127.0.0.1:5433"));
    assert!(!e.contains("hunter2") && e.contains("***"), "{e}");
}

#[test]
fn table_globs_select_and_exclude() {
    let c = PipelineConfig::parse(
        &GOOD.replace(
            "tables = [\"public.*\"]",
            "tables = [\"public.*\", \"sales.order?\"]\nexclude = [\"public.tmp_*\"]",
        ),
        &env,
    )
    .unwrap();
    let SourceConfig::Postgres(src) = &c.source;
    assert!(src.selects("public", "orders"));
    assert!(!src.selects("public", "tmp_x"));
    assert!(src.selects("sales", "orders"));
    assert!(!src.selects("sales", "order"));
    assert!(!src.selects("other", "orders"));
    assert!(glob_match("*", ""));
    assert!(glob_match("a*b*c", "aXXbYc"));
    assert!(!glob_match("a*b", "aXXc"));
}
