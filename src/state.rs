//! `AppState`, what every handler and session shares: the chat service, the
//! limits and the drain state. `app` builds it; it sits below both front
//! ends so that neither reaches up into `app`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::HeaderName;
use tokio::sync::Semaphore;

use crate::admission::PerIp;
use crate::auth::Auth;
use crate::chat::Chat;
use crate::origins::AllowedOrigins;
use crate::rate::PostLimiter;
use crate::shutdown::Shutdown;

/// The per-connection limits sessions enforce.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Messages per second per connection; 0 = unlimited.
    pub rate_limit: u32,
    /// Token-bucket size.
    pub rate_burst: u32,
    /// Rooms per connection.
    pub max_rooms_per_connection: usize,
    /// Frames queued per connection before 1013.
    pub outbound_queue: usize,
    /// Server ping interval.
    pub ping_interval: Duration,
    /// Shortest time between two fan-out writes to one socket.
    pub write_delay: Duration,
    /// Silence after which a connection is dropped.
    pub idle_timeout: Duration,
    /// How long a socket may take no bytes while output waits.
    pub write_timeout: Duration,
    /// Joins per second per connection; 0 = unlimited.
    pub join_rate: u32,
    /// DMs per second per connection; 0 = unlimited.
    pub dm_rate: u32,
    /// Rooms `POST /api/rooms` may list, cluster-wide.
    pub max_created_rooms: usize,
}

/// What every handler and session shares.
pub struct AppState {
    /// The chat operations.
    pub chat: Chat,
    /// Token checking, when auth is on.
    pub auth: Option<Auth>,
    /// Connection limits.
    pub limits: Limits,
    /// The admin API's bearer token; `None`: no admin API.
    pub admin_token: Option<String>,
    /// A folder to serve the web client from instead of the built-in copy.
    pub static_dir: Option<PathBuf>,
    /// How long a request's head, and then its body, may take to arrive.
    pub handshake_timeout: Duration,
    /// One permit per open WebSocket.
    pub connections: Arc<Semaphore>,
    /// Connections per client address; `None` when unlimited.
    pub(crate) per_ip: Option<Arc<PerIp>>,
    /// The header a trusted proxy names the client in.
    pub proxy_header: Option<HeaderName>,
    /// Browser origins allowed besides the node's own host.
    pub origins: AllowedOrigins,
    /// Queued fan-out bytes above which new connections are refused.
    pub max_buffered_bytes: usize,
    /// Drain token and task tracker.
    pub shutdown: Shutdown,
    /// Buckets of the `POST` rate limit, per user or client address.
    pub(crate) posts: PostLimiter,
    /// Buckets of the DM rate (CHORUS_DM_RATE) of DMs sent over REST, keyed
    /// like `posts`: a session has a DM bucket of its own, a REST caller
    /// has this one.
    pub(crate) dms: PostLimiter,
    /// Buckets of the admin API's calls, per client address (wrong tokens
    /// included).
    pub(crate) admin_calls: PostLimiter,
    /// The size of `connections`, to count the permits taken.
    pub(crate) max_connections: usize,
    /// How long a dead node's users stay visible; upkeep runs a few times
    /// within it.
    pub(crate) presence_ttl: Duration,
    /// Set once, when the drain starts.
    pub(crate) draining: AtomicBool,
}

impl AppState {
    /// True once the drain started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// WebSocket connections open on this node.
    pub fn open_connections(&self) -> usize {
        self.max_connections - self.connections.available_permits()
    }
}
