use domain::{Aggregate, ProductCommand::*, ProductEvent::*, *};

use crate::given::Scenario;

fn define() -> ProductCommand {
    define_product("MUG-01", "  Blue mug ", 1250, "EUR")
}

fn define_product(sku: &str, name: &str, unit_price: i64, currency: &str) -> ProductCommand {
    DefineProduct {
        sku: sku.into(),
        name: name.into(),
        unit_price,
        currency: currency.into(),
    }
}

fn defined() -> ProductEvent {
    ProductDefined {
        sku: "MUG-01".into(),
        name: "Blue mug".into(),
        unit_price: 1250,
        currency: "EUR".into(),
    }
}

#[test]
fn defining_a_new_product_records_it_with_a_trimmed_name() {
    let product = Product::given([]).when(define()).then_events([defined()]);
    assert!(product.defined);
    assert_eq!(
        (
            product.sku.as_str(),
            product.name.as_str(),
            product.unit_price
        ),
        ("MUG-01", "Blue mug", 1250)
    );
    assert_eq!(product.currency, "EUR");
}

#[test]
fn defining_an_existing_product_again_is_a_conflict() {
    Product::given([defined()]).when(define()).then_conflict();
}

#[test]
fn defining_a_product_with_every_field_invalid_names_each_field() {
    Product::given([])
        .when(define_product("no spaces", "   ", 0, "eur"))
        .then_invalid(&["sku", "name", "unit_price", "currency"]);
}

#[test]
fn a_sku_longer_than_64_characters_is_invalid() {
    Product::given([])
        .when(define_product(&"S".repeat(65), "Mug", 1250, "EUR"))
        .then_invalid(&["sku"]);
}

#[test]
fn a_name_longer_than_200_characters_is_invalid() {
    Product::given([])
        .when(define_product("MUG-01", &"n".repeat(201), 1250, "EUR"))
        .then_invalid(&["name"]);
}

#[test]
fn a_negative_price_is_invalid() {
    Product::given([])
        .when(define_product("MUG-01", "Mug", -1, "EUR"))
        .then_invalid(&["unit_price"]);
}

#[test]
fn changing_the_price_of_a_defined_product_records_the_new_price() {
    let product = Product::given([defined()])
        .when(ChangePrice { unit_price: 990 })
        .then_events([ProductPriceChanged {
            sku: "MUG-01".into(),
            unit_price: 990,
        }]);
    assert_eq!(product.unit_price, 990);
}

#[test]
fn changing_the_price_to_the_current_price_does_nothing() {
    Product::given([defined()])
        .when(ChangePrice { unit_price: 1250 })
        .then_nothing();
}

#[test]
fn changing_the_price_of_an_undefined_product_is_not_found() {
    Product::given([])
        .when(ChangePrice { unit_price: 990 })
        .then_not_found();
}

#[test]
fn changing_the_price_to_zero_is_invalid() {
    Product::given([defined()])
        .when(ChangePrice { unit_price: 0 })
        .then_invalid(&["unit_price"]);
}

#[test]
fn a_product_stream_id_is_kind_dash_sku() {
    assert_eq!(stream_id::<Product>("MUG-01"), "product-MUG-01");
    assert_eq!(Product::KIND.as_str(), "product");
}
