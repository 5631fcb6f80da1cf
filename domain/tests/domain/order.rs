use domain::{OrderCommand::*, OrderEvent::*, *};
use uuid::Uuid;

use crate::given::Scenario;

fn id() -> Uuid {
    Uuid::from_u128(42)
}

pub fn address(country: &str) -> Address {
    Address {
        name: "Ada Lovelace".into(),
        line1: "12 St James's Square".into(),
        city: "London".into(),
        postal_code: "SW1Y 4JH".into(),
        country: country.into(),
    }
}

fn line(sku: &str, quantity: i64, unit_price: i64, currency: &str) -> PricedLine {
    PricedLine {
        sku: sku.into(),
        quantity,
        unit_price,
        currency: currency.into(),
    }
}

fn place(lines: Vec<PricedLine>) -> OrderCommand {
    place_to(lines, address("GB"))
}

fn place_to(lines: Vec<PricedLine>, shipping_address: Address) -> OrderCommand {
    PlaceOrder {
        order_id: id(),
        customer_id: "customer-1".into(),
        lines,
        shipping_address,
        payment_method: "tok_visa".into(),
    }
}

fn two_lines() -> Vec<PricedLine> {
    vec![line("MUG-01", 2, 1250, "EUR"), line("TEA-7", 3, 400, "EUR")]
}

fn placed() -> OrderEvent {
    OrderPlaced {
        order_id: id(),
        customer_id: "customer-1".into(),
        lines: vec![
            OrderLine {
                sku: "MUG-01".into(),
                quantity: 2,
                unit_price: 1250,
            },
            OrderLine {
                sku: "TEA-7".into(),
                quantity: 3,
                unit_price: 400,
            },
        ],
        total: 3700,
        currency: "EUR".into(),
        shipping_address: address("GB"),
        payment_method: "tok_visa".into(),
    }
}

fn confirmed() -> OrderEvent {
    OrderConfirmed { order_id: id() }
}

fn shipped() -> OrderEvent {
    OrderShipped {
        order_id: id(),
        carrier: "DHL".into(),
        tracking_number: "JD0001".into(),
    }
}

fn delivered() -> OrderEvent {
    OrderDelivered { order_id: id() }
}

fn cancelled(reason: CancelReason) -> OrderEvent {
    OrderCancelled {
        order_id: id(),
        reason,
    }
}

fn ship() -> OrderCommand {
    ShipOrder {
        carrier: "DHL".into(),
        tracking_number: "JD0001".into(),
    }
}

fn cancel() -> OrderCommand {
    CancelOrder {
        reason: CancelReason::CustomerCancelled,
    }
}

#[test]
fn placing_an_order_prices_it_from_its_lines() {
    let order = Order::given([])
        .when(place(two_lines()))
        .then_events([placed()]);
    assert_eq!(order.status, Some(OrderStatus::Placed));
    assert_eq!((order.total, order.currency.as_str()), (3700, "EUR"));
    assert_eq!(order.customer_id, "customer-1");
    assert_eq!(order.lines.len(), 2);
    assert_eq!(order.cancel_reason, None);
}

#[test]
fn an_order_never_placed_has_no_status() {
    assert_eq!(Order::default().status, None);
}

#[test]
fn placing_an_existing_order_is_a_conflict() {
    Order::given([placed()])
        .when(place(two_lines()))
        .then_conflict();
}

#[test]
fn placing_an_order_without_lines_is_invalid() {
    Order::given([])
        .when(place(vec![]))
        .then_invalid(&["lines"]);
}

#[test]
fn placing_an_order_with_more_than_fifty_lines_is_invalid() {
    let lines = (0..51)
        .map(|n| line(&format!("SKU-{n}"), 1, 100, "EUR"))
        .collect();
    Order::given([]).when(place(lines)).then_invalid(&["lines"]);
}

