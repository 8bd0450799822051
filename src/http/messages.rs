//! Sending over REST: `POST /api/messages` (the seed servers' route, a room
//! message or a DM) and what `POST /api/rooms/{room}/messages` shares with
//! it: who the sender is, the idempotency key, the send and its answer.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::{Extension, Router};
use serde::Deserialize;

use super::{AppJson, json::raw_json};
use crate::api_error::ApiError;
use crate::auth::Identity;
use crate::cluster::Appended;
use crate::domain::{Content, IdempotencyKey, RoomName, UploadId, UserName};
use crate::protocol;
use crate::rate::RateKey;
use crate::state::AppState;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/api/messages", post(post_message))
}

/// A send before its target is known: the same for a room and a DM.
pub(super) struct Post {
    /// From the token, or claimed in the body in anonymous mode.
    pub(super) sender: UserName,
    /// Parsed at the send, after the target and the sender, so that errors
    /// come in the order of the room route's. May be missing or empty when
    /// there are attachments.
    pub(super) content: Option<String>,
    pub(super) key: Option<IdempotencyKey>,
    pub(super) attachments: Vec<UploadId>,
}

impl Post {
    /// Stores and delivers a room message, like a WebSocket `message`.
    pub(super) async fn send_to_room(
        self,
        state: &AppState,
        room: &RoomName,
    ) -> Result<Response, ApiError> {
        let content = self.content()?;
        let appended = state
            .chat
            .send_message(
                room,
                &self.sender,
                &content,
                &self.attachments,
                None,
                self.key.as_ref(),
            )
            .await?;
        Ok(sent(&appended))
    }

    /// Stores and delivers a DM, like a WebSocket `dm` (stored even when
    /// `to` is offline), within the DM rate of `rate_key` on top of the
    /// `POST` rate, as a session takes both.
    async fn send_to_user(
        self,
        state: &AppState,
        to: &UserName,
        rate_key: RateKey,
    ) -> Result<Response, ApiError> {
        let content = self.content()?;
        if let Err(wait) = state.dms.try_take(rate_key, Instant::now()) {
            metrics::counter!(crate::telemetry::RATE_LIMITED, "kind" => "dm").increment(1);
            return Err(ApiError::RateLimited(wait));
        }
        let appended = state
            .chat
            .send_dm(
                &self.sender,
                to,
                &content,
                &self.attachments,
                None,
                self.key.as_ref(),
            )
            .await?;
        Ok(sent(&appended))
    }

    fn content(&self) -> Result<Content, ApiError> {
        let text = self.content.clone().unwrap_or_default();
        Ok(Content::parse_with(text, !self.attachments.is_empty())?)
    }
}

/// A body's `attachments`: at most ten distinct upload ids.
pub(super) fn attachments(list: Option<Vec<String>>) -> Result<Vec<UploadId>, ApiError> {
    protocol::attachment_ids(list).map_err(|(_, message)| ApiError::BadRequest(message))
}

/// The sender: with auth on, whoever the token names, never the body;
/// without it, the first name the body gives in `claims`.
pub(super) fn sender<const N: usize>(
    identity: Option<Extension<Identity>>,
    claims: [Option<String>; N],
) -> Result<UserName, ApiError> {
    match identity {
        Some(Extension(identity)) => Ok(identity.user),
        None => {
            let claimed = claims.into_iter().flatten().next().unwrap_or_default();
            Ok(UserName::parse(&claimed)?)
        }
    }
}

/// The send's idempotency key: the body's `idempotency_key`, else the
/// `Idempotency-Key` header.
pub(super) fn idempotency_key(
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

/// The body of `POST /api/messages`: `room` or `to`, and the sender under
/// any of the seed clients' names for it.
#[derive(Deserialize)]
struct NewPost {
    room: Option<String>,
    to: Option<String>,
    user: Option<String>,
    username: Option<String>,
    sender: Option<String>,
    content: Option<String>,
    idempotency_key: Option<String>,
    attachments: Option<Vec<String>>,
}

enum Target {
    Room(RoomName),
    User(UserName),
}

fn target(room: Option<&str>, to: Option<&str>) -> Result<Target, ApiError> {
    match (room, to) {
        (Some(room), None) => Ok(Target::Room(RoomName::parse(room)?)),
        (None, Some(to)) => Ok(Target::User(UserName::parse(to)?)),
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give `room` or `to`, not both".to_owned(),
        )),
        (None, None) => Err(ApiError::BadRequest(
            "missing `room` (a room message) or `to` (a DM)".to_owned(),
        )),
    }
}

async fn post_message(
    State(state): State<Arc<AppState>>,
    identity: Option<Extension<Identity>>,
    // Set by the `POST` limit, which runs before every `POST` of the API.
    Extension(rate_key): Extension<RateKey>,
    headers: HeaderMap,
    AppJson(body): AppJson<NewPost>,
) -> Result<Response, ApiError> {
    let target = target(body.room.as_deref(), body.to.as_deref())?;
    let post = Post {
        sender: sender(identity, [body.user, body.username, body.sender])?,
        content: body.content,
        key: idempotency_key(body.idempotency_key.as_deref(), &headers)?,
        attachments: attachments(body.attachments)?,
    };
    match target {
        Target::Room(room) => post.send_to_room(&state, &room).await,
        Target::User(to) => post.send_to_user(&state, &to, rate_key).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_names_a_room_or_a_recipient_never_both_nor_neither() {
        assert!(matches!(target(Some("lobby"), None), Ok(Target::Room(_))));
        assert!(matches!(target(None, Some("bob")), Ok(Target::User(_))));
        assert!(matches!(
            target(Some("lobby"), Some("bob")),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(target(None, None), Err(ApiError::BadRequest(_))));
        assert!(matches!(target(Some("a b"), None), Err(ApiError::Name(_))));
        assert!(matches!(target(None, Some("a b")), Err(ApiError::Name(_))));
    }

    #[test]
    fn the_token_names_the_sender_else_the_first_name_the_body_gives() {
        let alice = Identity {
            user: UserName::parse("alice").unwrap(),
            expires: None,
        };
        let claims = || [None, Some("carol".to_owned()), Some("dave".to_owned())];
        assert_eq!(
            sender(Some(Extension(alice)), claims()).unwrap().as_str(),
            "alice"
        );
        assert_eq!(sender(None, claims()).unwrap().as_str(), "carol");
        assert!(matches!(sender(None, [None]), Err(ApiError::Name(_))));
    }
}
