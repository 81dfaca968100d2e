//! Snowflake's client REST protocol, as its drivers speak it (docs/progress/issue-12-research.md
//! has the sources): log in for a session token, then one statement per request with bound
//! values, answers as JSON row sets or Arrow IPC.
//!
//! ```text
//!  POST /session/v1/login-request?databaseName=..&schemaName=..&warehouse=..&roleName=..
//!       {"data": {ACCOUNT_NAME, LOGIN_NAME, PASSWORD | AUTHENTICATOR=SNOWFLAKE_JWT + TOKEN, ..}}
//!       → data.token (and sessionId)
//!  POST /queries/v1/query-request?requestId=<uuid>   Authorization: Snowflake Token="<token>"
//!       {"sqlText", "sequenceId", "bindings": {"1": {"type": "TEXT", "value": ..}}}
//!       → data.rowtype + data.rowset (JSON) or data.rowsetBase64 (Arrow IPC stream)
//!  POST /session?delete=true                          ends the session (and its transaction)
//! ```
//!
//! Values are always bound, never spliced into SQL; bound values travel as strings typed by
//! Snowflake's binding types (`TEXT`, `FIXED`, `REAL`, `BOOLEAN`, `BINARY` as hex, `DATE` as epoch
//! milliseconds, `TIMESTAMP_NTZ` as epoch nanoseconds, ...). Secrets (the password, the key, the
//! session token) never appear in errors or `Debug`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::{self, HeaderName};
use hyper::Method;
use serde_json::{json, Value as J};

use crate::jwt::KeyPair;

/// How a session proves who it is.
#[derive(Clone)]
pub enum Auth {
    Password(String),
    KeyPair(Arc<KeyPair>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Password(_) => write!(f, "Password(********)"),
            Auth::KeyPair(k) => write!(f, "{k:?}"),
        }
    }
}

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct Login {
    /// `https://<account>.snowflakecomputing.com`, or any URL (private link, tests)
    pub url: String,
    pub account: String,
    pub user: String,
    pub auth: Auth,
    pub role: Option<String>,
    pub warehouse: Option<String>,
    pub database: Option<String>,
    pub schema: Option<String>,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum SnowflakeError {
    /// Snowflake could not be reached, or answered what is not its protocol.
    #[error("snowflake {url}: {what}")]
    Transport { url: String, what: String },
    /// Snowflake refused, with its code (`002003` no such object, `390100` bad credentials, ..).
    #[error("snowflake refused (code {code}{}): {message}", sql_state.as_ref().map(|s| format!(", SQL state {s}")).unwrap_or_default())]
    Refused { code: String, message: String, sql_state: Option<String> },
}

impl SnowflakeError {
    /// Snowflake's code, when it refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            SnowflakeError::Refused { code, .. } => Some(code),
            SnowflakeError::Transport { .. } => None,
        }
    }

    /// Whether trying again later may succeed: the service was unreachable or busy, the
    /// session expired (a new login follows), a statement timed out, or the transaction was
    /// aborted (000615: by another process of the pipeline; the flush is replayed).
    pub fn is_transient(&self) -> bool {
        match self {
            SnowflakeError::Transport { .. } => true,
            SnowflakeError::Refused { code, .. } => {
                matches!(code.as_str(), "390112" | "390114" | "000625" | "000630" | "000615")
            }
        }
    }
}

/// One bound value, or a column of them (an array binding: the statement runs once per row).
#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    /// Snowflake's binding type: `TEXT`, `FIXED`, `REAL`, `BOOLEAN`, `BINARY`, `DATE`, ...
    pub kind: &'static str,
    pub value: BindValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BindValue {
    One(Option<String>),
    Many(Vec<Option<String>>),
}

impl Bind {
    pub fn text(v: impl Into<String>) -> Bind {
        Bind { kind: "TEXT", value: BindValue::One(Some(v.into())) }
    }

    pub fn one(kind: &'static str, v: Option<String>) -> Bind {
        Bind { kind, value: BindValue::One(v) }
    }

    pub fn many(kind: &'static str, v: Vec<Option<String>>) -> Bind {
        Bind { kind, value: BindValue::Many(v) }
    }
}

/// A statement's answer: its columns and rows, every value as Snowflake's text of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResult {
    pub query_id: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// A logged-in session. Statements run one at a time, in order.
pub struct Session {
    http: sluice_http::Client,
    token: String,
    session_id: Option<i64>,
    sequence: AtomicU64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({} #{:?})", self.http.endpoint().describe(), self.session_id)
    }
}

/// A random UUID (version 4), for request ids.
fn uuid4() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// How long a statement may stay in progress before the answer is given up.
const QUERY_DEADLINE: Duration = Duration::from_secs(3600);

