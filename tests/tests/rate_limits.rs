//! Rate limits per token subject and per client address (DESIGN.md, HTTP
//! conventions): over the limit is 429 problem+json with `Retry-After`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use api::auth::{Authenticator, Role};
use api::{AppState, Application};
use eventstore::testing::TestDb;
use fulcrum_tests::{jwt_config, problem, token};

/// A server allowing `per_subject` requests per second per subject and
/// `per_address` per client address (0: no limit).
async fn spawn(db: &TestDb, per_subject: u32, per_address: u32) -> String {
    let store = db.store();
    let auth = Authenticator::from_config(&jwt_config())
        .unwrap()
        .with_rate_limit(per_subject);
    let state = AppState::new(store, auth);
    let app = Application::with_state(state, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_rate_limit(per_address);
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped());
    base
}

/// Sends `n` GETs of `path` with `token`; answers the first 429, if any.
async fn first_refusal(
    base: &str,
    path: &str,
    token: Option<&str>,
    n: usize,
) -> Option<reqwest::Response> {
    let client = reqwest::Client::new();
    for _ in 0..n {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        if response.status() == 429 {
            return Some(response);
        }
    }
    None
}

#[tokio::test]
async fn a_subject_over_its_rate_gets_429_with_retry_after_and_others_are_served() {
    let db = TestDb::new().await;
    let base = spawn(&db, 5, 0).await;
    let alice = token("alice", Role::Customer);

    let refused = first_refusal(&base, "/api/v1/products", Some(&alice), 50)
        .await
        .expect("50 requests at once were never limited");

    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body = problem(refused, 429).await;
    assert_eq!(body["type"], "https://fulcrum.dev/problems/rate-limited");
    let bob = token("bob", Role::Customer);
    let client = reqwest::Client::new();
    let served = client
        .get(format!("{base}/api/v1/products"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
}

#[tokio::test]
async fn a_client_address_over_its_rate_gets_429_before_authentication() {
    let db = TestDb::new().await;
    let base = spawn(&db, 0, 5).await;

    let refused = first_refusal(&base, "/api/v1/products", None, 50)
        .await
        .expect("50 requests at once were never limited");

    assert!(refused.headers().contains_key("retry-after"));
    problem(refused, 429).await;
}
