//! The node's background upkeep: the timer of [`Chat::beat`], which keeps
//! this node listed as alive (and rewrites its presence from its own sockets
//! when the backend lost or missed some), reaps nodes that died without
//! cleanup, and announces what that changed; and the sweep of expired
//! uploaded files.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::chat::Chat;

/// The upkeep interval for a presence TTL: four beats per TTL. A node counts
/// as dead half a TTL after its last beat (one late beat is tolerated), and a
/// survivor reaps it at its next tick, so a dead node's users leave within
/// three quarters of the TTL: inside the contract's `CHORUS_PRESENCE_TTL_SECS`.
pub fn interval(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(100))
}

/// Beats every `every` until `stop`.
pub async fn run(chat: Chat, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                chat.beat().await;
                chat.sweep_uploads().await;
            }
        }
    }
}
