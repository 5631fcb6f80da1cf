//! Slow or stalled clients are bounded (issue 12, defect 2): a request
//! whose headers never end is cut off, and a request whose body never
//! arrives neither holds the server open nor keeps it from stopping.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use api::serve::{DRAIN_TIMEOUT, HEADER_READ_TIMEOUT};
use api::{AppState, Application};
use eventstore::testing::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// A server on a fresh database, stopped by the returned sender.
async fn spawn(
    db: &TestDb,
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let store = db.store();
    let state = AppState::new(
        store,
        api::auth::Authenticator::from_config(&fulcrum_tests::jwt_config()).unwrap(),
    );
    let app = Application::with_state(state, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = app.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

/// Reads until the server closes the connection (or `within` passes, which
/// fails the test); answers what was read.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut read = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the server kept the connection open");
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&read).into_owned(),
            Ok(Ok(n)) => read.extend_from_slice(&buffer[..n]),
            Err(_) => panic!("the server kept the connection open"),
        }
    }
}

#[tokio::test]
async fn a_request_whose_headers_never_end_is_cut_off() {
    let db = TestDb::new().await;
    let (addr, _stop, _task) = spawn(&db).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();

    read_until_closed(&mut stream, HEADER_READ_TIMEOUT * 4).await;
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_does_not_keep_the_server_from_stopping() {
    let db = TestDb::new().await;
    let (addr, stop, task) = spawn(&db).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/v1/products HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sku\":",
        )
        .await
        .unwrap();
    // Let the server start on the request before it is told to stop.
    let healthy = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(healthy.status(), 200);

    let _ = stop.send(());
    let stopped = tokio::time::timeout(DRAIN_TIMEOUT * 3, task).await;

    let served = stopped.expect("the server did not stop while a request was unfinished");
    served.unwrap().unwrap();
}
