//! Commands over HTTP with real JWTs and in-process through
//! `CommandHandler`, beside the event store's raw append rate measured in
//! the same run at the same concurrency.
//!
//! ```text
//! cargo run --release -p api --example command_bench [-- SECONDS]
//! ```
//!
//! Serves the real router on a free loopback port over the database
//! `fulcrum_bench` (recreated) on the server of `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432`, TLS off).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::str::FromStr;
use std::time::{Duration, Instant};

use api::auth::{mint_hs256, Authenticator, JwtConfig, Role};
use api::{AppState, Application};
use bytes::Bytes;
use commands::{CommandContext, CommandHandler, OrderRequest, RequestedLine};
use eventstore::{db, EventStore, ExpectedVersion, NewEvent};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The allocator the `fulcrum` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DB: &str = "fulcrum_bench";
const SECRET: &str = "a-benchmark-secret-that-is-long-enough";

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    ok: u64,
    conflicts: u64,
    other: u64,
}

struct Summary {
    /// CPU time the whole machine spent per successful command, in µs.
    cpu_us: f64,
    ok_per_s: f64,
    conflicts_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    other: u64,
}

fn summarize(mut tallies: Vec<Tally>, elapsed: f64, cpu: f64) -> Summary {
    let mut all = Tally::default();
    for t in tallies.iter_mut() {
        all.latencies.append(&mut t.latencies);
        all.ok += t.ok;
        all.conflicts += t.conflicts;
        all.other += t.other;
    }
    all.latencies.sort();
    let pct = |p: f64| {
        let n = all.latencies.len();
        all.latencies
            .get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Summary {
        cpu_us: cpu * 1e6 / all.ok.max(1) as f64,
        ok_per_s: all.ok as f64 / elapsed,
        conflicts_per_s: all.conflicts as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        other: all.other,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into());
    let url = recreate_database(&server).await?;
    let pool = db::connect(&url, 40).await?;
    db::migrate(&pool).await?;
    let store = EventStore::new(pool);
    let jwt = JwtConfig {
        jwt_secret: Some(SECRET.into()),
        jwt_public_key_pem: None,
        jwt_issuer: "fulcrum".into(),
        jwt_audience: "fulcrum-api".into(),
        jwt_max_ttl: api::auth::DEFAULT_MAX_TTL,
        dev: false,
    };
    let state = AppState::new(store.clone(), Authenticator::from_config(&jwt)?);
    let handler = state.commands.clone();
    let app = Application::with_state(state, "127.0.0.1:0".parse()?).await?;
    let base = format!("http://{}", app.local_addr()?);
    tokio::spawn(app.run_until_stopped());
    // Only to define the products; the load has its own connections.
    let client = reqwest::Client::new();
    let mint = |sub: &str, role| {
        mint_hs256(
            SECRET.as_bytes(),
            sub,
            role,
            Duration::from_secs(3600),
            "fulcrum",
            "fulcrum-api",
        )
        .unwrap()
    };
    let operator = mint("bench-operator", Role::Operator);
    for i in 0..10 {
        let product = json!({"sku": format!("SKU-{i}"), "name": "Bench", "unit_price": 1000 + i, "currency": "EUR"});
        let r = client
            .post(format!("{base}/api/v1/products"))
            .bearer_auth(&operator)
            .json(&product)
            .send()
            .await?;
        anyhow::ensure!(
            r.status() == 201,
            "defining a product failed: {}",
            r.status()
        );
    }

    println!(
        "command_bench: {seconds} s per row, {} CPUs, HTTP over loopback, HS256 JWTs\n",
        std::thread::available_parallelism()?
    );
    println!("| workload | clients | ok/s | conflicts/s | p50 ms | p99 ms | other errors | raw appends/s (same clients) | ratio | CPU µs per command |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for clients in [1, 8, 32] {
        let raw = raw_appends(&store, clients, duration).await;
        let tokens: Vec<String> = (0..clients)
            .map(|c| mint(&format!("customer-{c}"), Role::Customer))
            .collect();
        let s = http_load(&base, &tokens, duration, |c, n| {
            let body = json!({
                "lines": [{"sku": format!("SKU-{}", (c + n) % 10), "quantity": 1 + n % 3}],
                "shipping_address": {"name": "Bench", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
                "payment_method": "tok_visa"
            });
            ("/api/v1/orders".to_owned(), body)
        })
        .await;
        println!(
            "| PlaceOrder | {clients} | {:.0} | {:.1} | {:.2} | {:.2} | {} | {raw:.0} | {:.2}x | {:.0} |",
            s.ok_per_s,
            s.conflicts_per_s,
            s.p50_ms,
            s.p99_ms,
            s.other,
            s.ok_per_s / raw,
            s.cpu_us
        );
        let s = in_process(&handler, clients, duration).await;
        println!(
            "| PlaceOrder in-process | {clients} | {:.0} | {:.1} | {:.2} | {:.2} | {} | {raw:.0} | {:.2}x | {:.0} |",
            s.ok_per_s,
            s.conflicts_per_s,
            s.p50_ms,
            s.p99_ms,
            s.other,
            s.ok_per_s / raw,
            s.cpu_us
        );
    }
    let tokens: Vec<String> = (0..32).map(|_| operator.clone()).collect();
    let s = http_load(&base, &tokens, duration, |_, _| {
        (
            "/api/v1/inventory/SKU-0/receipts".to_owned(),
            json!({"quantity": 1}),
        )
    })
    .await;
    println!(
        "| stock receipt, one hot SKU | 32 | {:.0} | {:.1} | {:.2} | {:.2} | {} | | | {:.0} |",
        s.ok_per_s, s.conflicts_per_s, s.p50_ms, s.p99_ms, s.other, s.cpu_us
    );
    Ok(())
}

/// PlaceOrder through `CommandHandler` directly (no HTTP, no JWT): each
/// client places orders back to back until the time is up.
async fn in_process(handler: &CommandHandler, clients: usize, duration: Duration) -> Summary {
    let cpu_start = eventstore::testing::machine_cpu_seconds();
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let handler = handler.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut n = 0;
                let customer = format!("customer-{c}");
                while Instant::now() < deadline {
                    let request = OrderRequest {
                        order_id: uuid::Uuid::new_v4(),
                        customer_id: customer.clone(),
                        lines: vec![RequestedLine {
                            sku: format!("SKU-{}", (c + n) % 10),
                            quantity: 1 + (n % 3) as i64,
                        }],
                        shipping_address: domain::Address {
                            name: "Bench".into(),
                            line1: "1 Main St".into(),
                            city: "Berlin".into(),
                            postal_code: "10115".into(),
                            country: "DE".into(),
                        },
                        payment_method: "tok_visa".into(),
                    };
                    n += 1;
                    let context =
                        CommandContext::new(customer.clone(), uuid::Uuid::new_v4().to_string());
                    let t = Instant::now();
                    match handler.place_order(request, context).await {
                        Ok(_) => {
                            tally.latencies.push(t.elapsed());
                            tally.ok += 1;
                        }
                        Err(commands::CommandError::Contention { .. }) => tally.conflicts += 1,
                        Err(_) => tally.other += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await.expect("client panicked"));
    }
    summarize(
        tallies,
        start.elapsed().as_secs_f64(),
        eventstore::testing::machine_cpu_seconds() - cpu_start,
    )
}

/// How many different requests a client cycles through (`request(c, n)`
/// must repeat with this period in `n`).
const PERIOD: usize = 30;

/// Each client posts back to back until the time is up, on a keep-alive
/// connection of its own (one HTTP/1.1 connection per client, opened again
/// if the server closes it). The requests are made and serialized before
/// the clock starts, and sent through hyper's bare connection rather than
/// a pooling client, so that the load generator, which shares the CPUs
/// with the server and Postgres, spends as little of them as it can.
async fn http_load(
    base: &str,
    tokens: &[String],
    duration: Duration,
    request: impl Fn(usize, usize) -> (String, serde_json::Value),
) -> Summary {
    let authority = base.trim_start_matches("http://").to_owned();
    let prepared: Vec<Vec<(http::Uri, Bytes)>> = (0..tokens.len())
        .map(|c| {
            (0..PERIOD)
                .map(|n| {
                    let (path, body) = request(c, n);
                    let uri = http::Uri::try_from(path).unwrap();
                    (uri, Bytes::from(serde_json::to_vec(&body).unwrap()))
                })
                .collect()
        })
        .collect();
    let authorization: Vec<http::HeaderValue> = tokens
        .iter()
        .map(|t| format!("Bearer {t}").parse().unwrap())
        .collect();
    let cpu_start = eventstore::testing::machine_cpu_seconds();
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = prepared
        .into_iter()
        .zip(authorization)
        .map(|(requests, authorization)| {
            let authority = authority.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut n = 0;
                let mut sender = None;
                while Instant::now() < deadline {
                    let (uri, body) = &requests[n % PERIOD];
                    n += 1;
                    let t = Instant::now();
                    let status = post(&mut sender, &authority, uri, &authorization, body).await;
                    match status {
                        Some(200..=299) => {
                            tally.latencies.push(t.elapsed());
                            tally.ok += 1;
                        }
                        Some(409) => tally.conflicts += 1,
                        _ => tally.other += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await.expect("client panicked"));
    }
    summarize(
        tallies,
        start.elapsed().as_secs_f64(),
        eventstore::testing::machine_cpu_seconds() - cpu_start,
    )
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One POST on `sender`'s connection (opened first if there is none):
/// the answer's status once its body is read, `None` on a network error
/// (the connection is then dropped).
async fn post(
    sender: &mut Option<Sender>,
    authority: &str,
    uri: &http::Uri,
    authorization: &http::HeaderValue,
    body: &Bytes,
) -> Option<u16> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = tokio::net::TcpStream::connect(authority).await.ok()?;
        stream.set_nodelay(true).ok()?;
        let (s, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        *sender = Some(s);
    }
    let s = sender.as_mut()?;
    let request = http::Request::post(uri)
        .header(http::header::HOST, authority)
        .header(http::header::AUTHORIZATION, authorization)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))
        .ok()?;
    let answered = async {
        s.ready().await?;
        let response = s.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok::<_, hyper::Error>(status)
    };
    match answered.await {
        Ok(status) => Some(status),
        Err(_) => {
            *sender = None;
            None
        }
    }
}

/// The event store's raw rate: one event per append, a new stream each.
async fn raw_appends(store: &EventStore, writers: usize, duration: Duration) -> f64 {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let event =
                        NewEvent::new("BenchEvent", 1, json!({"sku": "SKU-1", "quantity": 3}));
                    let stream = format!("bench-{}", uuid::Uuid::new_v4());
                    if store
                        .append(
                            &stream,
                            ExpectedVersion::NoStream,
                            &[event],
                            &json!({"user_id": "bench"}),
                        )
                        .await
                        .is_ok()
                    {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer panicked");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn recreate_database(server: &str) -> anyhow::Result<String> {
    let base = PgConnectOptions::from_str(server)?;
    let mut admin = base.clone().database("postgres").connect().await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {DB}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let mut url = reqwest::Url::parse(server)?;
    url.set_path(DB);
    Ok(url.to_string())
}
