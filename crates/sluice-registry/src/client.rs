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
use axum::http::{header, Method};

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

/// A Schema Registry client; cheap to clone (the caches are shared).
#[derive(Clone)]
pub struct RegistryClient {
    http: sluice_http::Client,
    ids: Arc<Mutex<HashMap<(String, String), u32>>>,
    schemas: Arc<Mutex<HashMap<u32, String>>>,
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
        let http = sluice_http::Client::new(url).map_err(RegistryError::Url)?;
        Ok(RegistryClient { http, ids: Default::default(), schemas: Default::default() })
    }

    /// The registry's URL without credentials, for messages.
    pub fn describe(&self) -> String {
        self.http.endpoint().describe()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, RegistryError> {
        let url = self.describe();
        let transport = |what: String| RegistryError::Transport { url: url.clone(), what };
        let headers = [
            (header::ACCEPT, "application/vnd.schemaregistry.v1+json, application/json".to_string()),
            (header::CONTENT_TYPE, "application/vnd.schemaregistry.v1+json".to_string()),
        ];
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let answer = self.http.request(method, path, &headers, bytes).await.map_err(transport)?;
        let (status, body) = (answer.status, answer.body);
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
        if !(200..300).contains(&status) {
            return Err(RegistryError::Refused {
                url,
                status,
                code: json["error_code"].as_i64().unwrap_or(status as i64),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_never_carry_credentials() {
        let c = RegistryClient::new("http://KEY:SECRET@127.0.0.1:8081").unwrap();
        assert_eq!(c.describe(), "http://127.0.0.1:8081");
    }
}
