//! The node's liveness as chat sees it: each upkeep beat keeps the node
//! listed as alive, rewrites its presence when the backend lost or missed
//! some, reaps nodes that died without cleanup, and announces the joins and
//! leaves all that causes, as for live ones.

use super::Chat;
use crate::cluster::ClusterResult;
use crate::protocol::PresenceEvent;
use crate::telemetry;

impl Chat {
    /// One beat of the upkeep: publishes the presence events that failed
    /// before, beats (restoring this node's presence if the beat asks for
    /// it), and reaps dead nodes. Failures are logged and left to the next
    /// beat.
    pub async fn beat(&self) {
        self.retry_announcements().await;
        let liveness = &self.backend.liveness;
        match liveness.heartbeat().await {
            Ok(true) => match liveness.restore().await {
                Ok(changes) => {
                    tracing::info!(
                        changes = changes.len(),
                        "presence restored from local connections"
                    );
                    for change in changes {
                        let event = if change.joined {
                            PresenceEvent::Join
                        } else {
                            PresenceEvent::Leave
                        };
                        if let Err(error) = self.announce(&change.room, &change.user, event).await {
                            tracing::warn!(%error, "could not announce a restored presence change");
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "presence restore failed; will retry"),
            },
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "heartbeat failed");
                return;
            }
        }
        match liveness.reap().await {
            Ok(departures) => {
                for departure in departures {
                    metrics::counter!(telemetry::PRESENCE_REAPED).increment(1);
                    tracing::info!(room = %departure.room, user = %departure.user, "reaped a user of a dead node");
                    if let Err(error) = self
                        .announce(&departure.room, &departure.user, PresenceEvent::Leave)
                        .await
                    {
                        tracing::warn!(%error, "could not announce a reaped leave");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "reaping failed"),
        }
    }

    /// Takes this node out of the cluster at the end of a drain: whatever
    /// presence its sessions did not clean up themselves goes at once.
    pub async fn leave_cluster(&self) -> ClusterResult<()> {
        self.backend.liveness.remove_node().await
    }
}
