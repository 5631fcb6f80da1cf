//! The invariants a run of the order flow must leave in the event store,
//! checked over its events (as the audit API answers them) by
//! [`crate::system::System::check_invariants`].

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

/// `events` by stream, checking that no command was applied twice to a
/// stream (saga streams aside: a saga change may record several events of
/// one type).
pub(crate) fn by_stream_applying_each_command_once(
    events: &[Value],
) -> BTreeMap<String, Vec<Value>> {
    let mut streams: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut applied: HashSet<(String, String, String)> = HashSet::new();
    for event in events {
        let stream = event["stream_id"].as_str().unwrap_or_default().to_owned();
        if let Some(command_id) = event["metadata"]["command_id"].as_str() {
            if !stream.starts_with("saga-") {
                let key = (
                    stream.clone(),
                    command_id.to_owned(),
                    event["event_type"].as_str().unwrap_or_default().to_owned(),
                );
                assert!(
                    applied.insert(key.clone()),
                    "command applied twice: {key:?}"
                );
            }
        }
        streams.entry(stream).or_default().push(event.clone());
    }
    streams
}

/// Each order's last status by its events (`unknown` when none says).
pub(crate) fn order_statuses(streams: &BTreeMap<String, Vec<Value>>) -> HashMap<String, String> {
    let mut order_status: HashMap<String, String> = HashMap::new();
    for (stream, events) in streams {
        if let Some(order) = stream.strip_prefix("order-") {
            let last = events
                .iter()
                .rev()
                .find_map(|e| match e["event_type"].as_str() {
                    Some("OrderPlaced") => Some("placed"),
                    Some("OrderConfirmed") => Some("confirmed"),
                    Some("OrderShipped") => Some("shipped"),
                    Some("OrderDelivered") => Some("delivered"),
                    Some("OrderCancelled") => Some("cancelled"),
                    _ => None,
                });
            order_status.insert(order.to_owned(), last.unwrap_or("unknown").to_owned());
        }
    }
    order_status
}

/// Stock on hand is received minus committed and never negative along
/// the way, and only open orders hold reservations.
pub(crate) fn check_stock(stream: &str, events: &[Value], order_status: &HashMap<String, String>) {
    let (mut on_hand, mut received, mut committed) = (0i64, 0i64, 0i64);
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    for e in events {
        let quantity = e["data"]["quantity"].as_i64().unwrap_or(0);
        let order = e["data"]["order_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match e["event_type"].as_str() {
            Some("StockReceived") => {
                on_hand += quantity;
                received += quantity;
            }
            Some("StockReserved") => {
                held.insert(order, quantity);
            }
            Some("StockReleased") => {
                held.remove(&order);
            }
            Some("StockCommitted") => {
                held.remove(&order);
                on_hand -= quantity;
                committed += quantity;
            }
            _ => {}
        }
        let reserved: i64 = held.values().sum();
        assert!(
            on_hand >= 0 && reserved <= on_hand,
            "{stream}: stock went negative"
        );
    }
    assert_eq!(on_hand, received - committed, "{stream}: on hand");
    for order in held.keys() {
        let status = order_status.get(order).map(String::as_str);
        assert!(
            matches!(status, Some("placed" | "confirmed")),
            "{stream}: order {order} holds a reservation but is {status:?}"
        );
    }
}

/// A payment is captured at most once; when its order (`order`, with
/// `status`) was cancelled, it keeps no money, every authorisation was
/// voided or refunded, and nothing was captured after the cancellation.
pub(crate) fn check_payment(
    stream: &str,
    events: &[Value],
    streams: &BTreeMap<String, Vec<Value>>,
    status: Option<&String>,
    order: &str,
) {
    let count = |t: &str| events.iter().filter(|e| e["event_type"] == t).count();
    assert!(count("PaymentCaptured") <= 1, "{stream}: captured twice");
    if status.map(String::as_str) != Some("cancelled") {
        return;
    }
    let sum = |t: &str| -> i64 {
        events
            .iter()
            .filter(|e| e["event_type"] == t)
            .filter_map(|e| e["data"]["amount"].as_i64())
            .sum()
    };
    assert_eq!(
        sum("PaymentCaptured"),
        sum("PaymentRefunded"),
        "{stream}: a cancelled order keeps money"
    );
    if count("PaymentAuthorized") > 0 {
        assert!(
            count("PaymentVoided") + count("PaymentRefunded") > 0,
            "{stream}: an authorisation of a cancelled order was neither voided nor refunded"
        );
    }
    let cancelled_at = streams
        .get(&format!("order-{order}"))
        .and_then(|o| o.iter().find(|e| e["event_type"] == "OrderCancelled"))
        .and_then(|e| e["global_position"].as_i64());
    if let Some(cancelled_at) = cancelled_at {
        assert!(
            !events.iter().any(|e| e["event_type"] == "PaymentCaptured"
                && e["global_position"].as_i64() > Some(cancelled_at)),
            "{stream}: captured after the order was cancelled"
        );
    }
}
