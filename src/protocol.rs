//! The WebSocket wire: decoding client frames and encoding server frames.
//! Every client-facing JSON shape of the socket lives here and nowhere else,
//! and so does the largest frame, which REST bodies are held to as well.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cluster::{Draft, Stored};
use crate::domain::{
    Content, FileName, IdempotencyKey, MAX_ATTACHMENTS, MediaType, MessageId, NameError, NodeId,
    RoomName, UploadId, UserName,
};
use crate::error_code::ErrorCode;

/// Largest WebSocket frame or message accepted, from the contract; larger
/// ones close the connection with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Largest HTTP request body, the same as the largest frame: a message is
/// no bigger over REST than over a socket.
pub const MAX_BODY_BYTES: usize = MAX_FRAME_BYTES;
/// Longest `ref` a client may attach to a command, in characters (not
/// bytes), from the contract.
pub const MAX_REF_LEN: usize = 64;
/// History page size when the client names none, from the contract.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;
/// Largest history page, from the contract; larger requests are clamped.
pub const MAX_HISTORY_LIMIT: usize = 100;
/// The most stored messages, in bytes, one `joined` or `history` reply
/// carries: a `join` with an old `since` in a busy room would otherwise build
/// one reply of the whole history (tens of MB of escaped content) for a
/// socket that may not read it. Past it the newest messages that fit are
/// sent; `joined` says `truncated`, and `history` paging goes on from the
/// oldest one sent.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// Close code: the node is draining; reconnect elsewhere.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: the peer broke the WebSocket protocol (RFC 6455 §7.4.1).
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: a text frame that is not valid UTF-8 (RFC 6455 §7.4.1).
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code: authentication ended (the token expired).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// Close code: a frame was larger than the limit.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
/// Close code: the client read too slowly; reconnect and `join` with `since`.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Close code: an administrator removed the connection; do not reconnect
/// on your own.
pub const CLOSE_REMOVED: u16 = 4001;

/// A command from a client, with its optional `ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    /// Echoed on the direct reply or error.
    pub reference: Option<String>,
    /// What the client asks for.
    pub command: Command,
}

/// What a client can ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Join a room, optionally catching up after a message id.
    Join {
        /// The room.
        room: RoomName,
        /// The last message id the client saw.
        since: Option<MessageId>,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: RoomName,
    },
    /// Leave one room and join another.
    Switch {
        /// The room to leave.
        from: RoomName,
        /// The room to join.
        to: RoomName,
    },
    /// Send a message to a room.
    Message {
        /// The room.
        room: RoomName,
        /// The text.
        content: Content,
        /// Makes a retry of this send harmless.
        key: Option<IdempotencyKey>,
        /// Uploads sent with it (distinct, at most [`MAX_ATTACHMENTS`]).
        attachments: Vec<UploadId>,
    },
    /// Send a direct message.
    Dm {
        /// The recipient.
        to: UserName,
        /// The text.
        content: Content,
        /// Makes a retry of this send harmless.
        key: Option<IdempotencyKey>,
        /// Uploads sent with it (distinct, at most [`MAX_ATTACHMENTS`]).
        attachments: Vec<UploadId>,
    },
    /// Tell the room this user is typing.
    Typing {
        /// The room.
        room: RoomName,
    },
    /// Read a page of history.
    History {
        /// A room's or a DM pair's history.
        target: HistoryTarget,
        /// Only messages older than this id.
        before: Option<MessageId>,
        /// At most this many, within `1..=MAX_HISTORY_LIMIT`.
        limit: usize,
    },
    /// Keepalive at the application level.
    Ping,
}

/// Whose history a `history` command reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryTarget {
    /// A room's.
    Room(RoomName),
    /// The DMs between the client and this user.
    With(UserName),
}

/// Why a frame could not be decoded, with the code the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The frame's `ref`, when it could be read.
    pub reference: Option<String>,
    /// The wire code.
    pub code: ErrorCode,
    /// What was wrong, for humans.
    pub message: String,
}

/// Every field any command has; read in one pass, borrowing from the frame.
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    since: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    before: Option<Cow<'a, str>>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(borrow, default)]
    with: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    idempotency_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    attachments: Option<Vec<Cow<'a, str>>>,
}

