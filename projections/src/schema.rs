//! Schema names: checked before they are ever interpolated into SQL.

use crate::ProjectionError;

/// Longest Postgres identifier.
const MAX_SCHEMA_LEN: usize = 63;

/// `schema` double-quoted for SQL, after checking it is
/// `[a-z_][a-z0-9_]*` and at most 63 bytes (so quoting never needs escapes
/// and Postgres never truncates it).
pub(crate) fn quoted(schema: &str) -> Result<String, ProjectionError> {
    let mut bytes = schema.bytes();
    let valid = schema.len() <= MAX_SCHEMA_LEN
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(format!("\"{schema}\""))
    } else {
        Err(ProjectionError::InvalidSchema(schema.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_identifiers_are_accepted_as_schema_names() {
        assert_eq!(quoted("rm_orders").ok().as_deref(), Some("\"rm_orders\""));
        assert!(quoted("_x9").is_ok());
        for bad in [
            "",
            "9x",
            "Rm",
            "rm-orders",
            "rm\"; drop",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(quoted(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
