//! A generated, realistic mixed history: products, stock, and orders that
//! go every way the saga can take them (out of stock, declined, shipment
//! rejected, cancelled before or after confirmation, shipped, delivered),
//! with their payment and shipment streams. Events are the domain's own
//! types encoded with `DomainEvent::to_data`, appended with the event store
//! a round at a time: one append per stream per round, many at once.
//!
//! Shared by the bulk/live equivalence test and the `rebuild_bench` example.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use domain::{
    Address, Aggregate, CancelReason, DomainEvent, Inventory, InventoryEvent, OrderEvent,
    OrderLine, PaymentEvent, ProductEvent, ShipmentEvent,
};
use eventstore::{EventStore, ExpectedVersion, NewEvent};
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

/// Appends running at once.
const CONCURRENCY: usize = 16;

/// Generates a history into a store, round after round.
pub struct History {
    rng: StdRng,
    prices: Vec<(String, i64, &'static str)>,
    stock: HashMap<String, Inventory>,
    round: Vec<(String, Vec<NewEvent>)>,
    index: HashMap<String, usize>,
    /// Events generated so far.
    pub events: usize,
    /// Orders generated so far.
    pub orders: usize,
}

impl History {
    /// A history over `skus` products (a tenth priced in USD, the rest in
    /// EUR), seeded for repeatability. Defines the products and their first
    /// stock in the first round.
    pub fn new(skus: usize, seed: u64) -> History {
        let mut history = History {
            rng: StdRng::seed_from_u64(seed),
            prices: Vec::new(),
            stock: HashMap::new(),
            round: Vec::new(),
            index: HashMap::new(),
            events: 0,
            orders: 0,
        };
        for i in 0..skus {
            let sku = format!("SKU-{i:05}");
            let currency = if i % 10 == 9 { "USD" } else { "EUR" };
            let unit_price = history.rng.gen_range(100..10_000);
            history.product(ProductEvent::ProductDefined {
                sku: sku.clone(),
                name: format!("Product {i}\twith a tab, a \\ and a \"quote\""),
                unit_price,
                currency: currency.into(),
            });
            history.prices.push((sku.clone(), unit_price, currency));
            history.stock.insert(sku.clone(), Inventory::default());
            let quantity = history.rng.gen_range(20..200);
            history.stock_event(InventoryEvent::StockReceived { sku, quantity });
        }
        history
    }

    /// Generates `orders` more orders (with price changes and receipts among
    /// them) and appends them, `per_round` orders per round.
    pub async fn generate(
        &mut self,
        store: &EventStore,
        orders: usize,
        per_round: usize,
    ) -> anyhow::Result<()> {
        let mut left = orders;
        while left > 0 || !self.round.is_empty() {
            let now = left.min(per_round.max(1));
            for _ in 0..now {
                self.order();
            }
            left -= now;
            self.restock_and_reprice();
            self.flush(store).await?;
        }
        Ok(())
    }

    fn push(&mut self, stream_id: String, event_type: &str, data: serde_json::Value) {
        let event = NewEvent::new(event_type, 1, data);
        self.events += 1;
        match self.index.get(&stream_id) {
            Some(&i) => self.round[i].1.push(event),
            None => {
                self.index.insert(stream_id.clone(), self.round.len());
                self.round.push((stream_id, vec![event]));
            }
        }
    }

    fn product(&mut self, event: ProductEvent) {
        let sku = match &event {
            ProductEvent::ProductDefined { sku, .. }
            | ProductEvent::ProductPriceChanged { sku, .. } => sku.clone(),
        };
        self.push(
            format!("product-{sku}"),
            event.event_type(),
            event.to_data(),
        );
    }

    fn stock_event(&mut self, event: InventoryEvent) {
        let sku = match &event {
            InventoryEvent::StockReceived { sku, .. }
            | InventoryEvent::StockReserved { sku, .. }
            | InventoryEvent::StockReservationRejected { sku, .. }
            | InventoryEvent::StockReleased { sku, .. }
            | InventoryEvent::StockCommitted { sku, .. } => sku.clone(),
        };
        let state = self.stock.remove(&sku).unwrap_or_default();
        self.stock.insert(sku.clone(), state.evolve(&event));
        self.push(
            format!("inventory-{sku}"),
            event.event_type(),
            event.to_data(),
        );
    }

    fn order_event(&mut self, event: OrderEvent, order_id: Uuid) {
        self.push(
            format!("order-{order_id}"),
            event.event_type(),
            event.to_data(),
        );
    }

    fn payment(&mut self, event: PaymentEvent, order_id: Uuid) {
        self.push(
            format!("payment-{order_id}"),
            event.event_type(),
            event.to_data(),
        );
    }

    fn shipment(&mut self, event: ShipmentEvent, order_id: Uuid) {
        self.push(
            format!("shipment-{order_id}"),
            event.event_type(),
            event.to_data(),
        );
    }

    /// One order taken down one of the saga's paths.
    fn order(&mut self) {
        self.orders += 1;
        let order_id = Uuid::from_u128(self.rng.gen());
        let usd = self.rng.gen_bool(0.1) && self.prices.len() >= 10;
        let currency = if usd { "USD" } else { "EUR" };
        let mut lines: Vec<OrderLine> = Vec::new();
        let wanted = self.rng.gen_range(1..=3);
        while lines.len() < wanted {
            // Every tenth product (index 9, 19, ...) is priced in USD.
            let tens = self.prices.len() / 10;
            let i = if usd {
                self.rng.gen_range(0..tens) * 10 + 9
            } else {
                let i = self.rng.gen_range(0..self.prices.len());
                if i % 10 == 9 {
                    i - 1
                } else {
                    i
                }
            };
            let (sku, unit_price, _) = self.prices[i].clone();
            if lines.iter().any(|l| l.sku == sku) {
                break;
            }
            let quantity = self.rng.gen_range(1..=5);
            lines.push(OrderLine {
                sku,
                quantity,
                unit_price,
            });
        }
        self.place(order_id, lines, currency)
    }

