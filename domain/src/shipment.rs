//! The shipment of one order (stream `shipment-<order uuid>`):
//! requested (or rejected) → shipped → delivered.
//!
//! Repeating the transition into the current status with the same details
//! (the same request, the same carrier and tracking number, delivering a
//! delivered shipment) is a no-op, and so is any repeated request for the
//! order after a rejection (the rejection stands); with other details, or any transition the
//! status does not allow, it is a Conflict. Shipping or delivering a shipment
//! never requested is NotFound.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::impl_domain_event;
use crate::validate::{validate_text, Violations, MAX_TEXT_CHARS};
use crate::{Address, Aggregate, DomainError};

/// Destination countries no carrier serves; a request to one of them is
/// answered with `ShipmentRejected`.
pub const UNSUPPORTED_COUNTRIES: &[&str] = &["XX"];

/// Where orders are shipped: the countries the business ships to (none
/// named: every country), less those no carrier serves
/// ([`UNSUPPORTED_COUNTRIES`]). The one place that decides whether an
/// address is shipped to, and why not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipTo {
    countries: Vec<String>,
}

impl ShipTo {
    /// Shipping to `countries` only (ISO 3166-1 alpha-2, any case); blank
    /// entries are dropped, and no country at all means every country.
    pub fn only(countries: impl IntoIterator<Item = String>) -> Self {
        ShipTo {
            countries: countries
                .into_iter()
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect(),
        }
    }

    /// Why an order to `country` is not shipped, as its `ShipmentRejected`
    /// records it; `None` when it is shipped.
    pub fn refusal(&self, country: &str) -> Option<String> {
        let named = self.countries.is_empty()
            || self
                .countries
                .iter()
                .any(|c| c.eq_ignore_ascii_case(country));
        if !named {
            return Some(format!("we do not ship to {country}"));
        }
        carriers_refuse(country)
    }
}

/// Why no carrier takes a shipment to `country`, if none does.
fn carriers_refuse(country: &str) -> Option<String> {
    UNSUPPORTED_COUNTRIES
        .contains(&country)
        .then(|| format!("unsupported destination country {country}"))
}

/// What can be asked of a shipment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum ShipmentCommand {
    /// Asks for the order's goods to be shipped to `address`. Answered with
    /// `ShipmentRejected` (an event, not an error) for an unsupported country.
    RequestShipment {
        /// The order shipped.
        order_id: Uuid,
        /// Where to.
        address: Address,
    },
    /// Refuses the order's shipment (e.g. a destination outside the
    /// countries the business ships to). A no-op if already refused;
    /// Conflict once requested.
    RejectShipment {
        /// The order.
        order_id: Uuid,
        /// Why; non-blank.
        reason: String,
    },
    /// Records that the goods left with a carrier.
    ShipShipment {
        /// Carrier name; non-blank.
        carrier: String,
        /// Tracking number; non-blank.
        tracking_number: String,
    },
    /// Records that the goods arrived.
    DeliverShipment,
}

/// What a shipment records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum ShipmentEvent {
    /// A shipment was accepted for `address`.
    ShipmentRequested {
        /// The order shipped.
        order_id: Uuid,
        /// Where to.
        address: Address,
    },
    /// A shipment request was refused.
    ShipmentRejected {
        /// The order.
        order_id: Uuid,
        /// Why, e.g. "unsupported destination country XX".
        reason: String,
    },
    /// The goods left with a carrier.
    ShipmentShipped {
        /// The order shipped.
        order_id: Uuid,
        /// Carrier name.
        carrier: String,
        /// Carrier's tracking number.
        tracking_number: String,
    },
    /// The goods arrived.
    ShipmentDelivered {
        /// The order shipped.
        order_id: Uuid,
    },
}

impl_domain_event!(ShipmentEvent, &[], {
    ShipmentRequested = 1,
    ShipmentRejected = 1,
    ShipmentShipped = 1,
    ShipmentDelivered = 1,
});

/// Where a shipment is. Serialised snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    /// Accepted, waiting for a carrier.
    Requested,
    /// Refused (final).
    Rejected,
    /// With the carrier.
    Shipped,
    /// Arrived (final).
    Delivered,
}

/// A shipment's state. The default value (`status == None`) is a shipment
/// never requested.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shipment {
    /// The order shipped; nil until requested.
    pub order_id: Uuid,
    /// `None` until requested.
    pub status: Option<ShipmentStatus>,
    /// The requested destination.
    pub address: Option<Address>,
    /// Why the request was refused, if it was.
    pub rejection_reason: Option<String>,
    /// Carrier, once shipped.
    pub carrier: Option<String>,
    /// Tracking number, once shipped.
    pub tracking_number: Option<String>,
}

impl Shipment {
    fn conflict(&self, status: ShipmentStatus, what: &str) -> DomainError {
        let status = match status {
            ShipmentStatus::Requested => "requested",
            ShipmentStatus::Rejected => "rejected",
            ShipmentStatus::Shipped => "shipped",
            ShipmentStatus::Delivered => "delivered",
        };
        DomainError::conflict(format!(
            "shipment for order {} is {status}; cannot {what}",
            self.order_id
        ))
    }