#[test]
fn placing_an_order_with_fifty_lines_is_fine() {
    let lines: Vec<_> = (0..50)
        .map(|n| line(&format!("SKU-{n}"), 1, 100, "EUR"))
        .collect();
    let order = Order::given([]).when(place(lines)).then_accepted();
    assert_eq!(order.total, 5000);
}

#[test]
fn repeating_a_sku_on_two_lines_is_invalid_on_the_later_line() {
    Order::given([])
        .when(place(vec![
            line("MUG-01", 1, 100, "EUR"),
            line("TEA-7", 1, 100, "EUR"),
            line("MUG-01", 2, 100, "EUR"),
        ]))
        .then_invalid(&["lines[2].sku"]);
}

#[test]
fn a_line_quantity_outside_one_to_a_thousand_is_invalid() {
    Order::given([])
        .when(place(vec![
            line("A", 0, 100, "EUR"),
            line("B", 1000, 100, "EUR"),
            line("C", 1001, 100, "EUR"),
        ]))
        .then_invalid(&["lines[0].quantity", "lines[2].quantity"]);
}

#[test]
fn lines_in_different_currencies_are_invalid() {
    Order::given([])
        .when(place(vec![
            line("A", 1, 100, "EUR"),
            line("B", 1, 100, "USD"),
        ]))
        .then_invalid(&["lines[1].currency"]);
}

#[test]
fn a_malformed_line_names_each_bad_field_by_path() {
    Order::given([])
        .when(place(vec![
            line("A", 1, 100, "EUR"),
            line("bad sku", 1, 0, "EUR"),
        ]))
        .then_invalid(&["lines[1].sku", "lines[1].unit_price"]);
}

#[test]
fn a_total_beyond_the_range_of_money_is_invalid() {
    Order::given([])
        .when(place(vec![line("A", 2, i64::MAX / 2 + 1, "EUR")]))
        .then_invalid(&["lines"]);
}

#[test]
fn a_bad_shipping_address_names_each_bad_field_by_path() {
    let mut address = address("gb");
    address.city = " ".into();
    address.name = "n".repeat(201);
    Order::given([])
        .when(place_to(two_lines(), address))
        .then_invalid(&[
            "shipping_address.name",
            "shipping_address.city",
            "shipping_address.country",
        ]);
}

#[test]
fn a_blank_customer_payment_method_and_nil_id_are_invalid() {
    Order::given([])
        .when(PlaceOrder {
            order_id: Uuid::nil(),
            customer_id: "".into(),
            lines: two_lines(),
            shipping_address: address("GB"),
            payment_method: " ".into(),
        })
        .then_invalid(&["order_id", "customer_id", "payment_method"]);
}

#[test]
fn confirming_a_placed_order_confirms_it() {
    let order = Order::given([placed()])
        .when(ConfirmOrder)
        .then_events([confirmed()]);
    assert_eq!(order.status, Some(OrderStatus::Confirmed));
}

#[test]
fn confirming_a_confirmed_order_does_nothing() {
    Order::given([placed(), confirmed()])
        .when(ConfirmOrder)
        .then_nothing();
}

#[test]
fn confirming_a_cancelled_order_is_a_conflict() {
    Order::given([placed(), cancelled(CancelReason::OutOfStock)])
        .when(ConfirmOrder)
        .then_conflict();
}

#[test]
fn shipping_a_confirmed_order_records_the_carrier() {
    let order = Order::given([placed(), confirmed()])
        .when(ship())
        .then_events([shipped()]);
    assert_eq!(order.status, Some(OrderStatus::Shipped));
    assert_eq!(order.tracking_number.as_deref(), Some("JD0001"));
}

#[test]
fn shipping_an_order_not_yet_confirmed_is_a_conflict() {
    Order::given([placed()]).when(ship()).then_conflict();
}

#[test]
fn shipping_again_with_the_same_details_does_nothing() {
    Order::given([placed(), confirmed(), shipped()])
        .when(ship())
        .then_nothing();
}