    fn place(&mut self, order_id: Uuid, lines: Vec<OrderLine>, currency: &str) {
        let total = lines.iter().map(|l| l.quantity * l.unit_price).sum();
        let customer_id = format!("customer-{}", self.rng.gen_range(0..500));
        let address = Address {
            name: "Ada Lovelace".into(),
            line1: "12 St James's Square".into(),
            city: "London".into(),
            postal_code: "SW1Y 4JH".into(),
            country: "GB".into(),
        };
        self.order_event(
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                lines: lines.clone(),
                total,
                currency: currency.into(),
                shipping_address: address.clone(),
                payment_method: "tok_visa".into(),
            },
            order_id,
        );
        let mut reserved = Vec::new();
        for line in &lines {
            let available = self.stock[&line.sku].available();
            if line.quantity > available {
                self.stock_event(InventoryEvent::StockReservationRejected {
                    sku: line.sku.clone(),
                    order_id,
                    requested: line.quantity,
                    available,
                });
                return self.cancel(order_id, &reserved, CancelReason::OutOfStock);
            }
            self.stock_event(InventoryEvent::StockReserved {
                sku: line.sku.clone(),
                order_id,
                quantity: line.quantity,
            });
            reserved.push(line.clone());
        }
        if self.rng.gen_bool(0.08) {
            let reason = "insufficient funds".into();
            self.payment(PaymentEvent::PaymentDeclined { order_id, reason }, order_id);
            return self.cancel(order_id, &reserved, CancelReason::PaymentDeclined);
        }
        let authorization_id = format!("auth-{order_id}");
        let authorized = PaymentEvent::PaymentAuthorized {
            order_id,
            amount: total,
            currency: currency.into(),
            authorization_id,
        };
        self.payment(authorized, order_id);
        if self.rng.gen_bool(0.03) {
            let reason = "unsupported destination country XX".into();
            self.shipment(
                ShipmentEvent::ShipmentRejected { order_id, reason },
                order_id,
            );
            self.payment(PaymentEvent::PaymentVoided { order_id }, order_id);
            return self.cancel(order_id, &reserved, CancelReason::ShipmentRejected);
        }
        self.shipment(
            ShipmentEvent::ShipmentRequested { order_id, address },
            order_id,
        );
        let captured = PaymentEvent::PaymentCaptured {
            order_id,
            amount: total,
        };
        self.payment(captured, order_id);
        self.order_event(OrderEvent::OrderConfirmed { order_id }, order_id);
        if self.rng.gen_bool(0.05) {
            let refunded = PaymentEvent::PaymentRefunded {
                order_id,
                amount: total,
            };
            self.payment(refunded, order_id);
            return self.cancel(order_id, &reserved, CancelReason::CustomerCancelled);
        }
        if self.rng.gen_bool(0.15) {
            return; // stays confirmed
        }
        for line in &reserved {
            self.stock_event(InventoryEvent::StockCommitted {
                sku: line.sku.clone(),
                order_id,
                quantity: line.quantity,
            });
        }
        let (carrier, tracking_number) = ("DHL".to_owned(), format!("TRK{}", self.orders));
        let shipped = ShipmentEvent::ShipmentShipped {
            order_id,
            carrier: carrier.clone(),
            tracking_number: tracking_number.clone(),
        };
        self.shipment(shipped, order_id);
        let shipped = OrderEvent::OrderShipped {
            order_id,
            carrier,
            tracking_number,
        };
        self.order_event(shipped, order_id);
        if self.rng.gen_bool(0.75) {
            self.shipment(ShipmentEvent::ShipmentDelivered { order_id }, order_id);
            self.order_event(OrderEvent::OrderDelivered { order_id }, order_id);
        }
    }

    fn cancel(&mut self, order_id: Uuid, reserved: &[OrderLine], reason: CancelReason) {
        for line in reserved {
            self.stock_event(InventoryEvent::StockReleased {
                sku: line.sku.clone(),
                order_id,
                quantity: line.quantity,
            });
        }
        self.order_event(OrderEvent::OrderCancelled { order_id, reason }, order_id);
    }

    /// Tops up low stock and changes a few prices.
    fn restock_and_reprice(&mut self) {
        let low: Vec<String> = self
            .stock
            .iter()
            .filter(|(_, s)| s.available() < 30)
            .map(|(sku, _)| sku.clone())
            .collect();
        for sku in low {
            let quantity = self.rng.gen_range(50..300);
            self.stock_event(InventoryEvent::StockReceived { sku, quantity });
        }
        for _ in 0..(self.prices.len() / 50).max(1) {
            let i = self.rng.gen_range(0..self.prices.len());
            let unit_price = self.rng.gen_range(100..10_000);
            self.prices[i].1 = unit_price;
            let sku = self.prices[i].0.clone();
            self.product(ProductEvent::ProductPriceChanged { sku, unit_price });
        }
    }

    /// Appends the round: one append per stream, many at once.
    async fn flush(&mut self, store: &EventStore) -> anyhow::Result<()> {
        self.index.clear();
        let round = std::mem::take(&mut self.round);
        let metadata = json!({
            "correlation_id": Uuid::new_v4().to_string(),
            "causation_id": Uuid::new_v4().to_string(),
            "user_id": "history",
            "command_id": Uuid::new_v4(),
        });
        stream::iter(round)
            .map(|(stream_id, events)| {
                let metadata = &metadata;
                async move {
                    store
                        .append(&stream_id, ExpectedVersion::Any, &events, metadata)
                        .await
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }
}
