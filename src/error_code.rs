//! Every error code on the wire, in one table both front ends map into: the
//! string a WebSocket `error` frame or an HTTP error body carries, and the
//! HTTP status it is sent with. The frame decoder (`protocol`),
//! `ws::commands` and `api_error` each pick a code for their errors in one
//! place, name and content errors are mapped here for all of them, and
//! nothing spells a code but this table.

use axum::http::StatusCode;

use crate::domain::{ContentError, NameError};

/// A wire error code. The WebSocket sends the first seven (`not_member`
/// only there); HTTP sends all but `not_member`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not JSON, unknown type, missing or mistyped field; a malformed body,
    /// query or id.
    BadRequest,
    /// A room name that breaks the naming rule.
    InvalidRoom,
    /// A user name that breaks the naming rule.
    InvalidUser,
    /// The room was not joined on this connection.
    NotMember,
    /// Content, or a request body, over its size limit.
    TooLarge,
    /// Over a rate; the request was not carried out.
    RateLimited,
    /// The backend could not take it; it was not carried out.
    Unavailable,
    /// A missing or invalid token.
    Unauthorized,
    /// A browser page from an origin that is not allowed.
    ForbiddenOrigin,
    /// No such route or file.
    NotFound,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// The request body did not arrive in time.
    RequestTimeout,
    /// The room exists already.
    RoomExists,
    /// The request conflicts with the state of its target (an upload
    /// uploaded already, or being uploaded).
    Conflict,
    /// The directory holds as many created rooms as allowed.
    TooManyRooms,
    /// The client address holds as many connections as allowed.
    TooManyFromAddress,
    /// The node holds as many connections as allowed.
    TooManyConnections,
    /// Too many bytes wait in the node's outbound queues.
    Overloaded,
    /// The node is draining.
    Draining,
}

impl ErrorCode {
    /// The table: the code's string, and its HTTP status where HTTP sends it.
    const fn row(self) -> (&'static str, Option<StatusCode>) {
        match self {
            Self::BadRequest => ("bad_request", Some(StatusCode::BAD_REQUEST)),
            Self::InvalidRoom => ("invalid_room", Some(StatusCode::BAD_REQUEST)),
            Self::InvalidUser => ("invalid_user", Some(StatusCode::BAD_REQUEST)),
            Self::NotMember => ("not_member", None),
            Self::TooLarge => ("too_large", Some(StatusCode::PAYLOAD_TOO_LARGE)),
            Self::RateLimited => ("rate_limited", Some(StatusCode::TOO_MANY_REQUESTS)),
            Self::Unavailable => ("unavailable", Some(StatusCode::SERVICE_UNAVAILABLE)),
            Self::Unauthorized => ("unauthorized", Some(StatusCode::UNAUTHORIZED)),
            Self::ForbiddenOrigin => ("forbidden_origin", Some(StatusCode::FORBIDDEN)),
            Self::NotFound => ("not_found", Some(StatusCode::NOT_FOUND)),
            Self::MethodNotAllowed => ("method_not_allowed", Some(StatusCode::METHOD_NOT_ALLOWED)),
            Self::RequestTimeout => ("request_timeout", Some(StatusCode::REQUEST_TIMEOUT)),
            Self::RoomExists => ("room_exists", Some(StatusCode::CONFLICT)),
            Self::Conflict => ("conflict", Some(StatusCode::CONFLICT)),
            // 409 like `room_exists`: the request conflicts with the state
            // of the directory, and repeating it will not help until rooms
            // are gone (unlike 429/503, which say "later").
            Self::TooManyRooms => ("too_many_rooms", Some(StatusCode::CONFLICT)),
            // One code, two statuses: 429 when this client holds too many,
            // 503 when the node does (another node may take it).
            Self::TooManyFromAddress => {
                ("too_many_connections", Some(StatusCode::TOO_MANY_REQUESTS))
            }
            Self::TooManyConnections => (
                "too_many_connections",
                Some(StatusCode::SERVICE_UNAVAILABLE),
            ),
            Self::Overloaded => ("overloaded", Some(StatusCode::SERVICE_UNAVAILABLE)),
            Self::Draining => ("draining", Some(StatusCode::SERVICE_UNAVAILABLE)),
        }
    }

    /// The code as it appears on the wire and in metric labels.
    pub const fn as_str(self) -> &'static str {
        self.row().0
    }

    /// The HTTP status the code is sent with; `None` for a code only the
    /// WebSocket sends.
    pub const fn http_status(self) -> Option<StatusCode> {
        self.row().1
    }
}

impl From<&NameError> for ErrorCode {
    fn from(e: &NameError) -> Self {
        match e {
            NameError::User => Self::InvalidUser,
            NameError::Room => Self::InvalidRoom,
        }
    }
}

impl From<&ContentError> for ErrorCode {
    fn from(e: &ContentError) -> Self {
        match e {
            ContentError::TooLarge(_) => Self::TooLarge,
            // Nothing to send is a malformed request, not a size problem.
            ContentError::Empty => Self::BadRequest,
        }
    }
}
