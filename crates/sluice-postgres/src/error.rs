use sluice_core::{ConnectorError, ErrorClass};

/// Errors of the PostgreSQL connector.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The network connection failed or closed.
    #[error("connection to {what} failed: {source}")]
    Io {
        /// Which connection
        what: &'static str,
        /// Cause
        #[source]
        source: std::io::Error,
    },
    /// The server reported an error.
    #[error("{what}: server error {code}: {message}{}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default(), hint.as_deref().map(|h| format!("; hint: {h}")).unwrap_or_default())]
    Server {
        /// What we were doing
        what: String,
        /// SQLSTATE
        code: String,
        /// Primary message
        message: String,
        /// DETAIL field
        detail: Option<String>,
        /// HINT field
        hint: Option<String>,
    },
    /// A normal (non-replication) connection or query failed.
    #[error("{what}: {source}")]
    Client {
        /// What we were doing
        what: String,
        /// Cause
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server sent something we did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A setup problem the user must fix; says how.
    #[error("{0}")]
    Setup(String),
    /// A condition that may clear by itself; the runtime retries.
    #[error("{0}")]
    Retry(String),
    /// A value the source sent that cannot be read as its column's type.
    #[error("cannot read a value: {0}")]
    Decode(String),
    /// A value that cannot be written into its target column.
    #[error("cannot write a value: {0}")]
    Encode(String),
    /// Another process has been writing this sink: stop, never move it backwards.
    #[error("{0}")]
    Fenced(String),
    /// A source table changed in a way its target cannot follow; the table goes to quarantine.
    #[error("{0}")]
    Incompatible(String),
}

/// Attaches context to a tokio-postgres result.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: impl Into<String>) -> Result<T, PgError>;
    /// [`Ctx::ctx`] with the description built only on failure (for calls made per row or
    /// block, where formatting it every time was measurable).
    fn ctx_with(self, what: impl FnOnce() -> String) -> Result<T, PgError>;
}

impl<T> Ctx<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, what: impl Into<String>) -> Result<T, PgError> {
        self.map_err(|source| PgError::Client { what: what.into(), source })
    }

    fn ctx_with(self, what: impl FnOnce() -> String) -> Result<T, PgError> {
        self.map_err(|source| PgError::Client { what: what(), source })
    }
}

fn class_of_sqlstate(code: &str) -> ErrorClass {
    match &code[..code.len().min(2)] {
        // connection exceptions, insufficient resources, operator intervention, system errors,
        // serialization failures and deadlocks, lock timeouts
        "08" | "53" | "57" | "58" | "40" | "55" => ErrorClass::Transient,
        // privileges, undefined objects, invalid configuration
        "42" | "28" | "3D" | "F0" => ErrorClass::Fatal,
        // data exceptions and integrity violations: this record is bad
        "22" | "23" => ErrorClass::Definite,
        _ => ErrorClass::Transient,
    }
}

impl PgError {
    /// How the runtime should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            PgError::Io { .. } | PgError::Protocol(_) => ErrorClass::Transient,
            PgError::Server { code, .. } => class_of_sqlstate(code),
            PgError::Client { source, .. } => match source.code() {
                Some(state) => class_of_sqlstate(state.code()),
                // A parameter that could not be encoded: this record is bad, retrying is futile.
                None if is_encoding_error(source) => ErrorClass::Definite,
                None => ErrorClass::Transient,
            },
            PgError::Encode(_) | PgError::Incompatible(_) => ErrorClass::Definite,
            PgError::Setup(_) | PgError::Decode(_) | PgError::Fenced(_) => ErrorClass::Fatal,
            PgError::Retry(_) => ErrorClass::Transient,
        }
    }
}

fn is_encoding_error(e: &tokio_postgres::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        if c.is::<crate::codec::CodecError>() {
            return true;
        }
        cur = c.source();
    }
    false
}

impl PgError {
    /// The message to show a person: unlike `Display`, it includes the server's own message,
    /// SQLSTATE and hint, which tokio-postgres hides behind "db error".
    pub fn describe(&self) -> String {
        match self {
            PgError::Client { what, source } => match source.as_db_error() {
                Some(db) => format!(
                    "{what}: {} {}{}",
                    db.code().code(),
                    db.message(),
                    db.hint().map(|h| format!("; hint: {h}")).unwrap_or_default()
                ),
                // A parameter that could not be encoded: tokio-postgres says only which one.
                None => match std::error::Error::source(source) {
                    Some(cause) => format!("{self}: {cause}"),
                    None => self.to_string(),
                },
            },
            _ => self.to_string(),
        }
    }
}

impl From<PgError> for ConnectorError {
    fn from(e: PgError) -> Self {
        ConnectorError::new(e.class(), e.describe(), e)
    }
}
