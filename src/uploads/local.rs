//! Uploads in a local folder: `DIR/ab/ID` (`ab`: the id's first two
//! characters, so no folder grows huge), written as `ID.part`, synced, then
//! renamed, so a file under its final name is always whole. The user's file
//! name is never part of a path.
//!
//! A file's lifetime is kept in its modification time, so it survives a
//! restart that forgets the records: a file is deleted once its mtime is
//! older than the retention, and [`LocalUploads::keep`] moves the mtime so
//! that this happens when the file's record would expire. Beside a finished
//! file, `ID.json` keeps its record (rewritten at each attach), so after a
//! restart history's links still open.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant as StdInstant, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use super::PutTarget;
use crate::cluster::{Log, UploadRecord, UploadState};
use crate::domain::{FileName, MAGIC_BYTES, MediaType, UploadId, UserName};

/// Local PUTs one node writes at once; more answer 503 `overloaded`, since
/// each holds a file handle and a socket for up to the PUT window.
const MAX_PUTS_IN_FLIGHT: usize = 32;

/// Why a local PUT did not store the file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another PUT of the same upload is running.
    #[error("a PUT of this upload is already running")]
    InFlight,
    /// [`MAX_PUTS_IN_FLIGHT`] PUTs are running.
    #[error("too many uploads are running on this node; try again shortly")]
    Overloaded,
    /// More bytes than announced.
    #[error("the body is longer than the announced size")]
    TooLong,
    /// Fewer bytes than announced.
    #[error("the body is shorter than the announced size ({got} of {size} bytes)")]
    Short {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        size: u64,
    },
    /// No bytes for too long, or past the PUT window.
    #[error("the body did not arrive in time")]
    Stalled,
    /// The client broke the body off.
    #[error("the body broke off")]
    Broken,
    /// The disk failed.
    #[error("cannot write the upload: {0}")]
    Io(#[from] std::io::Error),
}

/// An upload folder.
pub struct LocalUploads {
    dir: PathBuf,
    /// Uploads with a PUT running: a second PUT of one answers 409 at once
    /// instead of racing the first for the same `.part` file.
    in_flight: Mutex<HashSet<UploadId>>,
    puts: Arc<Semaphore>,
    /// How long a file lives after its mtime.
    retention: Duration,
    /// When the folder was last swept; `None` before the first sweep.
    swept: Mutex<Option<StdInstant>>,
}

/// How often the folder is walked for expired files: the walk reads every
/// file's metadata, and nothing is late by more than this.
const SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);
/// A `.part` (or a record's `.tmp`) file this old belongs to a write that is
/// over (the PUT window plus a margin): a crash left it.
const STALE_PART: Duration = Duration::from_secs(20 * 60);

/// A finished upload's record as its `ID.json` keeps it.
#[derive(Serialize, Deserialize)]
struct Sidecar {
    uploader: String,
    name: String,
    #[serde(rename = "type")]
    media_type: String,
    size: u64,
    inline: bool,
    logs: Vec<String>,
}

/// Removes its id from the in-flight set however the PUT ends.
struct Claim<'a> {
    uploads: &'a LocalUploads,
    id: UploadId,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.uploads.in_flight().remove(&self.id);
    }
}

impl LocalUploads {
    /// Uploads under `dir`, created when the first file arrives; a file
    /// lives `retention` after its mtime.
    pub fn new(dir: PathBuf, retention: Duration) -> Self {
        Self {
            dir,
            in_flight: Mutex::default(),
            puts: Arc::new(Semaphore::new(MAX_PUTS_IN_FLIGHT)),
            retention,
            swept: Mutex::default(),
        }
    }

    fn sidecar(&self, id: &UploadId) -> PathBuf {
        self.path(id).with_extension("json")
    }

    /// Makes upload `id`'s file (and its record beside it) live `ttl` from
    /// now, at most the retention.
    pub async fn keep(&self, id: &UploadId, ttl: Duration) -> std::io::Result<()> {
        let mtime = SystemTime::now() + ttl.min(self.retention) - self.retention;
        set_mtime(self.path(id), mtime).await?;
        // No record beside it yet (it is written after) is fine.
        let _ = set_mtime(self.sidecar(id), mtime).await;
        Ok(())
    }