/// Only the `ref`, to echo it on a frame that failed to decode as a whole.
#[derive(Deserialize)]
struct RefOnly<'a> {
    #[serde(rename = "ref", borrow, default)]
    reference: Option<Cow<'a, str>>,
}

/// JSON's insignificant whitespace, the only bytes serde_json skips before a value.
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

impl ClientFrame {
    /// Decodes one text frame.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        // A frame is one JSON object. serde's derived structs also accept an
        // array of the fields in declaration order (`["ping"]`), so anything
        // that does not open with `{` is refused before serde sees it.
        if !text.trim_start_matches(JSON_WHITESPACE).starts_with('{') {
            return Err(DecodeError {
                reference: None,
                code: ErrorCode::BadRequest,
                message: "a frame is one JSON object".to_owned(),
            });
        }
        let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|e| {
            let reference = serde_json::from_str::<RefOnly<'_>>(text)
                .ok()
                .and_then(|r| r.reference)
                .filter(|r| is_short_ref(r))
                .map(Cow::into_owned);
            DecodeError {
                reference,
                code: ErrorCode::BadRequest,
                message: format!("invalid frame: {e}"),
            }
        })?;
        let reference = match raw.reference.as_deref() {
            Some(r) if !is_short_ref(r) => {
                return Err(DecodeError {
                    reference: None,
                    code: ErrorCode::BadRequest,
                    message: format!("ref is longer than {MAX_REF_LEN} characters"),
                });
            }
            r => r.map(str::to_owned),
        };
        match raw.command() {
            Ok(command) => Ok(Self { reference, command }),
            Err((code, message)) => Err(DecodeError {
                reference,
                code,
                message,
            }),
        }
    }
}

/// Whether a `ref` is within [`MAX_REF_LEN`] characters.
fn is_short_ref(reference: &str) -> bool {
    // Counting stops at the first character past the limit.
    reference.chars().nth(MAX_REF_LEN).is_none()
}

type FieldError = (ErrorCode, String);

fn required<'a>(field: Option<Cow<'a, str>>, name: &str) -> Result<Cow<'a, str>, FieldError> {
    field.ok_or_else(|| (ErrorCode::BadRequest, format!("missing field \"{name}\"")))
}

fn name_error(e: NameError) -> FieldError {
    ((&e).into(), e.to_string())
}

fn room(field: Option<Cow<'_, str>>, name: &str) -> Result<RoomName, FieldError> {
    RoomName::parse(&required(field, name)?).map_err(name_error)
}

fn user(field: Option<Cow<'_, str>>, name: &str) -> Result<UserName, FieldError> {
    UserName::parse(&required(field, name)?).map_err(name_error)
}

/// A message's text: required, unless it has attachments (then it may be
/// missing or empty).
fn content(field: Option<Cow<'_, str>>, attachments: &[UploadId]) -> Result<Content, FieldError> {
    let text = match field {
        None if attachments.is_empty() => required(field, "content")?,
        field => field.unwrap_or_default(),
    };
    Content::parse_with(text.into_owned(), !attachments.is_empty())
        .map_err(|e| ((&e).into(), e.to_string()))
}

