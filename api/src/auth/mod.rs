//! Bearer-token authentication: JWT configuration, verification, minting,
//! and the [`Caller`] extractor that every `/api/v1` handler takes.
//!
//! One algorithm is pinned per server: HS256 with `JWT_SECRET` (at least 32
//! bytes) by default, or RS256 when `JWT_PUBLIC_KEY_PEM` is set. Tokens must
//! carry `sub`, `role`, `exp`, `iss` and `aud`; `nbf` is honoured when present.
//! Every verification failure becomes a 401, a wrong role a 403, both as
//! problem+json through [`crate::error::ApiError`].

mod admitted;
mod caller;
mod claims;
mod config;
mod mint;
mod verify;

pub use admitted::{Admins, Admitted, Anyone, Customers, Roles, Staff};
pub use caller::Caller;
pub use claims::{Claims, Role};
pub use config::{AuthConfigError, JwtConfig, DEFAULT_MAX_TTL, DEV_SECRET, MIN_SECRET_LEN};
pub use mint::{mint_hs256, parse_ttl};
pub use verify::{AuthError, Authenticator, CLOCK_LEEWAY_SECS};
