//! The HTTP server loop: the router on hyper, with the bounds `axum::serve`
//! does not set. A client must finish its request headers within
//! [`HEADER_READ_TIMEOUT`] and its whole request within
//! [`REQUEST_TIMEOUT`] (else 408), and a graceful stop waits at most
//! [`DRAIN_TIMEOUT`] for open connections before it closes them: one
//! stalled client can neither hold a connection for minutes nor keep the
//! process from stopping.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::Service;
use tower_http::timeout::TimeoutLayer;

use crate::ratelimit::AddressLimit;

/// Longest time a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest time one request may take, its body included (then 408).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest time a graceful stop waits for open connections.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` resolves, then drains (see
/// the [module documentation](self)). Handlers can read the client's
/// address as `ConnectInfo<SocketAddr>`.
/// Requests over `addresses` (per client address) are answered 429
/// before the router sees them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    addresses: Arc<AddressLimit>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = router.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        REQUEST_TIMEOUT,
    ));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // E.g. out of file descriptors: wait a little, go on.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        let (router, addresses) = (router.clone(), addresses.clone());
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let admitted = addresses.check(&remote.ip());
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            let mut router = router.clone();
            async move {
                match admitted {
                    // A router is always ready: no `poll_ready` needed.
                    Ok(()) => Service::<Request<Incoming>>::call(&mut router, request).await,
                    Err(refused) => Ok(refused.into_response()),
                }
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!(open = connections.len(), "connections still open after the drain timeout; closing them");
        }
    }
    connections.abort_all();
    Ok(())
}
