//! `ApiError`: every HTTP error answer of the node, a REST call's or a
//! refused WebSocket upgrade's, mapped once to a code of the table and sent
//! as the contract's `{"error":{"code","message"}}` body. Internal causes are
//! logged, never sent.

use std::time::Duration;

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::chat::{SendError, UploadFailure};
use crate::cluster::ClusterError;
use crate::domain::{ContentError, MessageIdError, NameError};
use crate::error_code::ErrorCode;
use crate::protocol::MAX_BODY_BYTES;
use crate::telemetry;
use crate::uploads::WriteError;

/// An HTTP error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: body, query, or a bad id.
    #[error("{0}")]
    BadRequest(String),
    /// A bad user or room name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Bad message content.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// Missing or invalid token.
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// No such route or file.
    #[error("not found")]
    NotFound,
    /// The route exists, not with this method.
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    /// A request body over the limit.
    #[error("the request body is over {} KiB", MAX_BODY_BYTES / 1024)]
    BodyTooLarge,
    /// The request body did not arrive within the handshake timeout.
    #[error("the request body did not arrive in time (CHORUS_HANDSHAKE_TIMEOUT_SECS)")]
    RequestTimeout,
    /// The room exists already.
    #[error("room exists")]
    RoomExists,
    /// The directory holds as many created rooms as allowed.
    #[error(
        "{0} rooms were created already, the most allowed (CHORUS_MAX_CREATED_ROOMS); join a room to use it without creating it"
    )]
    TooManyRooms(usize),
    /// A browser page from an origin that is not allowed.
    #[error("requests from this origin are not allowed (CHORUS_ALLOWED_ORIGINS)")]
    ForbiddenOrigin,
    /// The client address holds as many connections as allowed.
    #[error("this address has {0} connections open, the most allowed; close one first")]
    TooManyFromAddress(usize),
    /// Too many bytes are waiting in this node's outbound queues.
    #[error("this node is overloaded; try again shortly or try another node")]
    Overloaded,
    /// The node is at its connection limit.
    #[error("this node is at its connection limit; try another node")]
    TooManyConnections,
    /// The node is draining.
    #[error("this node is draining; try another node")]
    Draining,
    /// Over the `POST` rate; the request did nothing. Carries the wait
    /// until the next token, sent as `Retry-After`.
    #[error("too many requests; this one was not carried out (retry in {} s)", retry_after_secs(*.0))]
    RateLimited(Duration),
    /// The backend did not answer.
    #[error("the backend is unavailable; try again")]
    Unavailable,
    /// An upload call refused for a cause of its own (never a backend or
    /// storage fault: those are [`ApiError::Unavailable`]).
    #[error(transparent)]
    Upload(UploadFailure),
}

/// How long a user at the pending-upload cap is told to wait: uploads
/// finish in seconds, and each one that does frees a place.
const PENDING_RETRY_AFTER: Duration = Duration::from_secs(5);

impl From<UploadFailure> for ApiError {
    fn from(e: UploadFailure) -> Self {
        match e {
            UploadFailure::Cluster(cause) => cause.into(),
            UploadFailure::Store(cause) => {
                tracing::warn!(error = %cause, "upload storage unavailable");
                Self::Unavailable
            }
            UploadFailure::Write(WriteError::Io(cause)) => {
                tracing::warn!(error = %cause, "cannot write an upload");
                Self::Unavailable
            }
            other => Self::Upload(other),
        }
    }
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Cluster(cause) => cause.into(),
            SendError::Attachment(cause) => Self::BadRequest(cause),
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Conflict => Self::RoomExists,
            // Only room creation has a bound; it maps `Full` itself, with
            // the limit in the message. Anything else is a backend fault.
            ClusterError::Full => {
                tracing::warn!("backend refused a write as over a bound");
                Self::Unavailable
            }
            ClusterError::Unavailable(source) => {
                tracing::warn!(error = %source, "backend unavailable");
                Self::Unavailable
            }
        }
    }
}

impl From<MessageIdError> for ApiError {
    fn from(e: MessageIdError) -> Self {
        Self::BadRequest(format!("invalid message id: {e}"))
    }
}

impl ApiError {
    /// The one mapping of HTTP errors to the wire.
    fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Name(e) => e.into(),
            Self::Content(e) => e.into(),
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::BodyTooLarge => ErrorCode::TooLarge,
            Self::RequestTimeout => ErrorCode::RequestTimeout,
            Self::RoomExists => ErrorCode::RoomExists,
            Self::TooManyRooms(_) => ErrorCode::TooManyRooms,
            Self::ForbiddenOrigin => ErrorCode::ForbiddenOrigin,
            Self::TooManyFromAddress(_) => ErrorCode::TooManyFromAddress,
            Self::Overloaded => ErrorCode::Overloaded,
            Self::TooManyConnections => ErrorCode::TooManyConnections,
            Self::Draining => ErrorCode::Draining,
            Self::RateLimited(_) => ErrorCode::RateLimited,
            Self::Unavailable => ErrorCode::Unavailable,
            Self::Upload(e) => match e {
                UploadFailure::NotFound => ErrorCode::NotFound,
                UploadFailure::TooLarge { .. } | UploadFailure::Write(WriteError::TooLong) => {
                    ErrorCode::TooLarge
                }
                UploadFailure::TooManyPending => ErrorCode::RateLimited,
                UploadFailure::Conflict | UploadFailure::Write(WriteError::InFlight) => {
                    ErrorCode::Conflict
                }
                UploadFailure::Write(WriteError::Overloaded) => ErrorCode::Overloaded,
                UploadFailure::Write(WriteError::Stalled) => ErrorCode::RequestTimeout,
                UploadFailure::Cluster(_)
                | UploadFailure::Store(_)
                | UploadFailure::Write(WriteError::Io(_)) => ErrorCode::Unavailable,
                UploadFailure::Invalid(_)
                | UploadFailure::BadSize
                | UploadFailure::BadPut(_)
                | UploadFailure::Write(WriteError::Short { .. } | WriteError::Broken) => {
                    ErrorCode::BadRequest
                }
            },
        }
    }

    /// The status and the body, the error counted: the one answer both the
    /// router and the accept loop send.
    fn answer(&self) -> (StatusCode, Body) {
        let code = self.code();
        metrics::counter!(telemetry::ERRORS, "code" => code.as_str()).increment(1);
        // Only `not_member` has no status, and it is a WebSocket frame's
        // code that no `ApiError` maps to.
        let status = code
            .http_status()
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = Body {
            error: Detail {
                code: code.as_str(),
                message: self.to_string(),
            },
        };
        (status, body)
    }

    /// The whole HTTP/1.1 response, `Connection: close` included, as bytes:
    /// for the accept loop, which refuses a connection before hyper (or any
    /// request) is involved.
    pub(crate) fn to_http1_bytes(&self) -> Vec<u8> {
        let (status, body) = self.answer();
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut bytes = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }
}

#[derive(Serialize)]
struct Body {
    error: Detail,
}

#[derive(Serialize)]
struct Detail {
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.answer();
        let mut response = (status, Json(body)).into_response();
        let wait = match self {
            Self::RateLimited(wait) => Some(wait),
            Self::Upload(UploadFailure::TooManyPending) => Some(PENDING_RETRY_AFTER),
            Self::Upload(UploadFailure::Write(WriteError::Overloaded)) => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        };
        if let Some(wait) = wait {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
        }
        response
    }
}

/// `Retry-After` takes whole seconds: the wait rounded up, and at least 1,
/// since 0 would invite an immediate retry that is refused again.
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }
}
