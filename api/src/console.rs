//! The operator console at `/console`: one HTML page, its script and its
//! style sheet, embedded in the binary (no CDN, no build step; the files
//! live in `api/console/`). The page is a client of `/api/v1` like any
//! other: it holds a bearer token in the tab's session storage and every
//! read or action it makes is an API call that checks that token's role.
//!
//! Under `serve --dev` the page offers a development sign-in that picks a
//! role: `POST /console/dev-sign-in` mints a token with the development
//! secret (which is public anyway). Without `--dev` that route is a 404
//! and the page asks for a token.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::startup::AppState;

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

/// What the page may load and talk to: only this server. A page that tried
/// to reach a CDN would fail here too, not only offline.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The console's routes (merged into the server's router by
/// [`crate::routes::router`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(index))
        .route(
            "/console/",
            get(|| async { Redirect::permanent("/console") }),
        )
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
        .route("/console/dev-sign-in", post(dev_sign_in))
}

/// The page; `data-dev` tells the script whether to offer the development
/// sign-in (the `--dev` copy is made once).
async fn index(State(state): State<AppState>) -> Response {
    static DEV_INDEX: LazyLock<String> =
        LazyLock::new(|| INDEX.replace("data-dev=\"false\"", "data-dev=\"true\""));
    let page: &'static str = if state.auth.is_dev() {
        &DEV_INDEX
    } else {
        INDEX
    };
    asset("text/html; charset=utf-8", page)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The assets change with the binary; revalidating is cheap on loopback.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The body of a development sign-in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevSignIn {
    /// The role to act as.
    role: Role,
    /// The user id (`sub`); `dev-<role>` when absent.
    name: Option<String>,
}

/// A development sign-in's answer.
#[derive(Debug, Serialize)]
pub struct DevToken {
    /// The bearer token.
    token: String,
    /// Its subject.
    sub: String,
    /// Its role.
    role: Role,
}

/// `POST /console/dev-sign-in` `{"role","name"}` (no token; `--dev` only):
/// a development token. 404 unless the server runs with `--dev`; 422 for
/// an unknown role or a name that is empty, over 64 characters, or holds
/// control characters.
async fn dev_sign_in(
    State(state): State<AppState>,
    body: Result<ApiJson<DevSignIn>, ApiError>,
) -> Result<Json<DevToken>, ApiError> {
    if !state.auth.is_dev() {
        return Err(ApiError::NotFound(
            "the development sign-in exists only under `serve --dev`".into(),
        ));
    }
    let DevSignIn { role, name } = body?.value;
    let sub = name.unwrap_or_else(|| format!("dev-{role}"));
    let sub = sub.trim().to_owned();
    if sub.is_empty() || sub.chars().count() > 64 || sub.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 64 characters, none of them control characters",
        ));
    }
    let token = state
        .auth
        .mint_dev(&sub, role)
        .ok_or_else(|| ApiError::NotFound("no development sign-in".into()))?
        .map_err(|error| ApiError::Internal(error.into()))?;
    Ok(Json(DevToken { token, sub, role }))
}
