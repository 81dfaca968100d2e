//! The registry client against Sluice's registry served in this process: register (cached),
//! schema by id, the compatibility that applies, and the registry's refusals with their codes.
//! (Third-party clients are checked against the registry in `crates/sluice/tests/registry.rs`.)

use sluice_registry::{Level, RegistryClient};

async fn serve() -> (String, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://user:p%40ss@{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let data = dir.path().to_path_buf();
    tokio::spawn(async move {
        sluice_registry::serve(listener, &data, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (url, dir, stop)
}

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"orders","namespace":"app","fields":[{fields}]}}"#)
}

#[tokio::test]
async fn the_client_registers_fetches_and_reports_refusals() {
    let (url, _dir, _stop) = serve().await;
    let client = RegistryClient::new(&url).unwrap();
    assert!(!client.describe().contains("p%40ss") && !client.describe().contains("user"), "{}", client.describe());
    let v1 = record(r#"{"name":"id","type":"long"}"#);
    let id = client.register("app.orders-value", &v1).await.unwrap();
    assert_eq!(client.register("app.orders-value", &v1).await.unwrap(), id);
    // A second client has no cache: the registry itself answers with the same id and schema.
    let other = RegistryClient::new(&url).unwrap();
    assert_eq!(other.register("app.orders-value", &v1).await.unwrap(), id);
    let fetched: serde_json::Value = serde_json::from_str(&other.schema(id).await.unwrap()).unwrap();
    assert_eq!(fetched, serde_json::from_str::<serde_json::Value>(&v1).unwrap());
    assert_eq!(other.compatibility("app.orders-value").await.unwrap(), Level::Backward);

    let breaking = record(r#"{"name":"id","type":"long"},{"name":"qty","type":"int"}"#);
    let refused = other.register("app.orders-value", &breaking).await.unwrap_err();
    assert_eq!(refused.code(), Some(409), "{refused}");
    assert!(refused.to_string().contains("incompatible") && !refused.to_string().contains("p%40ss"), "{refused}");
    assert_eq!(other.schema(4242).await.unwrap_err().code(), Some(40403));
    let evolved = record(r#"{"name":"id","type":"long"},{"name":"qty","type":["null","int"],"default":null}"#);
    assert!(other.register("app.orders-value", &evolved).await.unwrap() > id);
}

#[tokio::test]
async fn an_unreachable_registry_is_named_without_credentials() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = RegistryClient::new(&format!("http://KEY:SECRET@127.0.0.1:{port}")).unwrap();
    let err = client.register("s", "\"string\"").await.unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("cannot connect"), "{err}");
    assert!(!err.contains("SECRET") && !err.contains("KEY"), "{err}");
}

/// Credentials in the URL travel as HTTP basic auth (as Confluent Cloud wants them): a bare
/// listener here reads the request the client sends.
#[tokio::test]
async fn credentials_in_the_url_are_sent_as_basic_auth() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"id":5}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&got).into_owned()
    });
    let client = RegistryClient::new(&format!("http://user:p%40ss@{addr}/prefix")).unwrap();
    assert_eq!(client.register("a b", "\"string\"").await.unwrap(), 5);
    let request = seen.await.unwrap();
    assert!(request.starts_with("POST /prefix/subjects/a%20b/versions HTTP/1.1\r\n"), "{request}");
    // base64("user:p@ss")
    assert!(request.to_ascii_lowercase().contains("authorization: basic dxnlcjpwqhnz"), "{request}");
}