/// An optional `attachments` list, for REST bodies as well: at most
/// [`MAX_ATTACHMENTS`] distinct upload ids.
pub fn attachment_ids<S: AsRef<str>>(field: Option<Vec<S>>) -> Result<Vec<UploadId>, FieldError> {
    let raw = field.unwrap_or_default();
    if raw.len() > MAX_ATTACHMENTS {
        return Err((
            ErrorCode::BadRequest,
            format!("at most {MAX_ATTACHMENTS} attachments, got {}", raw.len()),
        ));
    }
    let mut ids: Vec<UploadId> = Vec::with_capacity(raw.len());
    for s in &raw {
        let id = UploadId::parse(s.as_ref()).map_err(|e| {
            (
                ErrorCode::BadRequest,
                format!("attachment \"{}\": {e}", s.as_ref().escape_default()),
            )
        })?;
        if ids.contains(&id) {
            return Err((
                ErrorCode::BadRequest,
                format!("attachment {id} is listed twice"),
            ));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn message_id(field: Option<Cow<'_, str>>, name: &str) -> Result<Option<MessageId>, FieldError> {
    field
        .map(|s| {
            MessageId::parse(&s)
                .map_err(|e| (ErrorCode::BadRequest, format!("invalid \"{name}\": {e}")))
        })
        .transpose()
}

/// An optional `idempotency_key`, for REST bodies and headers as well.
pub fn idempotency_key(
    field: Option<Cow<'_, str>>,
) -> Result<Option<IdempotencyKey>, (ErrorCode, String)> {
    field
        .map(|k| IdempotencyKey::parse(&k).map_err(|e| (ErrorCode::BadRequest, e.to_string())))
        .transpose()
}

impl RawFrame<'_> {
    fn command(self) -> Result<Command, FieldError> {
        Ok(match &*self.kind {
            "join" => Command::Join {
                room: room(self.room, "room")?,
                since: message_id(self.since, "since")?,
            },
            "leave" => Command::Leave {
                room: room(self.room, "room")?,
            },
            "switch" => Command::Switch {
                from: room(self.from, "from")?,
                to: room(self.to, "to")?,
            },
            "message" => {
                let room = room(self.room, "room")?;
                let attachments = attachment_ids(self.attachments)?;
                Command::Message {
                    room,
                    content: content(self.content, &attachments)?,
                    key: idempotency_key(self.idempotency_key)?,
                    attachments,
                }
            }
            "dm" => {
                let to = user(self.to, "to")?;
                let attachments = attachment_ids(self.attachments)?;
                Command::Dm {
                    to,
                    content: content(self.content, &attachments)?,
                    key: idempotency_key(self.idempotency_key)?,
                    attachments,
                }
            }
            "typing" => Command::Typing {
                room: room(self.room, "room")?,
            },
            "history" => {
                let target = match (self.room, self.with) {
                    (Some(r), None) => HistoryTarget::Room(room(Some(r), "room")?),
                    (None, Some(w)) => HistoryTarget::With(user(Some(w), "with")?),
                    _ => {
                        return Err((
                            ErrorCode::BadRequest,
                            "history needs exactly one of \"room\" or \"with\"".to_owned(),
                        ));
                    }
                };
                Command::History {
                    target,
                    before: message_id(self.before, "before")?,
                    limit: history_limit(self.limit).map_err(|m| (ErrorCode::BadRequest, m))?,
                }
            }
            "ping" => Command::Ping,
            other => {
                return Err((
                    ErrorCode::BadRequest,
                    format!("unknown type \"{}\"", other.escape_default()),
                ));
            }
        })
    }
}

/// An upload as a `message` or `dm` frame carries it. `url` is the
/// node's stable path for it, valid as long as the upload lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    id: String,
    name: String,
    #[serde(rename = "type")]
    media_type: String,
    size: u64,
    url: String,
}

impl Attachment {
    /// The attachment for upload `id`.
    pub fn new(id: &UploadId, name: &FileName, media_type: &MediaType, size: u64) -> Self {
        Self {
            id: id.to_string(),
            name: name.as_str().to_owned(),
            media_type: media_type.as_str().to_owned(),
            size,
            url: format!("/api/uploads/{id}"),
        }
    }
}

/// Drops the oldest of `messages` until the rest fit in [`MAX_REPLY_BYTES`];
/// true when some were dropped.
pub fn keep_newest_that_fit(messages: &mut Vec<Stored>) -> bool {
    let mut total = 0;
    let fit = messages
        .iter()
        .rev()
        .take_while(|m| {
            total += m.payload.len() + 1;
            total <= MAX_REPLY_BYTES
        })
        .count();
    let dropped = messages.len() - fit;
    messages.drain(..dropped);
    dropped > 0
}

/// The page size for a requested `limit`: the default when absent, clamped to
/// [`MAX_HISTORY_LIMIT`], and an error for zero.
pub fn history_limit(limit: Option<u64>) -> Result<usize, String> {
    match limit {
        None => Ok(DEFAULT_HISTORY_LIMIT),
        Some(0) => Err("limit must be at least 1".to_owned()),
        Some(n) => Ok(usize::try_from(n).map_or(MAX_HISTORY_LIMIT, |n| n.min(MAX_HISTORY_LIMIT))),
    }
}

fn encode(frame: &impl Serialize) -> String {
    // Serialising these plain structs of strings and numbers cannot fail.
    serde_json::to_string(frame).unwrap_or_default()
}

/// Writes `[raw,raw,...]`: stored messages spliced in without decoding them again.
fn push_raw_array(out: &mut String, items: &[Stored]) {
    out.reserve(items.iter().map(|s| s.payload.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&String::from_utf8_lossy(&item.payload));
    }
    out.push(']');
}

/// A JSON array of stored messages, oldest first (REST history pages).
pub fn message_array(items: &[Stored]) -> String {
    let mut out = String::new();
    push_raw_array(&mut out, items);
    out
}

/// Appends `,"key":[...]}` to an encoded object.
fn with_raw_array(object: String, key: &str, items: &[Stored]) -> String {
    let mut out = object;
    out.pop(); // the closing brace
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    push_raw_array(&mut out, items);
    out.push('}');
    out
}

#[derive(Serialize)]
struct Reply<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    body: T,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
}

