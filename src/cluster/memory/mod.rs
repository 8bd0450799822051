//! The embedded product mode: one node, every role kept in process memory.
//! Nothing survives a restart; ids stay increasing across one because they
//! are time-based.

mod bus;
mod history;
mod liveness;
mod presence;
mod uploads;

use std::sync::Arc;
use std::time::Duration;

pub use bus::MemoryBus;
pub use history::MemoryHistory;
pub use liveness::MemoryLiveness;
pub use presence::MemoryPresence;
pub use uploads::MemoryUploadRecords;

use super::{Backend, Deliver};
use crate::domain::NodeId;

impl Backend {
    /// The in-memory backend of a single node: publications go straight to
    /// `deliver`, histories keep `history_limit` messages each and live
    /// `history_ttl` after their last message (`None`: forever) and, with
    /// `archiving`, keep what the archive lacks as its backlog.
    pub fn memory(
        node: NodeId,
        deliver: Arc<dyn Deliver>,
        history_limit: usize,
        history_ttl: Option<Duration>,
        archiving: bool,
    ) -> Self {
        let bus = Arc::new(MemoryBus::new(deliver));
        let presence = Arc::new(MemoryPresence::default());
        let history = Arc::new(MemoryHistory::new(
            bus.clone(),
            history_limit,
            history_ttl,
            archiving,
        ));
        Self {
            backlog: archiving.then(|| history.clone() as Arc<dyn crate::cluster::Backlog>),
            history,
            liveness: Arc::new(MemoryLiveness::new(node, presence.clone())),
            presence,
            bus,
            uploads: Arc::new(MemoryUploadRecords::default()),
        }
    }
}
