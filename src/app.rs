//! Builds a node from its settings (backend, hub, chat service, router) and
//! runs it until a shutdown future resolves, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::admission::PerIp;
use crate::archive::archiver::Archiver;
use crate::archive::{Archive, dynamodb::DynamoArchive, postgres::PostgresArchive};
use crate::auth::Auth;
use crate::chat::Chat;
use crate::cluster::Backend;
use crate::cluster::redis::{RedisSettings, RedisTarget};
use crate::config::{ArchiveTarget, Settings, UploadStorage};
use crate::hub::Hub;
use crate::rate::PostLimiter;
use crate::shutdown::Shutdown;
use crate::state::{AppState, Limits};
use crate::uploads::{LocalUploads, S3Uploads, Uploads};
use crate::{routes, server, telemetry, upkeep};

/// Admin API calls per second per client address (wrong tokens included),
/// and the bucket size: enough for a console polling and acting, far too
/// few to guess a token.
const ADMIN_RATE: u32 = 10;
const ADMIN_BURST: u32 = 20;

/// How long the drain waits for sessions to close; leaves room in the
/// contract's 10 s for the rest of the shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(7);
/// How long the HTTP server may take to stop after the sessions are gone.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// A node, bound and ready to run.
pub struct App {
    listener: TcpListener,
    /// `/metrics` on a listener of its own (CHORUS_METRICS_ADDR).
    metrics_listener: Option<TcpListener>,
    handshake_timeout: Duration,
    state: Arc<AppState>,
}

