//! A postal address, shared by orders (where to ship) and shipments.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{validate_country, validate_text, Violations, MAX_TEXT_CHARS};

/// A shipping address. Every field is non-blank and at most 200 characters;
/// `country` is an ISO 3166-1 alpha-2 code (2 upper-case letters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Recipient name.
    pub name: String,
    /// Street and number.
    pub line1: String,
    /// City or town.
    pub city: String,
    /// Postal code, in the destination country's format.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code, e.g. "DE".
    pub country: String,
}

impl Address {
    /// Records every invalid field under `path` (e.g. `"shipping_address"`
    /// gives `"shipping_address.country"`) into `violations`.
    pub fn validate(&self, path: &str, violations: &mut Violations) {
        let fields = [
            ("name", &self.name),
            ("line1", &self.line1),
            ("city", &self.city),
            ("postal_code", &self.postal_code),
        ];
        for (field, value) in fields {
            violations.check(
                format!("{path}.{field}"),
                validate_text(value, MAX_TEXT_CHARS),
            );
        }
        violations.check(format!("{path}.country"), validate_country(&self.country));
    }
}
