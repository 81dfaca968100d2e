//! A client of any Confluent-compatible Schema Registry (Confluent Platform and Cloud, Karapace,
//! Apicurio's compatibility API, Sluice's own): register a schema under a subject, fetch a
//! schema by id, read a subject's compatibility level. Ids are cached both ways, so a producer
//! asks once per schema and a consumer once per id.
//!
//! The URL may carry credentials, `https://KEY:SECRET@host`, sent as HTTP basic auth; they never
//! appear in errors or logs ([`RegistryClient::describe`]). `https` uses rustls with the
//! system's roots (ring provider, no OpenSSL). One HTTP/1.1 connection per request: requests
//! happen once per schema, not per record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::store::Level;

/// What went wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The URL cannot be used.
    #[error("schema registry URL: {0}")]
    Url(String),
    /// The registry could not be reached or answered nonsense.
    #[error("schema registry {url}: {what}")]
    Transport { url: String, what: String },
    /// The registry refused, with its error code (40401, 409, 42201, ...).
    #[error("schema registry {url} answered {status} (error {code}): {message}")]
    Refused { url: String, status: u16, code: i64, message: String },
}

impl RegistryError {
    /// The registry's error code, when it refused.
    pub fn code(&self) -> Option<i64> {
        match self {
            RegistryError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Where the registry is, and how to reach it.
#[derive(Clone)]
struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    /// Path prefix without a trailing slash (`""` or `/registry`)
    prefix: String,
    /// `Basic ...` when the URL has credentials
    auth: Option<String>,
}

/// A Schema Registry client; cheap to clone (the caches are shared).
#[derive(Clone)]
pub struct RegistryClient {
    endpoint: Endpoint,
    tls: Option<tokio_rustls::TlsConnector>,
    ids: Arc<Mutex<HashMap<(String, String), u32>>>,
    schemas: Arc<Mutex<HashMap<u32, String>>>,
}

fn base64(input: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(input)
}

fn parse(url: &str) -> Result<Endpoint, RegistryError> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(RegistryError::Url("must start with http:// or https://".into()));
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let auth = match userinfo {
        Some(u) => {
            let (user, secret) = u.split_once(':').unwrap_or((u, ""));
            let (user, secret) = (sluice_config::percent_decode(user), sluice_config::percent_decode(secret));
            Some(format!("Basic {}", base64(format!("{user}:{secret}").as_bytes())))
        }
        None => None,
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| RegistryError::Url(format!("port {p:?} is not a number")))?)
        }
        _ => (hostport, if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(RegistryError::Url("names no host".into()));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok(Endpoint { tls, host, port, prefix: path.trim_end_matches('/').to_string(), auth })
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, RegistryError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::Url(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Escapes a subject for a URL path.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl RegistryClient {
    /// A client for `url` (`http[s]://[user:secret@]host[:port][/path]`).
    pub fn new(url: &str) -> Result<RegistryClient, RegistryError> {
        let endpoint = parse(url)?;
        let tls = if endpoint.tls { Some(tls_connector()?) } else { None };
        Ok(RegistryClient { endpoint, tls, ids: Default::default(), schemas: Default::default() })
    }

    /// The registry's URL without credentials, for messages.
    pub fn describe(&self) -> String {
        let e = &self.endpoint;
        format!("{}://{}:{}{}", if e.tls { "https" } else { "http" }, e.host, e.port, e.prefix)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, RegistryError> {
        let url = self.describe();
        let transport = |what: String| RegistryError::Transport { url: url.clone(), what };
        let e = &self.endpoint;
        let tcp = tokio::net::TcpStream::connect((e.host.as_str(), e.port))
            .await
            .map_err(|err| transport(format!("cannot connect: {err}")))?;
        let _ = tcp.set_nodelay(true);
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", e.prefix))
            .header(header::HOST, format!("{}:{}", e.host, e.port))
            .header(header::ACCEPT, "application/vnd.schemaregistry.v1+json, application/json")
            .header(header::CONTENT_TYPE, "application/vnd.schemaregistry.v1+json");
        if let Some(a) = &e.auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req.body(Full::new(bytes)).map_err(|err| transport(format!("request: {err}")))?;
        let (status, body) = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(e.host.clone())
                    .map_err(|err| transport(format!("host name for TLS: {err}")))?;
                let stream = tls.connect(name, tcp).await.map_err(|err| transport(format!("TLS: {err}")))?;
                send(TokioIo::new(stream), req).await.map_err(transport)?
            }
            None => send(TokioIo::new(tcp), req).await.map_err(transport)?,
        };
        let json: serde_json::Value = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|err| {
                transport(format!(
                    "answered {status} with a body that is not JSON ({err}): {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ))
            })?
        };
        if !status.is_success() {
            return Err(RegistryError::Refused {
                url,
                status: status.as_u16(),
                code: json["error_code"].as_i64().unwrap_or(status.as_u16() as i64),
                message: json["message"].as_str().unwrap_or("(no message)").to_string(),
            });
        }
        Ok(json)
    }

    /// Registers `schema` (Avro schema JSON) under `subject`; the registry's id for it.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let key = (subject.to_string(), schema.to_string());
        if let Some(id) = self.ids.lock().ok().and_then(|m| m.get(&key).copied()) {
            return Ok(id);
        }
        let path = format!("/subjects/{}/versions", path_segment(subject));
        let answer = self.call(Method::POST, &path, Some(serde_json::json!({ "schema": schema }))).await?;
        let id = answer["id"].as_u64().and_then(|i| u32::try_from(i).ok()).ok_or_else(|| RegistryError::Transport {
            url: self.describe(),
            what: format!("a register answer without an id: {answer}"),
        })?;
        if let Ok(mut m) = self.ids.lock() {
            m.insert(key, id);
        }
        if let Ok(mut m) = self.schemas.lock() {
            m.insert(id, schema.to_string());
        }
        Ok(id)
    }

    /// The schema (JSON text) with `id`.
    pub async fn schema(&self, id: u32) -> Result<String, RegistryError> {
        if let Some(s) = self.schemas.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(s);
        }
        let answer = self.call(Method::GET, &format!("/schemas/ids/{id}"), None).await?;
        let schema = answer["schema"].as_str().map(str::to_string).ok_or_else(|| RegistryError::Transport {
            url: self.describe(),
            what: format!("a schema answer without a schema: {answer}"),
        })?;
        if let Ok(mut m) = self.schemas.lock() {
            m.insert(id, schema.clone());
        }
        Ok(schema)
    }

    /// The compatibility level that applies to `subject` (its own, else the registry's).
    pub async fn compatibility(&self, subject: &str) -> Result<Level, RegistryError> {
        let path = format!("/config/{}?defaultToGlobal=true", path_segment(subject));
        let answer = self.call(Method::GET, &path, None).await?;
        let name = answer["compatibilityLevel"].as_str().unwrap_or_default();
        Level::parse(name).ok_or_else(|| RegistryError::Transport {
            url: self.describe(),
            what: format!("an unknown compatibility level {name:?}"),
        })
    }
}

async fn send<T>(io: TokioIo<T>, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| format!("reading the answer: {e}"))?.to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_prefix_and_basic_auth() {
        let e = parse("https://KEY:s%40cret@psrc-123.eu-west-1.aws.confluent.cloud/registry/").unwrap();
        assert!(e.tls);
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("psrc-123.eu-west-1.aws.confluent.cloud", 443, "/registry")
        );
        assert_eq!(e.auth.as_deref(), Some(format!("Basic {}", base64(b"KEY:s@cret")).as_str()));
        let e = parse("http://127.0.0.1:8081").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.prefix.as_str(), e.auth.is_none()),
            (false, "127.0.0.1", 8081, "", true)
        );
        assert!(parse("ftp://x").is_err());
        assert!(parse("http://:8081").is_err());
        assert!(parse("http://h:port").is_err());
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn descriptions_never_carry_credentials() {
        let c = RegistryClient::new("http://KEY:SECRET@127.0.0.1:8081").unwrap();
        assert_eq!(c.describe(), "http://127.0.0.1:8081");
    }
}
