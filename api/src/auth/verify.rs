//! Token verification with one pinned algorithm.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::claims::{Claims, Role};
use super::config::{AuthConfigError, JwtConfig, KeyChoice};

/// Clock skew tolerated on `exp` and `nbf`, in seconds: a token stays valid
/// this long past its expiry, and is accepted this long before its `nbf`.
pub const CLOCK_LEEWAY_SECS: u64 = 5;

/// Why a token was refused. Messages are safe to show the client: they never
/// contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not three base64url segments of JSON, or claims of the wrong type.
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than the one this server pins
    /// (including `none`, and HS256 on an RS256 server).
    #[error("token algorithm `{found}` is not accepted; this server requires {expected}")]
    BadAlgorithm {
        /// The header's `alg`, or `missing`/`unrecognised`.
        found: String,
        /// The pinned algorithm.
        expected: &'static str,
    },
    /// The signature does not match the configured key.
    #[error("the token signature is invalid")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `exp` is further in the future than the longest lifetime accepted
    /// (`JWT_MAX_TTL`).
    #[error("the token lives longer than this server accepts")]
    TooLongLived,
    /// `sub` holds control characters (NUL, newlines, ...).
    #[error("the token's `sub` claim holds control characters")]
    BadSubject,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the token has the wrong issuer")]
    WrongIssuer,
    /// `aud` is not the configured audience.
    #[error("the token has the wrong audience")]
    WrongAudience,
    /// A required claim (`sub`, `exp`, `iss`, `aud`) is absent or empty.
    #[error("the token lacks the required claim `{0}`")]
    MissingClaim(String),
    /// No `role` claim.
    #[error("the token has no `role` claim")]
    MissingRole,
    /// A `role` other than `customer`, `operator`, `admin`.
    #[error("the token role is not one of customer, operator, admin")]
    UnknownRole,
    /// Minting failed (a TTL beyond the representable time, or encoding).
    #[error("could not mint a token: {0}")]
    Mint(String),
}

/// How long a development sign-in's token lives.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(8 * 3600);

/// Verifies bearer tokens against one pinned algorithm (HS256 or RS256, never
/// both): signature, `exp` and `nbf` (with [`CLOCK_LEEWAY_SECS`] of leeway),
/// `iss`, `aud`, and a known `role`. `alg: none` and HS/RS confusion are
/// refused. Cheap to share: wrap it in an `Arc` in the router state.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    algorithm: &'static str,
    dev: bool,
    /// `JWT_ISSUER` and `JWT_AUDIENCE`, for development tokens.
    issuer: String,
    audience: String,
    /// `JWT_MAX_TTL` in seconds.
    max_ttl_secs: i64,
    /// Requests per second per subject (off unless
    /// [`Authenticator::with_rate_limit`]).
    subjects: crate::ratelimit::SubjectLimit,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the verifier the settings describe: RS256 when a public key is
    /// set, else HS256 with `JWT_SECRET`, else (with `--dev` only) HS256 with
    /// [`DEV_SECRET`](super::DEV_SECRET); then [`Authenticator::is_dev`] is true
    /// and the caller should warn loudly (`fulcrum serve` does).
    pub fn from_config(config: &JwtConfig) -> Result<Authenticator, AuthConfigError> {
        let (algorithm, key, dev) = match config.key_choice()? {
            KeyChoice::Rs256(pem) => (Algorithm::RS256, rsa_public_key(&pem)?, false),
            KeyChoice::Hs256 { secret, dev } => {
                (Algorithm::HS256, DecodingKey::from_secret(secret), dev)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_audience(&[&config.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = CLOCK_LEEWAY_SECS;
        let algorithm = match algorithm {
            Algorithm::RS256 => "RS256",
            _ => "HS256",
        };
        Ok(Authenticator {
            key,
            validation,
            algorithm,
            dev,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            max_ttl_secs: i64::try_from(config.jwt_max_ttl.as_secs()).unwrap_or(i64::MAX),
            subjects: crate::ratelimit::Limit::per_second(0),
        })
    }

    /// Verifies `token` (without the `Bearer ` prefix) and returns its claims.
    /// The signature is checked before any claim.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)
            .map_err(|error| self.classify(token, &error))?;
        let claims = data.claims.into_claims(self.validation.aud.as_ref())?;
        let latest = jsonwebtoken::get_current_timestamp()
            .try_into()
            .unwrap_or(i64::MAX)
            .saturating_add(self.max_ttl_secs)
            .saturating_add(CLOCK_LEEWAY_SECS as i64);
        if claims.exp > latest {
            return Err(AuthError::TooLongLived);
        }
        Ok(claims)
    }

    /// This verifier, admitting at most `per_second` requests per second
    /// per token subject (burst as many; 0: no limit).
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.subjects = crate::ratelimit::Limit::per_second(per_second);
        self
    }

    /// Admits one request of verified subject `sub`, or answers 429.
    pub fn admit(&self, sub: &str) -> Result<(), crate::error::ApiError> {
        self.subjects.check(&sub.to_owned())
    }

    /// True when running on the built-in development secret.
    pub fn is_dev(&self) -> bool {
        self.dev
    }

    /// Under `--dev` only, a token for `sub` with `role` signed with the
    /// development secret, valid for [`DEV_TOKEN_TTL`] (or `JWT_MAX_TTL` if
    /// shorter): the console's development sign-in. `None` otherwise.
    pub fn mint_dev(&self, sub: &str, role: Role) -> Option<Result<String, AuthError>> {
        let max = Duration::from_secs(u64::try_from(self.max_ttl_secs).unwrap_or(0));
        self.dev.then(|| {
            super::mint_hs256(
                super::DEV_SECRET.as_bytes(),
                sub,
                role,
                DEV_TOKEN_TTL.min(max),
                &self.issuer,
                &self.audience,
            )
        })
    }

    fn classify(&self, token: &str, error: &JwtError) -> AuthError {
        match error.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
            ErrorKind::InvalidSignature | ErrorKind::InvalidRsaKey(_) | ErrorKind::Crypto(_) => {
                AuthError::BadSignature
            }
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::InvalidAlgorithmName => self.bad_algorithm(token),
            ErrorKind::InvalidToken => AuthError::Malformed("expected header.payload.signature"),
            ErrorKind::Base64(_) => AuthError::Malformed("a segment is not valid base64url"),
            ErrorKind::Utf8(_) => AuthError::Malformed("a segment is not UTF-8"),
            // jsonwebtoken cannot parse a header whose `alg` it does not know
            // (`none` among them); say which algorithm it was.
            ErrorKind::Json(_) if jsonwebtoken::decode_header(token).is_err() => {
                match header_alg(token) {
                    Some(alg) if alg != self.algorithm => self.bad_algorithm(token),
                    _ => AuthError::Malformed("the header is not a valid JWT header"),
                }
            }
            ErrorKind::Json(_) => AuthError::Malformed("the claims do not have the expected types"),
            _ => AuthError::Malformed("the token could not be read"),
        }
    }

    fn bad_algorithm(&self, token: &str) -> AuthError {
        let found = match header_alg(token) {
            // Echo only what is plainly an algorithm name.
            Some(alg) if alg.len() <= 16 && alg.bytes().all(|b| b.is_ascii_alphanumeric()) => alg,
            Some(_) => "unrecognised".to_owned(),
            None => "missing".to_owned(),
        };
        AuthError::BadAlgorithm {
            found,
            expected: self.algorithm,
        }
    }
}

