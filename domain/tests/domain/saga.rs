//! The order saga: what it asks of other streams as facts arrive (in any
//! order), how it undoes what succeeded, and what operators can do.
//!
//! A scenario's `given` is a [`History`] of saga events built command by
//! command, so each test starts from the exact state a real run would reach.

mod compensation;
mod failures;
mod forward;

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::saga::{command_id, Fact, SagaCommand, SagaEvent, SourceRef, Step, Timings};
use domain::{Address, Aggregate, CancelReason, OrderLine, Saga};
use uuid::Uuid;

const MUG: &str = "MUG-01";
const TEA: &str = "TEA-7";
const TOTAL: i64 = 3700;

fn order_id() -> Uuid {
    Uuid::from_u128(42)
}

/// `seconds` after the moment the saga starts.
fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn timings() -> Timings {
    Timings {
        payment_deadline: Duration::seconds(30),
        step_check: Duration::seconds(5),
    }
}

fn start() -> SagaCommand {
    SagaCommand::Start {
        order_id: order_id(),
        customer_id: "customer-1".into(),
        lines: lines(),
        total: TOTAL,
        currency: "EUR".into(),
        shipping_address: address(),
        payment_method: "tok_visa".into(),
        correlation_id: "corr-1".into(),
    }
}

fn saga_started() -> SagaEvent {
    SagaEvent::SagaStarted {
        order_id: order_id(),
        customer_id: "customer-1".into(),
        lines: lines(),
        total: TOTAL,
        currency: "EUR".into(),
        shipping_address: address(),
        payment_method: "tok_visa".into(),
        correlation_id: "corr-1".into(),
    }
}

fn lines() -> Vec<OrderLine> {
    vec![
        OrderLine {
            sku: MUG.into(),
            quantity: 2,
            unit_price: 1250,
        },
        OrderLine {
            sku: TEA.into(),
            quantity: 3,
            unit_price: 400,
        },
    ]
}

fn address() -> Address {
    Address {
        name: "Ada Lovelace".into(),
        line1: "12 St James's Square".into(),
        city: "London".into(),
        postal_code: "SW1Y 4JH".into(),
        country: "GB".into(),
    }
}

fn advance(seconds: i64) -> SagaCommand {
    SagaCommand::Advance {
        now: at(seconds),
        timings: timings(),
    }
}

fn reserve(sku: &str) -> Step {
    Step::ReserveStock { sku: sku.into() }
}

fn commit(sku: &str) -> Step {
    Step::CommitStock { sku: sku.into() }
}

fn release(sku: &str) -> Step {
    Step::ReleaseStock { sku: sku.into() }
}

/// Attempt `attempt` of `step`, as `Advance` at `seconds` starts it: the
/// payment step waits for its deadline, any other step for a check.
fn step_started(step: Step, attempt: u32, seconds: i64) -> SagaEvent {
    let wait = if step == Step::AuthorizePayment {
        timings().payment_deadline
    } else {
        timings().step_check
    };
    SagaEvent::SagaStepStarted {
        command_id: command_id(order_id(), &step, attempt),
        step,
        attempt,
        at: at(seconds),
        check_at: at(seconds) + wait,
        deadline: at(seconds) + wait,
    }
}

fn reserved(sku: &str) -> Fact {
    Fact::StockReserved {
        sku: sku.into(),
        quantity: 2,
    }
}

fn out_of_stock(sku: &str) -> Fact {
    Fact::StockReservationRejected {
        sku: sku.into(),
        requested: 3,
        available: 1,
    }
}

fn released(sku: &str) -> Fact {
    Fact::StockReleased { sku: sku.into() }
}

fn committed(sku: &str) -> Fact {
    Fact::StockCommitted { sku: sku.into() }
}

fn authorized() -> Fact {
    Fact::PaymentAuthorized {
        authorization_id: "auth-1".into(),
        amount: TOTAL,
    }
}

fn cancelled(reason: CancelReason) -> Fact {
    Fact::OrderCancelled { reason }
}

