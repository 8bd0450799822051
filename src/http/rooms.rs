//! The room directory, a room's users, and its messages over REST.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};

use super::AppJson;
use super::json::raw_json;
use super::messages::{Post, attachments, idempotency_key, sender};
use crate::api_error::ApiError;
use crate::auth::Identity;
use crate::cluster::{ClusterError, Log};
use crate::domain::{MessageId, RoomName, UserName};
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
        // The seed servers' names, mounted here so that they pass the same
        // origin, token and rate checks as the routes they mirror.
        .route("/active-rooms", get(active))
        .route("/room-users", get(room_users))
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

/// `GET /active-rooms`: the names of the rooms with online members, sorted.
async fn active(State(state): State<Arc<AppState>>) -> Result<AppJson<Vec<RoomName>>, ApiError> {
    Ok(AppJson(state.chat.active_rooms().await?))
}

async fn users(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<AppJson<Vec<UserName>>, ApiError> {
    members(&state, &room(path)?).await
}

#[derive(Deserialize)]
struct RoomParam {
    room: String,
}

/// `GET /room-users?room=r`: `GET /api/rooms/r/users` with the room in the
/// query.
async fn room_users(
    State(state): State<Arc<AppState>>,
    query: Result<Query<RoomParam>, QueryRejection>,
) -> Result<AppJson<Vec<UserName>>, ApiError> {
    let Query(param) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    members(&state, &RoomName::parse(&param.room)?).await
}

/// The users online in `room`, cluster-wide, sorted.
async fn members(state: &AppState, room: &RoomName) -> Result<AppJson<Vec<UserName>>, ApiError> {
    Ok(AppJson(state.chat.members(room).await?))
}

#[derive(Deserialize)]
struct Page {
    before: Option<String>,
    limit: Option<u64>,
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
    content: Option<String>,
    idempotency_key: Option<String>,
    attachments: Option<Vec<String>>,
}

async fn post_message(
    State(state): State<Arc<AppState>>,
    identity: Option<Extension<Identity>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    AppJson(body): AppJson<NewMessage>,
) -> Result<Response, ApiError> {
    let room = room(path)?;
    let post = Post {
        sender: sender(identity, [body.user])?,
        content: body.content,
        key: idempotency_key(body.idempotency_key.as_deref(), &headers)?,
        attachments: attachments(body.attachments)?,
    };
    post.send_to_room(&state, &room).await
}
