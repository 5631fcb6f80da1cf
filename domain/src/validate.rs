//! Input validation helpers shared by the aggregates and the HTTP layer.
//!
//! Each `validate_*` function checks one value and answers with a
//! human-readable message on failure; [`Violations`] collects those messages
//! under JSON-path field names and turns them into [`DomainError::Invalid`].

use crate::{DomainError, FieldError};

/// Longest free-text value (names, address lines, ...) accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 200;

/// Longest SKU accepted, in characters.
const MAX_SKU_CHARS: usize = 64;

/// Checks a SKU: 1 to 64 characters, each an ASCII letter, digit, `_` or `-`.
pub fn validate_sku(sku: &str) -> Result<(), String> {
    let well_formed = !sku.is_empty()
        && sku.len() <= MAX_SKU_CHARS
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to {MAX_SKU_CHARS} characters of A-Z, a-z, 0-9, '_' or '-'"
        ))
    }
}

/// Checks that a currency has the shape of an ISO 4217 code: exactly three
/// upper-case ASCII letters. Whether the code is actually assigned is not
/// checked.
pub fn validate_currency(currency: &str) -> Result<(), String> {
    exactly_upper_letters(currency, 3)
        .then_some(())
        .ok_or_else(|| "must be an ISO 4217 code of 3 upper-case letters".to_owned())
}

/// Checks that a country has the shape of an ISO 3166-1 alpha-2 code: exactly
/// two upper-case ASCII letters.
pub fn validate_country(country: &str) -> Result<(), String> {
    exactly_upper_letters(country, 2)
        .then_some(())
        .ok_or_else(|| "must be an ISO 3166-1 code of 2 upper-case letters".to_owned())
}

/// Checks free text: not blank once trimmed, and at most `max_chars`
/// characters (counted as Unicode scalar values, untrimmed).
pub fn validate_text(value: &str, max_chars: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        Err("must not be blank".to_owned())
    } else if value.chars().count() > max_chars {
        Err(format!("must be at most {max_chars} characters"))
    } else {
        Ok(())
    }
}

/// Checks a money amount or quantity that must be strictly positive.
pub fn validate_positive_amount(amount: i64) -> Result<(), String> {
    if amount > 0 {
        Ok(())
    } else {
        Err("must be greater than zero".to_owned())
    }
}

fn exactly_upper_letters(value: &str, len: usize) -> bool {
    value.len() == len && value.bytes().all(|b| b.is_ascii_uppercase())
}

/// Collects field errors while a command is validated, so that a client learns
/// about every invalid value at once rather than one per request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Violations {
    errors: Vec<FieldError>,
}

impl Violations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `outcome`'s message under `field` if it is an error.
    pub fn check(&mut self, field: impl Into<String>, outcome: Result<(), String>) {
        if let Err(message) = outcome {
            self.add(field, message);
        }
    }

    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The recorded field errors, in the order they were found.
    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }

    /// `Ok(())` when nothing was recorded, otherwise [`DomainError::Invalid`]
    /// with every recorded field error.
    pub fn into_result(self) -> Result<(), DomainError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Invalid(self.errors))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_sku_of_letters_digits_dashes_and_underscores_is_valid() {
        assert!(validate_sku("ABC-123_x").is_ok());
        assert!(validate_sku(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn an_empty_overlong_or_spaced_sku_is_invalid() {
        assert!(validate_sku("").is_err());
        assert!(validate_sku(&"a".repeat(65)).is_err());
        assert!(validate_sku("AB C").is_err());
        assert!(validate_sku("ÄBC").is_err());
    }

    #[test]
    fn a_currency_must_be_three_upper_case_letters() {
        assert!(validate_currency("EUR").is_ok());
        for bad in ["eur", "EU", "EURO", "E1R", ""] {
            assert!(validate_currency(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_country_must_be_two_upper_case_letters() {
        assert!(validate_country("DE").is_ok());
        for bad in ["de", "D", "DEU", "D1", ""] {
            assert!(validate_country(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn text_must_not_be_blank_nor_too_long() {
        assert!(validate_text("Ada", 200).is_ok());
        assert!(validate_text("   ", 200).is_err());
        assert!(validate_text(&"é".repeat(200), 200).is_ok());
        assert!(validate_text(&"é".repeat(201), 200).is_err());
    }

    #[test]
    fn violations_become_an_invalid_error_listing_every_field() {
        let mut violations = Violations::new();
        violations.check("sku", validate_sku(""));
        violations.check("currency", validate_currency("EUR"));
        violations.add("unit_price", "must be greater than zero");
        let error = violations.into_result().unwrap_err();
        let DomainError::Invalid(fields) = error else {
            panic!("expected Invalid, got {error:?}");
        };
        let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, ["sku", "unit_price"]);
    }
}
