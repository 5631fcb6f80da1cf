//! The sandbox gateway's rules, one behaviour per test.
#![allow(clippy::unwrap_used)]

use super::*;
use tokio::time::{timeout, Instant};

/// Long enough for any callback the sandbox sends, so a test never hangs.
const PATIENCE: Duration = Duration::from_secs(5);

fn sandbox() -> (Arc<SandboxGateway>, UnboundedReceiver<Callback>) {
    SandboxGateway::new(SandboxConfig::default())
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

async fn next_callback(callbacks: &mut UnboundedReceiver<Callback>) -> Callback {
    timeout(PATIENCE, callbacks.recv())
        .await
        .expect("a callback in time")
        .expect("the sandbox is alive")
}

async fn no_callback_within(callbacks: &mut UnboundedReceiver<Callback>, wait: Duration) {
    let received = timeout(wait, callbacks.recv()).await;
    assert!(received.is_err(), "unexpected callback: {received:?}");
}

/// Authorises 1000 with `tok_visa` and waits for the approval.
async fn approved(
    gateway: &SandboxGateway,
    callbacks: &mut UnboundedReceiver<Callback>,
    key: &str,
) -> String {
    gateway.authorize(&request(key, TOK_VISA)).await.unwrap();
    match next_callback(callbacks).await.answer {
        GatewayAnswer::Approved { authorization_id } => authorization_id,
        other => panic!("expected an approval, got {other:?}"),
    }
}

async fn captures(gateway: &SandboxGateway) -> Vec<(String, String, i64)> {
    let moved = gateway.captures().await.unwrap();
    moved
        .into_iter()
        .map(|m| (m.idempotency_key, m.authorization_id, m.amount))
        .collect()
}

async fn voids(gateway: &SandboxGateway) -> Vec<(String, String)> {
    let moved = gateway.voids().await.unwrap();
    moved
        .into_iter()
        .map(|m| (m.idempotency_key, m.authorization_id))
        .collect()
}

async fn refunds(gateway: &SandboxGateway) -> Vec<(String, String, i64)> {
    let moved = gateway.refunds().await.unwrap();
    moved
        .into_iter()
        .map(|m| (m.idempotency_key, m.authorization_id, m.amount))
        .collect()
}

fn declined(reason: &str) -> GatewayAnswer {
    GatewayAnswer::Declined {
        reason: reason.to_owned(),
    }
}

fn is_refused(result: Result<(), GatewayError>) -> bool {
    matches!(result, Err(GatewayError::Refused(_)))
}

#[tokio::test]
async fn a_visa_card_is_approved_by_callback_with_a_fresh_authorization_id() {
    let (gateway, mut callbacks) = sandbox();
    let visa = request("pay-1", TOK_VISA);

    gateway.authorize(&visa).await.unwrap();
    assert_eq!(
        gateway.status("pay-1").await.unwrap(),
        RequestStatus::Pending
    );
    let callback = next_callback(&mut callbacks).await;

    assert_eq!(callback.idempotency_key, "pay-1");
    assert_eq!(callback.order_id, visa.order_id);
    let GatewayAnswer::Approved { authorization_id } = &callback.answer else {
        panic!("expected an approval, got {:?}", callback.answer);
    };
    let suffix = authorization_id.strip_prefix("auth_").unwrap();
    assert!(Uuid::try_parse(suffix).is_ok() && suffix.len() == 32);
    let status = gateway.status("pay-1").await.unwrap();
    assert_eq!(status, RequestStatus::Answered(callback.answer.clone()));
    let other = approved(&gateway, &mut callbacks, "pay-2").await;
    assert_ne!(&other, authorization_id);
}

#[tokio::test]
async fn a_declined_card_is_declined_by_callback() {
    let (gateway, mut callbacks) = sandbox();

    gateway
        .authorize(&request("pay-1", TOK_DECLINED))
        .await
        .unwrap();
    let callback = next_callback(&mut callbacks).await;

    assert_eq!(callback.answer, declined("card declined"));
    let status = gateway.status("pay-1").await.unwrap();
    assert_eq!(status, RequestStatus::Answered(declined("card declined")));
}

#[tokio::test]
async fn an_unknown_token_is_declined_as_an_unknown_payment_method() {
    let (gateway, mut callbacks) = sandbox();

    gateway
        .authorize(&request("pay-1", "tok_mystery"))
        .await
        .unwrap();

    let answer = next_callback(&mut callbacks).await.answer;
    assert_eq!(answer, declined("unknown payment method"));
}

#[tokio::test]
async fn a_timeout_card_is_accepted_but_never_answered() {
    let (gateway, mut callbacks) = sandbox();

    gateway
        .authorize(&request("pay-1", TOK_TIMEOUT))
        .await
        .unwrap();

    // Forty answer delays: any answer would have come by now.
    no_callback_within(&mut callbacks, Duration::from_millis(200)).await;
    assert_eq!(
        gateway.status("pay-1").await.unwrap(),
        RequestStatus::Pending
    );
}

#[tokio::test]
async fn a_flaky_card_fails_twice_per_key_then_is_approved() {
    let (gateway, mut callbacks) = sandbox();
    let flaky = request("pay-1", TOK_FLAKY);

    for _ in 0..2 {
        let attempt = gateway.authorize(&flaky).await;
        assert!(matches!(attempt, Err(GatewayError::Transient(_))));
        assert_eq!(
            gateway.status("pay-1").await.unwrap(),
            RequestStatus::Unknown
        );
    }
    let other_key = gateway.authorize(&request("pay-2", TOK_FLAKY)).await;
    gateway.authorize(&flaky).await.unwrap();

    assert!(matches!(other_key, Err(GatewayError::Transient(_))));
    let callback = next_callback(&mut callbacks).await;
    assert_eq!(callback.idempotency_key, "pay-1");
    assert!(matches!(callback.answer, GatewayAnswer::Approved { .. }));
}

#[tokio::test]
async fn a_late_card_is_approved_only_after_the_late_delay() {
    let late_delay = Duration::from_millis(300);
    let config = SandboxConfig {
        late_delay,
        ..SandboxConfig::default()
    };
    let (gateway, mut callbacks) = SandboxGateway::new(config);
    let started = Instant::now();

    gateway
        .authorize(&request("pay-1", TOK_LATE))
        .await
        .unwrap();

    no_callback_within(&mut callbacks, Duration::from_millis(100)).await;
    assert_eq!(
        gateway.status("pay-1").await.unwrap(),
        RequestStatus::Pending
    );
    let callback = next_callback(&mut callbacks).await;
    assert!(started.elapsed() >= late_delay);
    assert!(matches!(callback.answer, GatewayAnswer::Approved { .. }));
    let status = gateway.status("pay-1").await.unwrap();
    assert_eq!(status, RequestStatus::Answered(callback.answer));
}

#[tokio::test]
async fn an_unseen_key_has_unknown_status() {
    let (gateway, _callbacks) = sandbox();

    let status = gateway.status("never-sent").await.unwrap();

    assert_eq!(status, RequestStatus::Unknown);
}

#[tokio::test]
async fn repeating_an_answered_authorisation_resends_the_same_callback() {
    let (gateway, mut callbacks) = sandbox();
    let visa = request("pay-1", TOK_VISA);
    gateway.authorize(&visa).await.unwrap();
    let first = next_callback(&mut callbacks).await;

    gateway.authorize(&visa).await.unwrap();

    assert_eq!(next_callback(&mut callbacks).await, first);
    no_callback_within(&mut callbacks, Duration::from_millis(50)).await;
    let status = gateway.status("pay-1").await.unwrap();
    assert_eq!(status, RequestStatus::Answered(first.answer));
}

#[tokio::test]
async fn repeating_a_pending_authorisation_sends_nothing_new() {
    let (gateway, mut callbacks) = sandbox();
    let visa = request("pay-1", TOK_VISA);

    gateway.authorize(&visa).await.unwrap();
    gateway.authorize(&visa).await.unwrap();

    assert_eq!(
        gateway.status("pay-1").await.unwrap(),
        RequestStatus::Pending
    );
    next_callback(&mut callbacks).await;
    no_callback_within(&mut callbacks, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_key_reused_for_a_different_authorisation_is_refused() {
    let (gateway, _callbacks) = sandbox();
    gateway
        .authorize(&request("pay-1", TOK_VISA))
        .await
        .unwrap();

    let reused = gateway.authorize(&request("pay-1", TOK_VISA)).await;

    assert!(is_refused(reused), "another order under the same key");
}

#[tokio::test]
async fn injected_faults_fail_the_next_calls_and_then_wear_off() {
    let (gateway, mut callbacks) = sandbox();
    let visa = request("pay-1", TOK_VISA);
    gateway.fail_next(Operation::Authorize, 2);

    for _ in 0..2 {
        let attempt = gateway.authorize(&visa).await;
        assert!(matches!(attempt, Err(GatewayError::Transient(_))));
    }
    assert_eq!(
        gateway.status("pay-1").await.unwrap(),
        RequestStatus::Unknown
    );
    gateway.authorize(&visa).await.unwrap();

    next_callback(&mut callbacks).await;
}

#[tokio::test]
async fn injected_faults_come_before_every_other_rule_and_move_no_money() {
    let (gateway, mut callbacks) = sandbox();
    let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
    gateway.fail_next(Operation::Capture, 1);
    gateway.fail_next(Operation::Void, 1);

    let capture = gateway.capture("cap-1", &authorization, 1_000).await;
    let void_unknown = gateway.void("void-1", "auth_unknown").await;

    assert!(matches!(capture, Err(GatewayError::Transient(_))));
    assert!(matches!(void_unknown, Err(GatewayError::Transient(_))));
    assert!(captures(&gateway).await.is_empty());
    gateway
        .capture("cap-1", &authorization, 1_000)
        .await
        .unwrap();
    assert_eq!(captures(&gateway).await.len(), 1);
}

#[tokio::test]
async fn clearing_faults_lets_calls_through_again() {
    let (gateway, mut callbacks) = sandbox();
    let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
    gateway.fail_next(Operation::Capture, 5);
    gateway.fail_next(Operation::Refund, 5);

    gateway.clear_faults();

    gateway
        .capture("cap-1", &authorization, 1_000)
        .await
        .unwrap();
    gateway
        .refund("ref-1", &authorization, 1_000)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_repeated_capture_moves_money_once() {
    let (gateway, mut callbacks) = sandbox();
    let authorization = approved(&gateway, &mut callbacks, "pay-1").await;

    gateway
        .capture("cap-1", &authorization, 1_000)
        .await
        .unwrap();
    gateway
        .capture("cap-1", &authorization, 1_000)
        .await
        .unwrap();

    let expected = vec![("cap-1".to_owned(), authorization, 1_000)];
    assert_eq!(captures(&gateway).await, expected);
}

#[tokio::test]
async fn a_key_reused_with_other_parameters_is_refused() {
    let (gateway, mut callbacks) = sandbox();
    let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
    gateway.capture("cap-1", &authorization, 400).await.unwrap();

    let reused = gateway.capture("cap-1", &authorization, 600).await;

    assert!(is_refused(reused));
    assert_eq!(captures(&gateway).await.len(), 1);
}

#[tokio::test]
async fn money_calls_on_an_unknown_authorisation_are_refused() {
    let (gateway, mut callbacks) = sandbox();
    gateway
        .authorize(&request("pay-1", TOK_DECLINED))
        .await
        .unwrap();
    next_callback(&mut callbacks).await;

    assert!(is_refused(gateway.capture("cap-1", "auth_nope", 1).await));
    assert!(is_refused(gateway.void("void-1", "auth_nope").await));
    assert!(is_refused(gateway.refund("ref-1", "auth_nope", 1).await));
    assert!(captures(&gateway).await.is_empty() && voids(&gateway).await.is_empty());
}

#[tokio::test]
async fn non_positive_amounts_are_refused() {
    let (gateway, mut callbacks) = sandbox();
    let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
    let mut free = request("pay-2", TOK_VISA);
    free.amount = 0;

    assert!(is_refused(gateway.authorize(&free).await));
    assert!(is_refused(
        gateway.capture("cap-1", &authorization, 0).await
    ));
    assert!(is_refused(
        gateway.refund("ref-1", &authorization, -5).await
    ));
    assert_eq!(
        gateway.status("pay-2").await.unwrap(),
        RequestStatus::Unknown
    );
}

#[tokio::test]
async fn capturing_more_than_authorised_is_refused() {
    let (gateway, mut callbacks) = sandbox();
    let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
    gateway.capture("cap-1", &authorization, 700).await.unwrap();

    let over = gateway.capture("cap-2", &authorization, 301).await;

    assert!(is_refused(over));
    gateway.capture("cap-3", &authorization, 300).await.unwrap();
}

#[tokio::test]
async fn a_captured_authorisation_cannot_be_voided() {
    let (gateway, mut callbacks) = sandbox();
    let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
    gateway
        .capture("cap-1", &authorization, 1_000)
        .await
        .unwrap();

    assert!(is_refused(gateway.void("void-1", &authorization).await));
    assert!(voids(&gateway).await.is_empty());
}

#[tokio::test]
async fn a_voided_authorisation_cannot_be_captured_and_voids_once() {
    let (gateway, mut callbacks) = sandbox();
    let authorization = approved(&gateway, &mut callbacks, "pay-1").await;

    gateway.void("void-1", &authorization).await.unwrap();
    gateway.void("void-1", &authorization).await.unwrap();

    assert!(is_refused(gateway.void("void-2", &authorization).await));
    let capture = gateway.capture("cap-1", &authorization, 1_000).await;
    assert!(is_refused(capture));
    assert_eq!(
        voids(&gateway).await,
        vec![("void-1".to_owned(), authorization)]
    );
    assert!(captures(&gateway).await.is_empty());
}

#[tokio::test]
async fn refunds_never_exceed_what_was_captured_and_not_yet_refunded() {
    let (gateway, mut callbacks) = sandbox();
    let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
    let uncaptured = gateway.refund("ref-0", &authorization, 1).await;
    gateway
        .capture("cap-1", &authorization, 1_000)
        .await
        .unwrap();

    gateway.refund("ref-1", &authorization, 600).await.unwrap();
    let too_much = gateway.refund("ref-2", &authorization, 401).await;
    gateway.refund("ref-3", &authorization, 400).await.unwrap();
    let nothing_left = gateway.refund("ref-4", &authorization, 1).await;

    assert!(is_refused(uncaptured));
    assert!(is_refused(too_much));
    assert!(is_refused(nothing_left));
    let amounts: Vec<i64> = refunds(&gateway).await.into_iter().map(|r| r.2).collect();
    assert_eq!(amounts, vec![600, 400]);
}

#[tokio::test]
async fn a_repeated_refund_moves_no_more_money() {
    let (gateway, mut callbacks) = sandbox();
    let authorization = approved(&gateway, &mut callbacks, "pay-1").await;
    gateway
        .capture("cap-1", &authorization, 1_000)
        .await
        .unwrap();

    gateway
        .refund("ref-1", &authorization, 1_000)
        .await
        .unwrap();
    gateway
        .refund("ref-1", &authorization, 1_000)
        .await
        .unwrap();

    let expected = vec![("ref-1".to_owned(), authorization, 1_000)];
    assert_eq!(refunds(&gateway).await, expected);
}
