//! The generic parts of config loading, with a stand-in connector type; each connector crate
//! tests its own keys.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_core::{
    Ack, BatchPolicy, CheckResult, Checkpoint, ConnectorError, ErrorClass, Event, Sink, SinkConnector, SinkContext,
    Source, SourceConnector,
};

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestConfig {
    url: Secret<String>,
    #[serde(default)]
    batch: BatchConfig,
    #[serde(default = "default_tables")]
    tables: Vec<String>,
}

#[derive(Debug)]
struct Test(TestConfig);

/// What `build` returns: config tests never run it.
struct Inert;

#[async_trait]
impl Source for Inert {
    async fn run(&mut self, _: sluice_core::Resume, _: sluice_core::SourceContext) -> Result<(), ConnectorError> {
        Err(ConnectorError::msg(ErrorClass::Fatal, "config tests build no source"))
    }
}

#[async_trait]
impl Sink for Inert {
    fn name(&self) -> &str {
        "inert"
    }
    fn batch_policy(&self) -> BatchPolicy {
        BatchPolicy { max_rows: 1, max_delay: std::time::Duration::ZERO, commit_when_idle: false }
    }
    async fn open(&mut self, _: SinkContext) -> Result<Option<Checkpoint>, ConnectorError> {
        Err(ConnectorError::msg(ErrorClass::Fatal, "config tests build no sink"))
    }
    async fn write(&mut self, _: &Event) -> Result<(), ConnectorError> {
        Ok(())
    }
    async fn commit(&mut self, _: Checkpoint, ack: Ack) -> Result<(), ConnectorError> {
        ack.fail(ConnectorError::msg(ErrorClass::Fatal, "config tests build no sink"));
        Ok(())
    }
}

#[async_trait]
impl SourceConnector for Test {
    fn kind(&self) -> &'static str {
        "test"
    }
    fn build(&self, _: &str) -> Box<dyn Source> {
        Box::new(Inert)
    }
    async fn check(&self, _: &str) -> Vec<CheckResult> {
        Vec::new()
    }
    fn describe(&self) -> String {
        redact_url(self.0.url.expose())
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }
}

#[async_trait]
impl SinkConnector for Test {
    fn kind(&self) -> &'static str {
        "test"
    }
    fn build(&self, _: &str, _: usize) -> Box<dyn Sink> {
        Box::new(Inert)
    }
    async fn check(&self, _: &str) -> Vec<CheckResult> {
        Vec::new()
    }
    fn describe(&self) -> String {
        redact_url(self.0.url.expose())
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }
}

fn parse_test(body: toml::Value, ctx: &ParseContext<'_>) -> Result<TestConfig, ConfigError> {
    let c: TestConfig = typed(body, ctx.at)?;
    c.batch.validate(ctx.at)?;
    TableFilter { tables: c.tables.clone(), exclude: Vec::new() }.validate(ctx.at)?;
    Ok(c)
}

fn registry() -> Registry {
    Registry::new()
        .source("test", |b, ctx| Ok(Arc::new(Test(parse_test(b, ctx)?)) as Arc<dyn SourceConnector>))
        .sink("test", |b, ctx| Ok(Arc::new(Test(parse_test(b, ctx)?)) as Arc<dyn SinkConnector>))
}

const GOOD: &str = r#"
name = "orders"

[source]
type = "test"
url = "test://app:${PASS}@127.0.0.1:5432/app"

[[sink]]
type = "test"
url = "test://user@127.0.0.1:5433/replica"
"#;

fn env(name: &str) -> Option<String> {
    (name == "PASS").then(|| "s3cr3t".to_string())
}

fn err(text: &str) -> String {
    PipelineConfig::parse(text, &env, &registry()).unwrap_err().to_string()
}

#[test]
fn a_valid_pipeline_parses_through_the_registry() {
    let c = PipelineConfig::parse(GOOD, &env, &registry()).unwrap();
    assert_eq!(c.name, "orders");
    assert_eq!(c.source.kind(), "test");
    assert_eq!(c.sinks.len(), 1);
    let json = c.to_json().to_string();
    assert!(!json.contains("s3cr3t") && json.contains("***"), "{json}");
    assert!(!format!("{c:?}").contains("s3cr3t"));
}

#[test]
fn unknown_keys_name_themselves() {
    let e = err(&format!("bogus = 1\n{GOOD}"));
    assert!(e.starts_with("bogus: "), "{e}");
    let e = err(&GOOD.replace("url = \"test://user", "colour = 1\nurl = \"test://user"));
    assert!(e.starts_with("sink[0]") && e.contains("colour"), "{e}");
}

#[test]
fn unknown_types_list_what_this_build_supports() {
    let e = err(&GOOD.replace("type = \"test\"\nurl = \"test://user", "type = \"oracle\"\nurl = \"test://user"));
    assert!(e.starts_with("sink[0].type: ") && e.contains("oracle") && e.contains("\"test\""), "{e}");
    let e = err(&GOOD.replace("type = \"test\"\nurl = \"test://app", "url = \"test://app"));
    assert!(e.starts_with("source.type: missing"), "{e}");
}

#[test]
fn wrong_types_and_values_name_the_full_key() {
    let e = err(&GOOD.replace("url = \"test://user", "batch = { max_rows = \"many\" }\nurl = \"test://user"));
    assert!(e.starts_with("sink[0].batch.max_rows: "), "{e}");
    let e = err(&GOOD.replace("url = \"test://user", "batch = { max_rows = 0 }\nurl = \"test://user"));
    assert_eq!(e, "sink[0].batch.max_rows: must be > 0");
    let e = err(&GOOD.replace("url = \"test://app", "tables = [\"orders\"]\nurl = \"test://app"));
    assert!(e.starts_with("source.tables[0]: "), "{e}");
    let e = err(&GOOD.replace("name = \"orders\"", "name = \"Orders!\""));
    assert!(e.starts_with("name: "), "{e}");
    let no_sinks = GOOD.split("[[sink]]").next().unwrap();
    assert!(err(no_sinks).starts_with("sink: "), "{}", err(no_sinks));
    let many = format!("{GOOD}{}", "[[sink]]\ntype = \"test\"\nurl = \"x\"\n".repeat(64));
    assert!(err(&many).contains("at most 64"), "{}", err(&many));
}

#[test]
fn a_missing_environment_variable_names_key_and_variable() {
    let e = PipelineConfig::parse(GOOD, &|_| None, &registry()).unwrap_err().to_string();
    assert!(e.starts_with("source.url: ") && e.contains("PASS"), "{e}");
}

#[test]
fn table_globs_select_and_exclude() {
    let f =
        TableFilter { tables: vec!["public.*".into(), "sales.order?".into()], exclude: vec!["public.tmp_*".into()] };
    assert!(f.selects("public", "orders"));
    assert!(!f.selects("public", "tmp_x"));
    assert!(f.selects("sales", "orders"));
    assert!(!f.selects("sales", "order"));
    assert!(!f.selects("other", "orders"));
    assert!(glob_match("*", ""));
    assert!(glob_match("a*b*c", "aXXbYc"));
    assert!(!glob_match("a*b", "aXXc"));
}
