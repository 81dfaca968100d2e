//! The REST endpoints, as Confluent's Schema Registry serves them to producers, consumers and
//! connectors (paths, bodies, status codes and error codes follow its API reference).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Extract};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::error::ApiError;
use crate::store::{Candidate, Level, State, Storage, Subject, Version};

/// The content type the Confluent API answers with.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A JSON answer with the registry's content type.
pub fn reply(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

fn ok(body: Value) -> Result<Response, ApiError> {
    Ok(reply(StatusCode::OK, body))
}

/// The registry: its state and where it is kept.
pub struct Registry {
    state: Mutex<State>,
    storage: Storage,
}

impl Registry {
    pub fn new(state: State, storage: Storage) -> Registry {
        Registry { state: Mutex::new(state), storage }
    }

    /// Applies `change` to a copy of the state, stores the copy, then makes it the state: a
    /// change that cannot be stored changes nothing.
    async fn change<T>(&self, change: impl FnOnce(&mut State) -> Result<(T, bool), ApiError>) -> Result<T, ApiError> {
        let mut state = self.state.lock().await;
        let mut next = state.clone();
        let (out, changed) = change(&mut next)?;
        if changed {
            self.storage.save(&next).map_err(ApiError::storage)?;
            *state = next;
        }
        Ok(out)
    }
}

type Shared = Arc<Registry>;
type Params = Query<HashMap<String, String>>;

/// Every endpoint.
pub fn router(registry: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { reply(StatusCode::OK, json!({})) }))
        .route("/schemas/types", get(|| async { reply(StatusCode::OK, json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(version_schema))
        .route("/config", get(global_config).put(set_global_config))
        .route("/config/{subject}", get(subject_config).put(set_subject_config).delete(delete_subject_config))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(test_version))
        .route("/compatibility/subjects/{subject}/versions", post(test_all))
        .route("/mode", get(|| async { reply(StatusCode::OK, json!({ "mode": "READWRITE" })) }))
        .with_state(registry)
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The body of a register, lookup or compatibility request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

fn candidate(body: &Bytes) -> Result<Candidate, ApiError> {
    let req: SchemaRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body must be a JSON object with a \"schema\" string: {e}")))?;
    Candidate::parse(&req.schema, req.schema_type.as_deref(), !req.references.is_empty())
}

fn subject<'a>(state: &'a State, name: &str, deleted: bool) -> Result<&'a Subject, ApiError> {
    state.subjects.get(name).filter(|s| deleted || !s.deleted()).ok_or_else(|| ApiError::subject_not_found(name))
}

/// `latest`, `-1` or a version number.
fn find_version<'a>(s: &'a Subject, name: &str, version: &str, deleted: bool) -> Result<&'a Version, ApiError> {
    let visible = |v: &&Version| deleted || !v.deleted;
    if version == "latest" || version == "-1" {
        return s.versions.iter().rev().find(visible).ok_or_else(|| ApiError::version_not_found(name, version));
    }
    let n: u32 = version.parse().ok().filter(|n| *n > 0).ok_or_else(|| ApiError::invalid_version(version))?;
    s.versions.iter().filter(visible).find(|v| v.version == n).ok_or_else(|| ApiError::version_not_found(name, version))
}

fn schema_text(state: &State, id: u32) -> Result<String, ApiError> {
    state.schema(id).map(|s| s.schema.clone()).ok_or_else(|| ApiError::schema_not_found(format!("with id {id}")))
}

fn id_param(id: &str) -> Result<u32, ApiError> {
    id.parse().map_err(|_| ApiError::schema_not_found(format!("with id {id:?}")))
}

/// `schemaType`, for a schema that is not Avro (Confluent leaves it out for Avro).
fn with_type(state: &State, id: u32, mut body: Value) -> Value {
    if let Some(t) = state.schema(id).and_then(|s| s.schema_type.clone()) {
        body["schemaType"] = Value::String(t);
    }
    body
}

async fn schema_by_id(Extract(r): Extract<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let state = r.state.lock().await;
    let id = id_param(&id)?;
    ok(with_type(&state, id, json!({ "schema": schema_text(&state, id)? })))
}

