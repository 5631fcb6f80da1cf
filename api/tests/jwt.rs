//! Bearer-token authentication through a real HTTP server: which tokens pass
//! the `Caller` extractor, which get a problem+json 401 or 403, and the
//! start-up checks on the JWT settings.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use api::auth::{
    mint_hs256, parse_ttl, AuthConfigError, AuthError, Authenticator, Caller, JwtConfig, Role,
    DEV_SECRET,
};
use api::error::ApiError;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-of-more-than-32-bytes-for-hs256";
const ISSUER: &str = "fulcrum";
const AUDIENCE: &str = "fulcrum-api";

// ---------------------------------------------------------------- helpers

fn config(secret: Option<&str>, public_key_pem: Option<&str>, dev: bool) -> JwtConfig {
    JwtConfig {
        jwt_secret: secret.map(str::to_owned),
        jwt_public_key_pem: public_key_pem.map(str::to_owned),
        jwt_issuer: ISSUER.into(),
        jwt_audience: AUDIENCE.into(),
        jwt_max_ttl: api::auth::DEFAULT_MAX_TTL,
        dev,
    }
}

fn hs256_authenticator() -> Arc<Authenticator> {
    Arc::new(Authenticator::from_config(&config(Some(SECRET), None, false)).unwrap())
}

fn rs256_authenticator() -> Arc<Authenticator> {
    let public = &rsa_key_pair().1;
    Arc::new(Authenticator::from_config(&config(None, Some(public), false)).unwrap())
}

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({ "user_id": caller.user_id, "role": caller.role }))
}

async fn staff_only(caller: Caller) -> Result<&'static str, ApiError> {
    caller.require(&[Role::Operator, Role::Admin])?;
    Ok("welcome, staff")
}

/// Serves a two-route app on a free port and returns its base URL.
async fn spawn_app(authenticator: Arc<Authenticator>) -> String {
    let app = Router::new()
        .route("/whoami", get(whoami))
        .route("/staff", get(staff_only))
        .with_state(authenticator);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// GETs `path` with `Authorization: <authorization>` when given.
async fn call(base: &str, path: &str, authorization: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    request.send().await.unwrap()
}

async fn call_with_token(authenticator: Arc<Authenticator>, token: &str) -> reqwest::Response {
    let base = spawn_app(authenticator).await;
    call(&base, "/whoami", Some(&format!("Bearer {token}"))).await
}

/// Asserts a problem+json answer with `status`, and returns its detail.
async fn assert_problem(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("https://"));
    body["detail"].as_str().unwrap().to_owned()
}

/// Asserts a 401 whose detail mentions `reason` and does not echo `token`.
async fn assert_unauthorized(response: reqwest::Response, token: &str, reason: &str) {
    let detail = assert_problem(response, 401).await;
    assert!(
        detail.contains(reason),
        "detail `{detail}` lacks `{reason}`"
    );
    assert!(
        token.is_empty() || !detail.contains(token),
        "detail echoes the token"
    );
}

fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap()
}

/// Valid claims for a customer, to be spoiled by each test.
fn claims() -> Value {
    json!({
        "sub": "alice",
        "role": "customer",
        "iat": now(),
        "exp": now() + 600,
        "iss": ISSUER,
        "aud": AUDIENCE,
    })
}

fn sign(algorithm: Algorithm, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
}

fn sign_hs256(claims: &Value, secret: &str) -> String {
    sign(
        Algorithm::HS256,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// A 2048-bit RSA key pair (private PKCS#8 PEM, public SPKI PEM), made once
/// per test run with the `openssl` CLI.
fn rsa_key_pair() -> &'static (String, String) {
    static PAIR: OnceLock<(String, String)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let private = openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            b"",
        );
        let public = openssl(&["pkey", "-pubout"], private.as_bytes());
        (private, public)
    })
}

fn openssl(args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the RS256 tests need the `openssl` CLI");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "openssl {args:?} failed");
    String::from_utf8(output.stdout).unwrap()
}

// ---------------------------------------------------------- accepted tokens

async fn assert_accepted(role: Role) {
    let base = spawn_app(hs256_authenticator()).await;
    let token = mint_hs256(
        SECRET.as_bytes(),
        "alice",
        role,
        Duration::from_secs(60),
        ISSUER,
        AUDIENCE,
    )
    .unwrap();

    let response = call(&base, "/whoami", Some(&format!("Bearer {token}"))).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "user_id": "alice", "role": role.as_str() }));
}

#[tokio::test]
async fn a_valid_customer_token_is_accepted() {
    assert_accepted(Role::Customer).await;
}

