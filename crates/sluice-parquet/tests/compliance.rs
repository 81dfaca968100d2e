//! The core's sink compliance suite against the Parquet sink, on local disk and on S3 (moto's
//! server, started by the test kit). The harness reads the files with DuckDB's own Python
//! package, and fetches S3 objects with boto3: never with the sink's code.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sluice_config::ParseContext;
use sluice_core::{Sink, TableId};
use sluice_parquet::config::ParquetSinkConfig;
use sluice_parquet::sink::ParquetSink;
use sluice_testkit::compliance::{run_all, Kind, SinkHarness};
use sluice_testkit::duckdb::{parquet_query, s3_download};
use sluice_testkit::S3Server;

struct Harness {
    cfg: ParquetSinkConfig,
    /// Local: the sink's directory. S3: where the bucket is copied to before each read.
    dir: PathBuf,
    s3: Option<(S3Server, String)>,
    _tmp: tempfile::TempDir,
}

/// The change rows of `table` under `root`, in `_position` order, as `[op, id]`.
fn log_rows(root: &Path, table: &TableId) -> Vec<Vec<Option<String>>> {
    let glob = root.join(format!("table={}.{}", table.schema, table.name)).join("*").join("*.parquet");
    let sql = format!(
        "SELECT _op, CAST(id AS VARCHAR) FROM read_parquet('{}', union_by_name = true, hive_partitioning = false) \
         ORDER BY _position",
        glob.display()
    );
    parquet_query(&sql).unwrap_or_else(|e| panic!("read {}: {e}", glob.display())).unwrap_or_default()
}

#[async_trait]
impl SinkHarness for Harness {
    fn sink(&self) -> Box<dyn Sink> {
        Box::new(ParquetSink::new(self.cfg.clone(), "compliance", 0))
    }

    fn kind(&self) -> Kind {
        Kind::Log
    }

    async fn rows(&self, table: &TableId) -> Vec<Vec<Option<String>>> {
        match &self.s3 {
            None => log_rows(&self.dir, table),
            Some((server, bucket)) => {
                let _ = std::fs::remove_dir_all(&self.dir);
                std::fs::create_dir_all(&self.dir).unwrap();
                s3_download(&server.endpoint(), bucket, "lake/", &self.dir)
                    .unwrap_or_else(|e| panic!("download s3://{bucket}/lake: {e}"));
                log_rows(&self.dir.join("lake"), table)
            }
        }
    }
}

fn config(body: &str) -> ParquetSinkConfig {
    ParquetSinkConfig::parse(toml::from_str(body).unwrap(), &ParseContext { at: "sink[0]", pipeline: "compliance" })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_sink_on_local_disk_passes_the_compliance_suite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lake");
    let cfg = config(&format!("url = \"file://{}\"", dir.display()));
    run_all(&Harness { cfg, dir, s3: None, _tmp: tmp }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_sink_on_s3_passes_the_compliance_suite() {
    let server = S3Server::start().unwrap_or_else(|e| panic!("cannot start the S3 server for this test: {e}"));
    server.create_bucket("warehouse").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&format!(
        "url = \"s3://warehouse/lake\"\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"",
        server.endpoint(),
        sluice_testkit::S3_ACCESS_KEY,
        sluice_testkit::S3_SECRET_KEY
    ));
    run_all(&Harness { cfg, dir: tmp.path().join("copy"), s3: Some((server, "warehouse".into())), _tmp: tmp }).await;
}

/// A buffer of one row: every change goes to a spill file ahead of its commit (how memory stays
/// bounded inside a large transaction), and the suite's crashes leave spill files behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_sink_spilling_every_row_passes_the_compliance_suite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lake");
    let cfg = config(&format!("url = \"{}\"\nbuffer = {{ count_records = 1 }}", dir.display()));
    run_all(&Harness { cfg, dir: dir.clone(), s3: None, _tmp: tmp }).await;
    let left: Vec<_> = std::fs::read_dir(dir.join("_sluice/compliance-0/spill"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "spill files outlived their commits: {left:?}");
}
