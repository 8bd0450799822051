//! Upload records in process memory: a map under a std mutex, each record
//! with a deadline, and a heap of deadlines so expired records are dropped
//! without scanning the map.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::cluster::{ClusterError, ClusterResult, Log, UploadRecord, UploadRecords, UploadState};
use crate::domain::{UploadId, UserName};

/// [`UploadRecords`] of the embedded mode.
#[derive(Default)]
pub struct MemoryUploadRecords {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    records: HashMap<UploadId, (UploadRecord, Instant)>,
    /// Every deadline ever set; an entry whose record has a later deadline
    /// now (renewed since) is skipped when it comes up.
    deadlines: BinaryHeap<Reverse<(Instant, UploadId)>>,
}

impl Inner {
    /// Drops the records whose deadline passed.
    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((deadline, _))) = self.deadlines.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((deadline, id))) = self.deadlines.pop() else {
                break;
            };
            if self.records.get(&id).is_some_and(|(_, d)| *d <= deadline) {
                self.records.remove(&id);
            }
        }
    }

    fn put(&mut self, record: UploadRecord, ttl: Duration, now: Instant) {
        let deadline = now + ttl;
        self.deadlines.push(Reverse((deadline, record.id.clone())));
        self.records.insert(record.id.clone(), (record, deadline));
    }
}

impl MemoryUploadRecords {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.expire(Instant::now());
        inner
    }
}

#[async_trait]
impl UploadRecords for MemoryUploadRecords {
    async fn create(
        &self,
        record: &UploadRecord,
        ttl: Duration,
        max_pending: usize,
    ) -> ClusterResult<()> {
        let mut inner = self.lock();
        let pending = inner
            .records
            .values()
            .filter(|(r, _)| r.uploader == record.uploader && r.state == UploadState::Pending)
            .count();
        if pending >= max_pending {
            return Err(ClusterError::Full);
        }
        inner.put(record.clone(), ttl, Instant::now());
        Ok(())
    }

    async fn get(&self, id: &UploadId) -> ClusterResult<Option<UploadRecord>> {
        Ok(self.lock().records.get(id).map(|(r, _)| r.clone()))
    }

    async fn restore(&self, record: &UploadRecord, ttl: Duration) -> ClusterResult<()> {
        self.lock().put(record.clone(), ttl, Instant::now());
        Ok(())
    }

    async fn settle(
        &self,
        record: &UploadRecord,
        to: UploadState,
        ttl: Duration,
    ) -> ClusterResult<bool> {
        let mut inner = self.lock();
        let Some((mut stored, _)) = inner.records.get(&record.id).cloned() else {
            return Ok(false);
        };
        if stored.state != UploadState::Pending {
            return Ok(false);
        }
        stored.state = to;
        inner.put(stored, ttl, Instant::now());
        Ok(true)
    }

    async fn attach(
        &self,
        id: &UploadId,
        uploader: &UserName,
        log: &Log,
        ttl: Duration,
    ) -> ClusterResult<Option<UploadRecord>> {
        let mut inner = self.lock();
        let Some((mut stored, _)) = inner.records.get(id).cloned() else {
            return Ok(None);
        };
        if stored.uploader != *uploader || !matches!(stored.state, UploadState::Finished { .. }) {
            return Ok(None);
        }
        if !stored.logs.contains(log) {
            stored.logs.push(log.clone());
        }
        inner.put(stored.clone(), ttl, Instant::now());
        Ok(Some(stored))
    }
}
