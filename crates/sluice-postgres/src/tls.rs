//! TLS for every PostgreSQL connection, set in the URL as libpq does:
//! `?sslmode=verify-full&sslrootcert=/path/ca.crt&sslcert=/path/client.crt&sslkey=/path/client.key`.
//!
//! `sslmode` means what it means to libpq: `disable` never uses TLS; `allow` and `prefer` (the
//! default) use it when the server offers it, without checking the certificate; `require`
//! insists on it and, when a root certificate is given (or `~/.postgresql/root.crt` exists),
//! checks the chain like `verify-ca`; `verify-ca` checks that the server's certificate chains to
//! `sslrootcert`; `verify-full` also checks that it names the host connected to.
//! `sslrootcert=system` trusts the system's CA store. `sslcert`/`sslkey` (default
//! `~/.postgresql/postgresql.crt`/`.key` when present) present a client certificate. The
//! `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY` variables fill what the URL leaves out.
//!
//! Connections use rustls with the ring provider (no OpenSSL to install). Unix-socket
//! connections never use TLS, as with libpq. Channel binding (SCRAM-SHA-256-PLUS) is not
//! offered.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode as DriverSslMode;

use crate::error::PgError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server insists (treated as `prefer`).
    Allow,
    /// TLS when offered, certificate not checked.
    Prefer,
    /// TLS always; the chain is checked only when a root certificate is available.
    Require,
    /// TLS, and the certificate must chain to `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// The TLS parameters of a URL, removed from it before the driver sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SslParams {
    mode: Option<String>,
    rootcert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// Connection parameters a URL's query may hold (libpq's and tokio-postgres's names).
const QUERY_KEYS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslnegotiation",
    "application_name",
    "connect_timeout",
    "options",
    "target_session_attrs",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "channel_binding",
    "load_balance_hosts",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "tcp_user_timeout",
    "replication",
];

/// Where a URL's query starts. Users write passwords raw, with `?` and `@` in them, and file
/// paths in the query may hold `@` too: the query is the first `?` followed by a known parameter
/// name and `=`; failing that, the first `?` after the last `@`.
fn query_start(url: &str) -> Option<usize> {
    let known = url.match_indices('?').map(|(i, _)| i).find(|&i| {
        let rest = &url[i + 1..];
        QUERY_KEYS.iter().any(|k| rest.strip_prefix(k).is_some_and(|r| r.starts_with('=')))
    });
    known.or_else(|| {
        let after_userinfo = url.rfind('@').map(|i| i + 1).or_else(|| url.find("://").map(|i| i + 3)).unwrap_or(0);
        url[after_userinfo..].find('?').map(|i| i + after_userinfo)
    })
}

/// Splits the `sslmode`, `sslrootcert`, `sslcert` and `sslkey` parameters off a URL's query.
fn split_params(url: &str) -> (String, SslParams) {
    let Some(q) = query_start(url) else {
        return (url.to_string(), SslParams::default());
    };
    let mut params = SslParams::default();
    let mut kept = Vec::new();
    for pair in url[q + 1..].split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k {
            "sslmode" => &mut params.mode,
            "sslrootcert" => &mut params.rootcert,
            "sslcert" => &mut params.cert,
            "sslkey" => &mut params.key,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        *slot = Some(sluice_config::percent_decode(v));
    }
    let mut base = url[..q].to_string();
    if !kept.is_empty() {
        base.push('?');
        base.push_str(&kept.join("&"));
    }
    (base, params)
}

/// Checks the TLS parameters of a URL without touching any file: for configuration validation.
pub fn validate(url: &str) -> Result<(), String> {
    let (rest, params) = split_params(url);
    if let Some(m) = params.mode.as_deref() {
        if SslMode::parse(m).is_none() {
            return Err(format!("sslmode={m:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"));
        }
    }
    rest.parse::<tokio_postgres::Config>().map(drop).map_err(|e| e.to_string())
}

/// Where and how to connect: the driver's configuration and the TLS set-up.
pub struct Target {
    /// Host, port, user, password, database, for the driver
    pub config: tokio_postgres::Config,
    /// TLS set-up
    pub tls: Tls,
}

/// The TLS set-up of one URL.
#[derive(Clone)]
pub struct Tls {
    /// The effective `sslmode`
    pub mode: SslMode,
    /// rustls configuration; `None` with `sslmode=disable`
    client: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({:?})", self.mode)
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn home_file(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env("HOME")?).join(".postgresql").join(name);
    p.exists().then_some(p)
}

