//! The one HTTP error type: every failure renders as RFC 9457
//! `application/problem+json` with a stable `type`, and never leaks
//! internals to the client (internal errors are logged by the middleware in
//! [`crate::telemetry`], inside the request's span).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One invalid field of a request (422 answers list them).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `lines[2].quantity`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not well-formed JSON, or a parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or a token that fails verification.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the caller's role may not do this, or the resource is someone else's.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, but not for this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: a version conflict, or a transition the current state forbids.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is over the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed input with invalid values or unknown fields.
    #[error("{detail}")]
    Unprocessable {
        /// Summary.
        detail: String,
        /// Each invalid field.
        errors: Vec<FieldError>,
    },
    /// 429: over the rate limit; retry after this many seconds.
    #[error("too many requests; retry in {retry_after_secs} s")]
    TooManyRequests {
        /// `Retry-After`, in seconds.
        retry_after_secs: u64,
    },
    /// 503: a dependency (the database) is not ready.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 504: a bounded wait ran out.
    #[error("{0}")]
    Timeout(String),
    /// 500: anything unexpected; logged, with a generic detail for the client.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 422 for one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let errors = vec![FieldError {
            field: field.into(),
            message: message.into(),
        }];
        ApiError::Unprocessable {
            detail: "the request has invalid values".into(),
            errors,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.describe().0
    }

    fn describe(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Malformed request"),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Unprocessable { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
            ),
            TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout", "Timed out"),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }
}

/// The problem+json body (RFC 9457).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short human summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The invalid fields (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// Base of every problem `type` URI.
pub const PROBLEM_BASE: &str = "https://fulcrum.dev/problems/";

/// Whether `error` comes from a database that cannot be reached (no
/// connection within the pool's acquire timeout, a cut connection): the
/// client should retry, so it is a 503, not a 500.
fn database_unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
            )
        )
    })
}

/// `Retry-After` of a 503, in seconds.
const RETRY_AFTER_SECS: &str = "1";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (this, cause) = match self {
            ApiError::Internal(error) if database_unreachable(&error) => (
                ApiError::Unavailable("the database is unreachable; retry shortly".into()),
                Some(InternalError(format!("{error:#}"))),
            ),
            other => (other, None),
        };
        let retry_after = match &this {
            ApiError::TooManyRequests { retry_after_secs } => {
                HeaderValue::from_str(&retry_after_secs.to_string()).ok()
            }
            _ => None,
        };
        let mut response = this.render();
        if let Some(retry_after) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if let Some(cause) = cause {
            response.extensions_mut().insert(cause);
        }
        response
    }
}

impl ApiError {
    fn render(self) -> Response {
        let (status, kind, title) = self.describe();
        let (detail, errors) = match &self {
            ApiError::Unprocessable { detail, errors } => (detail.clone(), Some(errors.clone())),
            ApiError::Internal(_) => (
                "an unexpected error occurred; it has been logged".into(),
                None,
            ),
            other => (other.to_string(), None),
        };
        let problem = Problem {
            kind: format!("{PROBLEM_BASE}{kind}"),
            title,
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // The internal error travels to the logging middleware, not to the client.
        if let ApiError::Internal(error) = self {
            response
                .extensions_mut()
                .insert(InternalError(format!("{error:#}")));
        }
        response
    }
}

/// The text of an internal error, attached to the response for the logging
/// middleware.
#[derive(Debug, Clone)]
pub struct InternalError(pub String);

impl From<commands::CommandError> for ApiError {
    fn from(error: commands::CommandError) -> Self {
        use commands::CommandError as C;
        use domain::DomainError as D;
        match error {
            C::Domain(D::Invalid(errors)) => ApiError::Unprocessable {
                detail: "the request has invalid values".into(),
                errors: errors
                    .into_iter()
                    .map(|e| FieldError {
                        field: e.field,
                        message: e.message,
                    })
                    .collect(),
            },
            C::Domain(D::Conflict(message)) => ApiError::Conflict(message),
            C::Domain(D::NotFound(what)) => ApiError::NotFound(format!("{what} not found")),
            C::Forbidden(message) => ApiError::Forbidden(message),
            C::Contention { .. } => ApiError::Conflict(format!("{error}; retry the request")),
            C::IdempotencyKeyReused => ApiError::Unprocessable {
                detail: "this Idempotency-Key was already used with a different request".into(),
                errors: vec![FieldError {
                    field: "Idempotency-Key".into(),
                    message: "already used with a different request".into(),
                }],
            },
            other => ApiError::Internal(anyhow::Error::new(other)),
        }
    }
}
