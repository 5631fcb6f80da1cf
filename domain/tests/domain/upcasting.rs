//! Old schema versions are lifted to the current one on read.

use domain::upcast::{rename_field, upcast, Upcaster};
use domain::*;
use serde_json::json;

#[test]
fn a_v0_product_defined_with_price_loads_as_v1_with_unit_price() {
    let stored_v0 = json!({
        "sku": "MUG-01",
        "name": "Mug",
        "price": 1250,
        "currency": "EUR"
    });
    let event = ProductEvent::from_stored("ProductDefined", 0, stored_v0).unwrap();
    assert_eq!(
        event,
        ProductEvent::ProductDefined {
            sku: "MUG-01".into(),
            name: "Mug".into(),
            unit_price: 1250,
            currency: "EUR".into(),
        }
    );
    assert_eq!(event.schema_version(), 1);
}

#[test]
fn a_v0_product_defined_without_a_price_fails_to_upcast() {
    let stored_v0 = json!({ "sku": "MUG-01", "name": "Mug", "currency": "EUR" });
    let error = ProductEvent::from_stored("ProductDefined", 0, stored_v0).unwrap_err();
    assert!(
        matches!(
            error,
            EventDecodeError::Upcast {
                from_version: 0,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_v1_payload_is_not_upcast_again() {
    let stored_v1 = json!({
        "sku": "MUG-01",
        "name": "Mug",
        "unit_price": 1250,
        "currency": "EUR"
    });
    assert!(ProductEvent::from_stored("ProductDefined", 1, stored_v1).is_ok());
}

#[test]
fn an_old_version_without_an_upcaster_is_a_decode_error() {
    let data = json!({ "sku": "MUG-01", "unit_price": 990 });
    let error = ProductEvent::from_stored("ProductPriceChanged", 0, data).unwrap_err();
    assert!(
        matches!(
            error,
            EventDecodeError::MissingUpcaster {
                from_version: 0,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_version_newer_than_the_code_is_a_decode_error() {
    let data = product_defined_v1();
    let error = ProductEvent::from_stored("ProductDefined", 2, data).unwrap_err();
    assert!(
        matches!(
            error,
            EventDecodeError::UnsupportedVersion {
                version: 2,
                current: 1,
                ..
            }
        ),
        "{error}"
    );
}

fn product_defined_v1() -> serde_json::Value {
    json!({ "sku": "MUG-01", "name": "Mug", "unit_price": 1250, "currency": "EUR" })
}

fn add_note(mut data: serde_json::Value) -> Result<serde_json::Value, String> {
    data["note"] = json!("added in v2");
    Ok(data)
}

fn rename_to_title(data: serde_json::Value) -> Result<serde_json::Value, String> {
    rename_field(data, "name", "title")
}

#[test]
fn upcasters_chain_one_version_at_a_time() {
    let chain = [
        Upcaster {
            event_type: "Thing",
            from_version: 2,
            apply: rename_to_title,
        },
        Upcaster {
            event_type: "Thing",
            from_version: 1,
            apply: add_note,
        },
        Upcaster {
            event_type: "Other",
            from_version: 1,
            apply: rename_to_title,
        },
    ];
    let lifted = upcast(&chain, "Thing", 1, 3, json!({ "name": "x" })).unwrap();
    assert_eq!(lifted, json!({ "title": "x", "note": "added in v2" }));
    let unchanged = upcast(&chain, "Thing", 3, 3, json!({ "name": "x" })).unwrap();
    assert_eq!(unchanged, json!({ "name": "x" }));
}

#[test]
fn renaming_refuses_to_overwrite_an_existing_field() {
    assert!(rename_field(json!({ "a": 1, "b": 2 }), "a", "b").is_err());
    assert!(rename_field(json!([1]), "a", "b").is_err());
}
