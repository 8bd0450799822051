//! The node's liveness as chat sees it: each upkeep beat keeps the node
//! listed as alive, rewrites its presence when the backend lost or missed
//! some, reaps nodes that died without cleanup, and announces the joins and
//! leaves all that causes, as for live ones.

use super::Chat;
use crate::cluster::{ClusterResult, Departure};
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
        let status = serde_json::to_vec(&self.status()).unwrap_or_default();
        match liveness.heartbeat(&status).await {
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
                for departure in &departures {
                    metrics::counter!(telemetry::PRESENCE_REAPED).increment(1);
                    tracing::info!(room = %departure.room, user = %departure.user, "reaped a user of a dead node");
                }
                self.announce_departures(departures).await;
            }
            Err(error) => tracing::warn!(%error, "reaping failed"),
        }
    }

    /// Takes this node out of the cluster at the end of a drain: whatever
    /// presence its sessions did not clean up themselves (a leave that
    /// failed, a session the drain gave up on) goes at once, and the rooms
    /// hear those users leave.
    pub async fn leave_cluster(&self) -> ClusterResult<()> {
        let departures = self.backend.liveness.remove_node().await?;
        for departure in &departures {
            tracing::info!(room = %departure.room, user = %departure.user, "a user left with this node");
        }
        self.announce_departures(departures).await;
        Ok(())
    }

    /// Announces that each user left its room; a failed announcement is
    /// logged (reaped and removed users are announced once, by whoever
    /// removed them).
    async fn announce_departures(&self, departures: Vec<Departure>) {
        for departure in departures {
            if let Err(error) = self
                .announce(&departure.room, &departure.user, PresenceEvent::Leave)
                .await
            {
                tracing::warn!(%error, "could not announce a departure");
            }
        }
    }
}
