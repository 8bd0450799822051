//! Uploads as chat sees them: announcing one, taking its bytes (the local
//! folder's PUT), attaching finished uploads to a message, and deciding who
//! may fetch one. The bytes live in `uploads`, the records in the backend.

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::join_all;

use super::Chat;
use crate::cluster::{ClusterError, Log, UploadRecord, UploadState};
use crate::domain::{FileName, MediaType, UploadError, UploadId, UserName};
use crate::protocol::Attachment;
use crate::telemetry;
use crate::uploads::{Checked, Fetched, PUT_WINDOW, PutTarget, StoreError, Uploads, WriteError};

/// A pending record outlives its PUT window a little, so a PUT that
/// started just in time can still finish.
const PENDING_TTL: Duration = Duration::from_secs(PUT_WINDOW.as_secs() + 5 * 60);
/// A finished upload nobody attached is forgotten after a day.
const UNUSED_TTL: Duration = Duration::from_secs(24 * 3600);
/// An attached upload lives 90 days after its last attach, so history's
/// links keep working for a season; the bucket's lifecycle rule matches it.
pub const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Pending uploads one user may have at once: enough for a batch of
/// attachments, few enough that announcing uploads cannot fill storage.
pub const MAX_PENDING_UPLOADS: usize = 20;

/// Why an upload call was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadFailure {
    /// Unknown, not the caller's to see, or uploads are off: never says which.
    #[error("not found")]
    NotFound,
    /// A bad name or type.
    #[error(transparent)]
    Invalid(#[from] UploadError),
    /// A size that is not a positive integer.
    #[error("size must be a positive number of bytes")]
    BadSize,
    /// Over CHORUS_UPLOAD_MAX_BYTES.
    #[error("size {size} is over the limit of {max} bytes (CHORUS_UPLOAD_MAX_BYTES)")]
    TooLarge {
        /// Announced or sent.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The user has [`MAX_PENDING_UPLOADS`] pending.
    #[error("{MAX_PENDING_UPLOADS} uploads of yours are pending already; finish one first")]
    TooManyPending,
    /// Uploaded already, or a PUT of it is running.
    #[error("this upload was uploaded already or is being uploaded")]
    Conflict,
    /// A PUT that does not match what was announced.
    #[error("{0}")]
    BadPut(String),
    /// The PUT's body failed.
    #[error(transparent)]
    Write(WriteError),
    /// The records did not answer.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The storage did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a send was refused.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The backend did not take it.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// An attachment is not the sender's finished upload; names the id
    /// and the cause.
    #[error("{0}")]
    Attachment(String),
}

/// A new upload: its id and where to PUT the bytes.
#[derive(Debug)]
pub struct Offer {
    /// The upload's id, to list in `attachments`.
    pub id: UploadId,
    /// Where the bytes go.
    pub target: PutTarget,
}

/// How to answer a GET of an upload.
#[derive(Debug)]
pub struct Download {
    /// `Content-Type`.
    pub content_type: String,
    /// `Content-Disposition`.
    pub disposition: String,
    /// The file, or where to redirect.
    pub fetched: Fetched,
}

/// What a local PUT brings.
pub struct Put<'a, S> {
    /// The upload, as the path names it.
    pub id: &'a str,
    /// The `k` of the URL.
    pub secret: &'a str,
    /// The request's `Content-Type`.
    pub content_type: Option<&'a str>,
    /// The request's `Content-Length`.
    pub content_length: Option<u64>,
    /// The body.
    pub body: S,
    /// Longest wait for the next chunk.
    pub idle: Duration,
}

