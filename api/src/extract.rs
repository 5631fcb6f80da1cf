//! Request extractors whose rejections speak problem+json: the JSON body,
//! the correlation id, the idempotency key; and a path parameter that never
//! rejects.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
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
        let axum::Json(UniqueKeys(raw)) = axum::Json::<UniqueKeys>::from_request(req, state)
            .await
            .map_err(from_rejection)?;
        if let Some(field) = nul_in(&raw, "") {
            return Err(ApiError::invalid(field, "must not contain NUL characters"));
        }
        let value = serde_path_to_error::deserialize(raw.clone()).map_err(|e| {
            let field = field_of(&e);
            let message = e.into_inner().to_string();
            ApiError::Unprocessable {
                detail: format!("the body does not match the expected shape: {message}"),
                errors: vec![crate::error::FieldError { field, message }],
            }
        })?;
        Ok(ApiJson { value, raw })
    }
}

/// The JSON path (as field errors name them) of the first string or key in
/// `value` that holds a NUL character, which no field accepts (Postgres
/// cannot store it in text or jsonb).
fn nul_in(value: &Value, path: &str) -> Option<String> {
    let here = |path: &str| {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path.to_owned()
        }
    };
    match value {
        Value::String(text) => text.contains('\0').then(|| here(path)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item, &format!("{path}[{i}]"))),
        Value::Object(object) => object.iter().find_map(|(key, item)| {
            let field = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                Some(here(path))
            } else {
                nul_in(item, &field)
            }
        }),
        _ => None,
    }
}

/// A JSON value parsed from a body that names no key twice in one object:
/// `{"sku":"A","sku":"B"}` is refused (400) rather than read as its last
/// value, which another reader of the same bytes might not agree with.
struct UniqueKeys(Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueKeys(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
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

/// The JSON path of the field a deserialization error is about, as field
/// errors name them (`lines[0].quantity`, `shipping_address.city`): where
/// the error occurred, plus the field a "missing field" or "unknown field"
/// message names; `body` for the body as a whole.
fn field_of(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let message = error.inner().to_string();
    let mut path = String::new();
    for segment in error.path().iter() {
        use serde_path_to_error::Segment;
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    let named = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field") || message.starts_with("unknown field"));
    match (named, path.is_empty()) {
        // serde reports a missing field at the object that lacks it.
        (Some(name), _) if message.starts_with("missing field") => {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        }
        (_, false) => path,
        (Some(name), true) => name.to_owned(),
        (None, true) => "body".to_owned(),
    }
}

/// The route's one path parameter (`{id}`, `{sku}`, `{name}`), decoded.
///
/// It never rejects, so a handler checks the caller's role before anything
/// about the path: a segment that does not decode to UTF-8 (`%FF`) becomes
/// U+FFFD, the replacement character, as does one holding a control
/// character (`%00`). No id, SKU, stream or projection name
/// holds that, so the handler's lookup answers its usual problem+json 404
/// instead of axum's plain-text 400.
#[derive(Debug, Clone)]
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let value = Path::<String>::from_request_parts(parts, state)
            .await
            .ok()
            // Nor does any of them hold a control character (Postgres
            // cannot even store a NUL in text).
            .filter(|Path(v): &Path<String>| !v.contains(char::is_control))
            .map_or_else(|| char::REPLACEMENT_CHARACTER.to_string(), |Path(v)| v);
        Ok(Segment(value))
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::field_of;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Order {
        lines: Vec<Line>,
        address: Address,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        quantity: i64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Address {
        city: String,
    }

    fn field(body: serde_json::Value) -> String {
        let error = serde_path_to_error::deserialize::<_, Order>(body).unwrap_err();
        field_of(&error)
    }

    #[test]
    fn field_errors_name_the_json_path_of_the_field() {
        let address = json!({"city": "Berlin"});
        let line = json!({"sku": "A", "quantity": 1});
        assert_eq!(
            field(json!({"lines": [line, {"sku": "B", "quantity": "x"}], "address": address})),
            "lines[1].quantity"
        );
        assert_eq!(
            field(json!({"lines": [line], "address": {"city": "B", "x": 1}})),
            "address.x"
        );
        assert_eq!(
            field(json!({"lines": [{"sku": "A"}], "address": address})),
            "lines[0].quantity"
        );
        assert_eq!(field(json!({"lines": [line]})), "address");
        assert_eq!(
            field(json!({"lines": [line], "address": address, "extra": 1})),
            "extra"
        );
        assert_eq!(field(json!("an order")), "body");
    }
}