    /// Keeps a finished upload's record beside its file, expiring with it:
    /// written whole to a temporary name, then renamed.
    pub async fn remember(&self, record: &UploadRecord) -> std::io::Result<()> {
        let UploadState::Finished { inline } = record.state else {
            return Ok(());
        };
        let sidecar = Sidecar {
            uploader: record.uploader.to_string(),
            name: record.name.as_str().to_owned(),
            media_type: record.media_type.as_str().to_owned(),
            size: record.size,
            inline,
            logs: record.logs.iter().map(Log::tag).collect(),
        };
        let json = serde_json::to_vec(&sidecar).map_err(std::io::Error::other)?;
        let path = self.sidecar(&record.id);
        // A name of its own, so two attaches of one upload at once never
        // write into the same file.
        let temporary = path.with_extension(format!("{}.tmp", UploadId::random()));
        tokio::fs::write(&temporary, json).await?;
        let mtime = tokio::fs::metadata(self.path(&record.id))
            .await?
            .modified()?;
        set_mtime(temporary.clone(), mtime).await?;
        tokio::fs::rename(&temporary, &path).await
    }

    /// Upload `id`'s record as kept beside its file, and how long the file
    /// has left; `None` without one, or when it expired.
    pub async fn recall(&self, id: &UploadId) -> Option<(UploadRecord, Duration)> {
        let modified = tokio::fs::metadata(self.path(id))
            .await
            .ok()?
            .modified()
            .ok()?;
        let left = (modified + self.retention)
            .duration_since(SystemTime::now())
            .ok()?;
        let json = tokio::fs::read(self.sidecar(id)).await.ok()?;
        let kept: Sidecar = serde_json::from_slice(&json).ok()?;
        let record = UploadRecord {
            id: id.clone(),
            uploader: UserName::parse(&kept.uploader).ok()?,
            name: FileName::parse(&kept.name).ok()?,
            media_type: MediaType::parse(&kept.media_type).ok()?,
            size: kept.size,
            state: UploadState::Finished {
                inline: kept.inline,
            },
            secret: None,
            logs: kept.logs.iter().filter_map(|t| Log::from_tag(t)).collect(),
        };
        Some((record, left))
    }