async fn raw_schema_by_id(Extract(r): Extract<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let state = r.state.lock().await;
    let text = schema_text(&state, id_param(&id)?)?;
    ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Subjects and versions that use schema `id`.
fn uses(state: &State, id: u32, deleted: bool) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for (name, s) in &state.subjects {
        for v in s.versions.iter().filter(|v| v.id == id && (deleted || !v.deleted)) {
            out.push((name.clone(), v.version));
        }
    }
    out
}

async fn subjects_of_id(
    Extract(r): Extract<Shared>,
    Path(id): Path<String>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let state = r.state.lock().await;
    let id = id_param(&id)?;
    schema_text(&state, id)?;
    let mut names: Vec<String> = uses(&state, id, flag(&p, "deleted")).into_iter().map(|(s, _)| s).collect();
    names.dedup();
    ok(json!(names))
}

async fn versions_of_id(
    Extract(r): Extract<Shared>,
    Path(id): Path<String>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let state = r.state.lock().await;
    let id = id_param(&id)?;
    schema_text(&state, id)?;
    let list: Vec<Value> =
        uses(&state, id, flag(&p, "deleted")).into_iter().map(|(s, v)| json!({ "subject": s, "version": v })).collect();
    ok(json!(list))
}

async fn subjects(Extract(r): Extract<Shared>, Query(p): Params) -> Result<Response, ApiError> {
    let state = r.state.lock().await;
    let deleted = flag(&p, "deleted");
    let prefix = p.get("subjectPrefix").map(String::as_str).unwrap_or("");
    let names: Vec<&String> = state
        .subjects
        .iter()
        .filter(|(n, s)| n.starts_with(prefix) && (deleted || !s.deleted()))
        .map(|(n, _)| n)
        .collect();
    ok(json!(names))
}

async fn versions(
    Extract(r): Extract<Shared>,
    Path(name): Path<String>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let state = r.state.lock().await;
    let deleted = flag(&p, "deleted");
    let s = subject(&state, &name, deleted)?;
    let list: Vec<u32> = s.versions.iter().filter(|v| deleted || !v.deleted).map(|v| v.version).collect();
    ok(json!(list))
}

fn version_body(state: &State, name: &str, v: &Version) -> Result<Value, ApiError> {
    Ok(with_type(
        state,
        v.id,
        json!({ "subject": name, "version": v.version, "id": v.id, "schema": schema_text(state, v.id)? }),
    ))
}

async fn version(
    Extract(r): Extract<Shared>,
    Path((name, version)): Path<(String, String)>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let state = r.state.lock().await;
    let deleted = flag(&p, "deleted");
    let v = find_version(subject(&state, &name, deleted)?, &name, &version, deleted)?;
    ok(version_body(&state, &name, v)?)
}

