//! What each client command does on a session, and the one mapping of
//! command failures to `error` frames.

use std::time::Instant;

use super::session::{End, Session};
use crate::chat::SendError;
use crate::cluster::{Appended, ClusterError, Log};
use crate::domain::{MessageId, RoomName};
use crate::error_code::ErrorCode;
use crate::protocol::{self, ClientFrame, Command, HistoryTarget};
use crate::rate::TokenBucket;

/// Why a command was refused. Mapped to the wire only in [`Session::execute`].
#[derive(Debug, thiserror::Error)]
pub(super) enum CommandError {
    /// The room was not joined on this connection.
    #[error("join {0} before sending to it")]
    NotMember(RoomName),
    /// The connection is in as many rooms as allowed.
    #[error("this connection is already in {0} rooms, the most allowed; leave one first")]
    TooManyRooms(usize),
    /// Over the message rate.
    #[error("too many messages; the message was not sent (retry in {0} ms)")]
    RateLimited(u128),
    /// Over the join rate.
    #[error("too many joins; the room was not joined (retry in {0} ms)")]
    JoinRateLimited(u128),
    /// Over the DM rate.
    #[error("too many direct messages; the message was not sent (retry in {0} ms)")]
    DmRateLimited(u128),
    /// Over the history rate (CHORUS_JOIN_RATE).
    #[error("too many history requests (retry in {0} ms)")]
    HistoryRateLimited(u128),
    /// The backend did not take it.
    #[error("the backend is unavailable; it was not sent")]
    Unavailable(#[from] ClusterError),
    /// An attachment that is not the sender's finished upload.
    #[error("{0}")]
    Attachment(String),
    /// A switch could not join its target, so it did not leave its source.
    #[error("could not join {to}, so still in {from}: {cause}")]
    SwitchRefused {
        /// The room the connection stays in.
        from: RoomName,
        /// The room it could not join.
        to: RoomName,
        /// Why the join failed; its code is the error's code.
        cause: Box<CommandError>,
    },
}

impl CommandError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NotMember(_) => ErrorCode::NotMember,
            Self::TooManyRooms(_) | Self::Attachment(_) => ErrorCode::BadRequest,
            Self::RateLimited(_)
            | Self::JoinRateLimited(_)
            | Self::DmRateLimited(_)
            | Self::HistoryRateLimited(_) => ErrorCode::RateLimited,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::SwitchRefused { cause, .. } => cause.code(),
        }
    }

    /// The backend failure behind this error, if any, for the log.
    fn unavailable(&self) -> Option<&ClusterError> {
        match self {
            Self::Unavailable(cause) => Some(cause),
            Self::SwitchRefused { cause, .. } => cause.unavailable(),
            _ => None,
        }
    }
}

impl From<SendError> for CommandError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Cluster(cause) => Self::Unavailable(cause),
            SendError::Attachment(cause) => Self::Attachment(cause),
        }
    }
}

impl Session {
    /// Runs one decoded command and sends its reply or error.
    pub(super) async fn execute(&mut self, frame: ClientFrame) -> Result<(), End> {
        let reference = frame.reference.as_deref();
        match self.command(frame.command, reference).await {
            Ok(replies) => {
                for reply in replies {
                    self.send(reply).await?;
                }
                Ok(())
            }
            Err(error) => {
                if let Some(cause) = error.unavailable() {
                    tracing::warn!(error = %cause, "command failed: backend unavailable");
                }
                self.send_error(error.code(), &error.to_string(), reference)
                    .await
            }
        }
    }

    async fn command(
        &mut self,
        command: Command,
        reference: Option<&str>,
    ) -> Result<Vec<String>, CommandError> {
        Ok(match command {
            Command::Join { room, since } => {
                self.take_join()?;
                vec![self.join(room, since, reference).await?]
            }
            Command::Leave { room } => vec![self.leave(room, reference).await?],
            Command::Switch { from, to } => {
                // Checked first: a refused switch leaves the client where it was.
                self.take_join()?;
                self.switch(from, to, reference).await?
            }
            Command::Message {
                room,
                content,
                key,
                attachments,
            } => {
                self.member(&room)?;
                self.take_token()?;
                let appended = self
                    .state
                    .chat
                    .send_message(
                        &room,
                        &self.user,
                        &content,
                        &attachments,
                        reference,
                        key.as_ref(),
                    )
                    .await?;
                replay(&appended, reference)
            }
            Command::Dm {
                to,
                content,
                key,
                attachments,
            } => {
                self.take_dm()?;
                self.take_token()?;
                let appended = self
                    .state
                    .chat
                    .send_dm(
                        &self.user,
                        &to,
                        &content,
                        &attachments,
                        reference,
                        key.as_ref(),
                    )
                    .await?;
                replay(&appended, reference)
            }
            Command::Typing { room } => {
                self.member(&room)?;
                self.take_token()?;
                self.state.chat.typing(&room, &self.user).await?;
                Vec::new()
            }
            Command::History {
                target,
                before,
                limit,
            } => {
                self.take_history()?;
                let log = match &target {
                    HistoryTarget::Room(room) => Log::Room(room.clone()),
                    HistoryTarget::With(other) => Log::direct(self.user.clone(), other.clone()),
                };
                let mut messages = self.state.chat.history(&log, before, limit).await?;
                protocol::keep_newest_that_fit(&mut messages);
                vec![protocol::history(&target, &messages, reference)]
            }
            Command::Ping => vec![protocol::pong(reference)],
        })
    }

