//! The sandbox gateway with its books in Postgres, as `fulcrum serve` runs
//! it: two gateways on one database stand for two processes of one
//! deployment. What one authorised, the other captures, voids and refunds;
//! concurrent repeats move money once; an answer its process never gave is
//! given by the other's status call.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use eventstore::testing::TestDb;
use saga::gateway::{
    AuthorizationRequest, Callback, GatewayAnswer, GatewayError, PaymentGateway, PgBooks,
    RequestStatus, SandboxConfig, SandboxGateway,
};
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

type Process = (Arc<SandboxGateway>, UnboundedReceiver<Callback>);

fn process(db: &TestDb, config: SandboxConfig) -> Process {
    SandboxGateway::with_books(config, Arc::new(PgBooks::new(db.pool.clone())))
}

fn request(key: &str, token: &str) -> AuthorizationRequest {
    AuthorizationRequest {
        idempotency_key: key.to_owned(),
        order_id: Uuid::new_v4(),
        amount: 1_000,
        currency: "EUR".to_owned(),
        payment_method: token.to_owned(),
    }
}

async fn approval(callbacks: &mut UnboundedReceiver<Callback>) -> String {
    let callback = tokio::time::timeout(Duration::from_secs(10), callbacks.recv())
        .await
        .expect("a callback in time")
        .expect("the sandbox is alive");
    match callback.answer {
        GatewayAnswer::Approved { authorization_id } => authorization_id,
        other => panic!("expected an approval, got {other:?}"),
    }
}

#[tokio::test]
async fn what_one_process_authorised_another_captures_and_refunds_once() {
    let db = TestDb::new().await;
    let (a, mut a_callbacks) = process(&db, SandboxConfig::default());
    let (b, mut b_callbacks) = process(&db, SandboxConfig::default());

    let pay = request("pay-1", "tok_visa");
    a.authorize(&pay).await.unwrap();
    let authorization = approval(&mut a_callbacks).await;
    // A repeat through B re-sends A's answer to B's webhook.
    b.authorize(&pay).await.unwrap();
    assert_eq!(approval(&mut b_callbacks).await, authorization);
    // B sees A's request, and its answer.
    assert_eq!(
        b.status("pay-1").await.unwrap(),
        RequestStatus::Answered(GatewayAnswer::Approved {
            authorization_id: authorization.clone()
        })
    );
    b.capture("cap-1", &authorization, 1_000).await.unwrap();
    // A repeat through A moves nothing more; the key with another amount is refused.
    a.capture("cap-1", &authorization, 1_000).await.unwrap();
    assert!(matches!(
        a.capture("cap-1", &authorization, 500).await,
        Err(GatewayError::Refused(_))
    ));
    // The books hold the capture: a void is refused, a refund past it too.
    assert!(matches!(
        a.void("void-1", &authorization).await,
        Err(GatewayError::Refused(_))
    ));
    a.refund("ref-1", &authorization, 600).await.unwrap();
    assert!(matches!(
        b.refund("ref-2", &authorization, 600).await,
        Err(GatewayError::Refused(_))
    ));
    b.refund("ref-2", &authorization, 400).await.unwrap();

    let captures = b.captures().await.unwrap();
    assert_eq!(captures.len(), 1);
    assert_eq!(captures[0].amount, 1_000);
    let refunded: Vec<i64> = a
        .refunds()
        .await
        .unwrap()
        .iter()
        .map(|m| m.amount)
        .collect();
    assert_eq!(refunded, vec![600, 400]);
}

#[tokio::test]
async fn concurrent_captures_from_many_processes_move_money_once_and_never_past_the_hold() {
    let db = TestDb::with_pool_size(20).await;
    let (a, mut a_callbacks) = process(&db, SandboxConfig::default());
    a.authorize(&request("pay-1", "tok_visa")).await.unwrap();
    let first = approval(&mut a_callbacks).await;
    a.authorize(&request("pay-2", "tok_visa")).await.unwrap();
    let second = approval(&mut a_callbacks).await;

    // Sixteen processes repeat one capture: it moves money once, and every
    // one of them is answered Ok.
    let mut repeats = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (gateway, _) = process(&db, SandboxConfig::default());
        let first = first.clone();
        repeats.spawn(async move { gateway.capture("cap-1", &first, 700).await });
    }
    while let Some(done) = repeats.join_next().await {
        assert_eq!(done.unwrap(), Ok(()));
    }
    // Sixteen processes capture 100 each with keys of their own from a hold
    // of 1000: ten fit, six are refused.
    let mut captures = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (gateway, _) = process(&db, SandboxConfig::default());
        let second = second.clone();
        captures.spawn(async move { gateway.capture(&format!("part-{i}"), &second, 100).await });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(done) = captures.join_next().await {
        match done.unwrap() {
            Ok(()) => ok += 1,
            Err(GatewayError::Refused(_)) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, refused), (10, 6));

    let moved = a.captures().await.unwrap();
    let on = |id: &str| -> Vec<i64> {
        moved
            .iter()
            .filter(|m| m.authorization_id == id)
            .map(|m| m.amount)
            .collect()
    };
    assert_eq!(on(&first), vec![700]);
    assert_eq!(on(&second).iter().sum::<i64>(), 1_000);
}

#[tokio::test]
async fn an_answer_its_process_never_gave_is_given_by_another_status_call() {
    let db = TestDb::new().await;
    // A accepts the request and stops before its answer is due.
    let slow = SandboxConfig {
        answer_delay: Duration::from_secs(3600),
        ..SandboxConfig::default()
    };
    let (a, a_callbacks) = process(&db, slow);
    a.authorize(&request("pay-1", "tok_visa")).await.unwrap();
    a.authorize(&request("pay-2", "tok_declined"))
        .await
        .unwrap();
    a.authorize(&request("pay-3", "tok_timeout")).await.unwrap();
    drop((a, a_callbacks));
    let (b, _) = process(&db, SandboxConfig::default());
    // Not due yet: pending for everyone.
    assert_eq!(b.status("pay-1").await.unwrap(), RequestStatus::Pending);

    // Make the answers overdue, as if an hour had passed.
    sqlx::query(
        "UPDATE sandbox_requests SET due_at = now() - interval '1 minute' WHERE due_at IS NOT NULL",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let approved = b.status("pay-1").await.unwrap();
    let RequestStatus::Answered(GatewayAnswer::Approved { authorization_id }) = &approved else {
        panic!("{approved:?}")
    };
    // The answer stands: asked again, by anyone, it is the same.
    let (c, _) = process(&db, SandboxConfig::default());
    assert_eq!(c.status("pay-1").await.unwrap(), approved);
    c.capture("cap-1", authorization_id, 1_000).await.unwrap();
    assert_eq!(
        b.status("pay-2").await.unwrap(),
        RequestStatus::Answered(GatewayAnswer::Declined {
            reason: "card declined".into()
        })
    );
    // A timeout card is never answered.
    assert_eq!(b.status("pay-3").await.unwrap(), RequestStatus::Pending);
}