impl Session {
    /// Logs in.
    pub async fn login(login: &Login) -> Result<Session, SnowflakeError> {
        let http = sluice_http::Client::new(&login.url)
            .map_err(|what| SnowflakeError::Transport { url: "(the url key)".into(), what })?;
        let mut data = json!({
            "CLIENT_APP_ID": "Sluice",
            "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
            "ACCOUNT_NAME": crate::jwt::jwt_account(&login.account),
            "LOGIN_NAME": login.user,
            "CLIENT_ENVIRONMENT": { "APPLICATION": "Sluice" },
            "SESSION_PARAMETERS": { "AUTOCOMMIT": true, "TIMEZONE": "UTC" },
        });
        match &login.auth {
            Auth::Password(p) => data["PASSWORD"] = json!(p),
            Auth::KeyPair(k) => {
                let token = k
                    .token(&login.account, &login.user, now_secs())
                    .map_err(|what| SnowflakeError::Transport { url: http.endpoint().describe(), what })?;
                data["AUTHENTICATOR"] = json!("SNOWFLAKE_JWT");
                data["TOKEN"] = json!(token);
            }
        }
        let mut path = format!("/session/v1/login-request?requestId={}&request_guid={}", uuid4(), uuid4());
        for (name, value) in [
            ("databaseName", &login.database),
            ("schemaName", &login.schema),
            ("warehouse", &login.warehouse),
            ("roleName", &login.role),
        ] {
            if let Some(v) = value {
                path.push_str(&format!("&{name}={}", query_escape(v)));
            }
        }
        let session = Session { http, token: String::new(), session_id: None, sequence: AtomicU64::new(0) };
        let answer = session.call(Method::POST, &path, Some(json!({ "data": data }))).await?;
        let token = answer["data"]["token"].as_str().unwrap_or_default().to_string();
        if token.is_empty() {
            return Err(session.nonsense(&answer, "a login answer without a token"));
        }
        let session_id = answer["data"]["sessionId"].as_i64();
        Ok(Session { token, session_id, ..session })
    }

    /// The session's id as the login gave it (`CURRENT_SESSION()`), when it did.
    pub fn id(&self) -> Option<i64> {
        self.session_id
    }

    fn nonsense(&self, answer: &J, what: &str) -> SnowflakeError {
        let text = answer.to_string();
        SnowflakeError::Transport {
            url: self.http.endpoint().describe(),
            what: format!("{what}: {}", &text[..text.len().min(300)]),
        }
    }

    /// One request; the JSON answer when it says `success`, else Snowflake's refusal.
    async fn call(&self, method: Method, path: &str, body: Option<J>) -> Result<J, SnowflakeError> {
        let url = self.http.endpoint().describe();
        let transport = |what: String| SnowflakeError::Transport { url: url.clone(), what };
        let mut headers: Vec<(HeaderName, String)> = vec![
            (header::ACCEPT, "application/snowflake".into()),
            (header::CONTENT_TYPE, "application/json".into()),
            (header::USER_AGENT, format!("Sluice/{}", env!("CARGO_PKG_VERSION"))),
        ];
        if !self.token.is_empty() {
            headers.push((header::AUTHORIZATION, format!("Snowflake Token=\"{}\"", self.token)));
        }
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let answer = self.http.request(method, path, &headers, bytes).await.map_err(transport)?;
        let json: J = serde_json::from_slice(&answer.body).map_err(|e| {
            transport(format!(
                "answered HTTP {} with what is not JSON ({e}): {}",
                answer.status,
                String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
            ))
        })?;
        if json["success"].as_bool() == Some(true) {
            return Ok(json);
        }
        let code = match &json["code"] {
            J::String(s) => s.clone(),
            J::Number(n) => format!("{n:06}"),
            _ => format!("HTTP {}", answer.status),
        };
        if matches!(code.as_str(), "333333" | "333334") {
            // In progress: the caller polls.
            return Ok(json);
        }
        Err(SnowflakeError::Refused {
            code,
            message: json["message"].as_str().unwrap_or("(no message)").to_string(),
            sql_state: json["data"]["sqlState"].as_str().map(str::to_string),
        })
    }

    /// Runs one statement with `binds` (`?` placeholders, in order).
    pub async fn query(&self, sql: &str, binds: &[Bind]) -> Result<QueryResult, SnowflakeError> {
        let mut body = json!({
            "sqlText": sql,
            "asyncExec": false,
            "sequenceId": self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
            "querySubmissionTime": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        });
        if !binds.is_empty() {
            let map: serde_json::Map<String, J> = binds
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let value = match &b.value {
                        BindValue::One(v) => json!(v),
                        BindValue::Many(v) => json!(v),
                    };
                    ((i + 1).to_string(), json!({ "type": b.kind, "value": value }))
                })
                .collect();
            body["bindings"] = J::Object(map);
        }
        let path = format!("/queries/v1/query-request?requestId={}&request_guid={}", uuid4(), uuid4());
        let mut answer = self.call(Method::POST, &path, Some(body)).await?;
        let started = Instant::now();
        while answer["success"].as_bool() != Some(true) {
            // 333333/333334: still running; ask where the answer will be until it is there.
            let Some(url) = answer["data"]["getResultUrl"].as_str().map(str::to_string) else {
                return Err(self.nonsense(&answer, "a statement in progress without a result URL"));
            };
            if started.elapsed() > QUERY_DEADLINE {
                return Err(self.nonsense(&answer, "a statement still in progress after an hour"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            answer = self.call(Method::GET, &url, None).await?;
        }
        crate::result::read(&answer["data"]).map_err(|what| self.nonsense(&answer["data"]["queryId"], &what))
    }

    /// Ends the session; Snowflake rolls back what it left open.
    pub async fn close(&self) -> Result<(), SnowflakeError> {
        let path = format!("/session?delete=true&requestId={}", uuid4());
        self.call(Method::POST, &path, Some(json!({}))).await.map(|_| ())
    }
}
