//! Minting development tokens, and reading the TTLs they are minted for.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::claims::{Claims, Role};
use super::verify::AuthError;

/// Mints an HS256 token for `sub` with `role`, issued now and expiring after
/// `ttl` (whole seconds; a sub-second remainder is dropped), with the given
/// `iss` and `aud`. Used by `fulcrum token` and by tests and benchmarks.
///
/// It does not check the secret's length: a server refuses short secrets at
/// start-up, so a token minted with one verifies nowhere.
pub fn mint_hs256(
    secret: &[u8],
    sub: &str,
    role: Role,
    ttl: Duration,
    issuer: &str,
    audience: &str,
) -> Result<String, AuthError> {
    let now = i64::try_from(jsonwebtoken::get_current_timestamp())
        .map_err(|_| AuthError::Mint("the clock is beyond the representable time".into()))?;
    let exp = i64::try_from(ttl.as_secs())
        .ok()
        .and_then(|ttl| now.checked_add(ttl))
        .ok_or_else(|| AuthError::Mint("the TTL is too large".into()))?;
    let claims = Claims {
        sub: sub.to_owned(),
        role,
        exp,
        iat: now,
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        nbf: None,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|error| AuthError::Mint(error.to_string()))
}

/// Parses a positive TTL such as `30s`, `15m`, `1h` or `7d` (an integer and
/// one unit among s, m, h, d) for `fulcrum token --ttl`. The error says what
/// is wrong, for the CLI to print.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let unit_at = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("TTL `{s}` has no unit; use s, m, h or d, e.g. `15m`"))?;
    let (digits, unit) = s.split_at(unit_at);
    if digits.is_empty() {
        return Err(format!("TTL `{s}` must start with a number, e.g. `15m`"));
    }
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(format!("TTL `{s}` has an unknown unit; use s, m, h or d")),
    };
    let secs = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_secs))
        .ok_or_else(|| format!("TTL `{s}` is too large"))?;
    if secs == 0 {
        return Err("TTL must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}