fn reply(kind: &'static str, body: impl Serialize, reference: Option<&str>) -> String {
    encode(&Reply {
        kind,
        body,
        reference,
    })
}

/// `welcome`, the first frame of every connection.
pub fn welcome(user: &UserName, node: &NodeId, session: &str) -> String {
    #[derive(Serialize)]
    struct Welcome<'a> {
        user: &'a UserName,
        node: &'a NodeId,
        session: &'a str,
    }
    reply(
        "welcome",
        Welcome {
            user,
            node,
            session,
        },
        None,
    )
}

/// `joined`, with the members and the history the join returns.
pub fn joined(
    room: &RoomName,
    members: &[UserName],
    history: &[Stored],
    truncated: bool,
    reference: Option<&str>,
) -> String {
    #[derive(Serialize)]
    struct Joined<'a> {
        room: &'a RoomName,
        members: &'a [UserName],
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    }
    let head = reply(
        "joined",
        Joined {
            room,
            members,
            truncated,
        },
        reference,
    );
    with_raw_array(head, "history", history)
}

/// `left`.
pub fn left(room: &RoomName, reference: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Left<'a> {
        room: &'a RoomName,
    }
    reply("left", Left { room }, reference)
}

/// A `history` reply for a room or a DM partner.
pub fn history(target: &HistoryTarget, messages: &[Stored], reference: Option<&str>) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "lowercase")]
    enum Target<'a> {
        Room(&'a RoomName),
        With(&'a UserName),
    }
    #[derive(Serialize)]
    struct Page<'a> {
        #[serde(flatten)]
        target: Target<'a>,
    }
    let target = match target {
        HistoryTarget::Room(r) => Target::Room(r),
        HistoryTarget::With(u) => Target::With(u),
    };
    with_raw_array(
        reply("history", Page { target }, reference),
        "messages",
        messages,
    )
}

/// `pong`.
pub fn pong(reference: Option<&str>) -> String {
    reply("pong", serde_json::Map::new(), reference)
}

/// An `error` frame.
pub fn error(code: ErrorCode, message: &str, reference: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Error<'a> {
        code: &'static str,
        message: &'a str,
    }
    reply(
        "error",
        Error {
            code: code.as_str(),
            message,
        },
        reference,
    )
}

/// A presence change in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceEvent {
    /// The user's first connection joined the room.
    Join,
    /// The user's last connection left the room.
    Leave,
}

/// A `presence` event.
pub fn presence(room: &RoomName, user: &UserName, event: PresenceEvent) -> Bytes {
    #[derive(Serialize)]
    struct Presence<'a> {
        room: &'a RoomName,
        user: &'a UserName,
        event: PresenceEvent,
    }
    Bytes::from(reply("presence", Presence { room, user, event }, None))
}

/// A `typing` event.
pub fn typing(room: &RoomName, user: &UserName) -> Bytes {
    #[derive(Serialize)]
    struct Typing<'a> {
        room: &'a RoomName,
        user: &'a UserName,
    }
    Bytes::from(reply("typing", Typing { room, user }, None))
}

/// A `deleted` event: an administrator removed message `id` from the
/// room's history.
pub fn deleted(room: &RoomName, id: MessageId) -> Bytes {
    #[derive(Serialize)]
    struct Deleted<'a> {
        room: &'a RoomName,
        id: String,
    }
    let id = id.to_string();
    Bytes::from(reply("deleted", Deleted { room, id }, None))
}

