//! JWT settings from the environment, and the start-up checks on them.

use std::fmt;
use std::time::Duration;

/// Shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the
/// hash size).
pub const MIN_SECRET_LEN: usize = 32;

/// The development secret used by `--dev` when no key is configured. It is
/// public knowledge: anyone can mint tokens for a server running on it, so it
/// is for local use only.
pub const DEV_SECRET: &str = "fulcrum-development-secret-not-for-production-use";

/// The default longest token lifetime accepted (`JWT_MAX_TTL`): 24 hours.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// JWT settings from the environment (or flags).
///
/// An empty `JWT_SECRET` or `JWT_PUBLIC_KEY_PEM` counts as unset. `Debug`
/// redacts the secret, so the struct may be logged.
#[derive(Clone, clap::Args)]
pub struct JwtConfig {
    /// HS256 secret, at least 32 bytes. Never logged; prefer the environment
    /// variable over the flag, which other local users can see.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// RS256 public key, PEM text (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC
    /// KEY`; literal `\n` escapes are accepted). When set, tokens must be
    /// RS256 and JWT_SECRET is not used for verification.
    #[arg(long, env = "JWT_PUBLIC_KEY_PEM", hide_env_values = true)]
    pub jwt_public_key_pem: Option<String>,

    /// Expected `iss` claim.
    #[arg(long, env = "JWT_ISSUER", default_value = "fulcrum")]
    pub jwt_issuer: String,

    /// Expected `aud` claim.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "fulcrum-api")]
    pub jwt_audience: String,

    /// Longest token lifetime accepted (e.g. `24h`, `30m`): a token whose
    /// `exp` is further in the future than this is refused (401), so no
    /// token lives forever.
    #[arg(long, env = "JWT_MAX_TTL", default_value = "24h", value_parser = super::mint::parse_ttl)]
    pub jwt_max_ttl: Duration,

    /// With neither key configured, use a fixed, well-known development
    /// secret and log a loud warning at every start-up. Without --dev and
    /// with no key, start-up fails.
    #[arg(long)]
    pub dev: bool,
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "jwt_public_key_pem",
                &self.jwt_public_key_pem.as_ref().map(|_| "<pem>"),
            )
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_max_ttl", &self.jwt_max_ttl)
            .field("dev", &self.dev)
            .finish()
    }
}

/// Why the JWT settings cannot be used; start-up stops on any of these.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// Neither `JWT_SECRET` nor `JWT_PUBLIC_KEY_PEM` is set, and no `--dev`.
    #[error(
        "no JWT key configured: set JWT_SECRET (HS256, at least {MIN_SECRET_LEN} bytes) \
         or JWT_PUBLIC_KEY_PEM (RS256), or pass --dev to use the development secret"
    )]
    NoKey,
    /// `JWT_SECRET` is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error(
        "JWT_SECRET is {len} bytes long; an HS256 secret must be at least {MIN_SECRET_LEN} bytes"
    )]
    SecretTooShort {
        /// Length of the configured secret, in bytes.
        len: usize,
    },
    /// `JWT_PUBLIC_KEY_PEM` is not an RSA public key in PEM form.
    #[error("JWT_PUBLIC_KEY_PEM is not a usable RSA public key: {0}")]
    InvalidPublicKey(String),
    /// Tokens cannot be minted: the server verifies RS256 and holds no private key.
    #[error(
        "JWT_PUBLIC_KEY_PEM is set, so the server expects RS256 tokens, which Fulcrum cannot mint"
    )]
    NoSigningSecret,
}

/// The key the settings select.
pub(super) enum KeyChoice<'a> {
    /// RS256 with this public key PEM (escapes already expanded).
    Rs256(String),
    /// HS256 with this secret; `dev` when it is [`DEV_SECRET`].
    Hs256 { secret: &'a [u8], dev: bool },
}

impl JwtConfig {
    /// The HS256 secret tokens for this server are minted with: `JWT_SECRET`,
    /// or [`DEV_SECRET`] under `--dev` with no key configured.
    ///
    /// Fails as start-up would, and with [`AuthConfigError::NoSigningSecret`]
    /// when the server is configured for RS256.
    pub fn hs256_secret(&self) -> Result<&[u8], AuthConfigError> {
        match self.key_choice()? {
            KeyChoice::Hs256 { secret, .. } => Ok(secret),
            KeyChoice::Rs256(_) => Err(AuthConfigError::NoSigningSecret),
        }
    }

    /// Chooses the key. A configured secret is length-checked even when the
    /// public key wins, so a weak secret never goes unnoticed.
    pub(super) fn key_choice(&self) -> Result<KeyChoice<'_>, AuthConfigError> {
        let secret = self.jwt_secret.as_deref().filter(|s| !s.is_empty());
        if let Some(secret) = secret {
            if secret.len() < MIN_SECRET_LEN {
                return Err(AuthConfigError::SecretTooShort { len: secret.len() });
            }
        }
        let pem = self
            .jwt_public_key_pem
            .as_deref()
            .filter(|p| !p.trim().is_empty());
        match (pem, secret) {
            (Some(pem), _) => Ok(KeyChoice::Rs256(expand_newline_escapes(pem))),
            (None, Some(secret)) => Ok(KeyChoice::Hs256 {
                secret: secret.as_bytes(),
                dev: false,
            }),
            (None, None) if self.dev => Ok(KeyChoice::Hs256 {
                secret: DEV_SECRET.as_bytes(),
                dev: true,
            }),
            (None, None) => Err(AuthConfigError::NoKey),
        }
    }
}

/// A PEM squeezed into one line of an env file arrives with literal `\n`.
fn expand_newline_escapes(pem: &str) -> String {
    if pem.contains('\n') {
        pem.to_owned()
    } else {
        pem.replace("\\n", "\n")
    }
}
