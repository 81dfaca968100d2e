//! A replica table the sink cannot keep (no key) goes to quarantine, recorded with the commit;
//! `sluice tables` lists it with the reason and `--release` takes it out. The quarantine table is
//! read back with Snowflake's Python connector.

use std::sync::Arc;

use sluice_config::ParseContext;
use sluice_core::{
    AckIssuer, AckReport, Change, Checkpoint, ColumnSchema, DataType, Event, Lsn, Op, Position, Sink, SinkContext,
    SinkTableState, TableId, TableSchema, TxnMeta, Value,
};
use sluice_snowflake::config::SnowflakeSinkConfig;
use sluice_snowflake::sink::{release, tables, SnowflakeSink};
use sluice_testkit::snowflake::snowflake_query;
use sluice_testkit::SnowflakeServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_table_is_quarantined_listed_and_released() {
    let server = SnowflakeServer::start().unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let body = format!(
        "account = \"xy12345\"\nurl = \"{}\"\nuser = \"svc_sluice\"\npassword = \"check\"\ndatabase = \"QUAR\"\n\
         mode = \"replica\"\n",
        server.url()
    );
    let cfg =
        SnowflakeSinkConfig::parse(toml::from_str(&body).unwrap(), &ParseContext { at: "sink[0]", pipeline: "quar" })
            .unwrap();
    let keyless = Arc::new(TableSchema {
        id: TableId::new("public", "nokey"),
        columns: vec![ColumnSchema::new("a", DataType::Text, "text")],
        version: 1,
        dialect: "postgres".into(),
    });
    let keyed = Arc::new(TableSchema {
        id: TableId::new("public", "keyed"),
        columns: vec![ColumnSchema::new("id", DataType::Int64, "bigint").key()],
        version: 1,
        dialect: "postgres".into(),
    });
    let mut sink = SnowflakeSink::new(cfg.clone(), "quar", 0);
    sink.open(SinkContext::default()).await.unwrap();
    let meta = TxnMeta { xid: 1, commit_ts_micros: 1_700_000_000_000_000, position: Position::Pg(Lsn(100)) };
    for e in [
        Event::Begin(meta.clone()),
        Event::Change(Change { table: keyless.clone(), op: Op::Insert { after: vec![Value::Text("x".into())] } }),
        Event::Change(Change { table: keyed.clone(), op: Op::Insert { after: vec![Value::Int(7)] } }),
        Event::Commit { meta, position: Position::Pg(Lsn(110)) },
    ] {
        sink.write(&e).await.unwrap();
    }
    let (mut acks, mut reports) = AckIssuer::new();
    sink.commit(Checkpoint { position: Some(Position::Pg(Lsn(110))), ..Default::default() }, acks.issue())
        .await
        .unwrap();
    assert!(matches!(reports.recv().await, Some(AckReport::Durable(_))));
    sink.close().await.unwrap();
    // The other table goes on.
    assert_eq!(snowflake_query(&server, "QUAR", "SELECT \"ID\" FROM \"KEYED\""), vec![vec![Some("7".to_string())]]);
    let recorded = snowflake_query(&server, "QUAR", "SELECT SOURCE_TABLE, REASON FROM SLUICE_QUARANTINE");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0][0].as_deref(), Some("nokey"));
    assert!(recorded[0][1].as_deref().unwrap().contains("no primary key"), "{recorded:?}");
    let listed = tables(&cfg, "quar", 0).await.unwrap();
    let state = listed.iter().find(|t| t.table == keyless.id).map(|t| t.state.clone());
    assert!(
        matches!(&state, Some(SinkTableState::Quarantined { reason, .. }) if reason.contains("no primary key")),
        "{listed:?}"
    );
    assert!(release(&cfg, "quar", 0, &keyless.id).await.unwrap(), "it was in quarantine");
    assert!(!release(&cfg, "quar", 0, &keyless.id).await.unwrap(), "no longer");
    let listed = tables(&cfg, "quar", 0).await.unwrap();
    assert!(listed.iter().all(|t| t.table != keyless.id), "{listed:?}");
    assert!(snowflake_query(&server, "QUAR", "SELECT * FROM SLUICE_QUARANTINE").is_empty());
}
