//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the real binary exports its spans
//! over OTLP (HTTP/protobuf), in the trace the request's `traceparent`
//! named, and its JSON log lines carry that trace id.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use eventstore::testing::free_port;

#[tokio::test]
async fn spans_are_exported_over_otlp_in_the_requests_trace() {
    // An OTLP/HTTP collector: keeps every body POSTed to /v1/traces.
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let sink = received.clone();
    let collector = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| async move {
            sink.lock().unwrap().push(body);
            ""
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["serve", "--roles", "api", "--dev"])
        .env("FULCRUM_ADDR", &addr)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("FULCRUM_LOG_FORMAT", "json")
        .env("RUST_LOG", "info,api=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client = reqwest::Client::new();

    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let sent = client
            .get(format!("http://{addr}/healthz"))
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .send()
            .await;
        if let Ok(answer) = sent {
            break answer;
        }
        assert!(Instant::now() < deadline, "the server never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exported = loop {
        let bodies = received.lock().unwrap().clone();
        let raw = hex::decode(trace_id).unwrap();
        if bodies
            .iter()
            .any(|b| b.windows(16).any(|w| w == raw.as_slice()))
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        let mut logs = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut logs);
        }
        logs
    })
    .await
    .unwrap();

    assert_eq!(answer.status(), 200);
    let echoed = answer.headers()["traceparent"].to_str().unwrap();
    assert!(echoed.starts_with(&format!("00-{trace_id}-")), "{echoed}");
    assert!(
        exported,
        "no span of trace {trace_id} reached the collector"
    );
    let traced_line = output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|line| line["span"]["trace_id"] == trace_id);
    assert!(
        traced_line,
        "no JSON log line carries the trace id:\n{output}"
    );
}
