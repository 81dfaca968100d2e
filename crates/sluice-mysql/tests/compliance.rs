//! The core's sink compliance suite against the MySQL sink, on the MariaDB server the test kit
//! starts for this test binary (a database and a pipeline name per test); the harness reads the
//! target with the `mariadb` client.

use async_trait::async_trait;
use sluice_config::ParseContext;
use sluice_core::{Sink, TableId};
use sluice_mysql::sink::{MySqlSink, MySqlSinkConfig};
use sluice_testkit::compliance::{run_all, Kind, SinkHarness};
use sluice_testkit::{shared_mariadb, unique_name, MariaDbServer};

struct Harness {
    server: std::sync::Arc<MariaDbServer>,
    db: String,
    cfg: MySqlSinkConfig,
    changelog: bool,
}

#[async_trait]
impl SinkHarness for Harness {
    fn sink(&self) -> Box<dyn Sink> {
        Box::new(MySqlSink::new(self.cfg.clone(), &self.db, 0))
    }

    fn kind(&self) -> Kind {
        if self.changelog {
            Kind::Log
        } else {
            Kind::State
        }
    }

    async fn rows(&self, table: &TableId) -> Vec<Vec<Option<String>>> {
        let sql = if self.changelog {
            format!(
                "SELECT op, JSON_VALUE(COALESCE(`after`, `before`), '$.id') FROM `{}`.`{}_changelog` ORDER BY sluice_seq",
                self.db, table.name
            )
        } else {
            format!("SELECT * FROM `{}`.`{}` ORDER BY 1", self.db, table.name)
        };
        match self.server.cli(&self.db, &sql) {
            Ok(out) => {
                out.lines().map(|l| l.split('\t').map(|v| (v != "NULL").then(|| v.to_string())).collect()).collect()
            }
            // The table does not exist yet: nothing landed.
            Err(_) => Vec::new(),
        }
    }
}

async fn suite(mode: &str) {
    let server = shared_mariadb();
    // The database name doubles as the pipeline's: the two suites keep apart checkpoints.
    let db = unique_name("compliance_");
    let url = server.create_database(&db).unwrap_or_else(|e| panic!("{e}"));
    let cfg = MySqlSinkConfig::parse(
        toml::from_str(&format!("url = \"{url}\"\nmode = \"{mode}\"")).unwrap(),
        &ParseContext { at: "sink[0]", pipeline: &db },
    )
    .unwrap();
    run_all(&Harness { server, db, cfg, changelog: mode == "changelog" }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_replica_sink_passes_the_compliance_suite() {
    suite("replica").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_changelog_sink_passes_the_compliance_suite() {
    suite("changelog").await;
}