/// Parses a URL and prepares its TLS set-up, reading the certificate files it names.
/// `what` names the connection in errors ("source", "sink[0]").
pub fn target(url: &str, what: &str) -> Result<Target, PgError> {
    let (rest, params) = split_params(url);
    let setup = |msg: String| PgError::Setup(format!("{what}.url: {msg}"));
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| setup(format!("invalid connection URL: {e}")))?;
    let mode_text = params.mode.or_else(|| env("PGSSLMODE")).unwrap_or_else(|| "prefer".into());
    let mode = SslMode::parse(&mode_text).ok_or_else(|| {
        setup(format!("sslmode={mode_text:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"))
    })?;
    config.ssl_mode(match mode {
        SslMode::Disable => DriverSslMode::Disable,
        SslMode::Allow | SslMode::Prefer => DriverSslMode::Prefer,
        _ => DriverSslMode::Require,
    });
    if mode == SslMode::Disable {
        return Ok(Target { config, tls: Tls { mode, client: None } });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rootcert = params.rootcert.or_else(|| env("PGSSLROOTCERT"));
    let root_path = rootcert.map(PathBuf::from).or_else(|| home_file("root.crt"));
    let verify = match mode {
        SslMode::VerifyCa | SslMode::VerifyFull => true,
        // libpq: with `require`, a root certificate that is there is used as with verify-ca.
        SslMode::Require => root_path.is_some(),
        _ => false,
    };
    let verifier: Arc<dyn ServerCertVerifier> = if verify {
        let Some(path) = root_path else {
            return Err(setup(format!(
                "sslmode={mode_text} checks the server's certificate but no root certificate is set; add \
                 sslrootcert=/path/to/ca.crt (the CA that signed the server's certificate) or sslrootcert=system \
                 to the URL"
            )));
        };
        let roots = load_roots(&path).map_err(setup)?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| setup(format!("sslrootcert={}: {e}", path.display())))?;
        if mode == SslMode::VerifyFull {
            webpki
        } else {
            Arc::new(ChainOnly(webpki))
        }
    } else {
        Arc::new(Unchecked(provider.clone()))
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(format!("TLS set-up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cert = params.cert.or_else(|| env("PGSSLCERT")).map(PathBuf::from).or_else(|| home_file("postgresql.crt"));
    let client = match cert {
        Some(cert) => {
            let key = params
                .key
                .or_else(|| env("PGSSLKEY"))
                .map(PathBuf::from)
                .or_else(|| home_file("postgresql.key"))
                .ok_or_else(|| {
                    setup(format!(
                        "sslcert={} is set but sslkey is not; add sslkey=/path/to/client.key",
                        cert.display()
                    ))
                })?;
            let chain = load_certs(&cert, "sslcert").map_err(setup)?;
            let key = PrivateKeyDer::from_pem_file(&key)
                .map_err(|e| setup(format!("sslkey={}: cannot read a PEM private key: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| setup(format!("sslcert/sslkey: the key does not fit the certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Target { config, tls: Tls { mode, client: Some(Arc::new(client)) } })
}

fn load_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let read = |e: &dyn std::fmt::Display| format!("{key}={}: cannot read PEM certificates: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(&e))?;
    if certs.is_empty() {
        return Err(format!("{key}={}: the file holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if path == Path::new("system") {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            return Err("sslrootcert=system: no CA certificates found in this system's store; install \
                        ca-certificates or name a file"
                .into());
        }
        return Ok(roots);
    }
    for cert in load_certs(path, "sslrootcert")? {
        roots.add(cert).map_err(|e| format!("sslrootcert={}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// `verify-ca`: the chain must be good; the names in the certificate are not compared with the
/// host. webpki checks the chain before the name, so a name error means the chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: encryption without authentication of
/// the server, as libpq does. The handshake signatures are still checked.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Tls {
    /// Runs the TLS handshake over `stream` for `host`.
    pub async fn handshake<S>(&self, host: &str, stream: S) -> io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let client = self.client.clone().ok_or_else(|| io::Error::other("TLS is disabled (sslmode=disable)"))?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("host {host:?}: {e}")))?;
        tokio_rustls::TlsConnector::from(client).connect(name, stream).await
    }
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        Ok(Connect { tls: self.clone(), host: domain.to_string() })
    }
}

/// One handshake, for tokio-postgres.
pub struct Connect {
    tls: Tls,
    host: String,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move { self.tls.handshake(&self.host, stream).await.map(TlsStream) })
    }
}

/// A TLS connection for tokio-postgres.
pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}

/// A person's explanation of a TLS failure anywhere in an error chain, with the fix, or `None`
/// when the error has nothing to do with TLS.
pub fn explain(err: &(dyn std::error::Error + 'static), host: &str) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        let tls = e
            .downcast_ref::<rustls::Error>()
            .or_else(|| e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>()));
        if let Some(t) = tls {
            return Some(explain_rustls(t, host));
        }
        let text = e.to_string();
        if text.contains("server does not support TLS") {
            return Some(
                "the server does not accept TLS connections (its ssl setting is off), and sslmode requires TLS; \
                 turn ssl on in the server's postgresql.conf, or use sslmode=prefer"
                    .into(),
            );
        }
        cur = e.source();
    }
    None
}

/// The fix for a server that refused a connection because it was not encrypted (pg_hba.conf
/// has only `hostssl` lines for it).
pub fn server_wants_tls(sqlstate: &str, message: &str) -> Option<&'static str> {
    (sqlstate == "28000" && message.contains("no encryption")).then_some(
        "the server accepts this connection only over TLS; add sslmode=verify-full&sslrootcert=/path/to/ca.crt \
         (or sslmode=require) to the URL",
    )
}

