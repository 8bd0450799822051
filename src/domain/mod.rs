//! Pure types that every layer shares: validated names and ids. No I/O here,
//! and nothing can fail except `parse`.

mod content;
mod idempotency;
mod message_id;
mod name;
mod upload;

pub use content::{Content, ContentError, MAX_CONTENT_BYTES};
pub use idempotency::{
    IDEMPOTENCY_WINDOW, IdempotencyKey, IdempotencyKeyError, MAX_IDEMPOTENCY_KEY_CHARS,
};
pub use message_id::{MessageId, MessageIdError};
pub use name::{MAX_ROOM_LEN, MAX_USER_LEN, NameError, NodeId, RoomName, UserName};
pub use upload::{
    FileName, MAGIC_BYTES, MAX_ATTACHMENTS, MAX_FILE_NAME_BYTES, MediaType, UploadError, UploadId,
};