/// The stream a fact comes from.
fn stream_of(fact: &Fact) -> String {
    use Fact::*;
    match fact {
        StockReserved { sku, .. }
        | StockReservationRejected { sku, .. }
        | StockReleased { sku }
        | StockCommitted { sku } => format!("inventory-{sku}"),
        PaymentAuthorized { .. }
        | PaymentDeclined { .. }
        | PaymentCaptured { .. }
        | PaymentVoided
        | PaymentRefunded { .. } => format!("payment-{}", order_id()),
        ShipmentRequested | ShipmentRejected { .. } | ShipmentShipped | ShipmentDelivered => {
            format!("shipment-{}", order_id())
        }
        OrderConfirmed | OrderShipped { .. } | OrderDelivered | OrderCancelled { .. } => {
            format!("order-{}", order_id())
        }
    }
}

/// Version `version` of the stream `fact` comes from.
fn source(fact: &Fact, version: u64) -> SourceRef {
    let stream_id = stream_of(fact);
    let json = serde_json::to_value(fact).unwrap();
    SourceRef {
        event_id: Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("{stream_id}:{version}").as_bytes(),
        ),
        stream_id,
        version,
        event_type: json["type"].as_str().unwrap().to_owned(),
    }
}

/// Observing `fact` as version `version` of its stream. When the saga took
/// note of a fact changes no decision, so every fact is observed at 0 s.
fn observe_as(fact: Fact, version: u64) -> SagaCommand {
    SagaCommand::Observe {
        source: source(&fact, version),
        fact,
        now: at(0),
    }
}

/// A saga's recorded events, built by deciding one command after another.
#[derive(Clone)]
struct History(Vec<SagaEvent>);

impl History {
    /// A saga that took charge of the order and did nothing yet.
    fn started() -> Self {
        History(vec![saga_started()])
    }

    fn saga(&self) -> Saga {
        Saga::replay(&self.0)
    }

    fn events(&self) -> Vec<SagaEvent> {
        self.0.clone()
    }

    /// The history after whatever `command` decides.
    fn then(mut self, command: SagaCommand) -> Self {
        let events = self.saga().decide(&command).unwrap();
        self.0.extend(events);
        self
    }

    /// Observing `fact` as the next version of its stream.
    fn observe(&self, fact: Fact) -> SagaCommand {
        let version = self.saga().seen.get(&stream_of(&fact)).map_or(1, |v| v + 1);
        observe_as(fact, version)
    }

    fn observed(self, fact: Fact) -> Self {
        let command = self.observe(fact);
        self.then(command)
    }

    fn advanced(self, seconds: i64) -> Self {
        self.then(advance(seconds))
    }
}

// The happy path, one stage after another. Each stage's last `Advance`
// started the steps named after it.

/// Both lines' reservations started at 0 s.
fn reserving() -> History {
    History::started().advanced(0)
}

/// Both lines reserved; the payment's authorisation started at 1 s.
fn paying() -> History {
    reserving()
        .observed(reserved(MUG))
        .observed(reserved(TEA))
        .advanced(1)
}

/// Authorised; the shipment request started at 2 s.
fn requesting_shipment() -> History {
    paying().observed(authorized()).advanced(2)
}

/// Shipment requested; the capture started at 3 s.
fn capturing() -> History {
    requesting_shipment()
        .observed(Fact::ShipmentRequested)
        .advanced(3)
}

/// Captured; the order's confirmation started at 4 s.
fn confirming() -> History {
    capturing()
        .observed(Fact::PaymentCaptured { amount: TOTAL })
        .advanced(4)
}

/// Confirmed: the saga waits for the operator's ship notice.
fn confirmed() -> History {
    confirming().observed(Fact::OrderConfirmed).advanced(5)
}

/// Shipped by the operator; the stock's commits and the shipment's
/// departure started at 6 s.
fn shipping() -> History {
    confirmed()
        .observed(Fact::OrderShipped {
            carrier: "DHL".into(),
            tracking_number: "JD0001".into(),
        })
        .advanced(6)
}

/// Committed, shipped and delivered by the operator's word; the shipment's
/// delivery started at 7 s.
fn delivering() -> History {
    shipping()
        .observed(committed(MUG))
        .observed(committed(TEA))
        .observed(Fact::ShipmentShipped)
        .observed(Fact::OrderDelivered)
        .advanced(7)
}

/// Delivered: the saga completed at 8 s.
fn completed() -> History {
    delivering().observed(Fact::ShipmentDelivered).advanced(8)
}
