//! Health and readiness through the real server over HTTP, against a real
//! database — including one sabotaged on purpose.
#![allow(clippy::unwrap_used)]

use fulcrum_tests::{problem, TestApp};
use serde_json::Value;

#[tokio::test]
async fn a_migrated_database_makes_the_server_ready() {
    let app = TestApp::spawn().await;

    let health = app.get("/healthz", None).await;
    let ready = app.get("/readyz", None).await;

    assert_eq!(health.status(), 200);
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn a_missing_migration_makes_the_server_unready_with_a_problem() {
    let app = TestApp::spawn().await;
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&app.db.pool)
        .await
        .unwrap();

    let ready = problem(app.get("/readyz", None).await, 503).await;

    assert!(ready["detail"].as_str().unwrap().contains("migrations"));
    // Liveness does not depend on the database.
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn an_unreachable_database_makes_the_server_unready() {
    let app = TestApp::spawn().await;
    app.db.pool.close().await;

    problem(app.get("/readyz", None).await, 503).await;
}

/// A server whose database is down: its pool points at a port nothing
/// listens on (what a stopped Postgres looks like to a client).
async fn spawn_without_database() -> String {
    let port = eventstore::testing::free_port();
    let options: sqlx::postgres::PgConnectOptions =
        format!("postgres://postgres@127.0.0.1:{port}/fulcrum?sslmode=disable")
            .parse()
            .unwrap();
    let pool = eventstore::db::pool_options(4).connect_lazy_with(options);
    let store = eventstore::EventStore::new(pool);
    let state = api::AppState::new(
        store,
        api::auth::Authenticator::from_config(&fulcrum_tests::jwt_config()).unwrap(),
    );
    let app = api::Application::with_state(state, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped());
    base
}

#[tokio::test]
async fn with_the_database_down_writes_and_reads_answer_503_with_retry_after() {
    use api::auth::Role;
    let base = spawn_without_database().await;
    let client = reqwest::Client::new();
    let operator = fulcrum_tests::token("olga", Role::Operator);

    let write = client
        .post(format!("{base}/api/v1/products"))
        .bearer_auth(&operator)
        .json(&serde_json::json!({"sku": "A", "name": "A", "unit_price": 1, "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    let read = client
        .get(format!("{base}/api/v1/orders"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();

    for (what, response) in [("write", write), ("read", read), ("readyz", ready)] {
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..]),
            "{what}: {}",
            response.status()
        );
        let body = problem(response, 503).await;
        assert_eq!(body["type"], "https://fulcrum.dev/problems/unavailable");
    }
}
