//! Errors as every endpoint answers them: `{"error": {"code", "message", "field"}}` with the
//! status the code implies. This is the only place that maps errors to statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runstream_log::LogError;
use runstream_schema::{DecodeError, ValidationError};
use runstream_views::ViewError;
use runstream_views::registry::AuthError;
use serde::de::DeserializeOwned;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// For errors in a filter or field expression: the 0-based character position at fault.
    pub position: Option<usize>,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            position: None,
            retry_after_s: None,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        let full = if field.is_empty() {
            message
        } else {
            format!("{field}: {message}")
        };
        Self {
            field: Some(field).filter(|f| !f.is_empty()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_argument", full)
        }
    }

    /// An error at a position in the text of a request field (a filter, a sort).
    pub fn invalid_at(field: impl Into<String>, position: usize, message: impl Into<String>) -> Self {
        Self {
            position: Some(position),
            ..Self::invalid(field, message)
        }
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_denied", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "already_exists", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    pub fn unavailable(message: impl Into<String>, retry_after_s: u64) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self {
            retry_after_s: Some(1),
            ..Self::new(StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded", message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": { "code": self.code, "message": self.message, "field": self.field }
        });
        if let Some(p) = self.position {
            body["error"]["position"] = p.into();
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"runstream\""),
            );
        }
        if let Some(s) = self.retry_after_s {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Invalid(v) => v.into(),
            DecodeError::Protobuf(p) => ApiError::invalid("body", format!("malformed protobuf EventBatch: {p}")),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Unavailable(_) | LogError::Closed => ApiError::unavailable(e.to_string(), 1),
            LogError::TooLarge(m) => ApiError::too_large(m),
            _ => ApiError::unavailable(format!("{e}; nothing was acknowledged"), 1),
        }
    }
}

impl From<ViewError> for ApiError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::Query(r) => match r.position {
                Some(at) => ApiError::invalid_at("sql", at, r.message),
                None => ApiError::invalid("sql", r.message),
            },
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::UnknownToken | AuthError::Revoked(_) => ApiError::unauthenticated(e.to_string()),
            AuthError::NoSuchProject(..) => ApiError::not_found(e.to_string()),
            AuthError::Forbidden { .. } => ApiError::forbidden(e.to_string()),
        }
    }
}

/// Parses a JSON body, naming the field at fault (`events[2].float_points.values[7]`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." { "body".to_string() } else { path };
        ApiError::invalid(field, format!("{inner}"))
    })?;
    de.end()
        .map_err(|e| ApiError::invalid("body", format!("unexpected data after the JSON value: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_say_whether_a_retry_can_help() {
        // Trouble with the log is worth retrying; a record the log can never take is not.
        let down = ApiError::from(LogError::Unavailable("kafka append: timed out".into()));
        assert_eq!(
            (down.status, down.retry_after_s),
            (StatusCode::SERVICE_UNAVAILABLE, Some(1))
        );
        let big = ApiError::from(LogError::TooLarge("send smaller batches".into()));
        assert_eq!((big.status, big.retry_after_s), (StatusCode::PAYLOAD_TOO_LARGE, None));
        assert_eq!(big.message, "send smaller batches");
    }
}
