//! Sluice's built-in Schema Registry, for single-machine use and tests: the subset of
//! Confluent's REST API that producers, consumers and connectors use, for Avro schemas (and JSON Schema
//! subjects, stored as given with `schemaType: JSON` and not checked for compatibility).
//!
//! ```text
//!  POST /subjects/{s}/versions      register (same schema: same id; else compatibility checked)
//!  POST /subjects/{s}               look a schema up under a subject
//!  GET  /schemas/ids/{id}           a schema by its global id
//!  GET  /subjects[/{s}/versions[/{v}]]   list subjects, versions, one version
//!  GET|PUT /config[/{s}]            compatibility, global or per subject (default BACKWARD)
//!  POST /compatibility/subjects/{s}/versions/{v}   test a schema
//!  DELETE /subjects/{s}[/versions/{v}]             soft, then ?permanent=true
//! ```
//!
//! Ids are global: one schema (compared as compact JSON, so whitespace does not matter but
//! defaults and docs do) has one id under every subject. Compatibility is Avro's reader/writer
//! rule (apache-avro's `SchemaCompatibility`): BACKWARD means the new schema reads data written
//! with the latest one, FORWARD the reverse, FULL both, `_TRANSITIVE` against every version. The
//! state is one JSON file in the data directory, replaced atomically after each change.

pub mod api;
pub mod client;
pub mod error;
pub mod store;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

pub use api::{router, Registry};
pub use client::{RegistryClient, RegistryError};
pub use store::Level;

/// Serves the registry kept in `dir` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let (storage, state) = store::Storage::open(dir)?;
    let subjects = state.subjects.len();
    let app = router(Arc::new(Registry::new(state, storage)));
    let addr = listener.local_addr().map_err(|e| format!("listener: {e}"))?;
    tracing::info!(%addr, data = %dir.display(), subjects, "schema registry listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(|e| format!("serve: {e}"))
}
