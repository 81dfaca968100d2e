//! Errors as the Confluent Schema Registry reports them: an HTTP status and a JSON body
//! `{"error_code": N, "message": "..."}`, where a five-digit code's first three digits are the
//! status (40401 subject not found, 42201 invalid schema, ...).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// One error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u32,
    pub message: String,
}

impl ApiError {
    fn new(code: u32, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }
    pub fn subject_not_found(subject: &str) -> ApiError {
        ApiError::new(40401, format!("Subject '{subject}' not found."))
    }
    pub fn version_not_found(subject: &str, version: &str) -> ApiError {
        ApiError::new(40402, format!("Version {version} not found for subject '{subject}'."))
    }
    pub fn schema_not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(40403, format!("Schema {what} not found."))
    }
    pub fn not_soft_deleted(subject: &str) -> ApiError {
        ApiError::new(40405, format!("Subject '{subject}' was not deleted first before being permanently deleted."))
    }
    pub fn no_subject_level(subject: &str) -> ApiError {
        ApiError::new(40408, format!("Subject '{subject}' does not have subject-level compatibility configured."))
    }
    pub fn incompatible(message: String) -> ApiError {
        ApiError::new(409, message)
    }
    pub fn invalid_schema(message: String) -> ApiError {
        ApiError::new(42201, format!("Invalid schema: {message}"))
    }
    pub fn invalid_version(version: &str) -> ApiError {
        ApiError::new(
            42202,
            format!(
                "The specified version '{version}' is not a valid version id: use a positive integer, -1 or latest."
            ),
        )
    }
    pub fn invalid_level(level: &str) -> ApiError {
        ApiError::new(
            42203,
            format!("Invalid compatibility level {level:?}: use NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL or FULL_TRANSITIVE."),
        )
    }
    pub fn bad_request(message: String) -> ApiError {
        ApiError::new(400, message)
    }
    pub fn storage(message: String) -> ApiError {
        ApiError::new(50001, format!("Error in the backend data store: {message}"))
    }

    fn status(&self) -> StatusCode {
        let status = if self.code >= 10_000 { self.code / 100 } else { self.code };
        StatusCode::from_u16(status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error_code": self.code, "message": self.message });
        crate::api::reply(self.status(), body)
    }
}