fn rsa_public_key(pem: &str) -> Result<DecodingKey, AuthConfigError> {
    // A private key would parse too, then fail every verification at run time.
    if !pem.contains("-----BEGIN PUBLIC KEY-----")
        && !pem.contains("-----BEGIN RSA PUBLIC KEY-----")
    {
        return Err(AuthConfigError::InvalidPublicKey(
            "expected a `BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY` PEM block".into(),
        ));
    }
    DecodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|error| AuthConfigError::InvalidPublicKey(error.to_string()))
}

/// The claims as they arrive. jsonwebtoken deserializes them before it
/// validates, so every field is optional here: a missing claim is then
/// reported as such by the validation, not as a type error.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    role: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    nbf: Option<i64>,
}

/// `aud` as RFC 7519 allows it: one string, or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl RawClaims {
    /// The claims of a verified token; `accepted` are the audiences the
    /// validation accepts (an array `aud` holds one of them).
    fn into_claims(self, accepted: Option<&HashSet<String>>) -> Result<Claims, AuthError> {
        let required = |claim: Option<String>, name: &str| {
            claim
                .filter(|value| !value.is_empty())
                .ok_or_else(|| AuthError::MissingClaim(name.into()))
        };
        let role = match self.role {
            None => return Err(AuthError::MissingRole),
            Some(value) => {
                serde_json::from_value::<Role>(value).map_err(|_| AuthError::UnknownRole)?
            }
        };
        let sub = required(self.sub, "sub")?;
        if sub.chars().any(char::is_control) {
            return Err(AuthError::BadSubject);
        }
        Ok(Claims {
            sub,
            role,
            exp: self
                .exp
                .ok_or_else(|| AuthError::MissingClaim("exp".into()))?,
            iat: self.iat.unwrap_or(0),
            iss: required(self.iss, "iss")?,
            aud: required(
                self.aud.and_then(|aud| match aud {
                    Audience::One(aud) => Some(aud),
                    Audience::Many(list) => list
                        .into_iter()
                        .find(|aud| accepted.is_some_and(|accepted| accepted.contains(aud))),
                }),
                "aud",
            )?,
            nbf: self.nbf,
        })
    }
}

/// The header's `alg` as text, read without trusting anything else in it.
fn header_alg(token: &str) -> Option<String> {
    let header = base64url_decode(token.split('.').next()?)?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

/// Unpadded (or padded) base64url, as JWT segments use; `None` on any other
/// character. Only used to describe a refusal, never to accept a token.
fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in input.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