/// The current time as the contract's `ts`: RFC 3339, UTC, milliseconds.
pub fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Splits an encoded body object into a draft around the id:
/// `{"type":"<kind>","id":"` + id + `",` + the body's fields.
fn draft(kind: &str, body: String) -> Draft {
    let prefix = format!("{{\"type\":\"{kind}\",\"id\":\"");
    let mut suffix = String::with_capacity(body.len() + 1);
    suffix.push_str("\",");
    suffix.push_str(body.get(1..).unwrap_or_default());
    Draft {
        prefix: Bytes::from(prefix),
        suffix: Bytes::from(suffix),
    }
}

/// A room `message`, encoded once for every recipient and the history.
pub fn message(
    room: &RoomName,
    user: &UserName,
    content: &Content,
    attachments: &[Attachment],
    reference: Option<&str>,
) -> Draft {
    #[derive(Serialize)]
    struct Body<'a> {
        room: &'a RoomName,
        user: &'a UserName,
        content: &'a str,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        attachments: &'a [Attachment],
        ts: String,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    }
    draft(
        "message",
        encode(&Body {
            room,
            user,
            content: content.as_str(),
            attachments,
            ts: timestamp(),
            reference,
        }),
    )
}

/// A stored message or DM sent again to the connection that repeated its
/// idempotency key: the original, with this command's `ref` in place of the
/// original's. Rare, so it may decode and encode.
pub fn replay(stored: &Stored, reference: Option<&str>) -> String {
    let mut frame: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&stored.payload).unwrap_or_default();
    match reference {
        Some(reference) => frame.insert("ref".to_owned(), reference.into()),
        None => frame.remove("ref"),
    };
    encode(&frame)
}

