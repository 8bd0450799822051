//! The room directory, a room's users, and its messages over REST.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};

use super::AppJson;
use crate::api_error::ApiError;
use crate::auth::Identity;
use crate::cluster::{Appended, ClusterError, Log};
use crate::domain::{Content, IdempotencyKey, MessageId, RoomName, UserName};
use crate::protocol;
use crate::state::AppState;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/rooms", get(list).post(create))
        .route("/api/rooms/{room}/users", get(users))
        .route(
            "/api/rooms/{room}/messages",
            get(messages).post(post_message),
        )
}

#[derive(Serialize)]
struct Room {
    name: RoomName,
    members: usize,
}

#[derive(Deserialize)]
struct NewRoom {
    name: String,
}

fn room(path: Result<Path<String>, PathRejection>) -> Result<RoomName, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(RoomName::parse(&name)?)
}

async fn list(State(state): State<Arc<AppState>>) -> Result<AppJson<Vec<Room>>, ApiError> {
    let rooms = state.chat.rooms().await?;
    Ok(AppJson(
        rooms
            .into_iter()
            .map(|r| Room {
                name: r.name,
                members: r.members,
            })
            .collect(),
    ))
}

async fn create(
    State(state): State<Arc<AppState>>,
    AppJson(body): AppJson<NewRoom>,
) -> Result<(StatusCode, AppJson<Room>), ApiError> {
    let name = RoomName::parse(&body.name)?;
    let max = state.limits.max_created_rooms;
    state
        .chat
        .create_room(&name, max)
        .await
        .map_err(|e| match e {
            ClusterError::Full => ApiError::TooManyRooms(max),
            e => e.into(),
        })?;
    Ok((StatusCode::CREATED, AppJson(Room { name, members: 0 })))
}

async fn users(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<AppJson<Vec<UserName>>, ApiError> {
    let room = room(path)?;
    Ok(AppJson(state.chat.members(&room).await?))
}

#[derive(Deserialize)]
struct Page {
    before: Option<String>,
    limit: Option<u64>,
}

/// A response whose body is already-encoded JSON.
fn raw_json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn messages(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Response, ApiError> {
    let room = room(path)?;
    let Query(page) = page.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let before = page.before.as_deref().map(MessageId::parse).transpose()?;
    let limit = protocol::history_limit(page.limit).map_err(ApiError::BadRequest)?;
    let messages = state.chat.history(&Log::Room(room), before, limit).await?;
    Ok(raw_json(StatusCode::OK, protocol::message_array(&messages)))
}

#[derive(Deserialize)]
struct NewMessage {
    user: Option<String>,
    content: String,
    idempotency_key: Option<String>,
}

/// The send's idempotency key: the body's `idempotency_key`, else the
/// `Idempotency-Key` header.
fn idempotency_key(
    body: Option<&str>,
    headers: &HeaderMap,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let header = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::BadRequest("Idempotency-Key must be text".to_owned()))
        })
        .transpose()?;
    protocol::idempotency_key(body.or(header).map(Cow::Borrowed))
        .map_err(|(_, message)| ApiError::BadRequest(message))
}

/// 201 and the new message, or 200 and the original one for a repeated
/// idempotency key, marked `Idempotent-Replayed: true`.
fn sent(appended: &Appended) -> Response {
    if appended.replayed {
        // The original may have come over a WebSocket with its `ref`; a REST
        // answer carries none.
        let body = protocol::replay(&appended.stored, None);
        let mut response = raw_json(StatusCode::OK, body);
        response.headers_mut().insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
        response
    } else {
        let body = String::from_utf8_lossy(&appended.stored.payload).into_owned();
        raw_json(StatusCode::CREATED, body)
    }
}

async fn post_message(
    State(state): State<Arc<AppState>>,
    identity: Option<Extension<Identity>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    AppJson(body): AppJson<NewMessage>,
) -> Result<Response, ApiError> {
    let room = room(path)?;
    // With auth on, the sender is whoever the token names, never the body.
    let user = match identity {
        Some(Extension(identity)) => identity.user,
        None => UserName::parse(body.user.as_deref().unwrap_or_default())?,
    };
    let key = idempotency_key(body.idempotency_key.as_deref(), &headers)?;
    let content = Content::parse(body.content)?;
    let appended = state
        .chat
        .send_message(&room, &user, &content, None, key.as_ref())
        .await?;
    Ok(sent(&appended))
}
