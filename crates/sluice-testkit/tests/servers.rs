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
