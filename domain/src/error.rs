//! The errors a decision can end in, shaped for the HTTP layer's status codes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why `decide` refused a command. Each variant maps to one HTTP status; the
/// message is safe to show to clients (it never carries internals).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// One or more invalid input values (HTTP 422). Field names are JSON paths
    /// into the request, such as `"lines[2].quantity"`.
    #[error("invalid input: {0:?}")]
    Invalid(Vec<FieldError>),
    /// The current state forbids this (HTTP 409): already exists, forbidden
    /// transition, capture twice, ...
    #[error("{0}")]
    Conflict(String),
    /// The aggregate does not exist (HTTP 404), e.g. shipping an order never
    /// placed. The payload names what is missing ("order", "shipment", ...).
    #[error("{0} not found")]
    NotFound(String),
}

impl DomainError {
    /// A [`DomainError::Conflict`] with the given message.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }

    /// A [`DomainError::NotFound`] naming the missing thing.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }

    /// A [`DomainError::Invalid`] holding a single field error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}

/// One invalid input value: where it is (a JSON path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldError {
    /// JSON path of the offending value, e.g. `"shipping_address.country"`.
    pub field: String,
    /// Human-readable reason, e.g. `"must be 2 upper-case letters"`.
    pub message: String,
}

impl FieldError {
    /// A field error for `field` with `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_field_error_serialises_as_field_and_message() {
        let error = FieldError::new("lines[2].quantity", "must be 1 to 1000");
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            serde_json::json!({ "field": "lines[2].quantity", "message": "must be 1 to 1000" })
        );
    }

    #[test]
    fn not_found_reads_as_a_sentence() {
        assert_eq!(
            DomainError::not_found("order").to_string(),
            "order not found"
        );
        assert_eq!(DomainError::conflict("no").to_string(), "no");
    }
}
