//! Query strings checked by hand, so that every mistake is a problem+json
//! naming the parameter (axum's `Query` rejects in plain text).
//!
//! The rules every query route shares:
//! - a parameter the route does not take, or one given twice, is 422;
//! - an empty value (`status=`) counts as absent, so a client may send the
//!   template `?status=&limit=&cursor=` as is;
//! - a value that does not parse is 422 with a field error naming it;
//! - a query string that does not decode at all is 400.
//!
//! Every problem of one request is listed in one 422.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use chrono::NaiveDate;

use crate::error::{ApiError, FieldError};

/// The parameter every query takes: wait until the read model has this
/// global position (read-your-writes).
pub const MIN_POSITION: &str = "min_position";

/// The decoded `name=value` pairs of a request's query string, in order.
/// Never rejects a well-formed query string; checking is [`Params::check`].
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::BadRequest(format!("malformed query string: {}", e.body_text()))
            })?;
        Ok(Params(pairs))
    }
}

impl Params {
    /// Starts checking the query of a route that takes `allowed` (and
    /// [`MIN_POSITION`], which every query takes): records each unknown or
    /// repeated parameter, and parses `min_position`.
    pub fn check(&self, allowed: &[&str]) -> Checked<'_> {
        let mut checked = self.check_only(allowed, true);
        checked.min_position = checked.get(MIN_POSITION, parse_min_position);
        checked
    }

    /// Like [`Params::check`], for a route that reads no read model and so
    /// takes only `allowed` (`min_position` is unknown to it).
    pub fn check_exact(&self, allowed: &[&str]) -> Checked<'_> {
        self.check_only(allowed, false)
    }

    fn check_only(&self, allowed: &[&str], with_min_position: bool) -> Checked<'_> {
        let mut takes: Vec<&str> = allowed.to_vec();
        if with_min_position {
            takes.push(MIN_POSITION);
        }
        let mut errors = Vec::new();
        for (i, (name, _)) in self.0.iter().enumerate() {
            if !takes.contains(&name.as_str()) {
                errors.push(field_error(
                    name,
                    format!(
                        "unknown query parameter; this route takes {}",
                        takes.join(", ")
                    ),
                ));
            } else if self.0[..i].iter().any(|(earlier, _)| earlier == name) {
                errors.push(field_error(name, "given more than once"));
            }
        }
        Checked {
            params: self,
            errors,
            min_position: None,
        }
    }
}

/// A query being checked: values parsed so far and every problem found.
#[derive(Debug)]
pub struct Checked<'a> {
    params: &'a Params,
    errors: Vec<FieldError>,
    min_position: Option<i64>,
}

impl Checked<'_> {
    /// The value of `name` read by `parse`; `None` when absent or empty, or
    /// when `parse` refuses it (its message is then recorded for `name`).
    pub fn get<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (_, value) = self.params.0.iter().find(|(n, _)| n == name)?;
        if value.is_empty() {
            return None;
        }
        parse(value)
            .map_err(|message| self.errors.push(field_error(name, message)))
            .ok()
    }

    /// Records a problem with `field` (for rules across parameters).
    pub fn reject(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(field_error(field, message));
    }

    /// The `min_position` asked for (if any) when nothing was wrong; else
    /// 422 listing every field error.
    pub fn finish(self) -> Result<Option<i64>, ApiError> {
        if self.errors.is_empty() {
            return Ok(self.min_position);
        }
        Err(ApiError::Unprocessable {
            detail: "the query string has invalid parameters".into(),
            errors: self.errors,
        })
    }
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// `min_position`: an integer, 0 or more (a `position` from a write answer).
pub fn parse_min_position(value: &str) -> Result<i64, String> {
    value
        .parse::<i64>()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(|| "must be an integer of 0 or more (a write's position)".to_owned())
}

/// A page size: an integer from 1 to `max`.
pub fn parse_limit(value: &str, max: i64) -> Result<i64, String> {
    value
        .parse::<i64>()
        .ok()
        .filter(|l| (1..=max).contains(l))
        .ok_or_else(|| format!("must be an integer from 1 to {max}"))
}

/// A calendar day written exactly `YYYY-MM-DD`.
pub fn parse_day(value: &str) -> Result<NaiveDate, String> {
    let shaped = value.len() == 10
        && value.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    shaped
        .then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| "must be a date written YYYY-MM-DD".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn fields(result: Result<Option<i64>, ApiError>) -> Vec<String> {
        match result {
            Err(ApiError::Unprocessable { errors, .. }) => {
                errors.into_iter().map(|e| e.field).collect()
            }
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_each_named() {
        let p = params(&[("limit", "1"), ("foo", "x"), ("limit", "2")]);
        assert_eq!(fields(p.check(&["limit"]).finish()), ["foo", "limit"]);
    }

    #[test]
    fn min_position_is_taken_everywhere_and_must_be_a_natural_number() {
        assert_eq!(
            params(&[("min_position", "7")]).check(&[]).finish().ok(),
            Some(Some(7))
        );
        assert_eq!(
            params(&[("min_position", "")]).check(&[]).finish().ok(),
            Some(None)
        );
        for bad in ["-1", "x", "1.5", "99999999999999999999"] {
            let p = params(&[("min_position", bad)]);
            assert_eq!(fields(p.check(&[]).finish()), ["min_position"], "{bad}");
        }
    }

    #[test]
    fn an_empty_value_counts_as_absent() {
        let p = params(&[("limit", "")]);
        let mut checked = p.check(&["limit"]);
        assert_eq!(checked.get("limit", |v| parse_limit(v, 500)), None);
        assert!(checked.finish().is_ok());
    }

    #[test]
    fn limits_and_days_are_checked_strictly() {
        assert_eq!(parse_limit("500", 500), Ok(500));
        assert!(parse_limit("0", 500).is_err());
        assert!(parse_limit("501", 500).is_err());
        assert!(parse_limit(" 5", 500).is_err());
        assert_eq!(
            parse_day("2026-02-28").ok(),
            NaiveDate::from_ymd_opt(2026, 2, 28)
        );
        for bad in [
            "2026-02-30",
            "2026-2-28",
            "+2026-02-28",
            "20260228",
            "2026-02-28T00",
        ] {
            assert!(parse_day(bad).is_err(), "{bad}");
        }
    }
}