#[tokio::test]
async fn a_valid_operator_token_is_accepted() {
    assert_accepted(Role::Operator).await;
}

#[tokio::test]
async fn a_valid_admin_token_is_accepted() {
    assert_accepted(Role::Admin).await;
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_case_insensitively() {
    let base = spawn_app(hs256_authenticator()).await;
    let token = sign_hs256(&claims(), SECRET);

    let response = call(&base, "/whoami", Some(&format!("bearer {token}"))).await;

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_token_expired_within_the_leeway_is_still_accepted() {
    let mut claims = claims();
    claims["exp"] = json!(now() - 1);
    let token = sign_hs256(&claims, SECRET);

    let response = call_with_token(hs256_authenticator(), &token).await;

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_rs256_token_is_accepted_by_a_server_with_the_public_key() {
    let private = EncodingKey::from_rsa_pem(rsa_key_pair().0.as_bytes()).unwrap();
    let token = sign(Algorithm::RS256, &claims(), &private);

    let response = call_with_token(rs256_authenticator(), &token).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user_id"], "alice");
}

// ---------------------------------------------------------- refused requests

#[tokio::test]
async fn a_request_without_an_authorization_header_is_unauthorized() {
    let base = spawn_app(hs256_authenticator()).await;

    let response = call(&base, "/whoami", None).await;

    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_unauthorized(response, "", "missing Authorization header").await;
}

#[tokio::test]
async fn a_non_bearer_scheme_is_unauthorized() {
    let base = spawn_app(hs256_authenticator()).await;

    let response = call(&base, "/whoami", Some("Basic YWxpY2U6c2VjcmV0")).await;

    assert_unauthorized(response, "YWxpY2U6c2VjcmV0", "scheme must be Bearer").await;
}

#[tokio::test]
async fn an_empty_bearer_token_is_unauthorized() {
    let base = spawn_app(hs256_authenticator()).await;

    let response = call(&base, "/whoami", Some("Bearer ")).await;

    assert_unauthorized(response, "", "empty").await;
}

#[tokio::test]
async fn a_garbage_token_is_unauthorized() {
    let token = "this-is-not.a-jwt-at-all";

    let response = call_with_token(hs256_authenticator(), token).await;

    assert_unauthorized(response, token, "not a well-formed JWT").await;
}

#[tokio::test]
async fn an_expired_token_is_unauthorized() {
    let mut claims = claims();
    claims["exp"] = json!(now() - 60);
    let token = sign_hs256(&claims, SECRET);

    let response = call_with_token(hs256_authenticator(), &token).await;

    assert_unauthorized(response, &token, "expired").await;
}

#[tokio::test]
async fn a_token_without_an_expiry_is_unauthorized() {
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove("exp");
    let token = sign_hs256(&claims, SECRET);

    let response = call_with_token(hs256_authenticator(), &token).await;

    assert_unauthorized(response, &token, "`exp`").await;
}

#[tokio::test]
async fn a_token_not_yet_valid_is_unauthorized() {
    let mut claims = claims();
    claims["nbf"] = json!(now() + 3600);
    let token = sign_hs256(&claims, SECRET);

    let response = call_with_token(hs256_authenticator(), &token).await;

    assert_unauthorized(response, &token, "not valid yet").await;
}

#[tokio::test]
async fn a_token_from_another_issuer_is_unauthorized() {
    let mut claims = claims();
    claims["iss"] = json!("someone-else");
    let token = sign_hs256(&claims, SECRET);

    let response = call_with_token(hs256_authenticator(), &token).await;

    assert_unauthorized(response, &token, "wrong issuer").await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_unauthorized() {
    let mut claims = claims();
    claims["aud"] = json!("another-api");
    let token = sign_hs256(&claims, SECRET);

    let response = call_with_token(hs256_authenticator(), &token).await;

    assert_unauthorized(response, &token, "wrong audience").await;
}

#[tokio::test]
async fn an_audience_array_is_accepted_when_it_holds_ours_and_refused_otherwise() {
    let mut ours = claims();
    ours["aud"] = json!(["billing", AUDIENCE]);
    let token = sign_hs256(&ours, SECRET);
    let response = call_with_token(hs256_authenticator(), &token).await;
    assert_eq!(response.status(), 200);

    let mut theirs = claims();
    theirs["aud"] = json!(["billing", "reports"]);
    let token = sign_hs256(&theirs, SECRET);
    let response = call_with_token(hs256_authenticator(), &token).await;
    assert_unauthorized(response, &token, "audience").await;
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_unauthorized() {
    let token = sign_hs256(&claims(), "another-secret-also-longer-than-32-bytes");

    let response = call_with_token(hs256_authenticator(), &token).await;

    assert_unauthorized(response, &token, "signature is invalid").await;
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_unauthorized() {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(claims().to_string().as_bytes());
    let token = format!("{header}.{payload}.");

    let response = call_with_token(hs256_authenticator(), &token).await;

    assert_unauthorized(response, &token, "algorithm `none` is not accepted").await;
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_public_key_is_refused_by_an_rs256_server() {
    let public_pem = &rsa_key_pair().1;
    let token = sign_hs256(&claims(), public_pem);

    let response = call_with_token(rs256_authenticator(), &token).await;

    assert_unauthorized(response, &token, "algorithm `HS256` is not accepted").await;
}

#[tokio::test]
async fn an_rs256_token_is_refused_by_an_hs256_server() {
    let private = EncodingKey::from_rsa_pem(rsa_key_pair().0.as_bytes()).unwrap();
    let token = sign(Algorithm::RS256, &claims(), &private);

    let response = call_with_token(hs256_authenticator(), &token).await;

    assert_unauthorized(response, &token, "algorithm `RS256` is not accepted").await;
}

#[tokio::test]
async fn a_token_without_a_role_is_unauthorized() {
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove("role");
    let token = sign_hs256(&claims, SECRET);

    let response = call_with_token(hs256_authenticator(), &token).await;

    assert_unauthorized(response, &token, "no `role` claim").await;
}

#[tokio::test]
async fn a_token_with_an_unknown_role_is_unauthorized() {
    let mut claims = claims();
    claims["role"] = json!("superuser");
    let token = sign_hs256(&claims, SECRET);

    let response = call_with_token(hs256_authenticator(), &token).await;

    assert_unauthorized(response, &token, "role is not one of").await;
}

// ---------------------------------------------------------------- roles

#[tokio::test]
async fn a_customer_on_an_operator_route_is_forbidden() {
    let base = spawn_app(hs256_authenticator()).await;
    let token = sign_hs256(&claims(), SECRET);

    let response = call(&base, "/staff", Some(&format!("Bearer {token}"))).await;

    let detail = assert_problem(response, 403).await;
    assert!(detail.contains("operator or admin"), "{detail}");
}

#[tokio::test]
async fn operators_and_admins_may_use_an_operator_route() {
    let base = spawn_app(hs256_authenticator()).await;
    for role in [Role::Operator, Role::Admin] {
        let token = mint_hs256(
            SECRET.as_bytes(),
            "bob",
            role,
            Duration::from_secs(60),
            ISSUER,
            AUDIENCE,
        )
        .unwrap();

        let response = call(&base, "/staff", Some(&format!("Bearer {token}"))).await;

        assert_eq!(response.status(), 200, "{role}");
    }
}

#[test]
fn only_operators_and_admins_are_staff() {
    let caller = |role| Caller {
        user_id: "u".into(),
        role,
    };
    assert!(!caller(Role::Customer).is_staff());
    assert!(caller(Role::Operator).is_staff());
    assert!(caller(Role::Admin).is_staff());
}

// ------------------------------------------------------- configuration

#[test]
fn starting_without_a_key_and_without_dev_is_refused() {
    let error = Authenticator::from_config(&config(None, None, false)).unwrap_err();

    assert!(matches!(error, AuthConfigError::NoKey), "{error}");
}

#[test]
fn an_empty_secret_counts_as_no_key() {
    let error = Authenticator::from_config(&config(Some(""), None, false)).unwrap_err();

    assert!(matches!(error, AuthConfigError::NoKey), "{error}");
}

#[test]
fn a_31_byte_secret_is_refused_and_a_32_byte_one_accepted() {
    let short = "x".repeat(31);
    let error = Authenticator::from_config(&config(Some(&short), None, false)).unwrap_err();
    assert!(
        matches!(error, AuthConfigError::SecretTooShort { len: 31 }),
        "{error}"
    );

    let long_enough = "x".repeat(32);
    assert!(Authenticator::from_config(&config(Some(&long_enough), None, false)).is_ok());
}

#[test]
fn dev_mode_without_a_key_runs_on_the_development_secret() {
    let authenticator = Authenticator::from_config(&config(None, None, true)).unwrap();
    let token = mint_hs256(
        DEV_SECRET.as_bytes(),
        "alice",
        Role::Admin,
        Duration::from_secs(60),
        ISSUER,
        AUDIENCE,
    )
    .unwrap();

    assert!(authenticator.is_dev());
    assert_eq!(authenticator.verify(&token).unwrap().role, Role::Admin);
    assert!(DEV_SECRET.len() >= 32);
}

#[test]
fn dev_mode_with_a_configured_secret_uses_that_secret() {
    let authenticator = Authenticator::from_config(&config(Some(SECRET), None, true)).unwrap();
    let dev_token = mint_hs256(
        DEV_SECRET.as_bytes(),
        "alice",
        Role::Admin,
        Duration::from_secs(60),
        ISSUER,
        AUDIENCE,
    )
    .unwrap();

    assert!(!authenticator.is_dev());
    assert_eq!(
        authenticator.verify(&dev_token).unwrap_err(),
        AuthError::BadSignature
    );
}

#[test]
fn an_unparsable_public_key_is_refused() {
    let garbage = "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n";
    let error = Authenticator::from_config(&config(None, Some(garbage), false)).unwrap_err();
    assert!(
        matches!(error, AuthConfigError::InvalidPublicKey(_)),
        "{error}"
    );
}

#[test]
fn a_private_key_given_as_the_public_key_is_refused() {
    let private = &rsa_key_pair().0;
    let error = Authenticator::from_config(&config(None, Some(private), false)).unwrap_err();
    assert!(
        matches!(error, AuthConfigError::InvalidPublicKey(_)),
        "{error}"
    );
}

#[test]
fn a_public_key_with_escaped_newlines_is_accepted() {
    let one_line = rsa_key_pair().1.replace('\n', "\\n");
    assert!(Authenticator::from_config(&config(None, Some(&one_line), false)).is_ok());
}

#[test]
fn the_mint_secret_is_the_configured_one_or_the_dev_one_but_never_under_rs256() {
    assert_eq!(
        config(Some(SECRET), None, false).hs256_secret().unwrap(),
        SECRET.as_bytes()
    );
    assert_eq!(
        config(None, None, true).hs256_secret().unwrap(),
        DEV_SECRET.as_bytes()
    );
    let rs256 = config(None, Some(&rsa_key_pair().1), false);
    assert!(matches!(
        rs256.hs256_secret(),
        Err(AuthConfigError::NoSigningSecret)
    ));
}

#[test]
fn debug_output_never_shows_the_secret() {
    let shown = format!("{:?}", config(Some(SECRET), None, false));
    assert!(!shown.contains(SECRET), "{shown}");
}

#[test]
fn jwt_settings_parse_from_flags() {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        jwt: JwtConfig,
    }
    let cli = Cli::try_parse_from([
        "fulcrum",
        "--dev",
        "--jwt-issuer",
        "me",
        "--jwt-audience",
        "them",
    ])
    .unwrap();

    assert!(cli.jwt.dev);
    assert_eq!(
        (cli.jwt.jwt_issuer.as_str(), cli.jwt.jwt_audience.as_str()),
        ("me", "them")
    );
}

// ----------------------------------------------------------------- TTLs

#[test]
fn parse_ttl_reads_seconds_minutes_hours_and_days() {
    assert_eq!(parse_ttl("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(15 * 60)));
    assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
}

#[test]
fn parse_ttl_refuses_what_it_cannot_read() {
    for bad in [
        "",
        "15",
        "m",
        "1.5h",
        "10w",
        "-1h",
        "0s",
        "1h30m",
        "99999999999999999999d",
    ] {
        assert!(parse_ttl(bad).is_err(), "`{bad}` was accepted");
    }
}

#[test]
fn a_minted_token_expires_after_its_ttl() {
    let authenticator = hs256_authenticator();
    let token = mint_hs256(
        SECRET.as_bytes(),
        "alice",
        Role::Customer,
        Duration::from_secs(3600),
        ISSUER,
        AUDIENCE,
    )
    .unwrap();

    let claims = authenticator.verify(&token).unwrap();

    assert_eq!(claims.exp - claims.iat, 3600);
    assert_eq!(
        (claims.iss.as_str(), claims.aud.as_str()),
        (ISSUER, AUDIENCE)
    );
}

#[tokio::test]
async fn a_token_that_lives_beyond_the_longest_lifetime_is_unauthorized() {
    let mut claims = claims();
    // The year 9999.
    claims["exp"] = json!(253_402_300_799_i64);
    let token = sign_hs256(&claims, SECRET);

    let response = call_with_token(hs256_authenticator(), &token).await;

    assert_unauthorized(response, &token, "lives longer").await;
}

#[tokio::test]
async fn a_subject_with_control_characters_is_unauthorized() {
    for sub in ["a\u{0}b", "alice\nadmin", "tab\there"] {
        let mut claims = claims();
        claims["sub"] = json!(sub);
        let token = sign_hs256(&claims, SECRET);

        let response = call_with_token(hs256_authenticator(), &token).await;

        assert_unauthorized(response, &token, "control characters").await;
    }
}
