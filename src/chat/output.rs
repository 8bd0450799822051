//! What a session needs from the hub: its handle for the fan-out, and the
//! accounting of the output it has queued or is writing.
//!
//! These are methods of [`Chat`] rather than a handle given to the session
//! at registration: the session already holds the `Chat` (through the app
//! state), so each call costs what calling the hub directly cost (no handle
//! to clone per session, no extra pointer per frame), and there stays one
//! way to the hub.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Chat;
use crate::domain::UserName;
use crate::hub::{Delivery, Recipient};

impl Chat {
    /// A new session's handle for the fan-out: a fresh session number, its
    /// outbound `queue`, and the share of its client `address` (grouped, see
    /// `ws::admission`) in the node's buffered output.
    pub fn recipient(
        &self,
        user: UserName,
        queue: mpsc::Sender<Arc<Delivery>>,
        address: IpAddr,
    ) -> Recipient {
        Recipient {
            session: self.hub.next_session(),
            user,
            queue,
            share: self.hub.share(address),
            signal: Arc::default(),
        }
    }

    /// Counts `bytes` of a direct reply to `recipient` as buffered while it
    /// is written; [`Chat::release`] gives them back.
    #[inline]
    pub fn hold(&self, recipient: &Recipient, bytes: usize) {
        self.hub.hold(recipient, bytes);
    }

    /// Gives back `bytes` that `recipient`'s session wrote or dropped.
    #[inline]
    pub fn release(&self, recipient: &Recipient, bytes: usize) {
        self.hub.release(recipient, bytes);
    }

    /// Wakes every registered session, to see that the node drains.
    pub fn wake_sessions(&self) {
        self.hub.wake_all();
    }

    /// Bytes of output queued for this node's sessions now.
    pub fn buffered_bytes(&self) -> usize {
        self.hub.buffered_bytes()
    }
}