    fn request(
        &self,
        order_id: Uuid,
        address: &Address,
    ) -> Result<Vec<ShipmentEvent>, DomainError> {
        let mut violations = Violations::new();
        if order_id.is_nil() {
            violations.add("order_id", "must not be the nil UUID");
        }
        address.validate("address", &mut violations);
        violations.into_result()?;
        if self.status.is_some() {
            // A rejection keeps no address, so any repeat for the same order
            // is taken as the same request: the rejection stands.
            let same = self.order_id == order_id
                && (self.status == Some(ShipmentStatus::Rejected)
                    || self.address.as_ref() == Some(address));
            return if same {
                Ok(vec![])
            } else {
                Err(DomainError::conflict(format!(
                    "shipment for order {} was already requested with other details",
                    self.order_id
                )))
            };
        }
        if let Some(reason) = carriers_refuse(&address.country) {
            return Ok(vec![ShipmentEvent::ShipmentRejected { order_id, reason }]);
        }
        Ok(vec![ShipmentEvent::ShipmentRequested {
            order_id,
            address: address.clone(),
        }])
    }

    fn reject(&self, order_id: Uuid, reason: &str) -> Result<Vec<ShipmentEvent>, DomainError> {
        let mut violations = Violations::new();
        if order_id.is_nil() {
            violations.add("order_id", "must not be the nil UUID");
        }
        violations.check("reason", validate_text(reason, MAX_TEXT_CHARS));
        violations.into_result()?;
        match self.status {
            None => Ok(vec![ShipmentEvent::ShipmentRejected {
                order_id,
                reason: reason.to_owned(),
            }]),
            Some(ShipmentStatus::Rejected) if self.order_id == order_id => Ok(vec![]),
            Some(status) => Err(self.conflict(status, "reject")),
        }
    }

    fn ship(
        &self,
        carrier: &str,
        tracking_number: &str,
    ) -> Result<Vec<ShipmentEvent>, DomainError> {
        let mut violations = Violations::new();
        violations.check("carrier", validate_text(carrier, MAX_TEXT_CHARS));
        violations.check(
            "tracking_number",
            validate_text(tracking_number, MAX_TEXT_CHARS),
        );
        violations.into_result()?;
        let status = self
            .status
            .ok_or_else(|| DomainError::not_found("shipment"))?;
        match status {
            ShipmentStatus::Requested => Ok(vec![ShipmentEvent::ShipmentShipped {
                order_id: self.order_id,
                carrier: carrier.to_owned(),
                tracking_number: tracking_number.to_owned(),
            }]),
            ShipmentStatus::Shipped
                if self.carrier.as_deref() == Some(carrier)
                    && self.tracking_number.as_deref() == Some(tracking_number) =>
            {
                Ok(vec![])
            }
            ShipmentStatus::Shipped => Err(self.conflict(status, "ship with other details")),
            _ => Err(self.conflict(status, "ship")),
        }
    }
}

impl Aggregate for Shipment {
    const KIND: crate::StreamKind = crate::StreamKind::Shipment;
    type Command = ShipmentCommand;
    type Event = ShipmentEvent;

    fn decide(&self, command: &ShipmentCommand) -> Result<Vec<ShipmentEvent>, DomainError> {
        match command {
            ShipmentCommand::RequestShipment { order_id, address } => {
                self.request(*order_id, address)
            }
            ShipmentCommand::RejectShipment { order_id, reason } => self.reject(*order_id, reason),
            ShipmentCommand::ShipShipment {
                carrier,
                tracking_number,
            } => self.ship(carrier, tracking_number),
            ShipmentCommand::DeliverShipment => {
                match self
                    .status
                    .ok_or_else(|| DomainError::not_found("shipment"))?
                {
                    ShipmentStatus::Shipped => Ok(vec![ShipmentEvent::ShipmentDelivered {
                        order_id: self.order_id,
                    }]),
                    ShipmentStatus::Delivered => Ok(vec![]),
                    status => Err(self.conflict(status, "deliver")),
                }
            }
        }
    }

    fn evolve(self, event: &ShipmentEvent) -> Self {
        match event {
            ShipmentEvent::ShipmentRequested { order_id, address } => Self {
                order_id: *order_id,
                status: Some(ShipmentStatus::Requested),
                address: Some(address.clone()),
                ..self
            },
            ShipmentEvent::ShipmentRejected { order_id, reason } => Self {
                order_id: *order_id,
                status: Some(ShipmentStatus::Rejected),
                rejection_reason: Some(reason.clone()),
                ..self
            },
            ShipmentEvent::ShipmentShipped {
                carrier,
                tracking_number,
                ..
            } => Self {
                status: Some(ShipmentStatus::Shipped),
                carrier: Some(carrier.clone()),
                tracking_number: Some(tracking_number.clone()),
                ..self
            },
            ShipmentEvent::ShipmentDelivered { .. } => Self {
                status: Some(ShipmentStatus::Delivered),
                ..self
            },
        }
    }
}
