//! Logs and metrics: the tracing subscriber, the Prometheus recorder, and the
//! name of every metric (declared once here; labels stay low-cardinality).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Open WebSocket connections on this node (gauge).
pub const CONNECTIONS: &str = "chorus_connections";
/// Connections accepted (counter).
pub const CONNECTIONS_OPENED: &str = "chorus_connections_opened_total";
/// Connections ended, by `reason` (counter).
pub const CONNECTIONS_CLOSED: &str = "chorus_connections_closed_total";
/// Upgrades refused, by `reason` (counter).
pub const CONNECTIONS_REFUSED: &str = "chorus_connections_refused_total";
/// Room messages and DMs accepted and stored, by `kind` (counter).
pub const MESSAGES_ACCEPTED: &str = "chorus_messages_accepted_total";
/// Frames written to sockets from fan-out, messages and events alike (counter).
pub const FRAMES_DELIVERED: &str = "chorus_frames_delivered_total";
/// Error frames and HTTP errors sent, by `code` (counter).
pub const ERRORS: &str = "chorus_errors_total";
/// Messages, DMs and typing refused by the rate limit (counter).
pub const RATE_LIMITED: &str = "chorus_rate_limited_total";
/// Connections closed because their outbound queue filled (counter).
pub const SLOW_CONSUMER_DISCONNECTS: &str = "chorus_slow_consumer_disconnects_total";
/// Times the Redis subscriber connection was re-established (counter).
pub const PUBSUB_RECONNECTS: &str = "chorus_pubsub_reconnects_total";
/// Room messages delivered from history after a subscriber reconnect (counter).
pub const GAP_FILL_MESSAGES: &str = "chorus_gap_fill_messages_total";
/// Redis channels this node is subscribed to (gauge).
pub const SUBSCRIBED_CHANNELS: &str = "chorus_subscribed_channels";
/// Users of dead nodes removed from rooms by this node's reaper (counter).
pub const PRESENCE_REAPED: &str = "chorus_presence_reaped_total";
/// 1 while the node drains (gauge).
pub const DRAINING: &str = "chorus_draining";
/// Always 1, labelled with `version` and `node` (gauge).
pub const BUILD_INFO: &str = "chorus_build_info";

/// Starts logging once per process; later calls do nothing.
pub fn init(filter: &str, format: LogFormat) {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        // A subscriber may already be set (tests embedding several nodes).
        let _ = match format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
    });
}

/// The process-wide Prometheus recorder, installed on first use. Several
/// nodes embedded in one process (tests) share it.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours stays
        // unused and /metrics shows an empty page rather than stopping the node.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
