use domain::{ShipmentCommand::*, ShipmentEvent::*, *};
use uuid::Uuid;

use crate::given::Scenario;
use crate::order::address;

fn id() -> Uuid {
    Uuid::from_u128(9)
}

fn request(country: &str) -> ShipmentCommand {
    RequestShipment {
        order_id: id(),
        address: address(country),
    }
}

fn requested() -> ShipmentEvent {
    ShipmentRequested {
        order_id: id(),
        address: address("GB"),
    }
}

fn rejected() -> ShipmentEvent {
    ShipmentRejected {
        order_id: id(),
        reason: "unsupported destination country XX".into(),
    }
}

fn ship() -> ShipmentCommand {
    ShipShipment {
        carrier: "DHL".into(),
        tracking_number: "JD0001".into(),
    }
}

fn shipped() -> ShipmentEvent {
    ShipmentShipped {
        order_id: id(),
        carrier: "DHL".into(),
        tracking_number: "JD0001".into(),
    }
}

#[test]
fn requesting_a_shipment_records_the_destination() {
    let shipment = Shipment::given([])
        .when(request("GB"))
        .then_events([requested()]);
    assert_eq!(shipment.status, Some(ShipmentStatus::Requested));
}

#[test]
fn requesting_a_shipment_to_country_xx_is_rejected_with_an_event() {
    let shipment = Shipment::given([])
        .when(request("XX"))
        .then_events([rejected()]);
    assert_eq!(shipment.status, Some(ShipmentStatus::Rejected));
}

#[test]
fn requesting_the_same_shipment_twice_does_nothing() {
    Shipment::given([requested()])
        .when(request("GB"))
        .then_nothing();
    Shipment::given([rejected()])
        .when(request("XX"))
        .then_nothing();
}

#[test]
fn requesting_again_to_another_address_is_a_conflict() {
    Shipment::given([requested()])
        .when(request("FR"))
        .then_conflict();
}

#[test]
fn requesting_a_shipment_to_a_malformed_address_is_invalid() {
    let mut bad = address("G");
    bad.line1 = String::new();
    Shipment::given([])
        .when(RequestShipment {
            order_id: Uuid::nil(),
            address: bad,
        })
        .then_invalid(&["order_id", "address.line1", "address.country"]);
}

#[test]
fn shipping_a_requested_shipment_records_the_carrier() {
    let shipment = Shipment::given([requested()])
        .when(ship())
        .then_events([shipped()]);
    assert_eq!(shipment.status, Some(ShipmentStatus::Shipped));
    assert_eq!(shipment.carrier.as_deref(), Some("DHL"));
}

#[test]
fn shipping_a_shipment_never_requested_is_not_found() {
    Shipment::given([]).when(ship()).then_not_found();
}

#[test]
fn shipping_a_rejected_shipment_is_a_conflict() {
    Shipment::given([rejected()]).when(ship()).then_conflict();
}

#[test]
fn shipping_again_with_the_same_details_does_nothing() {
    Shipment::given([requested(), shipped()])
        .when(ship())
        .then_nothing();
}

#[test]
fn shipping_again_with_other_details_is_a_conflict() {
    Shipment::given([requested(), shipped()])
        .when(ShipShipment {
            carrier: "UPS".into(),
            tracking_number: "1Z".into(),
        })
        .then_conflict();
}

#[test]
fn shipping_without_carrier_or_tracking_number_is_invalid() {
    Shipment::given([requested()])
        .when(ShipShipment {
            carrier: " ".into(),
            tracking_number: "".into(),
        })
        .then_invalid(&["carrier", "tracking_number"]);
}

#[test]
fn delivering_a_shipped_shipment_delivers_it() {
    let shipment = Shipment::given([requested(), shipped()])
        .when(DeliverShipment)
        .then_events([ShipmentDelivered { order_id: id() }]);
    assert_eq!(shipment.status, Some(ShipmentStatus::Delivered));
}

#[test]
fn delivering_twice_does_nothing() {
    Shipment::given([requested(), shipped(), ShipmentDelivered { order_id: id() }])
        .when(DeliverShipment)
        .then_nothing();
}

#[test]
fn delivering_before_shipping_is_a_conflict() {
    Shipment::given([requested()])
        .when(DeliverShipment)
        .then_conflict();
}

#[test]
fn delivering_a_shipment_never_requested_is_not_found() {
    Shipment::given([]).when(DeliverShipment).then_not_found();
}

#[test]
fn shipping_a_delivered_shipment_is_a_conflict() {
    Shipment::given([requested(), shipped(), ShipmentDelivered { order_id: id() }])
        .when(ship())
        .then_conflict();
}

fn reject(reason: &str) -> ShipmentCommand {
    RejectShipment {
        order_id: id(),
        reason: reason.into(),
    }
}

#[test]
fn rejecting_a_shipment_never_requested_records_why_and_a_repeat_does_nothing() {
    let why = "unsupported destination country XX";
    let shipment = Shipment::given([])
        .when(reject(why))
        .then_events([rejected()]);
    assert_eq!(shipment.status, Some(ShipmentStatus::Rejected));
    Shipment::given([rejected()])
        .when(reject(why))
        .then_nothing();
}

#[test]
fn rejecting_a_requested_shipment_is_a_conflict_and_a_blank_reason_is_invalid() {
    Shipment::given([requested()])
        .when(reject("too late"))
        .then_conflict();
    Shipment::given([])
        .when(reject(" "))
        .then_invalid(&["reason"]);
}

#[test]
fn the_business_ships_where_it_names_and_a_carrier_serves() {
    use domain::shipment::ShipTo;
    let everywhere = ShipTo::default();
    assert_eq!(everywhere.refusal("DE"), None);
    assert_eq!(
        everywhere.refusal("XX").as_deref(),
        Some("unsupported destination country XX")
    );
    let germany = ShipTo::only(["de".into(), " ".into()]);
    assert_eq!(germany.refusal("DE"), None);
    assert_eq!(
        germany.refusal("FR").as_deref(),
        Some("we do not ship to FR")
    );
    let with_xx = ShipTo::only(["DE".into(), "XX".into()]);
    assert_eq!(
        with_xx.refusal("XX").as_deref(),
        Some("unsupported destination country XX"),
        "no carrier serves XX, whatever the business names"
    );
}
