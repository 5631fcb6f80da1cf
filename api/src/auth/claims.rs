//! What a token says about its bearer.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A caller's role, serialized lowercase: `customer`, `operator`, `admin`.
///
/// A customer sees only their own orders; audit and admin endpoints need
/// `operator` or `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Places and follows their own orders.
    Customer,
    /// Staff: reads every order, searches the audit log.
    Operator,
    /// Staff with administrative rights (projections, products).
    Admin,
}

impl Role {
    /// The wire name (`customer`, `operator`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims Fulcrum issues and requires: `sub`, `role`, `exp`, `iss`, `aud`
/// (plus `iat`, and `nbf` honoured when present). Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id of the bearer; never empty in a verified token.
    pub sub: String,
    /// The bearer's role.
    pub role: Role,
    /// Expiry.
    pub exp: i64,
    /// Issue time; 0 when a verified token carries none.
    #[serde(default)]
    pub iat: i64,
    /// Issuer; matches `JWT_ISSUER` in a verified token.
    pub iss: String,
    /// Audience; matches `JWT_AUDIENCE` in a verified token.
    pub aud: String,
    /// Not-before time, when the token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}
