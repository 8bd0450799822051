//! The HTTP accept loop. `axum::serve` has no read timer, so a client that
//! opens TCP connections and never finishes a request would hold them
//! forever; here each connection is served by hyper with a timeout on its
//! request head (the handshake timeout; `http` times the body), the peer
//! address is handed to handlers as `ConnectInfo`, connections are counted
//! per client address from the moment they are accepted, and a stop lets
//! connections finish their current request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::admission::{HeldPermit, PerIp};
use crate::api_error::ApiError;
use crate::telemetry;

/// Pause after a failed accept (out of file descriptors, say), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a connection refused at accept time is kept to read what its
/// client sends: closing a socket with unread input sends a reset, which may
/// destroy the 429 before the client reads it.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `stop` is cancelled, then waits for
/// the open HTTP exchanges to end (upgraded WebSockets are not among them:
/// their sessions have their own drain). With `per_ip`, a connection from a
/// peer address over its limit is answered 429 and closed at once.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    handshake_timeout: Duration,
    per_ip: Option<Arc<PerIp>>,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let permit = match &per_ip {
                    None => None,
                    Some(per_ip) => match per_ip.try_acquire(peer.ip()) {
                        Some(permit) => Some(HeldPermit::new(permit)),
                        None => {
                            connections.spawn(refuse(tcp, per_ip.limit()));
                            continue;
                        }
                    },
                };
                connections.spawn(connection(
                    tcp,
                    peer,
                    permit,
                    router.clone(),
                    handshake_timeout,
                    stop.clone(),
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    connections.close();
    connections.wait().await;
}

/// Answers 429 `too_many_connections` on a connection whose address holds
/// `limit` already, without waiting for (or parsing) its request.
async fn refuse(mut tcp: TcpStream, limit: usize) {
    metrics::counter!(telemetry::CONNECTIONS_REFUSED, "reason" => "per_ip").increment(1);
    let response = ApiError::TooManyFromAddress(limit).to_http1_bytes();
    let answer = async {
        tcp.write_all(&response).await?;
        tcp.shutdown().await?;
        let mut sink = [0_u8; 1024];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    // Bounded: a client that never reads nor closes is dropped all the same.
    if let Ok(Err(error)) = tokio::time::timeout(REFUSAL_LINGER, answer).await {
        tracing::debug!(%error, "refused a connection over the per-address limit");
    }
}

/// Serves one connection. `permit`, its count against the per-address limit,
/// is offered to every request: a WebSocket upgrade takes it into its
/// session; otherwise it is given back when the connection ends.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Option<HeldPermit>,
    router: Router,
    handshake_timeout: Duration,
    stop: CancellationToken,
) {
    // Without it, small frames wait for Nagle's algorithm (tens of ms).
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    let service = router.map_request(move |request: axum::http::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(permit) = &permit {
            request.extensions_mut().insert(permit.clone());
        }
        request
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    match result {
        Ok(()) => {}
        Err(error) if error.is_timeout() => {
            metrics::counter!(telemetry::HANDSHAKE_TIMEOUTS).increment(1);
            tracing::debug!(%peer, "closed a connection that sent no complete request in time");
        }
        Err(error) => tracing::debug!(%peer, %error, "connection ended with an error"),
    }
}