async fn version_schema(
    Extract(r): Extract<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let state = r.state.lock().await;
    let v = find_version(subject(&state, &name, false)?, &name, &version, false)?;
    let text = schema_text(&state, v.id)?;
    ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn register(Extract(r): Extract<Shared>, Path(name): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let c = candidate(&body)?;
    let (id, version) = r
        .change(|state| {
            let (id, changed) = state.register(&name, &c)?;
            let version = state.lookup(&name, &c, false).map(|v| v.version);
            Ok(((id, version), changed))
        })
        .await?;
    tracing::debug!(subject = %name, id, version, "schema registered");
    ok(json!({ "id": id, "subject": name, "version": version, "schema": c.text }))
}

async fn lookup(
    Extract(r): Extract<Shared>,
    Path(name): Path<String>,
    Query(p): Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = candidate(&body)?;
    let state = r.state.lock().await;
    let deleted = flag(&p, "deleted");
    subject(&state, &name, deleted)?;
    let v = state.lookup(&name, &c, deleted).ok_or_else(|| ApiError::schema_not_found("under this subject"))?;
    ok(version_body(&state, &name, v)?)
}

async fn delete_subject(
    Extract(r): Extract<Shared>,
    Path(name): Path<String>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let permanent = flag(&p, "permanent");
    let gone = r
        .change(|state| {
            let s = state.subjects.get_mut(&name).ok_or_else(|| ApiError::subject_not_found(&name))?;
            if permanent {
                if !s.deleted() {
                    return Err(ApiError::not_soft_deleted(&name));
                }
                let versions: Vec<u32> = s.versions.iter().map(|v| v.version).collect();
                state.subjects.remove(&name);
                return Ok((versions, true));
            }
            if s.deleted() {
                return Err(ApiError::subject_not_found(&name));
            }
            let mut versions = Vec::new();
            for v in s.versions.iter_mut().filter(|v| !v.deleted) {
                v.deleted = true;
                versions.push(v.version);
            }
            Ok((versions, true))
        })
        .await?;
    ok(json!(gone))
}

async fn delete_version(
    Extract(r): Extract<Shared>,
    Path((name, version)): Path<(String, String)>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let permanent = flag(&p, "permanent");
    let n = r
        .change(|state| {
            let s = state.subjects.get_mut(&name).ok_or_else(|| ApiError::subject_not_found(&name))?;
            let n = find_version(s, &name, &version, permanent)?.version;
            if permanent {
                if s.versions.iter().any(|v| v.version == n && !v.deleted) {
                    return Err(ApiError::not_soft_deleted(&name));
                }
                s.versions.retain(|v| v.version != n);
            } else if let Some(v) = s.versions.iter_mut().find(|v| v.version == n) {
                v.deleted = true;
            }
            Ok((n, true))
        })
        .await?;
    ok(json!(n))
}

/// The body of a config change.
#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

fn level_of(body: &Bytes) -> Result<Level, ApiError> {
    let req: ConfigRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body must be {{\"compatibility\": LEVEL}}: {e}")))?;
    Level::parse(&req.compatibility).ok_or_else(|| ApiError::invalid_level(&req.compatibility))
}

async fn global_config(Extract(r): Extract<Shared>) -> Result<Response, ApiError> {
    ok(json!({ "compatibilityLevel": r.state.lock().await.compatibility.name() }))
}

async fn set_global_config(Extract(r): Extract<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let level = level_of(&body)?;
    r.change(|state| {
        state.compatibility = level;
        Ok(((), true))
    })
    .await?;
    ok(json!({ "compatibility": level.name() }))
}

async fn subject_config(
    Extract(r): Extract<Shared>,
    Path(name): Path<String>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let state = r.state.lock().await;
    match state.subjects.get(&name).and_then(|s| s.compatibility) {
        Some(level) => ok(json!({ "compatibilityLevel": level.name() })),
        None if flag(&p, "defaultToGlobal") => ok(json!({ "compatibilityLevel": state.compatibility.name() })),
        None => Err(ApiError::no_subject_level(&name)),
    }
}

async fn set_subject_config(
    Extract(r): Extract<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let level = level_of(&body)?;
    r.change(|state| {
        state.subjects.entry(name.clone()).or_default().compatibility = Some(level);
        Ok(((), true))
    })
    .await?;
    ok(json!({ "compatibility": level.name() }))
}

async fn delete_subject_config(Extract(r): Extract<Shared>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let before = r
        .change(|state| {
            let s = state.subjects.get_mut(&name).ok_or_else(|| ApiError::subject_not_found(&name))?;
            let before = s.compatibility.take().ok_or_else(|| ApiError::no_subject_level(&name))?;
            if s.versions.is_empty() {
                state.subjects.remove(&name);
            }
            Ok((before, true))
        })
        .await?;
    ok(json!({ "compatibilityLevel": before.name() }))
}

fn compat_answer(problems: Vec<String>, verbose: bool) -> Result<Response, ApiError> {
    let mut body = json!({ "is_compatible": problems.is_empty() });
    if verbose {
        body["messages"] = json!(problems);
    }
    ok(body)
}

async fn test_version(
    Extract(r): Extract<Shared>,
    Path((name, version)): Path<(String, String)>,
    Query(p): Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = candidate(&body)?;
    let state = r.state.lock().await;
    let s = subject(&state, &name, false)?;
    let n = find_version(s, &name, &version, false)?.version;
    compat_answer(state.incompatibilities(&name, &c, Some(n)), flag(&p, "verbose"))
}

async fn test_all(
    Extract(r): Extract<Shared>,
    Path(name): Path<String>,
    Query(p): Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = candidate(&body)?;
    let state = r.state.lock().await;
    compat_answer(state.incompatibilities(&name, &c, None), flag(&p, "verbose"))
}
