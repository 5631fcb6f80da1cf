//! The catalogue entry for one SKU (stream `product-<sku>`): its name and unit
//! price. Orders are priced from here.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::impl_domain_event;
use crate::upcast::{rename_field, Upcaster};
use crate::validate::{
    validate_currency, validate_positive_amount, validate_sku, validate_text, Violations,
    MAX_TEXT_CHARS,
};
use crate::{Aggregate, DomainError};

/// What can be asked of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum ProductCommand {
    /// Adds the product to the catalogue. Conflict if it is already defined.
    DefineProduct {
        /// 1 to 64 characters of `[A-Za-z0-9_-]`.
        sku: String,
        /// Display name; non-blank, at most 200 characters. Stored trimmed.
        name: String,
        /// Price of one unit in minor units of `currency`; positive.
        unit_price: i64,
        /// ISO 4217 code, e.g. "EUR".
        currency: String,
    },
    /// Sets a new unit price (same currency). NotFound if never defined; a
    /// no-op if the price is unchanged.
    ChangePrice {
        /// New price of one unit in minor units; positive.
        unit_price: i64,
    },
}

/// What a product records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum ProductEvent {
    /// The product entered the catalogue.
    ProductDefined {
        /// The product's SKU.
        sku: String,
        /// Display name, trimmed.
        name: String,
        /// Price of one unit in minor units of `currency`.
        unit_price: i64,
        /// ISO 4217 code.
        currency: String,
    },
    /// The unit price changed.
    ProductPriceChanged {
        /// The product's SKU.
        sku: String,
        /// New price of one unit in minor units.
        unit_price: i64,
    },
}

impl_domain_event!(ProductEvent, UPCASTERS, {
    ProductDefined = 1,
    ProductPriceChanged = 1,
});

/// Lifts stored product events of older schema versions.
const UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "ProductDefined",
    from_version: 0,
    apply: product_defined_v0_to_v1,
}];

/// Schema version 0 of `ProductDefined` (pre-release) called the unit price
/// `price`; version 1 calls it `unit_price`.
fn product_defined_v0_to_v1(data: serde_json::Value) -> Result<serde_json::Value, String> {
    rename_field(data, "price", "unit_price")
}

/// A product's state. The default value (`defined == false`, empty strings,
/// zero price) is a product that was never defined.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// The SKU; empty until defined.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Current price of one unit in minor units of `currency`.
    pub unit_price: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Whether `ProductDefined` has been recorded.
    pub defined: bool,
}

impl Aggregate for Product {
    const KIND: crate::StreamKind = crate::StreamKind::Product;
    type Command = ProductCommand;
    type Event = ProductEvent;

    fn decide(&self, command: &ProductCommand) -> Result<Vec<ProductEvent>, DomainError> {
        match command {
            ProductCommand::DefineProduct {
                sku,
                name,
                unit_price,
                currency,
            } => {
                let mut violations = Violations::new();
                violations.check("sku", validate_sku(sku));
                violations.check("name", validate_text(name, MAX_TEXT_CHARS));
                violations.check("unit_price", validate_positive_amount(*unit_price));
                violations.check("currency", validate_currency(currency));
                violations.into_result()?;
                if self.defined {
                    return Err(DomainError::conflict(format!(
                        "product {} is already defined",
                        self.sku
                    )));
                }
                Ok(vec![ProductEvent::ProductDefined {
                    sku: sku.clone(),
                    name: name.trim().to_owned(),
                    unit_price: *unit_price,
                    currency: currency.clone(),
                }])
            }
            ProductCommand::ChangePrice { unit_price } => {
                validate_positive_amount(*unit_price)
                    .map_err(|message| DomainError::invalid("unit_price", message))?;
                if !self.defined {
                    return Err(DomainError::not_found("product"));
                }
                if *unit_price == self.unit_price {
                    return Ok(vec![]);
                }
                Ok(vec![ProductEvent::ProductPriceChanged {
                    sku: self.sku.clone(),
                    unit_price: *unit_price,
                }])
            }
        }
    }

    fn evolve(self, event: &ProductEvent) -> Self {
        match event {
            ProductEvent::ProductDefined {
                sku,
                name,
                unit_price,
                currency,
            } => Self {
                sku: sku.clone(),
                name: name.clone(),
                unit_price: *unit_price,
                currency: currency.clone(),
                defined: true,
            },
            ProductEvent::ProductPriceChanged { unit_price, .. } => Self {
                unit_price: *unit_price,
                ..self
            },
        }
    }
}
