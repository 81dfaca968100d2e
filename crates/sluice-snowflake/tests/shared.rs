//! Processes sharing one Snowflake target (a Kafka consumer group, `SinkContext::shared`): each
//! commit merges its offsets into the stored checkpoint instead of replacing it, and a commit
//! for a partition another process moved past is refused with nothing written. Driven in turn
//! (fakesnow serializes nothing: Snowflake's row lock, taken by the commit's UPDATE, cannot be
//! checked here); read back with Snowflake's Python connector.

use std::sync::Arc;

use sluice_config::ParseContext;
use sluice_core::{
    AckIssuer, AckReport, Change, Checkpoint, ColumnSchema, DataType, Event, KafkaOffsets, Op, Position, Sink,
    SinkContext, TableId, TableSchema, TxnMeta, Value,
};
use sluice_snowflake::config::SnowflakeSinkConfig;
use sluice_snowflake::sink::SnowflakeSink;
use sluice_testkit::snowflake::snowflake_query;
use sluice_testkit::SnowflakeServer;

fn offsets(parts: &[(i32, i64)]) -> Position {
    let mut o = KafkaOffsets::default();
    for (p, next) in parts {
        o.set("orders", *p, *next);
    }
    Position::Kafka(o)
}

struct Process {
    sink: SnowflakeSink,
    acks: AckIssuer,
    reports: tokio::sync::mpsc::UnboundedReceiver<AckReport>,
    /// This process's own offsets
    mine: Vec<(i32, i64)>,
}

impl Process {
    async fn open(cfg: &SnowflakeSinkConfig) -> Process {
        let mut sink = SnowflakeSink::new(cfg.clone(), "shared", 0);
        sink.open(SinkContext { shared: true, ..Default::default() }).await.expect("open");
        let (acks, reports) = AckIssuer::new();
        Process { sink, acks, reports, mine: Vec::new() }
    }

