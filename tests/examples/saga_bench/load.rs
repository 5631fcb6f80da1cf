//! Placing orders open loop and seeing them settle.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fulcrum_tests::system::System;
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{CUSTOMERS, GIVE_UP, POLL, SKUS};

/// An accepted order, as the tracker learns of it.
pub struct Placed {
    pub order_id: Uuid,
    pub index: usize,
    pub started: Instant,
    pub started_ms: f64,
    pub measured: bool,
}

pub enum Outcome {
    Confirmed,
    Cancelled,
    TimedOut,
}

pub struct Settled {
    pub placed: Placed,
    pub outcome: Outcome,
    pub at: Instant,
}

/// What the senders of one phase saw.
#[derive(Default)]
pub struct Sent {
    pub accepted: usize,
    pub rejected: BTreeMap<String, usize>,
    pub last_answer: Option<Instant>,
    pub spawn_lag: Vec<Duration>,
}

pub fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1e3
}

fn body(i: usize) -> Value {
    let sku = |n: usize| format!("SKU-{:02}", n % SKUS);
    let mut lines = vec![json!({"sku": sku(i), "quantity": 1})];
    if i % 2 == 1 {
        lines.push(json!({"sku": sku(i + 7), "quantity": 2}));
    }
    json!({
        "lines": lines,
        "shipping_address": {"name": "Bench", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        "payment_method": "tok_visa",
    })
}

/// Polls the order read model for every outstanding order; answers each
/// order's outcome once the senders are gone and nothing is outstanding.
pub async fn track(pool: PgPool, mut placed: mpsc::UnboundedReceiver<Placed>) -> Vec<Settled> {
    let mut outstanding: HashMap<Uuid, Placed> = HashMap::new();
    let mut settled = Vec::new();
    let mut open = true;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while open || !outstanding.is_empty() {
        tick.tick().await;
        loop {
            match placed.try_recv() {
                Ok(p) => {
                    outstanding.insert(p.order_id, p);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if outstanding.is_empty() {
            continue;
        }
        let ids: Vec<Uuid> = outstanding.keys().copied().collect();
        let at = Instant::now();
        let rows = sqlx::query(
            "SELECT order_id, status FROM rm_orders.orders WHERE order_id = ANY($1) AND status <> 'placed'",
        )
        .bind(&ids)
        .fetch_all(&pool)
        .await
        .unwrap();
        for row in rows {
            let id: Uuid = row.get(0);
            let status: String = row.get(1);
            let outcome = match status.as_str() {
                "cancelled" => Outcome::Cancelled,
                _ => Outcome::Confirmed,
            };
            let placed = outstanding.remove(&id).unwrap();
            settled.push(Settled {
                placed,
                outcome,
                at,
            });
        }
        let late: Vec<Uuid> = outstanding
            .values()
            .filter(|p| at.duration_since(p.started) > GIVE_UP)
            .map(|p| p.order_id)
            .collect();
        for id in late {
            let placed = outstanding.remove(&id).unwrap();
            settled.push(Settled {
                placed,
                outcome: Outcome::TimedOut,
                at,
            });
        }
    }
    settled
}

/// Places `rate` orders per second for `seconds`, open loop; every
/// accepted order goes to the tracker. Numbers orders from `first`.
pub async fn drive(
    system: &Arc<System>,
    tokens: &Arc<Vec<String>>,
    tracker: &mpsc::UnboundedSender<Placed>,
    (rate, seconds, first, measured): (f64, f64, usize, bool),
) -> Sent {
    let total = (rate * seconds).round() as usize;
    let sent = Arc::new(Mutex::new(Sent::default()));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = tokio::task::JoinSet::new();
    for i in first..first + total {
        let scheduled = tick.tick().await;
        let (system, tokens, tracker, sent) = (
            system.clone(),
            tokens.clone(),
            tracker.clone(),
            sent.clone(),
        );
        inflight.spawn(async move {
            let (started, started_ms) = (Instant::now(), epoch_ms());
            let url = format!("{}/api/v1/orders", system.app.base);
            let response = system
                .app
                .client
                .post(url)
                .bearer_auth(&tokens[i % CUSTOMERS])
                .json(&body(i))
                .send()
                .await;
            let answer = match response {
                Ok(r) if r.status() == 202 => r.json::<Value>().await.map_err(|e| e.to_string()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(format!("transport: {e}")),
            };
            let order_id = answer.and_then(|a| {
                a["order_id"]
                    .as_str()
                    .and_then(|id| id.parse::<Uuid>().ok())
                    .ok_or_else(|| "no order id".to_owned())
            });
            let mut sent = sent.lock().unwrap();
            sent.spawn_lag
                .push(started.duration_since(scheduled.into_std()));
            sent.last_answer = Some(Instant::now());
            match order_id {
                Ok(order_id) => {
                    sent.accepted += 1;
                    let placed = Placed {
                        order_id,
                        index: i - first,
                        started,
                        started_ms,
                        measured,
                    };
                    tracker.send(placed).unwrap();
                }
                Err(why) => *sent.rejected.entry(why).or_default() += 1,
            }
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
    Arc::into_inner(sent).unwrap().into_inner().unwrap()
}
