//! Events survive the trip through the event store's columns; states survive
//! the trip through a snapshot.

use std::collections::BTreeSet;

use domain::*;
use serde_json::json;
use uuid::Uuid;

use crate::order::address;

fn order_id() -> Uuid {
    Uuid::from_u128(0x1234)
}

fn product_events() -> Vec<ProductEvent> {
    vec![
        ProductEvent::ProductDefined {
            sku: "MUG-01".into(),
            name: "Mug".into(),
            unit_price: 1250,
            currency: "EUR".into(),
        },
        ProductEvent::ProductPriceChanged {
            sku: "MUG-01".into(),
            unit_price: 990,
        },
    ]
}

fn inventory_events() -> Vec<InventoryEvent> {
    let sku = || "MUG-01".to_owned();
    vec![
        InventoryEvent::StockReceived {
            sku: sku(),
            quantity: 10,
        },
        InventoryEvent::StockReserved {
            sku: sku(),
            order_id: order_id(),
            quantity: 2,
        },
        InventoryEvent::StockReservationRejected {
            sku: sku(),
            order_id: order_id(),
            requested: 20,
            available: 8,
        },
        InventoryEvent::StockReleased {
            sku: sku(),
            order_id: order_id(),
            quantity: 2,
        },
        InventoryEvent::StockCommitted {
            sku: sku(),
            order_id: order_id(),
            quantity: 2,
        },
    ]
}

fn order_events() -> Vec<OrderEvent> {
    vec![
        OrderEvent::OrderPlaced {
            order_id: order_id(),
            customer_id: "customer-1".into(),
            lines: vec![OrderLine {
                sku: "MUG-01".into(),
                quantity: 2,
                unit_price: 1250,
            }],
            total: 2500,
            currency: "EUR".into(),
            shipping_address: address("DE"),
            payment_method: "tok_visa".into(),
        },
        OrderEvent::OrderConfirmed {
            order_id: order_id(),
        },
        OrderEvent::OrderShipped {
            order_id: order_id(),
            carrier: "DHL".into(),
            tracking_number: "JD0001".into(),
        },
        OrderEvent::OrderDelivered {
            order_id: order_id(),
        },
        OrderEvent::OrderCancelled {
            order_id: order_id(),
            reason: CancelReason::PaymentTimeout,
        },
    ]
}

fn payment_events() -> Vec<PaymentEvent> {
    vec![
        PaymentEvent::PaymentAuthorized {
            order_id: order_id(),
            amount: 2500,
            currency: "EUR".into(),
            authorization_id: "auth-1".into(),
        },
        PaymentEvent::PaymentDeclined {
            order_id: order_id(),
            reason: "insufficient funds".into(),
        },
        PaymentEvent::PaymentCaptured {
            order_id: order_id(),
            amount: 2500,
        },
        PaymentEvent::PaymentVoided {
            order_id: order_id(),
        },
        PaymentEvent::PaymentRefunded {
            order_id: order_id(),
            amount: 500,
        },
    ]
}

fn shipment_events() -> Vec<ShipmentEvent> {
    vec![
        ShipmentEvent::ShipmentRequested {
            order_id: order_id(),
            address: address("DE"),
        },
        ShipmentEvent::ShipmentRejected {
            order_id: order_id(),
            reason: "unsupported destination country XX".into(),
        },
        ShipmentEvent::ShipmentShipped {
            order_id: order_id(),
            carrier: "DHL".into(),
            tracking_number: "JD0001".into(),
        },
        ShipmentEvent::ShipmentDelivered {
            order_id: order_id(),
        },
    ]
}

/// Every sample survives `to_data` → `from_stored`, carries no type tag in its
/// payload, and together the samples cover every event type of the enum.
fn assert_round_trips<E: DomainEvent + PartialEq>(samples: Vec<E>, all_types: &[&str]) {
    let mut covered = BTreeSet::new();
    for event in samples {
        let data = event.to_data();
        assert!(data.is_object(), "{data}");
        assert!(
            data.get("type").is_none(),
            "payload carries the tag: {data}"
        );
        let stored = serde_json::to_string(&data).unwrap();
        let back = E::from_stored(
            event.event_type(),
            event.schema_version(),
            serde_json::from_str(&stored).unwrap(),
        )
        .unwrap();
        assert_eq!(back, event);
        assert_eq!(event.schema_version(), 1);
        covered.insert(event.event_type());
    }
    assert_eq!(covered, all_types.iter().copied().collect::<BTreeSet<_>>());
}

#[test]
fn every_product_event_round_trips_through_its_stored_parts() {
    assert_round_trips(product_events(), ProductEvent::EVENT_TYPES);
}

#[test]
fn every_inventory_event_round_trips_through_its_stored_parts() {
    assert_round_trips(inventory_events(), InventoryEvent::EVENT_TYPES);
}

#[test]
fn every_order_event_round_trips_through_its_stored_parts() {
    assert_round_trips(order_events(), OrderEvent::EVENT_TYPES);
}

