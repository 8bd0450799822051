//! WebSocket front end: `GET /ws` checks the origin, the name or token and
//! the connection limits before upgrading, then hands the socket to a
//! [`session`].

mod commands;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, Query, State, rejection::QueryRejection};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use crate::admission::{self, HeldPermit};
use crate::api_error::ApiError;
use crate::domain::{RoomName, UserName};
use crate::protocol::MAX_FRAME_BYTES;
use crate::state::AppState;
use crate::telemetry;

/// Read buffer per connection. Chat frames are small; tungstenite's 128 KiB
/// default would dominate the memory of an idle connection, and tungstenite
/// zero-fills the whole buffer on every read attempt, which a session makes
/// each time it wakes to write a fan-out frame. 512 bytes hold a typical
/// chat frame; larger ones still arrive whole: the buffer grows to a
/// frame's announced length. (1 KiB cost 1.3 KiB more per idle connection.)
const READ_BUFFER_BYTES: usize = 512;
/// Bytes buffered before a write reaches the socket; batches of fan-out
/// frames are flushed together anyway.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// The most tungstenite may buffer for a socket that does not take it
/// (unbounded by default): the largest reply, whose history is capped at
/// `protocol::MAX_REPLY_BYTES` but whose members list is not (a `joined` of
/// a room of several hundred thousand members still fits).
const MAX_WRITE_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// The `/ws` route, and the seed servers' names for it (`/api/ws`,
/// `/room`): one handler, so the same checks and limits.
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/api/ws", get(upgrade))
        .route("/room", get(upgrade))
}

/// The query. Other parameters, such as the seed clients' `user_id`, are
/// accepted and ignored.
#[derive(Deserialize)]
struct Params {
    username: Option<String>,
    token: Option<String>,
    /// Rooms to join at once, comma-separated.
    room: Option<String>,
}

/// The rooms of `?room=a,b`, each once, in order; refused whole if one name
/// is invalid or there are more than a connection may join.
fn rooms_to_join(list: Option<&str>, limit: usize) -> Result<Vec<RoomName>, ApiError> {
    let mut rooms: Vec<RoomName> = Vec::new();
    for name in list.into_iter().flat_map(|list| list.split(',')) {
        let room = RoomName::parse(name)?;
        if rooms.contains(&room) {
            continue;
        }
        // Refused as soon as it is over: a long URL costs no more than this.
        if rooms.len() == limit {
            return Err(ApiError::BadRequest(format!(
                "at most {limit} rooms per connection"
            )));
        }
        rooms.push(room);
    }
    Ok(rooms)
}

async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    held: Option<Extension<HeldPermit>>,
    params: Result<Query<Params>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(refuse(ApiError::Draining, "draining"));
    }
    // Before anything else: a foreign page must not learn whether its
    // visitor's name or token would have been accepted.
    if !state.origins.allows(headers.get(ORIGIN), headers.get(HOST)) {
        return Err(refuse(ApiError::ForbiddenOrigin, "origin"));
    }
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (user, expires) = match &state.auth {
        Some(auth) => {
            let identity = auth
                .verify(params.token.as_deref())
                .map_err(|e| refuse(e.into(), "auth"))?;
            (identity.user, identity.expires)
        }
        None => {
            let name = params.username.as_deref().unwrap_or_default();
            (
                UserName::parse(name).map_err(|e| refuse(e.into(), "name"))?,
                None,
            )
        }
    };
    let rooms = rooms_to_join(
        params.room.as_deref(),
        state.limits.max_rooms_per_connection,
    )?;
    let upgrade = upgrade.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    // Without a trusted proxy the connection was counted when accepted, and
    // the session takes that count over (below); behind one, the client is
    // known only now, from the proxy's header.
    let held = held.map(|Extension(held)| held).filter(HeldPermit::is_held);
    let ip = admission::client_ip(&headers, peer.ip(), state.proxy_header.as_ref());
    let ip_permit = match (&state.per_ip, &held) {
        (Some(per_ip), None) => Some(
            per_ip
                .try_acquire(ip)
                .ok_or_else(|| refuse(ApiError::TooManyFromAddress(per_ip.limit()), "per_ip"))?,
        ),
        _ => None,
    };
    if state.chat.buffered_bytes() > state.max_buffered_bytes {
        return Err(refuse(ApiError::Overloaded, "overloaded"));
    }
    let permit = state
        .connections
        .clone()
        .try_acquire_owned()
        .map_err(|_| refuse(ApiError::TooManyConnections, "limit"))?;
    // Taken only now that nothing can refuse the upgrade: a refused request
    // leaves the count with its connection, which stays open.
    let ip_permit = ip_permit.or_else(|| held.and_then(|held| held.take()));
    // Counts as a running task from now on, so the drain waits for the session.
    let task = state.shutdown.tracker.token();
    // A deadline too far away for an `Instant` (a token "valid until the end
    // of time") means no expiry timer rather than a panic on overflow.
    let expires = expires.and_then(|at| {
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::Instant::now().checked_add(left)
    });
    Ok(upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            let held = session::Held {
                _permit: permit,
                _ip_permit: ip_permit,
                _task: task,
            };
            session::run(
                state,
                socket,
                user,
                expires,
                admission::address_group(ip),
                held,
                rooms,
            )
        }))
}

fn refuse(error: ApiError, reason: &'static str) -> ApiError {
    metrics::counter!(telemetry::CONNECTIONS_REFUSED, "reason" => reason).increment(1);
    error
}
