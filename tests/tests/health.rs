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
