//! `/api/admin/*`: the admin API, mounted only with `CHORUS_ADMIN_TOKEN`,
//! outside the user token check and the per-user `POST` limit. Every call
//! needs `Authorization: Bearer <CHORUS_ADMIN_TOKEN>`, compared in constant
//! time; every action is logged with its target and the caller's address.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{any, delete, get, post};

use super::AppJson;
use crate::admission::{address_group, client_ip};
use crate::api_error::ApiError;
use crate::auth::AuthError;
use crate::domain::{MessageId, RoomName, UserName};
use crate::rate::RateKey;
use crate::state::AppState;
use crate::telemetry;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/admin/users/{user}/disconnect", post(disconnect))
        .route("/api/admin/rooms/{room}/kick", post(kick))
        .route("/api/admin/users", get(users))
        .route("/api/admin/nodes", get(nodes))
        .route("/api/admin/rooms", get(rooms))
        .route(
            "/api/admin/rooms/{room}/messages/{id}",
            delete(delete_message),
        )
}

/// What stands for the admin API when it is off: 404 for every path under
/// `/api/admin/`, any method, without a handler of the API behind it.
pub(super) fn absent_router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/admin", any(absent))
        .route("/api/admin/{*rest}", any(absent))
}

async fn absent() -> ApiError {
    ApiError::NotFound
}

/// The caller's address, as the per-address limits see it.
#[derive(Debug, Clone, Copy)]
struct Caller(IpAddr);

/// Lets the call through only with the admin token; finds the caller's
/// address for the log.
pub(super) async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let expected = state.admin_token.as_deref();
    let allowed = matches!((given, expected), (Some(given), Some(expected))
        if fixed_time_eq(given.as_bytes(), expected.as_bytes()));
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let caller = client_ip(request.headers(), peer, state.proxy_header.as_ref());
    // Before the answer on the token, so wrong ones are limited too.
    let key = RateKey::Address(address_group(caller));
    if let Err(wait) = state.admin_calls.try_take(key, Instant::now()) {
        metrics::counter!(telemetry::RATE_LIMITED, "kind" => "admin").increment(1);
        return Err(ApiError::RateLimited(wait));
    }
    if !allowed {
        tracing::warn!(%caller, path = %request.uri().path(), "admin call refused: bad or missing token");
        return Err(ApiError::Unauthorized(AuthError::Admin));
    }
    request.extensions_mut().insert(Caller(caller));
    Ok(next.run(request).await)
}

/// Equality whose time depends on the lengths only, never on where the
/// bytes differ (the token's length is no secret worth keeping: it is at
/// least 32 bytes of whatever the operator chose).
fn fixed_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `POST /api/admin/users/{user}/disconnect`: every connection of the user,
/// on every node, closes with 4001.
async fn disconnect(
    State(state): State<Arc<AppState>>,
    axum::Extension(Caller(caller)): axum::Extension<Caller>,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = UserName::parse(&user)?;
    tracing::info!(action = "disconnect", target = %user, %caller, "admin action");
    state.chat.remove_user(&user).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `DELETE /api/admin/rooms/{room}/messages/{id}`: the message leaves the
/// history and the archive; the room gets `deleted`.
async fn delete_message(
    State(state): State<Arc<AppState>>,
    axum::Extension(Caller(caller)): axum::Extension<Caller>,
    Path((room, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let room = RoomName::parse(&room)?;
    let id = MessageId::parse(&id)?;
    tracing::info!(action = "delete", target = %id, room = %room, %caller, "admin action");
    if state.chat.delete_message(&room, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// `GET /api/admin/users`: every online user, its connections cluster-wide
/// and the live nodes holding them.
async fn users(
    State(state): State<Arc<AppState>>,
) -> Result<AppJson<Vec<crate::cluster::UserConnections>>, ApiError> {
    Ok(AppJson(state.chat.connections().await?))
}

/// One live node, as `GET /api/admin/nodes` lists it: the contract's
/// fields, and the node's error and refusal counters since it started.
#[derive(Debug, serde::Serialize)]
struct LiveNode {
    node: crate::domain::NodeId,
    connections: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    errors: BTreeMap<String, u64>,
    refusals: BTreeMap<String, u64>,
}

/// `GET /api/admin/nodes`: every live node. A node whose last status has
/// expired (it beats late) is listed with what is known: its id.
async fn nodes(State(state): State<Arc<AppState>>) -> Result<AppJson<Vec<LiveNode>>, ApiError> {
    let nodes = state.chat.nodes().await?;
    Ok(AppJson(
        nodes
            .into_iter()
            .map(|(node, status)| {
                let status = status.unwrap_or_default();
                LiveNode {
                    node,
                    connections: status.connections,
                    since: (status.started_ms > 0)
                        .then(|| chrono::DateTime::from_timestamp_millis(status.started_ms))
                        .flatten()
                        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                    errors: status.errors,
                    refusals: status.refusals,
                }
            })
            .collect(),
    ))
}

/// One room, as `GET /api/admin/rooms` lists it.
#[derive(Debug, serde::Serialize)]
struct RoomActivity {
    name: RoomName,
    members: usize,
    messages_per_minute: f64,
}

/// `GET /api/admin/rooms`: every listed room with its members and the
/// messages stored in it per minute lately, all live nodes together.
async fn rooms(State(state): State<Arc<AppState>>) -> Result<AppJson<Vec<RoomActivity>>, ApiError> {
    let (rooms, nodes) = tokio::try_join!(state.chat.rooms(), state.chat.nodes())?;
    let mut rates: HashMap<String, f64> = HashMap::new();
    for (room, rate) in nodes
        .into_iter()
        .filter_map(|(_, s)| s)
        .flat_map(|s| s.rates)
    {
        *rates.entry(room).or_default() += rate;
    }
    let mut rooms: Vec<RoomActivity> = rooms
        .into_iter()
        .map(|room| RoomActivity {
            messages_per_minute: rates
                .get(room.name.as_str())
                .map_or(0.0, |r| (r * 10.0).round() / 10.0),
            name: room.name,
            members: room.members,
        })
        .collect();
    rooms.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(AppJson(rooms))
}

/// The body of a kick.
#[derive(Debug, serde::Deserialize)]
struct Kick {
    user: String,
}

/// `POST /api/admin/rooms/{room}/kick` `{"user"}`: the user's connections,
/// on every node, leave the room.
async fn kick(
    State(state): State<Arc<AppState>>,
    axum::Extension(Caller(caller)): axum::Extension<Caller>,
    Path(room): Path<String>,
    AppJson(body): AppJson<Kick>,
) -> Result<StatusCode, ApiError> {
    let room = RoomName::parse(&room)?;
    let user = UserName::parse(&body.user)?;
    tracing::info!(action = "kick", target = %user, room = %room, %caller, "admin action");
    state.chat.kick(&room, &user).await?;
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::fixed_time_eq;

    #[test]
    fn admin_tokens_compare_whole() {
        assert!(fixed_time_eq(b"abc", b"abc"));
        assert!(!fixed_time_eq(b"abc", b"abd"));
        assert!(!fixed_time_eq(b"abc", b"abcd"));
        assert!(!fixed_time_eq(b"", b"a"));
    }
}
