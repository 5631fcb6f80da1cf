use domain::{InventoryCommand::*, InventoryEvent::*, *};
use uuid::Uuid;

use crate::given::Scenario;

const SKU: &str = "MUG-01";

fn order(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn received(quantity: i64) -> InventoryEvent {
    StockReceived {
        sku: SKU.into(),
        quantity,
    }
}

fn reserved(order_id: Uuid, quantity: i64) -> InventoryEvent {
    StockReserved {
        sku: SKU.into(),
        order_id,
        quantity,
    }
}

fn reserve(order_id: Uuid, quantity: i64) -> InventoryCommand {
    ReserveStock {
        sku: SKU.into(),
        order_id,
        quantity,
    }
}

#[test]
fn receiving_stock_adds_to_on_hand() {
    let inventory = Inventory::given([received(3)])
        .when(ReceiveStock {
            sku: SKU.into(),
            quantity: 7,
        })
        .then_events([received(7)]);
    assert_eq!((inventory.on_hand, inventory.available()), (10, 10));
}

#[test]
fn receiving_zero_or_negative_stock_is_invalid() {
    for quantity in [0, -5] {
        Inventory::given([])
            .when(ReceiveStock {
                sku: SKU.into(),
                quantity,
            })
            .then_invalid(&["quantity"]);
    }
}

#[test]
fn receiving_stock_under_a_malformed_sku_is_invalid() {
    Inventory::given([])
        .when(ReceiveStock {
            sku: "bad sku".into(),
            quantity: 1,
        })
        .then_invalid(&["sku"]);
}

#[test]
fn receiving_stock_that_would_overflow_on_hand_is_invalid() {
    Inventory::given([received(i64::MAX)])
        .when(ReceiveStock {
            sku: SKU.into(),
            quantity: 1,
        })
        .then_invalid(&["quantity"]);
}

#[test]
fn receiving_stock_of_another_sku_on_this_stream_is_a_conflict() {
    Inventory::given([received(1)])
        .when(ReceiveStock {
            sku: "OTHER".into(),
            quantity: 1,
        })
        .then_conflict();
}

#[test]
fn reserving_what_is_available_holds_it_for_the_order() {
    let inventory = Inventory::given([received(10)])
        .when(reserve(order(1), 4))
        .then_events([reserved(order(1), 4)]);
    assert_eq!(inventory.on_hand, 10);
    assert_eq!(inventory.reserved, 4);
    assert_eq!(inventory.available(), 6);
    assert_eq!(inventory.reservations.get(&order(1)), Some(&4));
}

#[test]
fn reserving_exactly_everything_available_succeeds() {
    Inventory::given([received(5), reserved(order(1), 2)])
        .when(reserve(order(2), 3))
        .then_events([reserved(order(2), 3)]);
}

#[test]
fn reserving_more_than_available_is_rejected_with_an_event() {
    let inventory = Inventory::given([received(5), reserved(order(1), 2)])
        .when(reserve(order(2), 4))
        .then_events([StockReservationRejected {
            sku: SKU.into(),
            order_id: order(2),
            requested: 4,
            available: 3,
        }]);
    assert_eq!(inventory.reserved, 2, "nothing is reserved on rejection");
    assert_eq!(inventory.reservation(order(2)), None);
}

#[test]
fn reserving_a_sku_never_stocked_is_rejected_with_an_event_naming_it() {
    Inventory::given([])
        .when(reserve(order(1), 1))
        .then_events([StockReservationRejected {
            sku: SKU.into(),
            order_id: order(1),
            requested: 1,
            available: 0,
        }]);
}

#[test]
fn reserving_zero_units_is_invalid() {
    Inventory::given([received(5)])
        .when(reserve(order(1), 0))
        .then_invalid(&["quantity"]);
}

#[test]
fn reserving_again_for_an_order_that_holds_a_reservation_does_nothing() {
    Inventory::given([received(5), reserved(order(1), 2)])
        .when(reserve(order(1), 2))
        .then_nothing();
}

#[test]
fn releasing_gives_back_exactly_what_the_order_holds() {
    let inventory = Inventory::given([received(5), reserved(order(1), 2), reserved(order(2), 1)])
        .when(ReleaseStock { order_id: order(1) })
        .then_events([StockReleased {
            sku: SKU.into(),
            order_id: order(1),
            quantity: 2,
        }]);
    assert_eq!((inventory.on_hand, inventory.reserved), (5, 1));
    assert_eq!(inventory.available(), 4);
}

#[test]
fn releasing_for_an_order_holding_nothing_does_nothing() {
    Inventory::given([received(5), reserved(order(1), 2)])
        .when(ReleaseStock { order_id: order(2) })
        .then_nothing();
}

#[test]
fn releasing_twice_does_nothing_the_second_time() {
    Inventory::given([
        received(5),
        reserved(order(1), 2),
        StockReleased {
            sku: SKU.into(),
            order_id: order(1),
            quantity: 2,
        },
    ])
    .when(ReleaseStock { order_id: order(1) })
    .then_nothing();
}

#[test]
fn committing_takes_the_reserved_units_off_hand() {
    let inventory = Inventory::given([received(5), reserved(order(1), 2)])
        .when(CommitStock { order_id: order(1) })
        .then_events([StockCommitted {
            sku: SKU.into(),
            order_id: order(1),
            quantity: 2,
        }]);
    assert_eq!((inventory.on_hand, inventory.reserved), (3, 0));
    assert_eq!(inventory.available(), 3);
    assert!(inventory.reservations.is_empty());
}

#[test]
fn committing_for_an_order_holding_nothing_is_a_conflict() {
    Inventory::given([received(5)])
        .when(CommitStock { order_id: order(1) })
        .then_conflict();
}

#[test]
fn a_released_reservation_can_no_longer_be_committed() {
    Inventory::given([
        received(5),
        reserved(order(1), 2),
        StockReleased {
            sku: SKU.into(),
            order_id: order(1),
            quantity: 2,
        },
    ])
    .when(CommitStock { order_id: order(1) })
    .then_conflict();
}
