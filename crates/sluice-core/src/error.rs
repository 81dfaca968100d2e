use std::error::Error as StdError;
use std::fmt;

/// How the runtime should react to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry later with backoff: a connection dropped, a server restarting, a lock timeout.
    Transient,
    /// This table or record is bad: quarantine it and keep the rest running.
    Definite,
    /// Stop the pipeline with a clear message: bad configuration, missing privileges, a lost
    /// replication slot. Retrying cannot help.
    Fatal,
}

/// An error from a connector, carrying its class and the original cause.
#[derive(Debug)]
pub struct ConnectorError {
    class: ErrorClass,
    context: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl ConnectorError {
    /// An error of `class` that says `context` and keeps `source` as its cause.
    pub fn new(
        class: ErrorClass,
        context: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        ConnectorError { class, context: context.into(), source: Some(source.into()) }
    }

    /// An error without an underlying cause.
    pub fn msg(class: ErrorClass, context: impl Into<String>) -> Self {
        ConnectorError { class, context: context.into(), source: None }
    }

    /// The class, which tells the runtime whether to retry.
    pub fn class(&self) -> ErrorClass {
        self.class
    }
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

impl StdError for ConnectorError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}
