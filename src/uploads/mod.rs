//! Where uploaded bytes live: a local folder (`LocalUploads`, the embedded
//! mode) or an S3 bucket (`S3Uploads`, any mode), chosen once at start-up.
//! This module stores and checks bytes only; who may do what with an
//! upload is decided in `chat`, from the records in `cluster`.

mod local;
mod s3;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use local::{LocalUploads, WriteError};
pub use s3::{S3Overrides, S3Uploads};

use crate::cluster::UploadRecord;
use crate::domain::{MediaType, UploadId};

/// How long a client has to PUT the bytes after `POST /api/uploads`.
pub const PUT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Where the client PUTs the bytes, and with which headers.
#[derive(Debug, Clone)]
pub struct PutTarget {
    /// A presigned S3 URL, or the node's own path for the local folder.
    pub url: String,
    /// Headers the PUT must carry exactly.
    pub headers: Vec<(String, String)>,
    /// When the URL stops working.
    pub expires_at: SystemTime,
}

/// How a GET of an upload is answered.
#[derive(Debug)]
pub enum Fetched {
    /// Stream this file.
    File(PathBuf),
    /// Redirect to this short-lived URL.
    Redirect(String),
}

/// What a look at stored bytes found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Nothing stored yet.
    Missing,
    /// The announced size and type; `inline` as [`MediaType::inline`] says.
    Matches {
        /// Shown inline.
        inline: bool,
    },
    /// Something else than announced.
    Mismatch,
}

/// The storage did not answer as it should.
#[derive(Debug, thiserror::Error)]
#[error("upload storage unavailable: {0}")]
pub struct StoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// The upload storage of a node.
pub enum Uploads {
    /// A folder on this node's disk.
    Local(LocalUploads),
    /// An S3 bucket.
    S3(S3Uploads),
}

impl Uploads {
    /// Where and how to PUT upload `id`'s bytes; `secret` is the local
    /// PUT's one-time key.
    pub async fn target(
        &self,
        id: &UploadId,
        media_type: &MediaType,
        size: u64,
        secret: Option<&str>,
    ) -> Result<PutTarget, StoreError> {
        match self {
            Self::Local(local) => Ok(local.target(id, media_type, secret.unwrap_or_default())),
            Self::S3(s3) => s3.target(id, media_type, size).await,
        }
    }

    /// Whether the local PUT needs a secret in its URL.
    pub fn needs_secret(&self) -> bool {
        matches!(self, Self::Local(_))
    }

    /// Looks at what is stored for a pending upload. The local folder's
    /// PUT settles the record itself, so there a pending upload has no bytes
    /// yet.
    pub async fn check(
        &self,
        id: &UploadId,
        media_type: &MediaType,
        size: u64,
    ) -> Result<Checked, StoreError> {
        match self {
            Self::Local(_) => Ok(Checked::Missing),
            Self::S3(s3) => s3.check(id, media_type, size).await,
        }
    }

    /// Removes stored bytes that will never be served.
    pub async fn delete(&self, id: &UploadId) {
        match self {
            Self::Local(local) => local.delete(id).await,
            Self::S3(s3) => s3.delete(id).await,
        }
    }

    /// Makes upload `id`'s bytes live `ttl` from now. S3 objects are bounded
    /// by the bucket's lifecycle rule instead, so there it does nothing.
    pub async fn keep(&self, id: &UploadId, ttl: Duration) {
        if let Self::Local(local) = self
            && let Err(error) = local.keep(id, ttl).await
        {
            tracing::warn!(%error, "could not set an upload's lifetime");
        }
    }

    /// Keeps a finished upload's record beside its bytes, where records
    /// would otherwise not outlive the process (the local folder).
    pub async fn remember(&self, record: &UploadRecord) {
        if let Self::Local(local) = self
            && let Err(error) = local.remember(record).await
        {
            tracing::warn!(%error, "could not keep an upload's record on disk");
        }
    }

    /// A record [`Uploads::remember`] kept, and how long it has left.
    pub async fn recall(&self, id: &UploadId) -> Option<(UploadRecord, Duration)> {
        match self {
            Self::Local(local) => local.recall(id).await,
            Self::S3(_) => None,
        }
    }

    /// Deletes expired bytes, where chorus keeps them (the local folder).
    pub async fn sweep(&self) -> usize {
        match self {
            Self::Local(local) => local.sweep().await,
            Self::S3(_) => 0,
        }
    }

    /// How to answer a GET of finished upload `id`, with these headers.
    pub async fn fetch(
        &self,
        id: &UploadId,
        content_type: &str,
        disposition: &str,
    ) -> Result<Fetched, StoreError> {
        match self {
            Self::Local(local) => Ok(Fetched::File(local.path(id))),
            Self::S3(s3) => s3
                .presigned_get(id, content_type, disposition)
                .await
                .map(Fetched::Redirect),
        }
    }
}