/// A `dm`, encoded once for both users' connections and the pair's history.
pub fn dm(
    from: &UserName,
    to: &UserName,
    content: &Content,
    attachments: &[Attachment],
    reference: Option<&str>,
) -> Draft {
    #[derive(Serialize)]
    struct Body<'a> {
        from: &'a UserName,
        to: &'a UserName,
        content: &'a str,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        attachments: &'a [Attachment],
        ts: String,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    }
    draft(
        "dm",
        encode(&Body {
            from,
            to,
            content: content.as_str(),
            attachments,
            ts: timestamp(),
            reference,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn check(text: &str, expected: Result<Command, (ErrorCode, Option<&str>)>) {
        let got = ClientFrame::decode(text);
        match (got, expected) {
            (Ok(frame), Ok(command)) => assert_eq!(frame.command, command, "{text}"),
            (Err(e), Err((code, reference))) => {
                assert_eq!(e.code, code, "{text}: {}", e.message);
                assert_eq!(e.reference.as_deref(), reference, "{text}");
            }
            (got, expected) => panic!("{:.80}: got {got:?}, expected {expected:?}", text),
        }
    }

    fn room(s: &str) -> RoomName {
        RoomName::parse(s).unwrap()
    }

    #[test]
    fn attachments_are_at_most_ten_distinct_ids_and_excuse_empty_content() {
        let id = "0123456789abcdef0123456789abcdef";
        check(
            &format!(r#"{{"type":"message","room":"r","attachments":["{id}"]}}"#),
            Ok(Command::Message {
                room: room("r"),
                content: Content::parse_with("", true).unwrap(),
                key: None,
                attachments: vec![UploadId::parse(id).unwrap()],
            }),
        );
        check(
            &format!(r#"{{"type":"dm","to":"bob","content":"","attachments":["{id}"]}}"#),
            Ok(Command::Dm {
                to: UserName::parse("bob").unwrap(),
                content: Content::parse_with("", true).unwrap(),
                key: None,
                attachments: vec![UploadId::parse(id).unwrap()],
            }),
        );
        let bad = |list: &str| {
            format!(
                r#"{{"type":"message","room":"r","content":"x","attachments":{list},"ref":"a"}}"#
            )
        };
        check(
            &bad(&format!(r#"["{id}","{id}"]"#)),
            Err((ErrorCode::BadRequest, Some("a"))),
        );
        check(&bad(r#"["nope"]"#), Err((ErrorCode::BadRequest, Some("a"))));
        check(&bad(r#"[1]"#), Err((ErrorCode::BadRequest, Some("a"))));
        let eleven: Vec<String> = (0..11).map(|i| format!("\"{i:032x}\"")).collect();
        check(
            &bad(&format!("[{}]", eleven.join(","))),
            Err((ErrorCode::BadRequest, Some("a"))),
        );
        check(
            r#"{"type":"message","room":"r","attachments":[]}"#,
            Err((ErrorCode::BadRequest, None)),
        );
    }

    #[test]
    fn decodes_every_command() {
        check(
            r#"{"type":"join","room":"r"}"#,
            Ok(Command::Join {
                room: room("r"),
                since: None,
            }),
        );
        check(
            r#"{"type":"join","room":"r","since":"5-1"}"#,
            Ok(Command::Join {
                room: room("r"),
                since: Some(MessageId::new(5, 1)),
            }),
        );
        check(
            r#"{"type":"leave","room":"r"}"#,
            Ok(Command::Leave { room: room("r") }),
        );
        check(
            r#"{"type":"switch","from":"a","to":"b"}"#,
            Ok(Command::Switch {
                from: room("a"),
                to: room("b"),
            }),
        );
        check(
            r#"{"type":"message","room":"r","content":"h\u00e9"}"#,
            Ok(Command::Message {
                room: room("r"),
                content: Content::parse("hé").unwrap(),
                key: None,
                attachments: Vec::new(),
            }),
        );
        check(
            r#"{"type":"dm","to":"bob","content":"hi","idempotency_key":"k1"}"#,
            Ok(Command::Dm {
                to: UserName::parse("bob").unwrap(),
                content: Content::parse("hi").unwrap(),
                key: Some(IdempotencyKey::parse("k1").unwrap()),
                attachments: Vec::new(),
            }),
        );
        check(
            r#"{"type":"dm","to":"bob","content":"hi","idempotency_key":"","ref":"x"}"#,
            Err((ErrorCode::BadRequest, Some("x"))),
        );
        check(
            r#"{"type":"typing","room":"r"}"#,
            Ok(Command::Typing { room: room("r") }),
        );
        check(
            r#"{"type":"history","with":"bob","limit":500}"#,
            Ok(Command::History {
                target: HistoryTarget::With(UserName::parse("bob").unwrap()),
                before: None,
                limit: MAX_HISTORY_LIMIT,
            }),
        );
        check(
            r#"{"type":"history","room":"r","before":"9-0"}"#,
            Ok(Command::History {
                target: HistoryTarget::Room(room("r")),
                before: Some(MessageId::new(9, 0)),
                limit: DEFAULT_HISTORY_LIMIT,
            }),
        );
        check(r#"{"type":"ping","extra":[1,2]}"#, Ok(Command::Ping));
        check(" \t\r\n{\"type\":\"ping\"}\n", Ok(Command::Ping));
    }

    #[test]
    fn refuses_bad_frames_with_precise_codes_and_keeps_the_ref() {
        use ErrorCode::*;
        check("not json", Err((BadRequest, None)));
        check("[]", Err((BadRequest, None)));
        check(r#"{"ref":"a"}"#, Err((BadRequest, Some("a"))));
        check(r#"{"type":"fly","ref":"a"}"#, Err((BadRequest, Some("a"))));
        check(r#"{"type":"join","ref":"a"}"#, Err((BadRequest, Some("a"))));
        check(
            r#"{"type":"join","room":5,"ref":"a"}"#,
            Err((BadRequest, Some("a"))),
        );
        check(
            r#"{"type":"join","room":"a b","ref":"a"}"#,
            Err((InvalidRoom, Some("a"))),
        );
        check(
            r#"{"type":"join","room":"r","since":"yesterday"}"#,
            Err((BadRequest, None)),
        );
        check(
            r#"{"type":"dm","to":"bo b","content":"x"}"#,
            Err((InvalidUser, None)),
        );
        check(
            r#"{"type":"history","room":"r","with":"bob"}"#,
            Err((BadRequest, None)),
        );
        check(
            r#"{"type":"history","room":"r","limit":0}"#,
            Err((BadRequest, None)),
        );
        check(
            r#"{"type":"history","room":"r","limit":-1}"#,
            Err((BadRequest, None)),
        );
        check(
            r#"{"type":"history","room":"r","limit":1e400}"#,
            Err((BadRequest, None)),
        );
        let big = "x".repeat(4097);
        check(
            &format!(r#"{{"type":"message","room":"r","content":"{big}","ref":"q"}}"#),
            Err((TooLarge, Some("q"))),
        );
        check(
            &format!(r#"{{"type":"ping","ref":"{}"}}"#, "r".repeat(65)),
            Err((BadRequest, None)),
        );
        check(
            &format!(r#"{{"type":"join","ref":"{}"}}"#, "é".repeat(65)),
            Err((BadRequest, None)),
        );
        // Arrays of the fields in order are not frames, nor is anything else
        // that is not an object.
        check(r#"["ping"]"#, Err((BadRequest, None)));
        check(r#" ["join","a","r"]"#, Err((BadRequest, None)));
        check("\"ping\"", Err((BadRequest, None)));
        check("null", Err((BadRequest, None)));
        check("", Err((BadRequest, None)));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        check(
            &format!(r#"{{"type":"join","room":{deep}}}"#),
            Err((BadRequest, None)),
        );
        // Unknown fields are skipped, however deep, without recursion.
        check(
            &format!(r#"{{"type":"ping","x":{deep}}}"#),
            Ok(Command::Ping),
        );
    }

    #[test]
    fn the_ref_limit_counts_characters_not_bytes() {
        let wide = "é".repeat(MAX_REF_LEN);
        let frame = ClientFrame::decode(&format!(r#"{{"type":"ping","ref":"{wide}"}}"#)).unwrap();
        assert_eq!(frame.reference.as_deref(), Some(wide.as_str()));
        let over = "é".repeat(MAX_REF_LEN + 1);
        check(
            &format!(r#"{{"type":"ping","ref":"{over}"}}"#),
            Err((ErrorCode::BadRequest, None)),
        );
        // A frame that fails as a whole still echoes a wide ref.
        check(
            &format!(r#"{{"type":"fly","ref":"{wide}"}}"#),
            Err((ErrorCode::BadRequest, Some(wide.as_str()))),
        );
        check(
            &format!(r#"{{"type":5,"ref":"{wide}"}}"#),
            Err((ErrorCode::BadRequest, Some(wide.as_str()))),
        );
        check(
            &format!(r#"{{"type":5,"ref":"{over}"}}"#),
            Err((ErrorCode::BadRequest, None)),
        );
    }

    #[test]
    fn a_message_is_encoded_around_its_id() {
        let content = Content::parse("<b>\"hi\"</b>").unwrap();
        let id = UploadId::random();
        let name = FileName::parse("<img src=x onerror=\"alert(1)\">.png").unwrap();
        let attachment = Attachment::new(&id, &name, &MediaType::parse("image/png").unwrap(), 9);
        let draft = message(
            &room("r"),
            &UserName::parse("al").unwrap(),
            &content,
            &[attachment],
            Some("x1"),
        );
        let frame: Value = serde_json::from_slice(&draft.complete(MessageId::new(7, 2))).unwrap();
        assert_eq!(
            frame["attachments"],
            json!([{"id": id.as_str(), "name": name.as_str(), "type": "image/png", "size": 9,
                    "url": format!("/api/uploads/{id}")}])
        );
        assert_eq!(frame["type"], "message");
        assert_eq!(frame["id"], "7-2");
        assert_eq!(frame["room"], "r");
        assert_eq!(frame["user"], "al");
        assert_eq!(frame["content"], "<b>\"hi\"</b>");
        assert_eq!(frame["ref"], "x1");
        assert!(frame["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn replies_splice_stored_messages_and_echo_the_ref() {
        let stored = Stored {
            id: MessageId::new(1, 0),
            payload: Bytes::from_static(br#"{"id":"1-0"}"#),
        };
        let frame: Value = serde_json::from_str(&joined(
            &room("r"),
            &[],
            std::slice::from_ref(&stored),
            true,
            Some("j"),
        ))
        .unwrap();
        assert_eq!(
            frame,
            json!({"type":"joined","room":"r","members":[],"truncated":true,"ref":"j","history":[{"id":"1-0"}]})
        );
        let frame: Value = serde_json::from_str(&history(
            &HistoryTarget::With(UserName::parse("bob").unwrap()),
            &[stored],
            None,
        ))
        .unwrap();
        assert_eq!(
            frame,
            json!({"type":"history","with":"bob","messages":[{"id":"1-0"}]})
        );
        let frame: Value = serde_json::from_str(&pong(Some("p"))).unwrap();
        assert_eq!(frame, json!({"type":"pong","ref":"p"}));
    }
}
