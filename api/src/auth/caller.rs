//! The authenticated caller, as an axum extractor.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::claims::Role;
use super::verify::Authenticator;
use crate::error::ApiError;

/// The authenticated caller of a request.
///
/// As an extractor it reads `Authorization: Bearer <token>` (scheme matched
/// case-insensitively) and verifies the token with the state's
/// `Arc<Authenticator>`. A missing, repeated or garbled header, or a token
/// that fails verification, is rejected with [`ApiError::Unauthorized`]
/// whose detail names the reason and never echoes the token. The verified
/// caller is kept in the request extensions, so extracting it twice (say in
/// a middleware and the handler) verifies once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`.
    pub user_id: String,
    /// The token's `role`.
    pub role: Role,
}

impl Caller {
    /// Ok when the caller has one of `roles`, else [`ApiError::Forbidden`]
    /// (403). An empty `roles` admits nobody.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let allowed: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
        Err(ApiError::Forbidden(format!(
            "this requires the role {}; the caller is {}",
            allowed.join(" or "),
            self.role
        )))
    }

    /// True for operator or admin.
    pub fn is_staff(&self) -> bool {
        matches!(self.role, Role::Operator | Role::Admin)
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let token = bearer_token(&parts.headers).map_err(ApiError::Unauthorized)?;
        let auth = Arc::<Authenticator>::from_ref(state);
        let claims = auth.verify(token).map_err(|error| {
            tracing::debug!(%error, "bearer token refused");
            ApiError::Unauthorized(error.to_string())
        })?;
        auth.admit(&claims.sub)?;
        let caller = Caller {
            user_id: claims.sub,
            role: claims.role,
        };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// The token of the one `Authorization: Bearer` header, or why there is none.
fn bearer_token(headers: &HeaderMap) -> Result<&str, String> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (Some(value), None) => value,
        (None, _) => {
            return Err(
                "missing Authorization header; expected `Authorization: Bearer <token>`".into(),
            )
        }
        (Some(_), Some(_)) => return Err("more than one Authorization header".into()),
    };
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not visible ASCII".to_owned())?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization scheme must be Bearer".into());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err("the Bearer token is empty".into());
    }
    Ok(token)
}