#[test]
fn shipping_again_with_other_details_is_a_conflict() {
    Order::given([placed(), confirmed(), shipped()])
        .when(ShipOrder {
            carrier: "UPS".into(),
            tracking_number: "1Z".into(),
        })
        .then_conflict();
}

#[test]
fn shipping_a_cancelled_order_is_a_conflict() {
    Order::given([placed(), cancelled(CancelReason::CustomerCancelled)])
        .when(ship())
        .then_conflict();
}

#[test]
fn shipping_without_carrier_or_tracking_number_is_invalid() {
    Order::given([placed(), confirmed()])
        .when(ShipOrder {
            carrier: "".into(),
            tracking_number: "  ".into(),
        })
        .then_invalid(&["carrier", "tracking_number"]);
}

#[test]
fn delivering_a_shipped_order_delivers_it() {
    let order = Order::given([placed(), confirmed(), shipped()])
        .when(DeliverOrder)
        .then_events([delivered()]);
    assert_eq!(order.status, Some(OrderStatus::Delivered));
}

#[test]
fn delivering_a_delivered_order_does_nothing() {
    Order::given([placed(), confirmed(), shipped(), delivered()])
        .when(DeliverOrder)
        .then_nothing();
}

#[test]
fn delivering_an_order_not_shipped_is_a_conflict() {
    Order::given([placed(), confirmed()])
        .when(DeliverOrder)
        .then_conflict();
}

#[test]
fn cancelling_a_placed_order_records_the_reason() {
    let order = Order::given([placed()])
        .when(CancelOrder {
            reason: CancelReason::PaymentDeclined,
        })
        .then_events([cancelled(CancelReason::PaymentDeclined)]);
    assert_eq!(order.status, Some(OrderStatus::Cancelled));
    assert_eq!(order.cancel_reason, Some(CancelReason::PaymentDeclined));
}

#[test]
fn cancelling_a_confirmed_order_is_allowed() {
    Order::given([placed(), confirmed()])
        .when(cancel())
        .then_events([cancelled(CancelReason::CustomerCancelled)]);
}

#[test]
fn cancelling_a_shipped_order_is_a_conflict() {
    Order::given([placed(), confirmed(), shipped()])
        .when(cancel())
        .then_conflict();
}

#[test]
fn cancelling_a_delivered_order_is_a_conflict() {
    Order::given([placed(), confirmed(), shipped(), delivered()])
        .when(cancel())
        .then_conflict();
}

#[test]
fn cancelling_a_cancelled_order_does_nothing() {
    Order::given([placed(), cancelled(CancelReason::OutOfStock)])
        .when(cancel())
        .then_nothing();
}

#[test]
fn any_command_on_an_order_never_placed_is_not_found() {
    for command in [ConfirmOrder, ship(), DeliverOrder, cancel()] {
        Order::given([]).when(command).then_not_found();
    }
}

#[test]
fn statuses_and_cancel_reasons_serialise_snake_case() {
    let statuses = [
        OrderStatus::Placed,
        OrderStatus::Confirmed,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ];
    for status in statuses {
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            serde_json::json!(status.as_str())
        );
    }
    assert_eq!(
        serde_json::to_value(statuses).unwrap(),
        serde_json::json!(["placed", "confirmed", "shipped", "delivered", "cancelled"])
    );
    let reasons = [
        CancelReason::OutOfStock,
        CancelReason::PaymentDeclined,
        CancelReason::PaymentTimeout,
        CancelReason::ShipmentRejected,
        CancelReason::CustomerCancelled,
    ];
    assert_eq!(
        serde_json::to_value(reasons).unwrap(),
        serde_json::json!([
            "out_of_stock",
            "payment_declined",
            "payment_timeout",
            "shipment_rejected",
            "customer_cancelled"
        ])
    );
    for reason in reasons {
        assert_eq!(reason.to_string(), reason.as_str());
    }
}
