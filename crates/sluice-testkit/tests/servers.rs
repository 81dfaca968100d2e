use sluice_testkit::{pg_server, PgOptions, PgServer};

#[tokio::test]
async fn starts_logical_server_and_stops_it_on_drop() {
    let server = pg_server();
    let c = server.connect("postgres").await.unwrap();
    let row = c.query_one("SHOW wal_level", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "logical");
    let port = server.port();
    drop(c);
    drop(server);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "server still listening after drop");
}

#[tokio::test]
async fn starts_with_custom_wal_level() {
    let server = PgServer::start_with(PgOptions { wal_level: "replica".into(), ..Default::default() }).unwrap();
    let c = server.connect("postgres").await.unwrap();
    assert_eq!(c.query_one("SHOW wal_level", &[]).await.unwrap().get::<_, String>(0), "replica");
}

#[test]
fn mariadb_starts_with_a_row_binlog_and_stops_on_drop() {
    let server = sluice_testkit::MariaDbServer::start().unwrap_or_else(|e| panic!("cannot start MariaDB: {e}"));
    let settings =
        server.cli("", "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata").unwrap();
    assert_eq!(settings.trim(), "1\tROW\tFULL\tFULL");
    server.create_database("app").unwrap();
    server.cli("app", "CREATE TABLE t (id int PRIMARY KEY, v varchar(10)); INSERT INTO t VALUES (1, 'a')").unwrap();
    let events = server.cli("", "SHOW BINLOG EVENTS IN 'mysql-bin.000001'").unwrap();
    assert!(events.contains("Write_rows"), "no row event in the binlog:\n{events}");
    let port = server.port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(server);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "server still listening after drop");
}

#[test]
fn mariadb_takes_extra_settings() {
    let server = sluice_testkit::MariaDbServer::start_with(sluice_testkit::MariaDbOptions {
        settings: vec![("binlog_format".into(), "STATEMENT".into())],
    })
    .unwrap_or_else(|e| panic!("cannot start MariaDB: {e}"));
    assert_eq!(server.cli("", "SELECT @@binlog_format").unwrap().trim(), "STATEMENT");
}

/// The Snowflake stand-in answers Snowflake's own Python connector, with the session and
/// transaction functions the wrapper adds to fakesnow.
#[test]
fn fakesnow_serves_snowflakes_connector_with_sessions_and_aborts() {
    let server = sluice_testkit::SnowflakeServer::start().unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let python = sluice_testkit::fakesnow_python().unwrap();
    let out = std::process::Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/snowflake_check.py"))
        .arg(server.port().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log_tail(30)
    );
}
