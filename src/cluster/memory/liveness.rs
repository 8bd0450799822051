//! The liveness of an embedded node, which is the whole cluster: while its
//! process runs it is alive, and when the process ends its state goes with
//! it. So it is always listed, its presence can never be lost behind its back
//! (nothing to restore), and no other node can die and leave users behind
//! (nothing to reap).

use std::sync::Arc;

use async_trait::async_trait;

use super::MemoryPresence;
use crate::cluster::{ClusterResult, Departure, Liveness, RoomChange};
use crate::domain::NodeId;

/// A lone node's liveness.
pub struct MemoryLiveness {
    node: NodeId,
    /// What the node's departure clears.
    presence: Arc<MemoryPresence>,
}

impl MemoryLiveness {
    /// The liveness of `node`, whose connections `presence` counts.
    pub fn new(node: NodeId, presence: Arc<MemoryPresence>) -> Self {
        Self { node, presence }
    }
}

#[async_trait]
impl Liveness for MemoryLiveness {
    async fn nodes(&self) -> ClusterResult<Vec<NodeId>> {
        Ok(vec![self.node.clone()])
    }

    async fn heartbeat(&self) -> ClusterResult<bool> {
        Ok(false)
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
