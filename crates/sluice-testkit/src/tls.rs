//! A PostgreSQL server that accepts only TLS connections, with certificates generated for the
//! test: a CA, a server certificate for `localhost` signed by it, a client certificate, and a
//! second CA that signed nothing (to test a wrong `sslrootcert`).

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::{PgOptions, PgServer};

/// Client-side files of a [`tls_server`], in a temporary directory deleted on drop.
pub struct TlsFiles {
    _dir: tempfile::TempDir,
    /// The CA that signed the server's and the client's certificates
    pub ca: PathBuf,
    /// A CA that signed neither
    pub other_ca: PathBuf,
    /// Client certificate, common name = the `cert_user` given to [`tls_server`]
    pub client_cert: PathBuf,
    /// Its private key (PKCS#8 PEM, mode 0600)
    pub client_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("self-signed CA")
}

fn leaf(names: Vec<String>, common_name: &str, issuer: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    params.distinguished_name.push(DnType::CommonName, common_name);
    let cert = params.signed_by(&key, issuer).expect("sign certificate");
    (cert.pem(), key.serialize_pem())
}

/// Starts a server whose pg_hba.conf has only `hostssl` lines for TCP: `postgres` trusted,
/// `cert_user` authenticated by its client certificate. Its certificate names `localhost` only,
/// so `verify-full` passes for host `localhost` and fails for `127.0.0.1`.
pub fn tls_server(cert_user: &str) -> (PgServer, TlsFiles) {
    let ca_issuer = ca("Sluice test CA");
    let other = ca("Another CA");
    let (server_cert, server_key) = leaf(vec!["localhost".into()], "localhost", &ca_issuer);
    let (client_cert, client_key) = leaf(Vec::new(), cert_user, &ca_issuer);
    let dir = tempfile::Builder::new().prefix("sluice-tls-").tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write certificate file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        p
    };
    let files = TlsFiles {
        ca: write("ca.crt", &ca_issuer.pem()),
        other_ca: write("other-ca.crt", &other.pem()),
        client_cert: write("client.crt", &client_cert),
        client_key: write("client.key", &client_key),
        _dir: dir,
    };
    let opts = PgOptions {
        settings: vec![
            ("ssl".into(), "on".into()),
            ("ssl_cert_file".into(), "server.crt".into()),
            ("ssl_key_file".into(), "server.key".into()),
            ("ssl_ca_file".into(), "ca.crt".into()),
        ],
        data_files: vec![
            ("server.crt".into(), server_cert.into_bytes()),
            ("server.key".into(), server_key.into_bytes()),
            ("ca.crt".into(), ca_issuer.pem().into_bytes()),
        ],
        hba: Some(format!("hostssl all postgres 127.0.0.1/32 trust\nhostssl all {cert_user} 127.0.0.1/32 cert\n")),
        ..Default::default()
    };
    let server = PgServer::start_with(opts).unwrap_or_else(|e| panic!("cannot start PostgreSQL with TLS: {e}"));
    (server, files)
}

/// A MariaDB server with TLS on (its certificate names `localhost`, signed by [`TlsFiles::ca`]),
/// and the client-side files. The server's own files sit in a directory the server's user can
/// read; it is deleted with the returned files.
pub fn mariadb_tls_server() -> (crate::MariaDbServer, TlsFiles) {
    let ca_issuer = ca("Sluice test CA");
    let other = ca("Another CA");
    let (server_cert, server_key) = leaf(vec!["localhost".into()], "localhost", &ca_issuer);
    let (client_cert, client_key) = leaf(Vec::new(), "client", &ca_issuer);
    let dir = tempfile::Builder::new().prefix("sluice-tls-").tempdir().expect("temp dir");
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
    let write = |name: &str, text: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write certificate file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    };
    // The server runs as the `mysql` user when the tests run as root: its files must be readable.
    let cert = write("server.crt", &server_cert, 0o644);
    let key = write("server.key", &server_key, 0o644);
    let files = TlsFiles {
        ca: write("ca.crt", &ca_issuer.pem(), 0o644),
        other_ca: write("other-ca.crt", &other.pem(), 0o600),
        client_cert: write("client.crt", &client_cert, 0o600),
        client_key: write("client.key", &client_key, 0o600),
        _dir: dir,
    };
    let opts = crate::MariaDbOptions {
        settings: vec![
            ("ssl-ca".into(), files.ca.display().to_string()),
            ("ssl-cert".into(), cert.display().to_string()),
            ("ssl-key".into(), key.display().to_string()),
        ],
    };
    let server =
        crate::MariaDbServer::start_with(opts).unwrap_or_else(|e| panic!("cannot start MariaDB with TLS: {e}"));
    (server, files)
}