    /// Deletes expired files and stale `.part` files, at most once per
    /// [`SWEEP_EVERY`] (the first call sweeps at once: start-up cleans what
    /// a crash left). Returns how many files went.
    pub async fn sweep(&self) -> usize {
        {
            let mut swept = self.swept.lock().unwrap_or_else(PoisonError::into_inner);
            if swept.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return 0;
            }
            *swept = Some(StdInstant::now());
        }
        let now = SystemTime::now();
        let mut removed = 0;
        let Ok(mut folders) = tokio::fs::read_dir(&self.dir).await else {
            return 0;
        };
        while let Ok(Some(folder)) = folders.next_entry().await {
            let Ok(mut files) = tokio::fs::read_dir(folder.path()).await else {
                continue;
            };
            while let Ok(Some(file)) = files.next_entry().await {
                let path = file.path();
                let Ok(age) = file
                    .metadata()
                    .await
                    .and_then(|m| m.modified())
                    .map(|m| now.duration_since(m).unwrap_or_default())
                else {
                    continue;
                };
                let limit = if path.extension().is_some_and(|e| e == "part" || e == "tmp") {
                    STALE_PART
                } else {
                    self.retention
                };
                if age > limit && tokio::fs::remove_file(&path).await.is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<UploadId>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Where upload `id`'s finished file is.
    pub fn path(&self, id: &UploadId) -> PathBuf {
        self.dir
            .join(id.as_str().get(..2).unwrap_or("00"))
            .join(id.as_str())
    }

    /// The node's own PUT route, with the upload's one-time secret.
    pub fn target(&self, id: &UploadId, media_type: &MediaType, secret: &str) -> PutTarget {
        PutTarget {
            url: format!("/api/uploads/{id}/content?k={secret}"),
            headers: vec![("content-type".to_owned(), media_type.as_str().to_owned())],
            expires_at: SystemTime::now() + super::PUT_WINDOW,
        }
    }

    /// Streams `body` into upload `id`'s file: exactly `size` bytes, each
    /// chunk within `idle` of the last, the whole before `deadline`.
    /// Returns whether the file may show inline. On any failure the partial
    /// file is removed.
    pub async fn write<E>(
        &self,
        id: &UploadId,
        media_type: &MediaType,
        size: u64,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        idle: Duration,
        deadline: Instant,
    ) -> Result<bool, WriteError> {
        let permit = self
            .puts
            .clone()
            .try_acquire_owned()
            .map_err(|_| WriteError::Overloaded)?;
        if !self.in_flight().insert(id.clone()) {
            return Err(WriteError::InFlight);
        }
        let _claim = Claim {
            uploads: self,
            id: id.clone(),
            _permit: permit,
        };
        let path = self.path(id);
        let part = path.with_extension("part");
        let written = write_part(&part, size, body, idle, deadline).await;
        let head = match written {
            Ok(head) => head,
            Err(error) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(error);
            }
        };
        if let Err(error) = tokio::fs::rename(&part, &path).await {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(error.into());
        }
        Ok(media_type.inline(&head))
    }

    /// Removes upload `id`'s file, if any.
    pub async fn delete(&self, id: &UploadId) {
        let _ = tokio::fs::remove_file(self.path(id)).await;
    }
}

/// Sets a file's modification time, off the runtime's threads.
async fn set_mtime(path: PathBuf, mtime: SystemTime) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_modified(mtime)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Writes the body to `part` and syncs it; returns its first bytes.
async fn write_part<E>(
    part: &Path,
    size: u64,
    mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    idle: Duration,
    deadline: Instant,
) -> Result<Vec<u8>, WriteError> {
    if let Some(folder) = part.parent() {
        tokio::fs::create_dir_all(folder).await?;
    }
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(part).await?);
    let mut got: u64 = 0;
    let mut head = Vec::with_capacity(MAGIC_BYTES);
    loop {
        // A chunk must come within `idle`, and never after the deadline: a
        // slow client may take the whole window, a stalled one may not.
        let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
        let chunk = match tokio::time::timeout(wait, body.next()).await {
            Err(_) => return Err(WriteError::Stalled),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(WriteError::Broken),
            Ok(Some(Ok(chunk))) => chunk,
        };
        got += chunk.len() as u64;
        if got > size {
            return Err(WriteError::TooLong);
        }
        let want = MAGIC_BYTES.saturating_sub(head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..want]);
        file.write_all(&chunk).await?;
    }
    if got < size {
        return Err(WriteError::Short { got, size });
    }
    file.flush().await?;
    file.get_ref().sync_all().await?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn file_with_age(path: &Path, age: Duration) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::fs::File::create(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[tokio::test]
    async fn the_sweep_deletes_files_past_their_lifetime_and_stale_parts_once_per_interval() {
        let dir = std::env::temp_dir().join(format!("chorus-sweep-{}", UploadId::random()));
        let uploads = LocalUploads::new(dir.clone(), HOUR);
        let [old, fresh, kept, unused] = [(); 4].map(|()| UploadId::random());
        file_with_age(&uploads.path(&old), 2 * HOUR);
        file_with_age(&uploads.path(&fresh), Duration::ZERO);
        file_with_age(&uploads.path(&kept), 2 * HOUR);
        file_with_age(&uploads.path(&unused), Duration::ZERO);
        let stale_part = uploads.path(&UploadId::random()).with_extension("part");
        file_with_age(&stale_part, Duration::from_secs(30 * 60));
        let live_part = uploads.path(&UploadId::random()).with_extension("part");
        file_with_age(&live_part, Duration::from_secs(60));
        // Attached again: lives the retention from now.
        uploads.keep(&kept, HOUR).await.unwrap();
        // Never attached: lives a little, then goes before the retention.
        uploads.keep(&unused, Duration::from_secs(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;

        assert_eq!(uploads.sweep().await, 3);
        assert!(!uploads.path(&old).exists());
        assert!(uploads.path(&fresh).exists());
        assert!(uploads.path(&kept).exists());
        assert!(!uploads.path(&unused).exists());
        assert!(!stale_part.exists());
        assert!(live_part.exists());

        file_with_age(&uploads.path(&old), 2 * HOUR);
        assert_eq!(uploads.sweep().await, 0, "at most one sweep per interval");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
