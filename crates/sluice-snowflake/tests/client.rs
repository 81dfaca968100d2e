//! The REST client against the test kit's Snowflake stand-in (fakesnow), checked with
//! Snowflake's own Python connector.

use std::sync::Arc;

use sluice_snowflake::{Auth, Bind, KeyPair, Login, Session};
use sluice_testkit::snowflake::snowflake_query;
use sluice_testkit::SnowflakeServer;

fn login(server: &SnowflakeServer, auth: Auth) -> Login {
    Login {
        url: server.url(),
        account: "xy12345.eu-west-1".into(),
        user: "svc_sluice".into(),
        auth,
        role: Some("LOADER".into()),
        warehouse: Some("INGEST_WH".into()),
        database: Some("STREAMING".into()),
        schema: Some("PUBLIC".into()),
    }
}

/// What Snowflake's Python connector reads with `sql`, NULL as "None" (Python's `str`).
fn python_rows(server: &SnowflakeServer, sql: &str) -> Vec<Vec<String>> {
    snowflake_query(server, "STREAMING", sql)
        .into_iter()
        .map(|r| r.into_iter().map(|v| v.unwrap_or_else(|| "None".into())).collect())
        .collect()
}

#[tokio::test]
async fn statements_with_bound_values_reach_snowflake_and_read_back() {
    let server = SnowflakeServer::start().unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let s = Session::login(&login(&server, Auth::Password("secret".into()))).await.unwrap();
    assert!(format!("{s:?}").contains("127.0.0.1") && !format!("{s:?}").contains("secret"));
    let id = s.query("SELECT CURRENT_SESSION()", &[]).await.unwrap();
    assert_eq!(id.rows, vec![vec![s.id().map(|i| i.to_string())]]);
    s.query("CREATE TABLE items (id INT, name TEXT, price NUMBER(10,2), ok BOOLEAN)", &[]).await.unwrap();
    // One statement, three rows: an array binding; a quote and a NULL travel bound. Nullable
    // values go as TEXT, which Snowflake casts to the column's type (fakesnow 0.12.1 fails on a
    // NULL bound as FIXED or BOOLEAN; Snowflake does not).
    let inserted = s
        .query(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            &[
                Bind::many("FIXED", vec![Some("1".into()), Some("2".into()), Some("3".into())]),
                Bind::many("TEXT", vec![Some("it's".into()), None, Some("ü".into())]),
                Bind::many("TEXT", vec![Some("1.50".into()), Some("-2.25".into()), None]),
                Bind::many("TEXT", vec![Some("true".into()), Some("false".into()), None]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(inserted.rows, vec![vec![Some("3".to_string())]]);
    let read = s
        .query(
            "SELECT id, name, price, ok FROM items WHERE id >= ? ORDER BY id",
            &[Bind::one("FIXED", Some("2".into()))],
        )
        .await
        .unwrap();
    assert_eq!(read.columns, ["ID", "NAME", "PRICE", "OK"]);
    assert_eq!(
        read.rows,
        vec![
            vec![Some("2".into()), None, Some("-2.25".into()), Some("false".into())],
            vec![Some("3".into()), Some("ü".into()), None, None]
        ]
    );
    assert_eq!(
        python_rows(&server, "SELECT id, name, price FROM items ORDER BY id"),
        [["1", "it's", "1.50"], ["2", "None", "-2.25"], ["3", "ü", "None"]]
    );
    let e = s.query("SELECT * FROM no_such_table", &[]).await.unwrap_err();
    assert_eq!(e.code(), Some("002003"), "{e}");
    assert!(!e.is_transient());
    s.close().await.unwrap();
    assert!(s.query("SELECT 1", &[]).await.is_err(), "a closed session's token no longer works");
}

#[tokio::test]
async fn a_key_pair_login_works_and_a_dead_sessions_transaction_can_be_aborted() {
    let server = SnowflakeServer::start().unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let key = KeyPair::from_pem(include_str!("data/rfc7515_a2.p8")).unwrap();
    let a = Session::login(&login(&server, Auth::KeyPair(Arc::new(key)))).await.unwrap();
    let b = Session::login(&login(&server, Auth::Password("p".into()))).await.unwrap();
    a.query("CREATE TABLE t (id INT)", &[]).await.unwrap();
    a.query("BEGIN NAME sluice_p_0", &[]).await.unwrap();
    a.query("INSERT INTO t VALUES (?)", &[Bind::one("FIXED", Some("1".into()))]).await.unwrap();
    // `a` is now as good as dead; `b` finds its transaction by name and aborts it.
    let open = b.query("SHOW TRANSACTIONS", &[]).await.unwrap();
    let name = open.columns.iter().position(|c| c == "name").unwrap();
    let row = open.rows.iter().find(|r| r[name].as_deref() == Some("sluice_p_0")).expect("the named transaction");
    b.query("SELECT SYSTEM$ABORT_TRANSACTION(?)", &[Bind::one("FIXED", row[0].clone())]).await.unwrap();
    b.query("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    assert_eq!(python_rows(&server, "SELECT id FROM t ORDER BY id"), [["2"]]);
}
