//! Placing orders open loop and seeing them settle, over HTTP against the
//! in-process system or a separate `fulcrum serve`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::auth::Role;
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{CUSTOMERS, GIVE_UP, SKUS};

/// The server the orders go to.
#[derive(Clone)]
pub struct Target {
    /// Its base URL, e.g. `http://127.0.0.1:8080`.
    pub base: String,
    /// The HTTP client.
    pub client: reqwest::Client,
    /// The HS256 secret its tokens verify with (`JWT_SECRET`).
    pub secret: String,
    /// The SKUs' prefix (`<prefix>-NN`): a separate server keeps its
    /// products from run to run, so each run defines its own.
    pub sku_prefix: String,
}

impl Target {
    /// A token for `sub` with `role`, valid for an hour.
    pub fn token(&self, sub: &str, role: Role) -> String {
        api::auth::mint_hs256(
            self.secret.as_bytes(),
            sub,
            role,
            Duration::from_secs(3600),
            "fulcrum",
            "fulcrum-api",
        )
        .unwrap()
    }

    fn sku(&self, n: usize) -> String {
        format!("{}-{:02}", self.sku_prefix, n % SKUS)
    }

    /// Defines SKU number `n` with `stock` units, as an operator would.
    pub async fn give_product(&self, n: usize, unit_price: i64, stock: i64) {
        let operator = self.token("bench-operator", Role::Operator);
        let sku = self.sku(n);
        let product = json!({"sku": sku, "name": format!("Product {sku}"), "unit_price": unit_price, "currency": "EUR"});
        let receipt = json!({"quantity": stock});
        for (path, body) in [
            ("/api/v1/products".to_owned(), product),
            (format!("/api/v1/inventory/{sku}/receipts"), receipt),
        ] {
            let response = self
                .client
                .post(format!("{}{path}", self.base))
                .bearer_auth(&operator)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "POST {path}");
        }
    }

    /// Places order number `i` as `token`'s customer; its id.
    async fn place(&self, token: &str, i: usize) -> Result<Uuid, String> {
        let response = self
            .client
            .post(format!("{}/api/v1/orders", self.base))
            .bearer_auth(token)
            .json(&self.body(i))
            .send()
            .await;
        let answer = match response {
            Ok(r) if r.status() == 202 => r.json::<Value>().await.map_err(|e| e.to_string()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(format!("transport: {e}")),
        };
        answer.and_then(|a| {
            a["order_id"]
                .as_str()
                .and_then(|id| id.parse::<Uuid>().ok())
                .ok_or_else(|| "no order id".to_owned())
        })
    }

    /// Order number `i`: one or two lines, `tok_visa`, shipped to DE.
    fn body(&self, i: usize) -> Value {
        let sku = |n: usize| self.sku(n);
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

    /// Places one order and waits until `watch` sees it confirmed.
    pub async fn first_order(&self, watch: &Watch) {
        let token = self.token("bench-first", Role::Customer);
        let order = self.place(&token, 0).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(&(_, cancelled)) = watch.settled(&[order]).await.first() {
                assert!(!cancelled, "the first order was cancelled");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the first order was not confirmed in 60 s"
            );
            tokio::time::sleep(watch.poll()).await;
        }
    }
}

/// How the tracker learns that orders settled.
pub enum Watch {
    /// Polls `rm_orders.orders` for every outstanding order in one query
    /// (the in-process system's database).
    Database(PgPool),
    /// GETs `/api/v1/orders/{id}` for each outstanding order, as a client
    /// of a separate server would (with a staff token).
    Http {
        /// The server.
        target: Target,
        /// A staff token.
        token: String,
    },
}

impl Watch {
    /// How often outstanding orders are looked at.
    pub fn poll(&self) -> Duration {
        match self {
            Watch::Database(_) => Duration::from_millis(5),
            Watch::Http { .. } => Duration::from_millis(10),
        }
    }

    /// Which of `ids` left `placed`, each with whether it was cancelled.
    async fn settled(&self, ids: &[Uuid]) -> Vec<(Uuid, bool)> {
        match self {
            Watch::Database(pool) => sqlx::query(
                "SELECT order_id, status FROM rm_orders.orders WHERE order_id = ANY($1) AND status <> 'placed'",
            )
            .bind(ids)
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.get(0), row.get::<String, _>(1) == "cancelled"))
            .collect(),
            Watch::Http { target, token } => {
                let gets = ids.iter().map(|id| async move {
                    let url = format!("{}/api/v1/orders/{id}", target.base);
                    let response = target.client.get(url).bearer_auth(token).send().await.ok()?;
                    if response.status() != 200 {
                        return None;
                    }
                    let order = response.json::<Value>().await.ok()?;
                    let status = order["status"].as_str()?.to_owned();
                    (status != "placed").then_some((*id, status == "cancelled"))
                });
                futures::future::join_all(gets).await.into_iter().flatten().collect()
            }
        }
    }
}

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

/// Polls the order read model for every outstanding order; answers each
/// order's outcome once the senders are gone and nothing is outstanding.
pub async fn track(watch: Arc<Watch>, mut placed: mpsc::UnboundedReceiver<Placed>) -> Vec<Settled> {
    let mut outstanding: HashMap<Uuid, Placed> = HashMap::new();
    let mut settled = Vec::new();
    let mut open = true;
    let mut tick = tokio::time::interval(watch.poll());
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
        for (id, cancelled) in watch.settled(&ids).await {
            let outcome = if cancelled {
                Outcome::Cancelled
            } else {
                Outcome::Confirmed
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
    target: &Arc<Target>,
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
        let (target, tokens, tracker, sent) = (
            target.clone(),
            tokens.clone(),
            tracker.clone(),
            sent.clone(),
        );
        inflight.spawn(async move {
            let (started, started_ms) = (Instant::now(), epoch_ms());
            let order_id = target.place(&tokens[i % CUSTOMERS], i).await;
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
