//! The sink compliance suite (sluice-testkit) against the PostgreSQL sink, in both modes, on a
//! real server; what landed is read back with a plain client.

use async_trait::async_trait;
use sluice_config::ParseContext;
use sluice_core::{Sink, TableId};
use sluice_postgres::config::PgSinkConfig;
use sluice_postgres::PgSink;
use sluice_testkit::compliance::{run_all, Kind, SinkHarness};
use sluice_testkit::{database, pg_server};
use tokio_postgres::Client;

struct Harness {
    cfg: PgSinkConfig,
    client: Client,
    changelog: bool,
}

impl Harness {
    async fn new(server: &sluice_testkit::PgServer, db: &str, mode: &str) -> Harness {
        let (url, client) = database(server, db).await;
        let body = toml::from_str(&format!("url = \"{url}\"\nmode = \"{mode}\"\nbatch = {{ max_rows = 2 }}")).unwrap();
        let cfg = PgSinkConfig::parse(body, &ParseContext { at: "sink[0]", pipeline: "compliance" }).unwrap();
        Harness { cfg, client, changelog: mode == "changelog" }
    }
}

#[async_trait]
impl SinkHarness for Harness {
    fn sink(&self) -> Box<dyn Sink> {
        Box::new(PgSink::new(self.cfg.clone(), "compliance", 0))
    }

    fn kind(&self) -> Kind {
        if self.changelog {
            Kind::Log
        } else {
            Kind::State
        }
    }

    async fn rows(&self, table: &TableId) -> Vec<Vec<Option<String>>> {
        if self.changelog {
            let sql = format!(
                "SELECT op, coalesce(after->>'id', before->>'id') FROM \"{}\".\"{}_changelog\" ORDER BY sluice_seq",
                table.schema, table.name
            );
            return match self.client.query(&sql, &[]).await {
                Ok(rows) => rows.iter().map(|r| vec![r.get(0), r.get(1)]).collect(),
                Err(_) => Vec::new(),
            };
        }
        let qualified = format!("\"{}\".\"{}\"", table.schema, table.name);
        let cols: Vec<String> = match self
            .client
            .query(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 \
                 AND NOT attisdropped ORDER BY attnum",
                &[&qualified],
            )
            .await
        {
            Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
            Err(_) => return Vec::new(),
        };
        if cols.is_empty() {
            return Vec::new();
        }
        let list = cols.iter().map(|c| format!("\"{c}\"::text")).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT {list} FROM {qualified} ORDER BY \"{}\"", cols[0]);
        let rows = self.client.query(&sql, &[]).await.unwrap();
        rows.iter().map(|r| (0..cols.len()).map(|i| r.get::<_, Option<String>>(i)).collect()).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_sink_passes_the_compliance_suite() {
    let server = pg_server();
    run_all(&Harness::new(&server, "replica", "replica").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changelog_sink_passes_the_compliance_suite() {
    let server = pg_server();
    run_all(&Harness::new(&server, "log", "changelog").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_incarnation_of_a_sink_waits_until_the_first_lets_go() {
    use sluice_core::SinkContext;
    let server = pg_server();
    let h = Harness::new(&server, "fence", "replica").await;
    let mut first = h.sink();
    first.open(SinkContext::default()).await.expect("first incarnation opens");
    let mut second = h.sink();
    let opening = tokio::spawn(async move { second.open(SinkContext::default()).await.map(|_| second) });
    // The second has asked for the target's lock at least once...
    sluice_testkit::wait_for(
        "the second incarnation to ask for the lock",
        std::time::Duration::from_secs(30),
        || async {
            let n: i64 = h
                .client
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_try_advisory_lock%'", &[])
                .await
                .ok()?
                .get(0);
            (n >= 2).then_some(())
        },
    )
    .await;
    // ...and is still waiting, since the first holds it.
    assert!(!opening.is_finished(), "a second incarnation opened while the first held the target");
    first.close().await.expect("close");
    let mut second = tokio::time::timeout(std::time::Duration::from_secs(30), opening)
        .await
        .expect("the second incarnation opens once the first closed")
        .unwrap()
        .expect("open");
    second.close().await.expect("close");
}

/// Inserts with a value PostgreSQL cannot hold (a date before its range, which a Kafka source's
/// Avro date can carry): that row goes to the dead-letter table, the rest of the batch lands,
/// and the commit is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_the_target_cannot_hold_goes_to_the_dead_letter_table() {
    use sluice_core::{
        AckIssuer, AckReport, Change, Checkpoint, ColumnSchema, DataType, Date, Event, Lsn, Op, Position, SinkContext,
        TableProgress, TableSchema, TxnMeta, Value,
    };
    use std::sync::Arc;
    let server = pg_server();
    let h = Harness::new(&server, "poison", "replica").await;
    let table = Arc::new(TableSchema {
        id: TableId::new("public", "d"),
        columns: vec![
            ColumnSchema::new("id", DataType::Int64, "bigint").key(),
            ColumnSchema::new("at", DataType::Date, "date"),
        ],
        version: 1,
        dialect: "postgres".into(),
    });
    let meta = TxnMeta { xid: 1, commit_ts_micros: 1_700_000_000_000_000, position: Position::Pg(Lsn(100)) };
    let mut events = vec![Event::Begin(meta.clone())];
    for (id, at) in [(1, Date(0)), (2, Date(i32::MIN + 1)), (3, Date(20_000))] {
        let after = vec![Value::Int(id), Value::Date(at)];
        events.push(Event::Change(Change { table: table.clone(), op: Op::Insert { after } }));
    }
    events.push(Event::Commit { meta, position: Position::Pg(Lsn(110)) });

    let mut sink = h.sink();
    sink.open(SinkContext::default()).await.expect("open");
    for ev in &events {
        sink.write(ev).await.expect("write");
    }
    let (mut acks, mut reports) = AckIssuer::new();
    let mut cp = Checkpoint { position: Some(Position::Pg(Lsn(110))), ..Default::default() };
    cp.tables.insert(table.id.clone(), TableProgress::Copied);
    sink.commit(cp, acks.issue()).await.expect("the commit is taken, not refused");
    let report = tokio::time::timeout(std::time::Duration::from_secs(30), reports.recv()).await.expect("an ack");
    assert!(matches!(report, Some(AckReport::Durable(_))), "{report:?}");
    sink.close().await.expect("close");

    let ids: Vec<i64> =
        h.client.query("SELECT id FROM d ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [1, 3]);
    let dead = h.client.query("SELECT source_table, row->>'id', error FROM sluice.dead_letters", &[]).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].get::<_, String>(0), "public.d");
    assert_eq!(dead[0].get::<_, Option<String>>(1).as_deref(), Some("2"));
    let error: String = dead[0].get(2);
    assert!(error.contains("range"), "{error}");
}
