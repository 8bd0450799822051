//! The liveness of an embedded node, which is the whole cluster: while its
//! process runs it is alive, and when the process ends its state goes with
//! it. So it is always listed, its presence can never be lost behind its back
//! (nothing to restore), and no other node can die and leave users behind
//! (nothing to reap).

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;

use super::MemoryPresence;
use crate::cluster::{ClusterResult, Departure, Liveness, RoomChange};
use crate::domain::NodeId;

/// A lone node's liveness.
pub struct MemoryLiveness {
    node: NodeId,
    /// What the node's departure clears.
    presence: Arc<MemoryPresence>,
    /// The status of the last beat.
    status: Mutex<Bytes>,
}

impl MemoryLiveness {
    /// The liveness of `node`, whose connections `presence` counts.
    pub fn new(node: NodeId, presence: Arc<MemoryPresence>) -> Self {
        Self {
            node,
            presence,
            status: Mutex::default(),
        }
    }
}

#[async_trait]
impl Liveness for MemoryLiveness {
    async fn nodes(&self) -> ClusterResult<Vec<NodeId>> {
        Ok(vec![self.node.clone()])
    }

    async fn heartbeat(&self, status: &[u8]) -> ClusterResult<bool> {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) =
            Bytes::copy_from_slice(status);
        Ok(false)
    }

    async fn statuses(&self) -> ClusterResult<Vec<(NodeId, Option<Bytes>)>> {
        let status = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(vec![(self.node.clone(), Some(status))])
    }

    async fn restore(&self) -> ClusterResult<Vec<RoomChange>> {
        Ok(Vec::new())
    }

    async fn reap(&self) -> ClusterResult<Vec<Departure>> {
        Ok(Vec::new())
    }

    /// The node's users leave; the node itself stays listed, since the
    /// cluster it alone makes up ends only with its process.
    async fn remove_node(&self) -> ClusterResult<Vec<Departure>> {
        Ok(self.presence.clear_connections())
    }
}