/// rustls describes the names in a certificate as `DnsName("db.example")`; keep the name.
fn unwrap_name(presented: &str) -> &str {
    match (presented.find("(\""), presented.rfind("\")")) {
        (Some(a), Some(b)) if a + 2 <= b => &presented[a + 2..b],
        _ => presented,
    }
}

fn explain_rustls(e: &rustls::Error, host: &str) -> String {
    use rustls::AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the server's TLS certificate is not signed by a CA in sslrootcert ({c:?}); point sslrootcert at \
                 the CA certificate that issued the server's certificate"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "the server's TLS certificate is not valid for the host name {host:?}{}; connect with a host name \
                 the certificate lists, or use sslmode=verify-ca to check the CA only",
                match c {
                    CertificateError::NotValidForNameContext { presented, .. } if !presented.is_empty() => format!(
                        " (it is for {})",
                        presented.iter().map(|p| unwrap_name(p)).collect::<Vec<_>>().join(", ")
                    ),
                    _ => String::new(),
                }
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's TLS certificate has expired; renew it on the server (or check this machine's clock)"
                    .into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's TLS certificate is not valid yet; check this machine's clock".into()
            }
            other => format!("the server's TLS certificate was rejected: {other:?}; check the server's ssl_cert_file"),
        },
        rustls::Error::AlertReceived(
            A::CertificateRequired | A::BadCertificate | A::UnknownCA | A::HandshakeFailure,
        ) => {
            format!(
                "the server refused the TLS handshake ({e}): it wants a client certificate it trusts; set sslcert \
                 and sslkey in the URL to a certificate signed by the server's ssl_ca_file"
            )
        }
        other => format!("TLS failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_are_split_off_the_query() {
        let (rest, p) = split_params(
            "postgres://u:p%3Fw?d@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.crt&sslcert=/c&sslkey=/k",
        );
        assert_eq!(rest, "postgres://u:p%3Fw?d@h:5/db?application_name=x");
        assert_eq!(p.mode.as_deref(), Some("verify-full"));
        assert_eq!(p.rootcert.as_deref(), Some("/tmp/ca.crt"));
        assert_eq!((p.cert.as_deref(), p.key.as_deref()), (Some("/c"), Some("/k")));
        let (rest, p) = split_params("postgres://u:a?b@h/db");
        assert_eq!((rest.as_str(), p), ("postgres://u:a?b@h/db", SslParams::default()));
        let (rest, _) = split_params("postgres://h/db?sslmode=disable");
        assert_eq!(rest, "postgres://h/db");
        // `@` in a certificate path, `?` and `@` in a raw password
        let (rest, p) = split_params("postgres://u:p?w@x@h/db?sslmode=verify-ca&sslrootcert=/certs/ca@prod.crt");
        assert_eq!(rest, "postgres://u:p?w@x@h/db");
        assert_eq!(p.rootcert.as_deref(), Some("/certs/ca@prod.crt"));
    }

    #[test]
    fn sslmode_is_validated() {
        assert!(validate("postgres://h/db?sslmode=verify-full").is_ok());
        let e = validate("postgres://h/db?sslmode=verify").unwrap_err();
        assert!(e.contains("verify-ca") && e.contains("\"verify\""), "{e}");
        let e = target("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt", "source")
            .err()
            .expect("a missing file is an error");
        assert!(e.to_string().contains("source.url: sslrootcert=/nonexistent/ca.crt"), "{e}");
        let t = target("postgres://h/db?sslmode=disable", "sink[0]").unwrap();
        assert_eq!(t.tls.mode, SslMode::Disable);
    }
}
