//! A small HTTP/1.1 client for the connectors that speak HTTP (a schema registry, Snowflake's
//! REST API): `http` or `https` (rustls with the system's roots, ring provider, no OpenSSL), one
//! connection per request. The URL may carry credentials (`https://KEY:SECRET@host`), sent as
//! HTTP basic auth and never part of [`Endpoint::describe`].

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// Where a service is, and how to reach it.
#[derive(Clone)]
pub struct Endpoint {
    /// `https`
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`""` or `/registry`)
    pub prefix: String,
    /// `Basic ...` when the URL has credentials
    pub auth: Option<String>,
}

/// Standard base64 with padding.
pub fn base64(input: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(input)
}

impl Endpoint {
    /// `http[s]://[user:secret@]host[:port][/path]`; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("must start with http:// or https://".into());
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let auth = userinfo.map(|u| {
            let (user, secret) = u.split_once(':').unwrap_or((u, ""));
            let (user, secret) = (sluice_config::percent_decode(user), sluice_config::percent_decode(secret));
            format!("Basic {}", base64(format!("{user}:{secret}").as_bytes()))
        });
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| format!("port {p:?} is not a number"))?)
            }
            _ => (hostport, if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err("names no host".into());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Ok(Endpoint { tls, host, port, prefix: path.trim_end_matches('/').to_string(), auth })
    }

    /// The URL without credentials, for messages.
    pub fn describe(&self) -> String {
        format!("{}://{}:{}{}", if self.tls { "https" } else { "http" }, self.host, self.port, self.prefix)
    }
}

/// A client of one endpoint; cheap to clone.
#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// An answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl Client {
    /// A client for `url` (see [`Endpoint::parse`]).
    pub fn new(url: &str) -> Result<Client, String> {
        let endpoint = Endpoint::parse(url)?;
        let tls = if endpoint.tls { Some(tls_connector()?) } else { None };
        Ok(Client { endpoint, tls })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends `method` to the prefix + `path` (with its query) with `headers` and `body`. The
    /// URL's basic auth goes along unless `headers` has an `Authorization`. Errors are transport
    /// failures, without credentials.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, String)],
        body: Bytes,
    ) -> Result<Answer, String> {
        let e = &self.endpoint;
        let tcp = tokio::net::TcpStream::connect((e.host.as_str(), e.port))
            .await
            .map_err(|err| format!("cannot connect: {err}"))?;
        let _ = tcp.set_nodelay(true);
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", e.prefix))
            .header(header::HOST, format!("{}:{}", e.host, e.port));
        let has_auth = headers.iter().any(|(n, _)| n == header::AUTHORIZATION);
        for (name, value) in headers {
            let v = HeaderValue::from_str(value)
                .map_err(|_| format!("header {name} holds characters HTTP does not allow"))?;
            req = req.header(name, v);
        }
        if let (Some(a), false) = (&e.auth, has_auth) {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = req.body(Full::new(body)).map_err(|err| format!("request: {err}"))?;
        match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(e.host.clone())
                    .map_err(|err| format!("host name for TLS: {err}"))?;
                let stream = tls.connect(name, tcp).await.map_err(|err| format!("TLS: {err}"))?;
                send(TokioIo::new(stream), req).await
            }
            None => send(TokioIo::new(tcp), req).await,
        }
    }
}

async fn send<T>(io: TokioIo<T>, req: Request<Full<Bytes>>) -> Result<Answer, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| format!("reading the answer: {e}"))?.to_bytes();
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_prefix_and_basic_auth() {
        let e = Endpoint::parse("https://KEY:s%40cret@psrc-123.eu-west-1.aws.confluent.cloud/registry/").unwrap();
        assert!(e.tls);
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("psrc-123.eu-west-1.aws.confluent.cloud", 443, "/registry")
        );
        assert_eq!(e.auth.as_deref(), Some(format!("Basic {}", base64(b"KEY:s@cret")).as_str()));
        assert_eq!(e.describe(), "https://psrc-123.eu-west-1.aws.confluent.cloud:443/registry");
        let e = Endpoint::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.prefix.as_str(), e.auth.is_none()),
            (false, "127.0.0.1", 8081, "", true)
        );
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://:8081").is_err());
        assert!(Endpoint::parse("http://h:port").is_err());
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