    /// One record of `partition` at `offset`, committed; the ack's report.
    async fn record(&mut self, partition: i32, offset: i64) -> AckReport {
        let table = Arc::new(TableSchema {
            id: TableId::new("shop", "orders"),
            columns: vec![ColumnSchema::new("id", DataType::Int64, "long").key()],
            version: 1,
            dialect: "avro".into(),
        });
        let meta = TxnMeta {
            xid: offset as u64,
            commit_ts_micros: 1_700_000_000_000_000,
            position: offsets(&[(partition, offset)]),
        };
        let events = [
            Event::Begin(meta.clone()),
            Event::Change(Change {
                table,
                op: Op::Insert { after: vec![Value::Int(partition as i64 * 1000 + offset)] },
            }),
            Event::Commit { meta, position: offsets(&[(partition, offset + 1)]) },
        ];
        for e in &events {
            self.sink.write(e).await.expect("write");
        }
        self.mine.retain(|(p, _)| *p != partition);
        self.mine.push((partition, offset + 1));
        let cp = Checkpoint { position: Some(offsets(&self.mine)), ..Default::default() };
        let _ = self.sink.commit(cp, self.acks.issue()).await;
        self.reports.recv().await.expect("a report")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_commits_merge_offsets_and_refuse_an_overtaken_partition() {
    let server = SnowflakeServer::start().unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let body = format!(
        "account = \"xy12345\"\nurl = \"{}\"\nuser = \"svc_sluice\"\npassword = \"check\"\ndatabase = \"SHARED\"\n",
        server.url()
    );
    let cfg =
        SnowflakeSinkConfig::parse(toml::from_str(&body).unwrap(), &ParseContext { at: "sink[0]", pipeline: "shared" })
            .unwrap();
    let stored = || {
        let rows = snowflake_query(&server, "SHARED", "SELECT STATE FROM SLUICE_CHECKPOINTS WHERE PIPELINE = 'shared'");
        let state: serde_json::Value = serde_json::from_str(rows[0][0].as_deref().unwrap()).unwrap();
        state["position"].clone()
    };
    let log = || {
        snowflake_query(
            &server,
            "SHARED",
            "SELECT RECORD_METADATA:partition::INT, RECORD_METADATA:offset::INT FROM ORDERS ORDER BY 1, 2",
        )
    };
    let mut a = Process::open(&cfg).await;
    assert!(matches!(a.record(0, 0).await, AckReport::Durable(_)));
    let mut b = Process::open(&cfg).await;
    assert!(matches!(b.record(1, 0).await, AckReport::Durable(_)));
    assert!(matches!(a.record(0, 1).await, AckReport::Durable(_)));
    // Each commit kept the other process's partition.
    assert_eq!(stored(), serde_json::json!({"kind": "kafka", "at": {"orders": {"0": 2, "1": 1}}}));
    // B never held partition 0; A moved it to 2: B's record of it (a rebalance it has not
    // adopted) is refused, and nothing of it lands.
    match b.record(0, 1).await {
        AckReport::Failed(_, e) => assert!(e.to_string().contains("partition 0"), "{e}"),
        other => panic!("an overtaken commit must fail: {other:?}"),
    }
    assert_eq!(stored(), serde_json::json!({"kind": "kafka", "at": {"orders": {"0": 2, "1": 1}}}));
    let s = |v: &str| Some(v.to_string());
    assert_eq!(log(), vec![vec![s("0"), s("0")], vec![s("0"), s("1")], vec![s("1"), s("0")]]);
    // After adopting the stored offsets, B goes on from them.
    let mut b = Process::open(&cfg).await;
    b.sink.adopt(&offsets(&[(0, 0), (1, 0)])).await.expect("adopt");
    b.mine = vec![(0, 2), (1, 1)];
    assert!(matches!(b.record(0, 2).await, AckReport::Durable(_)));
    assert_eq!(stored(), serde_json::json!({"kind": "kafka", "at": {"orders": {"0": 3, "1": 1}}}));
    a.sink.close().await.unwrap();
    b.sink.close().await.unwrap();
}

/// Without sharing, a second process of the pipeline that moved the checkpoint on fences the
/// first: the first's next commit is refused (the target never moves backwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_behind_the_stored_checkpoint_is_fenced() {
    let server = SnowflakeServer::start().unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let body = format!(
        "account = \"xy12345\"\nurl = \"{}\"\nuser = \"svc_sluice\"\npassword = \"check\"\ndatabase = \"FENCED\"\n",
        server.url()
    );
    let cfg =
        SnowflakeSinkConfig::parse(toml::from_str(&body).unwrap(), &ParseContext { at: "sink[0]", pipeline: "fenced" })
            .unwrap();
    let at = |lsn: u64| Checkpoint { position: Some(Position::Pg(sluice_core::Lsn(lsn))), ..Default::default() };
    let (acks, mut reports) = AckIssuer::new();
    let mut acks = acks;
    let mut first = SnowflakeSink::new(cfg.clone(), "fenced", 0);
    first.open(SinkContext::default()).await.unwrap();
    first.commit(at(100), acks.issue()).await.unwrap();
    assert!(matches!(reports.recv().await, Some(AckReport::Durable(_))));
    let mut second = SnowflakeSink::new(cfg.clone(), "fenced", 0);
    assert_eq!(second.open(SinkContext::default()).await.unwrap().and_then(|c| c.position), at(100).position);
    write_row(&mut second, 250, 2).await;
    second.commit(at(300), acks.issue()).await.unwrap();
    assert!(matches!(reports.recv().await, Some(AckReport::Durable(_))));
    write_row(&mut first, 150, 1).await;
    let e = first.commit(at(200), acks.issue()).await.unwrap_err();
    assert!(e.to_string().contains("another sluice process"), "{e}");
    assert!(matches!(reports.recv().await, Some(AckReport::Failed(..))));
    let ids = snowflake_query(&server, "FENCED", "SELECT RECORD_METADATA:key:id::INT FROM \"T\"");
    assert_eq!(ids, vec![vec![Some("2".to_string())]], "the fenced commit left nothing");
    let rows = snowflake_query(&server, "FENCED", "SELECT STATE FROM SLUICE_CHECKPOINTS");
    let state: serde_json::Value = serde_json::from_str(rows[0][0].as_deref().unwrap()).unwrap();
    assert_eq!(
        Checkpoint::from_json(&state.to_string()).unwrap().position,
        at(300).position,
        "the stored checkpoint stays"
    );
}

/// Writes one transaction (a change, so the commit is more than a heartbeat's position, which is
/// stored lazily) of a row `id` at `lsn`.
async fn write_row(sink: &mut SnowflakeSink, lsn: u64, id: i64) {
    let table = Arc::new(TableSchema {
        id: TableId::new("public", "t"),
        columns: vec![ColumnSchema::new("id", DataType::Int64, "bigint").key()],
        version: 1,
        dialect: "postgres".into(),
    });
    let meta =
        TxnMeta { xid: lsn, commit_ts_micros: 1_700_000_000_000_000, position: Position::Pg(sluice_core::Lsn(lsn)) };
    for e in [
        Event::Begin(meta.clone()),
        Event::Change(Change { table, op: Op::Insert { after: vec![Value::Int(id)] } }),
        Event::Commit { meta, position: Position::Pg(sluice_core::Lsn(lsn + 10)) },
    ] {
        sink.write(&e).await.unwrap();
    }
}