#[test]
fn every_payment_event_round_trips_through_its_stored_parts() {
    assert_round_trips(payment_events(), PaymentEvent::EVENT_TYPES);
}

#[test]
fn every_shipment_event_round_trips_through_its_stored_parts() {
    assert_round_trips(shipment_events(), ShipmentEvent::EVENT_TYPES);
}

#[test]
fn the_contract_event_type_names_are_all_present() {
    let all: BTreeSet<_> = [
        ProductEvent::EVENT_TYPES,
        InventoryEvent::EVENT_TYPES,
        OrderEvent::EVENT_TYPES,
        PaymentEvent::EVENT_TYPES,
        ShipmentEvent::EVENT_TYPES,
    ]
    .concat()
    .into_iter()
    .collect();
    let contract = [
        "ProductDefined",
        "ProductPriceChanged",
        "StockReceived",
        "StockReserved",
        "StockReservationRejected",
        "StockReleased",
        "StockCommitted",
        "OrderPlaced",
        "OrderConfirmed",
        "OrderShipped",
        "OrderDelivered",
        "OrderCancelled",
        "PaymentAuthorized",
        "PaymentDeclined",
        "PaymentCaptured",
        "PaymentVoided",
        "PaymentRefunded",
        "ShipmentRequested",
        "ShipmentRejected",
        "ShipmentShipped",
        "ShipmentDelivered",
    ];
    assert_eq!(all, contract.into_iter().collect());
}

#[test]
fn an_event_serialises_adjacently_tagged() {
    let event = OrderEvent::OrderCancelled {
        order_id: order_id(),
        reason: CancelReason::OutOfStock,
    };
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({
            "type": "OrderCancelled",
            "data": { "order_id": order_id(), "reason": "out_of_stock" }
        })
    );
}

#[test]
fn an_unknown_event_type_is_a_decode_error() {
    let error = OrderEvent::from_stored("OrderTeleported", 1, json!({})).unwrap_err();
    assert!(matches!(error, EventDecodeError::UnknownEventType { .. }));
}

#[test]
fn another_aggregates_event_type_is_unknown_here() {
    let data = product_events()[0].to_data();
    let error = OrderEvent::from_stored("ProductDefined", 1, data).unwrap_err();
    assert!(matches!(error, EventDecodeError::UnknownEventType { .. }));
}

#[test]
fn a_payload_with_a_missing_field_is_a_decode_error() {
    let error =
        PaymentEvent::from_stored("PaymentCaptured", 1, json!({ "amount": 5 })).unwrap_err();
    assert!(matches!(error, EventDecodeError::Payload { .. }), "{error}");
}

#[test]
fn a_payload_with_an_unknown_field_is_a_decode_error() {
    let data = json!({ "order_id": order_id(), "amount": 5, "surprise": true });
    let error = PaymentEvent::from_stored("PaymentCaptured", 1, data).unwrap_err();
    assert!(matches!(error, EventDecodeError::Payload { .. }), "{error}");
    assert!(
        error.to_string().contains("unknown field `surprise`"),
        "{error}"
    );
}

/// A state survives a JSON snapshot (including the UUID-keyed reservations).
fn assert_snapshot_round_trips<A: Aggregate + PartialEq + std::fmt::Debug>(events: &[A::Event]) {
    let state = A::replay(events);
    let snapshot = serde_json::to_string(&state).unwrap();
    let restored: A = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(restored, state);
}

#[test]
fn every_aggregate_state_survives_a_snapshot() {
    assert_snapshot_round_trips::<Product>(&product_events());
    assert_snapshot_round_trips::<Inventory>(&inventory_events()[..2]);
    assert_snapshot_round_trips::<Order>(&order_events()[..3]);
    assert_snapshot_round_trips::<Payment>(&[payment_events().remove(0)]);
    assert_snapshot_round_trips::<Shipment>(&shipment_events()[..1]);
}

#[test]
fn inventory_reservations_are_keyed_by_order_id_in_a_snapshot() {
    let state = Inventory::replay(&inventory_events()[..2]);
    let snapshot = serde_json::to_value(&state).unwrap();
    assert_eq!(snapshot["reservations"][order_id().to_string()], json!(2));
    assert_eq!(state.reserved, 2);
}

#[test]
fn every_event_enum_has_a_json_schema() {
    for schema in [
        schemars::schema_for!(ProductEvent),
        schemars::schema_for!(InventoryEvent),
        schemars::schema_for!(OrderEvent),
        schemars::schema_for!(PaymentEvent),
        schemars::schema_for!(ShipmentEvent),
    ] {
        let text = serde_json::to_string(&schema).unwrap();
        assert!(text.contains("\"data\""), "{text}");
    }
}

#[test]
fn stream_ids_are_kind_dash_id() {
    assert_eq!(
        stream_id::<Order>(order_id()),
        format!("order-{}", order_id())
    );
    assert_eq!(stream_id::<Inventory>("MUG-01"), "inventory-MUG-01");
    assert!(stream_id::<Payment>(order_id()).starts_with("payment-"));
    assert!(stream_id::<Shipment>(order_id()).starts_with("shipment-"));
}
