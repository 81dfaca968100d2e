//! The core's sink compliance suite against the DuckDB sink, both modes. The harness reads the
//! file with DuckDB's own Python package (never the sink's code); the sink releases the file
//! between commits, which is what lets another process read it.

use std::path::PathBuf;

use async_trait::async_trait;
use sluice_config::ParseContext;
use sluice_core::{Sink, TableId};
use sluice_duckdb::config::DuckDbSinkConfig;
use sluice_duckdb::sink::DuckDbSink;
use sluice_testkit::compliance::{run_all, Kind, SinkHarness};

struct Harness {
    path: PathBuf,
    cfg: DuckDbSinkConfig,
    changelog: bool,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl SinkHarness for Harness {
    fn sink(&self) -> Box<dyn Sink> {
        Box::new(DuckDbSink::new(self.cfg.clone(), "compliance", 0))
    }

    fn kind(&self) -> Kind {
        if self.changelog {
            Kind::Log
        } else {
            Kind::State
        }
    }

    async fn rows(&self, table: &TableId) -> Vec<Vec<Option<String>>> {
        let name = format!("\"{}\".\"{}\"", table.schema, table.name);
        let sql = if self.changelog {
            format!("SELECT _op, CAST(id AS VARCHAR) FROM {name} ORDER BY _position")
        } else {
            format!("SELECT * FROM {name} ORDER BY 1")
        };
        if !self.path.exists() {
            return Vec::new();
        }
        sluice_testkit::duckdb::duckdb_query(&self.path, &sql)
            .unwrap_or_else(|e| panic!("read {name}: {e}"))
            .unwrap_or_default()
    }
}

async fn suite(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warehouse.duckdb");
    let cfg = DuckDbSinkConfig::parse(
        toml::from_str(&format!("path = \"{}\"\nmode = \"{mode}\"\nchangelog_format = \"typed\"", path.display()))
            .unwrap(),
        &ParseContext { at: "sink[0]", pipeline: "compliance" },
    )
    .unwrap();
    run_all(&Harness { path, cfg, changelog: mode == "changelog", _dir: dir }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_replica_sink_passes_the_compliance_suite() {
    suite("replica").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_changelog_sink_passes_the_compliance_suite() {
    suite("changelog").await;
}
