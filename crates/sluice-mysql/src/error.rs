//! Errors of the MySQL connector and how the runtime should take them.

use sluice_core::{ConnectorError, ErrorClass};

/// Errors of the MySQL connector.
#[derive(Debug, thiserror::Error)]
pub enum MyError {
    /// A query or connection failed; `source` holds the server's code and message.
    #[error("{what}: {source}")]
    Client {
        /// What we were doing
        what: String,
        /// Cause
        #[source]
        source: mysql_async::Error,
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
    /// The binlog the sinks need to resume from is no longer on the server.
    #[error("{0}")]
    Purged(String),
    /// A value in the binlog that cannot be read as its column's type.
    #[error("cannot read a value: {0}")]
    Decode(String),
}

/// Attaches context to a mysql_async result.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: impl Into<String>) -> Result<T, MyError>;
}

impl<T> Ctx<T> for Result<T, mysql_async::Error> {
    fn ctx(self, what: impl Into<String>) -> Result<T, MyError> {
        self.map_err(|source| MyError::Client { what: what.into(), source })
    }
}

/// Server error codes (`mysqld_error.h`) that a person has to act on.
const FATAL_CODES: &[u16] = &[
    1044, // access denied to a database
    1045, // access denied (password)
    1049, // unknown database
    1142, // command denied on a table
    1146, // no such table
    1227, // needs a privilege (SUPER, REPLICATION SLAVE, ...)
    1236, // cannot read the binlog from this position (purged, bad coordinate)
    1370, // execute command denied
];

impl MyError {
    /// How the runtime should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            MyError::Client { source, .. } => match source {
                mysql_async::Error::Server(e) if FATAL_CODES.contains(&e.code) => ErrorClass::Fatal,
                mysql_async::Error::Url(_) => ErrorClass::Fatal,
                _ => ErrorClass::Transient,
            },
            MyError::Protocol(_) | MyError::Retry(_) => ErrorClass::Transient,
            MyError::Setup(_) | MyError::Decode(_) | MyError::Purged(_) => ErrorClass::Fatal,
        }
    }

    /// The server's error code, if the server reported one.
    pub fn server_code(&self) -> Option<u16> {
        match self {
            MyError::Client { source: mysql_async::Error::Server(e), .. } => Some(e.code),
            _ => None,
        }
    }
}

impl From<MyError> for ConnectorError {
    fn from(e: MyError) -> Self {
        ConnectorError::new(e.class(), e.to_string(), e)
    }
}
