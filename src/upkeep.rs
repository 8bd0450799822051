//! The node's background presence upkeep: a heartbeat that keeps this node
//! listed as alive (and rewrites its presence from its own sockets when the
//! backend lost or missed some), and the reaper that removes nodes that died
//! without cleanup and announces their users' departures.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::chat::Chat;
use crate::protocol::PresenceEvent;
use crate::telemetry;

/// The upkeep interval for a presence TTL: four beats per TTL. A node counts
/// as dead half a TTL after its last beat (one late beat is tolerated), and a
/// survivor reaps it at its next tick, so a dead node's users leave within
/// three quarters of the TTL: inside the contract's `CHORUS_PRESENCE_TTL_SECS`.
pub fn interval(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(100))
}

/// Beats and reaps every `every` until `stop`.
pub async fn run(chat: Chat, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => beat(&chat).await,
        }
    }
}

async fn beat(chat: &Chat) {
    chat.retry_announcements().await;
    let liveness = &chat.backend().liveness;
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
                    if let Err(error) = chat.announce(&change.room, &change.user, event).await {
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
                if let Err(error) = chat
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
