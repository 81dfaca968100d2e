//! The core's sink compliance suite against the Snowflake sink in both modes, on the test kit's
//! Snowflake stand-in (fakesnow). The harness reads the tables with Snowflake's own Python
//! connector (the change log through the Kafka connector's documented VARIANT paths): never with
//! Sluice's code.

use async_trait::async_trait;
use sluice_config::ParseContext;
use sluice_core::{Sink, TableId};
use sluice_snowflake::config::SnowflakeSinkConfig;
use sluice_snowflake::sink::SnowflakeSink;
use sluice_testkit::compliance::{run_all, Kind, SinkHarness};
use sluice_testkit::snowflake::snowflake_query;
use sluice_testkit::SnowflakeServer;

struct Harness {
    server: SnowflakeServer,
    cfg: SnowflakeSinkConfig,
    database: &'static str,
}

#[async_trait]
impl SinkHarness for Harness {
    fn sink(&self) -> Box<dyn Sink> {
        Box::new(SnowflakeSink::new(self.cfg.clone(), "compliance", 0))
    }

    fn kind(&self) -> Kind {
        if self.cfg.mode == "replica" {
            Kind::State
        } else {
            Kind::Log
        }
    }

    async fn rows(&self, table: &TableId) -> Vec<Vec<Option<String>>> {
        if self.kind() == Kind::State {
            let sql = format!("SELECT * FROM \"{}\" ORDER BY 1", table.name.to_uppercase());
            return snowflake_query(&self.server, self.database, &sql);
        }
        let sql = format!(
            "SELECT RECORD_METADATA:operation::TEXT, RECORD_METADATA:key:id::TEXT FROM \"{}\" \
             ORDER BY RECORD_METADATA:position::TEXT",
            table.name.to_uppercase()
        );
        snowflake_query(&self.server, self.database, &sql)
    }
}

fn harness(mode: &str, database: &'static str) -> Harness {
    let server = SnowflakeServer::start().unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let body = format!(
        "account = \"xy12345\"\nurl = \"{}\"\nuser = \"svc_sluice\"\npassword = \"check\"\ndatabase = \"{database}\"\n\
         mode = \"{mode}\"\n",
        server.url()
    );
    let cfg = SnowflakeSinkConfig::parse(
        toml::from_str(&body).unwrap(),
        &ParseContext { at: "sink[0]", pipeline: "compliance" },
    )
    .unwrap();
    Harness { server, cfg, database }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_changelog_sink_passes_the_compliance_suite() {
    run_all(&harness("changelog", "STREAMING")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_replica_sink_passes_the_compliance_suite() {
    run_all(&harness("replica", "REPLICA")).await;
}