fn unavailable(error: StoreError) -> ClusterError {
    ClusterError::Unavailable(error.0)
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn count_finished(size: u64) {
    metrics::counter!(telemetry::UPLOADS, "event" => "finished").increment(1);
    metrics::counter!(telemetry::UPLOAD_BYTES).increment(size);
}

impl Chat {
    /// Turns uploads on, stored in `store`, up to `max_bytes` each.
    pub fn with_uploads(mut self, store: Uploads, max_bytes: u64) -> Self {
        self.uploads = Some(std::sync::Arc::new(store));
        self.upload_max_bytes = max_bytes;
        self
    }

    fn store(&self) -> Result<&Uploads, UploadFailure> {
        self.uploads.as_deref().ok_or(UploadFailure::NotFound)
    }

    /// Announces an upload of `uploader`: checks name, size and type
    /// (cheapest first), counts it against the pending cap, and says where
    /// to PUT the bytes.
    pub async fn create_upload(
        &self,
        uploader: UserName,
        name: &str,
        media_type: &str,
        size: Option<u64>,
    ) -> Result<Offer, UploadFailure> {
        let store = self.store()?;
        let name = FileName::parse(name)?;
        let size = size.filter(|&n| n > 0).ok_or(UploadFailure::BadSize)?;
        if size > self.upload_max_bytes {
            return Err(UploadFailure::TooLarge {
                size,
                max: self.upload_max_bytes,
            });
        }
        let media_type = MediaType::parse(media_type)?;
        let id = UploadId::random();
        let secret = store
            .needs_secret()
            .then(|| uuid::Uuid::new_v4().simple().to_string());
        let record = UploadRecord {
            id: id.clone(),
            uploader,
            name,
            media_type,
            size,
            state: UploadState::Pending,
            secret,
            logs: Vec::new(),
        };
        match self
            .backend
            .uploads
            .create(&record, PENDING_TTL, MAX_PENDING_UPLOADS)
            .await
        {
            Err(ClusterError::Full) => return Err(UploadFailure::TooManyPending),
            other => other?,
        }
        let target = store
            .target(&id, &record.media_type, size, record.secret.as_deref())
            .await?;
        metrics::counter!(telemetry::UPLOADS, "event" => "created").increment(1);
        Ok(Offer { id, target })
    }

    /// Takes a local PUT's body: the one-time secret, the announced type
    /// and length, then exactly that many bytes before the PUT window ends.
    pub async fn put_local<E>(
        &self,
        put: Put<'_, impl Stream<Item = Result<Bytes, E>> + Unpin>,
    ) -> Result<(), UploadFailure> {
        let Ok(Uploads::Local(local)) = self.store() else {
            return Err(UploadFailure::NotFound);
        };
        let id = UploadId::parse(put.id).map_err(|_| UploadFailure::NotFound)?;
        let record = self
            .backend
            .uploads
            .get(&id)
            .await?
            .filter(|r| {
                r.secret
                    .as_deref()
                    .is_some_and(|s| same_secret(s, put.secret))
            })
            .ok_or(UploadFailure::NotFound)?;
        if record.state != UploadState::Pending {
            return Err(UploadFailure::Conflict);
        }
        let sent_type = put.content_type.and_then(|t| MediaType::parse(t).ok());
        if sent_type.as_ref() != Some(&record.media_type) {
            return Err(UploadFailure::BadPut(format!(
                "Content-Type must be {}",
                record.media_type.as_str()
            )));
        }
        match put.content_length {
            None => {
                return Err(UploadFailure::BadPut(
                    "Content-Length is required".to_owned(),
                ));
            }
            Some(n) if n > record.size => return Err(UploadFailure::Write(WriteError::TooLong)),
            Some(n) if n < record.size => {
                return Err(UploadFailure::BadPut(format!(
                    "Content-Length must be the announced size, {}",
                    record.size
                )));
            }
            Some(_) => {}
        }
        let deadline = tokio::time::Instant::now() + PUT_WINDOW;
        let inline = local
            .write(
                &id,
                &record.media_type,
                record.size,
                put.body,
                put.idle,
                deadline,
            )
            .await
            .map_err(|e| match e {
                WriteError::InFlight => UploadFailure::Conflict,
                other => UploadFailure::Write(other),
            })?;
        let settled = self
            .backend
            .uploads
            .settle(&record, UploadState::Finished { inline }, UNUSED_TTL)
            .await;
        if !matches!(settled, Ok(true)) {
            // Expired or settled meanwhile: the file will never be served.
            local.delete(&id).await;
            settled?;
            return Err(UploadFailure::NotFound);
        }
        count_finished(record.size);
        // A file nobody attaches goes when its record does.
        if let Err(error) = local.keep(&id, UNUSED_TTL).await {
            tracing::warn!(%error, "could not set an upload's lifetime");
        }
        let finished = UploadRecord {
            state: UploadState::Finished { inline },
            secret: None,
            ..record
        };
        if let Err(error) = local.remember(&finished).await {
            tracing::warn!(%error, "could not keep an upload's record on disk");
        }
        Ok(())
    }

    /// Deletes uploaded bytes past their lifetime (the local folder, at most
    /// every few minutes); for the upkeep.
    pub async fn sweep_uploads(&self) {
        if let Some(store) = self.uploads.as_deref() {
            let removed = store.sweep().await;
            if removed > 0 {
                tracing::info!(removed, "expired uploads deleted");
                metrics::counter!(telemetry::UPLOADS, "event" => "swept")
                    .increment(u64::try_from(removed).unwrap_or(u64::MAX));
            }
        }
    }

    /// The frames' `attachments` for `ids`, each recorded as sent to `log`:
    /// every one must be `sender`'s finished upload. Checked concurrently;
    /// the log is recorded before the message is stored, so a reader of the
    /// message can always open its files.
    pub(super) async fn attachments(
        &self,
        ids: &[UploadId],
        sender: &UserName,
        log: &Log,
    ) -> Result<Vec<Attachment>, SendError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let Some(store) = self.uploads.as_deref() else {
            return Err(SendError::Attachment(
                "uploads are off on this node".to_owned(),
            ));
        };
        join_all(ids.iter().map(|id| self.attach_one(store, id, sender, log)))
            .await
            .into_iter()
            .collect()
    }

    async fn attach_one(
        &self,
        store: &Uploads,
        id: &UploadId,
        sender: &UserName,
        log: &Log,
    ) -> Result<Attachment, SendError> {
        let refused = |cause: &str| SendError::Attachment(format!("attachment {id}: {cause}"));
        const MISMATCH: &str = "the uploaded file does not match the announced size or type";
        let records = &self.backend.uploads;
        let record = self
            .record(store, id)
            .await?
            .filter(|r| r.uploader == *sender)
            .ok_or_else(|| refused("unknown, or not an upload of yours"))?;
        match record.state {
            UploadState::Finished { .. } => {}
            UploadState::Rejected => return Err(refused(MISMATCH)),
            UploadState::Pending => {
                match store
                    .check(id, &record.media_type, record.size)
                    .await
                    .map_err(unavailable)?
                {
                    Checked::Missing => return Err(refused("not uploaded yet")),
                    Checked::Mismatch => {
                        store.delete(id).await;
                        if records
                            .settle(&record, UploadState::Rejected, UNUSED_TTL)
                            .await?
                        {
                            metrics::counter!(telemetry::UPLOADS, "event" => "rejected")
                                .increment(1);
                        }
                        return Err(refused(MISMATCH));
                    }
                    Checked::Matches { inline } => {
                        let finished = UploadState::Finished { inline };
                        if records.settle(&record, finished, UNUSED_TTL).await? {
                            count_finished(record.size);
                        }
                    }
                }
            }
        }
        let attached = records
            .attach(id, sender, log, RETENTION)
            .await?
            .ok_or_else(|| refused("not a finished upload of yours"))?;
        store.keep(id, RETENTION).await;
        store.remember(&attached).await;
        Ok(Attachment::new(
            &attached.id,
            &attached.name,
            &attached.media_type,
            attached.size,
        ))
    }

    /// How to serve upload `id` to `viewer` (`None`: anonymous mode, where
    /// the id alone is the key). Anything the viewer may not see, pending
    /// and rejected uploads included, is [`UploadFailure::NotFound`].
    pub async fn download(
        &self,
        id: &str,
        viewer: Option<&UserName>,
    ) -> Result<Download, UploadFailure> {
        let store = self.store()?;
        let id = UploadId::parse(id).map_err(|_| UploadFailure::NotFound)?;
        let record = self
            .record(store, &id)
            .await?
            .ok_or(UploadFailure::NotFound)?;
        let UploadState::Finished { inline } = record.state else {
            return Err(UploadFailure::NotFound);
        };
        if let Some(viewer) = viewer
            && !self.may_fetch(&record, viewer).await?
        {
            return Err(UploadFailure::NotFound);
        }
        let content_type = record.media_type.content_type();
        let disposition = record.name.content_disposition(inline);
        let fetched = store.fetch(&id, &content_type, &disposition).await?;
        Ok(Download {
            content_type,
            disposition,
            fetched,
        })
    }

    /// Upload `id`'s record; one the backend forgot (a restart of the
    /// embedded mode) is put back from the copy `store` kept, if any.
    async fn record(
        &self,
        store: &Uploads,
        id: &UploadId,
    ) -> Result<Option<UploadRecord>, ClusterError> {
        if let Some(record) = self.backend.uploads.get(id).await? {
            return Ok(Some(record));
        }
        let Some((record, left)) = store.recall(id).await else {
            return Ok(None);
        };
        self.backend.uploads.restore(&record, left).await?;
        Ok(Some(record))
    }

    /// The uploader, either user of a DM pair it was sent to, and whoever
    /// is online in a room it was sent to (cluster-wide presence).
    async fn may_fetch(
        &self,
        record: &UploadRecord,
        viewer: &UserName,
    ) -> Result<bool, ClusterError> {
        if record.uploader == *viewer {
            return Ok(true);
        }
        for log in &record.logs {
            let member = match log {
                Log::Direct(a, b) => a == viewer || b == viewer,
                Log::Room(room) => self.backend.presence.members(room).await?.contains(viewer),
            };
            if member {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "a"));
    }
}