    /// Leaves `from` for `to`, joining first: a join that fails leaves the
    /// connection in `from`, as if the switch had not been asked. The reply
    /// is still `left` then `joined`.
    async fn switch(
        &mut self,
        from: RoomName,
        to: RoomName,
        reference: Option<&str>,
    ) -> Result<Vec<String>, CommandError> {
        // A switch frees `from`, so at the rooms limit it may still join.
        let freed = usize::from(from != to && self.rooms.contains_key(&from));
        let joined = self
            .join_freeing(to.clone(), None, reference, freed)
            .await
            .map_err(|cause| CommandError::SwitchRefused {
                from: from.clone(),
                to: to.clone(),
                cause: Box::new(cause),
            })?;
        if from != to
            && let Err(error) = self.leave(from.clone(), reference).await
        {
            // The connection is out of `from` already (the session forgot
            // it and stopped listening); only recording the leave failed,
            // as it can for a plain `leave`. An error frame now would hide
            // the join that did happen.
            tracing::warn!(%error, room = %from, "switch: could not record the leave");
        }
        Ok(vec![protocol::left(&from, reference), joined])
    }

    async fn join(
        &mut self,
        room: RoomName,
        since: Option<MessageId>,
        reference: Option<&str>,
    ) -> Result<String, CommandError> {
        self.join_freeing(room, since, reference, 0).await
    }

    /// Joins `room`, allowing for `freed` rooms this command leaves after.
    async fn join_freeing(
        &mut self,
        room: RoomName,
        since: Option<MessageId>,
        reference: Option<&str>,
        freed: usize,
    ) -> Result<String, CommandError> {
        let chat = &self.state.chat;
        let already = self.rooms.contains_key(&room);
        let limit = self.state.limits.max_rooms_per_connection;
        if !already && self.rooms.len().saturating_sub(freed) >= limit {
            metrics::counter!(crate::telemetry::ROOM_LIMIT_REFUSALS).increment(1);
            return Err(CommandError::TooManyRooms(limit));
        }
        let mut joined = if already {
            chat.snapshot(&room, since).await?
        } else {
            chat.join(&room, &self.user, &self.recipient, since).await?
        };
        joined.truncated |= protocol::keep_newest_that_fit(&mut joined.history);
        let newest = joined.history.last().map(|m| m.id).or(since);
        let mark = self.rooms.entry(room.clone()).or_default();
        *mark = (*mark).max(newest);
        Ok(protocol::joined(
            &room,
            &joined.members,
            &joined.history,
            joined.truncated,
            reference,
        ))
    }

    async fn leave(
        &mut self,
        room: RoomName,
        reference: Option<&str>,
    ) -> Result<String, CommandError> {
        if self.rooms.remove(&room).is_some() {
            self.state
                .chat
                .leave(&room, &self.user, self.recipient.session)
                .await?;
        }
        Ok(protocol::left(&room, reference))
    }

    fn member(&self, room: &RoomName) -> Result<(), CommandError> {
        if self.rooms.contains_key(room) {
            Ok(())
        } else {
            Err(CommandError::NotMember(room.clone()))
        }
    }

    fn take_token(&mut self) -> Result<(), CommandError> {
        take(&mut self.bucket, "message").map_err(CommandError::RateLimited)
    }

    fn take_join(&mut self) -> Result<(), CommandError> {
        take(&mut self.joins, "join").map_err(CommandError::JoinRateLimited)
    }

    fn take_dm(&mut self) -> Result<(), CommandError> {
        take(&mut self.dms, "dm").map_err(CommandError::DmRateLimited)
    }

    fn take_history(&mut self) -> Result<(), CommandError> {
        take(&mut self.histories, "history").map_err(CommandError::HistoryRateLimited)
    }
}

/// Nothing for a new message (its echo arrives like everyone's copy); the
/// original, to this connection alone, for a repeated idempotency key.
fn replay(appended: &Appended, reference: Option<&str>) -> Vec<String> {
    if appended.replayed {
        vec![protocol::replay(&appended.stored, reference)]
    } else {
        Vec::new()
    }
}

/// Takes a token from `bucket`, or counts the refusal under `kind` and says
/// in how many milliseconds to retry.
fn take(bucket: &mut TokenBucket, kind: &'static str) -> Result<(), u128> {
    if bucket.try_take(Instant::now()) {
        Ok(())
    } else {
        metrics::counter!(crate::telemetry::RATE_LIMITED, "kind" => kind).increment(1);
        Err(bucket.retry_after().as_millis())
    }
}
