//! Request extractors whose rejections speak problem+json: the JSON body,
//! the correlation id, the idempotency key.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The `X-Correlation-Id` header.
pub static CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// A JSON body, rejected as problem+json: 415 without a JSON content type,
/// 413 over [`MAX_BODY_BYTES`], 400 when not well-formed, 422 when the
/// values do not fit the type (wrong types, missing or unknown fields).
/// Keeps the raw JSON too, for idempotency hashing.
pub struct ApiJson<T> {
    /// The typed body.
    pub value: T,
    /// The body as parsed JSON.
    pub raw: Value,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(raw) = axum::Json::<Value>::from_request(req, state)
            .await
            .map_err(from_rejection)?;
        let value = serde_json::from_value(raw.clone()).map_err(|e| {
            let message = e.to_string();
            let field = field_of(&message);
            ApiError::Unprocessable {
                detail: format!("the body does not match the expected shape: {message}"),
                errors: vec![crate::error::FieldError { field, message }],
            }
        })?;
        Ok(ApiJson { value, raw })
    }
}

fn from_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("send the body as Content-Type: application/json".into())
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::BadRequest(format!("malformed JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => {
            ApiError::BadRequest(format!("malformed JSON: {}", e.body_text()))
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(format!("the body is over {MAX_BODY_BYTES} bytes"))
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// The field a serde error names (`unknown field `x``, `missing field `y``), or `body`.
fn field_of(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field"))
        .unwrap_or("body")
        .to_owned()
}

/// The request's correlation id: the client's `X-Correlation-Id`, or a new one.
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

/// Puts a [`CorrelationId`] on every request and echoes it on the response.
/// A header that is missing, over 128 bytes or not printable ASCII is replaced
/// by a fresh UUID.
pub async fn correlation(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&CORRELATION_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    request.extensions_mut().insert(CorrelationId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(CORRELATION_ID.clone(), value);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CorrelationId>()
            .cloned()
            .ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("correlation middleware is not installed"))
            })
    }
}

/// The optional `Idempotency-Key` header: 1 to 200 printable ASCII bytes.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 200 && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::invalid(
                    "Idempotency-Key",
                    "must be 1 to 200 printable ASCII characters",
                )
            })?;
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// Like [`ApiJson`], for routes whose body may be left out entirely (no
/// `Content-Type` and no content): then `None`.
pub struct OptionalApiJson<T>(pub Option<ApiJson<T>>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers();
        let no_type = !headers.contains_key(axum::http::header::CONTENT_TYPE);
        let no_length = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
        let chunked = headers.contains_key(axum::http::header::TRANSFER_ENCODING);
        if no_type && no_length && !chunked {
            return Ok(OptionalApiJson(None));
        }
        ApiJson::from_request(req, state)
            .await
            .map(|j| OptionalApiJson(Some(j)))
    }
}