impl App {
    /// Builds the backend and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Installed before anything records, so no early count is lost.
        telemetry::prometheus();
        telemetry::register_at_zero();
        let node = settings.node_id();
        let max_buffered_bytes = usize::try_from(settings.max_buffered_bytes).unwrap_or(usize::MAX);
        // A quarter: one address alone can never take the node to its
        // limit. Off with the other per-address limits.
        let hub = Arc::new(Hub::new(
            (settings.max_connections_per_ip > 0).then_some(max_buffered_bytes / 4),
        ));
        let history_limit = usize::try_from(settings.history_limit).unwrap_or(usize::MAX);
        let shutdown = Shutdown::default();
        let archive = archive(&settings).await?;
        let archiving = archive.is_some();
        let mut backend = match settings.redis_target()? {
            None => Backend::memory(
                node.clone(),
                hub.clone(),
                history_limit,
                settings.history_ttl(),
                archiving,
            ),
            Some(target) => {
                let setting = match target {
                    RedisTarget::Single(_) => "REDIS_URL",
                    RedisTarget::Cluster(_) => "REDIS_CLUSTER_URLS",
                };
                let redis = RedisSettings {
                    target,
                    prefix: settings.redis_prefix.clone(),
                    node: node.clone(),
                    history_limit,
                    history_ttl: settings.history_ttl(),
                    presence_ttl: settings.presence_ttl(),
                    archiving,
                };
                Backend::redis(
                    &redis,
                    hub.clone(),
                    shutdown.token.clone(),
                    &shutdown.tracker,
                )
                .context(setting)?
            }
        };
        let archiver = match (backend.backlog.take(), archive) {
            (Some(backlog), Some(archive)) => Some(Arc::new(Archiver::new(backlog, archive))),
            _ => None,
        };
        let listener = TcpListener::bind((settings.host, settings.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("CHORUS_METRICS_ADDR: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let mut chat = Chat::new(node.clone(), backend, hub, archiver);
        match settings.upload_storage()? {
            Some(UploadStorage::Local(dir)) => {
                chat = chat.with_uploads(
                    Uploads::Local(LocalUploads::new(dir, crate::chat::RETENTION)),
                    settings.upload_max_bytes,
                );
            }
            Some(UploadStorage::S3(bucket)) => {
                let s3 = S3Uploads::connect(&bucket, &settings.s3)
                    .await
                    .context("CHORUS_S3_BUCKET")?;
                chat = chat.with_uploads(Uploads::S3(s3), settings.upload_max_bytes);
            }
            None => tracing::info!("uploads are off: cluster mode needs CHORUS_S3_BUCKET for them"),
        }
        let max_connections = usize::try_from(settings.max_connections).unwrap_or(usize::MAX);
        metrics::gauge!(telemetry::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "node" => node.to_string())
            .set(1.0);
        let state = Arc::new(AppState {
            chat,
            auth: settings.jwt_secret.as_deref().map(Auth::new),
            admin_token: settings.admin_token.clone(),
            admin_calls: PostLimiter::new(ADMIN_RATE, ADMIN_BURST),
            limits: Limits {
                rate_limit: settings.rate_limit,
                rate_burst: settings.rate_burst,
                max_rooms_per_connection: usize::try_from(settings.max_rooms_per_connection)
                    .unwrap_or(usize::MAX),
                outbound_queue: usize::try_from(settings.outbound_queue).unwrap_or(usize::MAX),
                ping_interval: settings.ping_interval(),
                write_delay: settings.write_delay(),
                idle_timeout: settings.idle_timeout(),
                write_timeout: settings.write_timeout(),
                join_rate: settings.join_rate,
                dm_rate: settings.dm_rate,
                max_created_rooms: usize::try_from(settings.max_created_rooms)
                    .unwrap_or(usize::MAX),
            },
            static_dir: settings.static_dir.clone(),
            handshake_timeout: settings.handshake_timeout(),
            connections: Arc::new(Semaphore::new(max_connections)),
            per_ip: (settings.max_connections_per_ip > 0).then(|| {
                PerIp::new(usize::try_from(settings.max_connections_per_ip).unwrap_or(usize::MAX))
            }),
            proxy_header: settings.proxy_header()?,
            origins: settings.origins()?,
            max_buffered_bytes,
            max_connections,
            shutdown,
            posts: PostLimiter::new(settings.rate_limit, settings.rate_burst),
            // Two seconds' worth, like a session's DM bucket.
            dms: PostLimiter::new(settings.dm_rate, settings.dm_rate.saturating_mul(2)),
            presence_ttl: settings.presence_ttl(),
            draining: AtomicBool::new(false),
        });
        Ok(Self {
            listener,
            metrics_listener,
            handshake_timeout: settings.handshake_timeout(),
            state,
        })
    }

    /// The address the node listens on (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The node's id.
    pub fn node(&self) -> &crate::domain::NodeId {
        self.state.chat.node()
    }

    /// Serves until `shutdown` resolves, then drains: `/ready` answers 503,
    /// no new connections, every socket closes with 1001, presence is
    /// removed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let token = state.shutdown.token.clone();
        let addr = self.listener.local_addr()?;
        let router = routes::router(state.clone(), self.metrics_listener.is_none());
        // Behind a trusted proxy every connection comes from the proxy: the
        // count then waits for the proxy's header, at the WebSocket upgrade.
        let tcp_per_ip = match state.proxy_header {
            Some(_) => None,
            None => state.per_ip.clone(),
        };
        let mut server = tokio::spawn(server::serve(
            self.listener,
            router,
            self.handshake_timeout,
            tcp_per_ip,
            token.clone(),
        ));
        if let Some(listener) = self.metrics_listener {
            tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
            state.shutdown.tracker.spawn(server::serve(
                listener,
                crate::http::metrics_router(state.clone()),
                self.handshake_timeout,
                None,
                token.clone(),
            ));
        }
        state.shutdown.tracker.spawn(upkeep::run(
            state.chat.clone(),
            upkeep::interval(state.presence_ttl),
            token.clone(),
        ));
        state
            .shutdown
            .tracker
            .spawn(telemetry::upkeep(token.clone()));
        if let Some(archiver) = state.chat.archiver() {
            state.shutdown.tracker.spawn(archiver.run(token.clone()));
        }
        tracing::info!(%addr, node = %state.chat.node(), "listening");

        tokio::select! {
            () = shutdown => {}
            result = &mut server => {
                result.context("server task failed")?;
                return Ok(());
            }
        }

        tracing::info!("draining");
        state.draining.store(true, Ordering::Relaxed);
        metrics::gauge!(telemetry::DRAINING).set(1.0);
        token.cancel();
        state.chat.wake_sessions();
        state.shutdown.tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, state.shutdown.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = state.shutdown.tracker.len(),
                "sessions still open after the drain timeout"
            );
        }
        if tokio::time::timeout(SERVER_STOP_TIMEOUT, server)
            .await
            .is_err()
        {
            tracing::warn!("HTTP server did not stop in time");
        }
        if let Err(error) = state.chat.leave_cluster().await {
            tracing::warn!(%error, "could not remove this node's presence");
        }
        tracing::info!("drained");
        Ok(())
    }
}

/// The archive the settings name, if any.
async fn archive(settings: &Settings) -> anyhow::Result<Option<Arc<dyn Archive>>> {
    Ok(match settings.archive_target()? {
        Some(ArchiveTarget::Postgres(url)) => Some(Arc::new(
            PostgresArchive::new(&url).context("DATABASE_URL")?,
        )),
        Some(ArchiveTarget::DynamoDb { table, endpoint }) => Some(Arc::new(
            DynamoArchive::new(&table, endpoint.as_deref()).await,
        )),
        None => None,
    })
}
