//! Settings: every knob is an environment variable and a flag of the same
//! meaning, validated once at start-up so a bad value stops the node with one
//! clear line.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderName;
use clap::Parser;

use crate::cluster::redis::RedisTarget;
use crate::domain::NodeId;
use crate::origins::AllowedOrigins;

/// Default port for HTTP and WebSocket.
pub const DEFAULT_PORT: u16 = 8080;

/// A week: a conversation picked up after a holiday still has its history,
/// and Redis holds at most a week of every room and pair ever written to
/// instead of all of them forever.
pub const DEFAULT_HISTORY_TTL_SECS: u64 = 7 * 24 * 3600;

/// Shortest `CHORUS_JWT_SECRET`, in bytes, from the contract: an HS256 key
/// shorter than the hash's 32-byte output can be guessed offline from any
/// one token.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Shortest `CHORUS_ADMIN_TOKEN`, in bytes: as long as the JWT secret, so
/// that it cannot be guessed either.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 32;

/// Largest upload by default, from the contract: 25 MiB.
pub const DEFAULT_UPLOAD_MAX_BYTES: u64 = 25 * 1024 * 1024;

/// The embedded mode's upload folder when CHORUS_UPLOAD_DIR is unset.
pub const DEFAULT_UPLOAD_DIR: &str = "./data/uploads";

/// Where a node keeps uploaded files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadStorage {
    /// A folder on this node (embedded mode only).
    Local(PathBuf),
    /// An S3 bucket.
    S3(String),
}

/// Everything an operator can set. `chorus --help` lists each with its
/// variable and default.
#[derive(Debug, Clone, Parser)]
#[command(name = "chorus", version, about = "A chat server that scales out")]
pub struct Settings {
    /// HTTP and WebSocket port.
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Redis URL (redis://host:port/db). Unset: embedded single-node mode with
    /// everything in memory. Set: cluster mode with every node on that Redis.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Seed nodes of a Redis Cluster (Redis 7+), comma-separated
    /// `redis://host:port`. Set: cluster mode over Redis Cluster, with
    /// sharded pub/sub. Not together with REDIS_URL.
    #[arg(long, env = "REDIS_CLUSTER_URLS")]
    pub redis_cluster_urls: Option<String>,

    /// Postgres URL of the archive: every accepted room message and DM is
    /// also kept there, once, and history older than the hot window is read
    /// from it. Unset: no archive.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// DynamoDB table of the archive, instead of Postgres: created on
    /// demand (on-demand capacity) with partition key `log` and sort key
    /// `id`. Region, credentials and endpoint come from the standard AWS
    /// environment (AWS_REGION, AWS_ACCESS_KEY_ID, AWS_PROFILE, a role,
    /// AWS_ENDPOINT_URL). Not together with DATABASE_URL. Unset: no
    /// DynamoDB archive.
    #[arg(long, env = "CHORUS_ARCHIVE_DYNAMODB_TABLE")]
    pub archive_dynamodb_table: Option<String>,

    /// URL of a local DynamoDB-compatible server (DynamoDB Local, moto) for
    /// the archive, overriding AWS_ENDPOINT_URL for it; a region and
    /// credentials the AWS environment does not name are then placeholders
    /// (such servers accept any). Needs CHORUS_ARCHIVE_DYNAMODB_TABLE.
    #[arg(long, env = "CHORUS_ARCHIVE_DYNAMODB_ENDPOINT")]
    pub archive_dynamodb_endpoint: Option<String>,

    /// This node's id [default: hostname plus a short random suffix].
    #[arg(long, env = "CHORUS_NODE_ID")]
    pub node_id: Option<String>,

    /// HS256 secret. Unset: anonymous users pick a name. Set: /ws and /api/*
    /// need a JWT whose `sub` is the user name.
    #[arg(long, env = "CHORUS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Bearer token of the admin API (`/api/admin/*`), at least 32 bytes.
    /// Unset: the admin API does not exist (its routes answer 404).
    #[arg(long, env = "CHORUS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Seconds the users of a node that died without cleanup stay visible.
    #[arg(long, env = "CHORUS_PRESENCE_TTL_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub presence_ttl_secs: u64,

    /// Messages kept per room and per DM pair.
    #[arg(long, env = "CHORUS_HISTORY_LIMIT", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub history_limit: u64,

    /// Seconds a room's or DM pair's hot history (Redis or memory) lives after
    /// its last message; 0 = forever. The default keeps a week of quiet; what
    /// is older is gone unless an archive keeps it.
    #[arg(long, env = "CHORUS_HISTORY_TTL_SECS", default_value_t = DEFAULT_HISTORY_TTL_SECS, value_parser = clap::value_parser!(u64).range(0..=315_360_000))]
    pub history_ttl_secs: u64,

    /// Messages (room messages, DMs, typing) per second per connection; 0 = no limit.
    #[arg(long, env = "CHORUS_RATE_LIMIT", default_value_t = 20)]
    pub rate_limit: u32,

    /// Token-bucket size for the message rate limit.
    #[arg(long, env = "CHORUS_RATE_BURST", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: u32,

    /// WebSocket connections this node accepts; over it the upgrade answers 503.
    #[arg(long, env = "CHORUS_MAX_CONNECTIONS", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Rooms one connection may be in at once.
    #[arg(long, env = "CHORUS_MAX_ROOMS_PER_CONNECTION", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rooms_per_connection: u32,

    /// Frames queued for one connection before it counts as too slow and is
    /// closed with 1013.
    #[arg(long, env = "CHORUS_OUTBOUND_QUEUE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub outbound_queue: u32,

    /// Milliseconds a connection that falls behind may hold its fan-out
    /// frames so they share one socket write: a connection that keeps up
    /// (nothing queued, the frame waited under a fifth of this) writes at
    /// once; one that does not writes at most once per interval. 0 writes
    /// every frame as soon as it arrives.
    #[arg(long, env = "CHORUS_WRITE_DELAY_MS", default_value_t = 25, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub write_delay_ms: u64,

    /// Seconds between server pings.
    #[arg(long, env = "CHORUS_PING_INTERVAL_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ping_interval_secs: u64,

    /// Seconds a connection may stay silent (no frame, no pong) before it is
    /// dropped; longer than the ping interval, so a live client always answers
    /// in time.
    #[arg(long, env = "CHORUS_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,

    /// Seconds a new TCP connection has to send its complete HTTP request
    /// head (the WebSocket upgrade included) before it is closed; a request
    /// body then has as long again to arrive whole, else 408 and close.
    #[arg(long, env = "CHORUS_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub handshake_timeout_secs: u64,

    /// Connections one client address (IPv6: its /64) may hold on this node,
    /// plain HTTP and WebSocket together; over it: 429. Behind
    /// CHORUS_TRUSTED_PROXY_HEADER only WebSockets, by the proxy's address
    /// header (the proxy caps the rest). 0 = no limit.
    #[arg(long, env = "CHORUS_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: u32,

    /// Request header naming the client address, set by a proxy in front of
    /// the node (`X-Forwarded-For`: its last entry; any other header: its
    /// whole value). Unset: the TCP peer address, and such headers are ignored.
    #[arg(long, env = "CHORUS_TRUSTED_PROXY_HEADER")]
    pub trusted_proxy_header: Option<String>,

    /// Joins (`join`, `switch`) per second per connection; 0 = no limit. The
    /// bucket holds CHORUS_MAX_ROOMS_PER_CONNECTION joins (so a reconnecting
    /// client can rejoin all its rooms at once) or two seconds' worth,
    /// whichever is more.
    #[arg(long, env = "CHORUS_JOIN_RATE", default_value_t = 10)]
    pub join_rate: u32,

    /// Direct messages per second per connection, on top of
    /// CHORUS_RATE_LIMIT; 0 = no limit. The bucket holds twice the rate.
    #[arg(long, env = "CHORUS_DM_RATE", default_value_t = 5)]
    pub dm_rate: u32,

    /// Rooms `POST /api/rooms` may list in the directory, cluster-wide; over
    /// it creation answers 409 `too_many_rooms`. Rooms with members are
    /// listed whether or not they were created and do not count. The bound
    /// keeps `GET /api/rooms` and `/api/stats`, which read the whole
    /// directory, a bounded read (about 0.5 MB of JSON at the default).
    #[arg(long, env = "CHORUS_MAX_CREATED_ROOMS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_created_rooms: u32,

    /// Seconds a connection with output pending may go without its socket
    /// taking a byte before it is dropped (counted like a 1013 slow reader).
    #[arg(long, env = "CHORUS_WRITE_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub write_timeout_secs: u64,

    /// Bytes of output queued for this node's connections, all together
    /// (fan-out frames and replies), above which new connections are refused
    /// with 503. One client address may hold at most a quarter of it: the
    /// connection that would pass that share is closed with 1013.
    #[arg(long, env = "CHORUS_MAX_BUFFERED_BYTES", default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_buffered_bytes: u64,

    /// Origins allowed to open WebSockets and call /api/* from a browser:
    /// comma-separated `scheme://host[:port]`, or `*` for any. Empty: only
    /// pages served by the same host (the Origin matches the Host header).
    /// Clients that send no Origin (not browsers) are not affected.
    #[arg(long, env = "CHORUS_ALLOWED_ORIGINS", default_value = "")]
    pub allowed_origins: String,

    /// Separate address for `/metrics` (for example `127.0.0.1:9100` or an
    /// internal interface). Unset: `/metrics` is served on PORT with the rest.
    #[arg(long, env = "CHORUS_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Prefix of every Redis key and channel.
    #[arg(long, env = "CHORUS_REDIS_PREFIX", default_value = "chorus:")]
    pub redis_prefix: String,

    /// Folder to serve the web client from instead of the copy built into
    /// the binary [default: the built-in copy of the repository's static/].
    #[arg(long, env = "CHORUS_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Folder for uploaded files [default: ./data/uploads in embedded mode].
    /// One node only: cluster mode needs CHORUS_S3_BUCKET instead.
    #[arg(long, env = "CHORUS_UPLOAD_DIR")]
    pub upload_dir: Option<PathBuf>,

    /// S3 bucket for uploaded files; the standard AWS_* variables
    /// (AWS_ENDPOINT_URL included) configure the client. Unset in cluster
    /// mode: uploads are off and their routes answer 404.
    #[arg(long, env = "CHORUS_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// Largest upload, in bytes.
    #[arg(long, env = "CHORUS_UPLOAD_MAX_BYTES", default_value_t = DEFAULT_UPLOAD_MAX_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_max_bytes: u64,

    /// The S3 client's endpoint, region and credentials given in code
    /// instead of AWS_* variables: for embedders and tests, which run
    /// several nodes in one process. Not a flag.
    #[arg(skip)]
    pub s3: crate::uploads::S3Overrides,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,

    /// Log format: `text` or `json`.
    #[arg(long, env = "CHORUS_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// Where the archive is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveTarget {
    /// Postgres at this URL (`DATABASE_URL`).
    Postgres(String),
    /// A DynamoDB table, at a local endpoint or AWS's.
    DynamoDb {
        /// The table's name.
        table: String,
        /// A local DynamoDB-compatible server instead of AWS.
        endpoint: Option<String>,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A setting that cannot be used; printed as one line by `main`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag or variable failed to parse (clap's message, first line).
    #[error("{0}")]
    Invalid(String),
    /// A value that parsed but makes no sense.
    #[error("{setting}: {problem}")]
    Value {
        /// The variable name.
        setting: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Clap's first line, led by the environment variable it concerns, so an
/// operator who set `CHORUS_HISTORY_LIMIT=x` reads that name first.
fn describe(error: &clap::Error) -> String {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue};
    let text = error.to_string();
    let line = text.lines().next().unwrap_or("invalid setting");
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return line.to_owned();
    };
    let command = Settings::command();
    let env = command
        .get_arguments()
        .find(|a| {
            a.get_long()
                .is_some_and(|l| arg.starts_with(&format!("--{l} ")))
        })
        .and_then(|a| a.get_env());
    match env {
        Some(env) => format!("{}: {line}", env.to_string_lossy()),
        None => line.to_owned(),
    }
}

impl Settings {
    /// Reads flags and environment, and checks what clap cannot.
    /// `--help` and `--version` print and exit here.
    pub fn load() -> Result<Self, ConfigError> {
        let settings = match Self::try_parse() {
            Ok(s) => s,
            Err(e) if !e.use_stderr() => e.exit(),
            Err(e) => return Err(ConfigError::Invalid(describe(&e))),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Settings with every default, as `load` would give with nothing set.
    /// Tests and embedders start from here.
    pub fn defaults() -> Self {
        // The empty command line always parses: every field has a default or is optional.
        Self::try_parse_from(["chorus"]).unwrap_or_else(|e| e.exit())
    }

    /// Checks cross-field rules and values clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.node_id
            && NodeId::parse(id).is_none()
        {
            return Err(ConfigError::Value {
                setting: "CHORUS_NODE_ID",
                problem: format!("expected printable ASCII without spaces or ':', got {id:?}"),
            });
        }
        self.redis_target()?;
        self.archive_target()?;
        if let Some(secret) = &self.jwt_secret
            && secret.len() < MIN_JWT_SECRET_BYTES
        {
            // The length only: the value is a secret and never printed.
            return Err(ConfigError::Value {
                setting: "CHORUS_JWT_SECRET",
                problem: format!(
                    "must be at least {MIN_JWT_SECRET_BYTES} bytes, got {} (generate one with \
                     `openssl rand -hex 32`; unset it for anonymous mode)",
                    secret.len()
                ),
            });
        }
        if let Some(token) = &self.admin_token
            && token.len() < MIN_ADMIN_TOKEN_BYTES
        {
            // The length only: the value is a secret and never printed.
            return Err(ConfigError::Value {
                setting: "CHORUS_ADMIN_TOKEN",
                problem: format!(
                    "must be at least {MIN_ADMIN_TOKEN_BYTES} bytes, got {} (generate one with \
                     `openssl rand -hex 32`; unset it to turn the admin API off)",
                    token.len()
                ),
            });
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(['{', '}']) {
            // Braces would make the prefix a Redis Cluster hash tag and put
            // every key in one slot.
            return Err(ConfigError::Value {
                setting: "CHORUS_REDIS_PREFIX",
                problem: format!(
                    "must be non-empty and without '{{' or '}}', got {:?}",
                    self.redis_prefix
                ),
            });
        }
        if self.idle_timeout_secs <= self.ping_interval_secs {
            return Err(ConfigError::Value {
                setting: "CHORUS_IDLE_TIMEOUT_SECS",
                problem: format!(
                    "must be longer than CHORUS_PING_INTERVAL_SECS ({}s), or live clients are dropped between pings; got {}s",
                    self.ping_interval_secs, self.idle_timeout_secs
                ),
            });
        }
        self.proxy_header()?;
        self.origins()?;
        self.upload_storage()?;
        tracing_subscriber::EnvFilter::try_new(&self.log).map_err(|e| ConfigError::Value {
            setting: "RUST_LOG",
            problem: e.to_string(),
        })?;
        Ok(())
    }

    /// Which Redis the node uses: none (embedded), one, or a cluster.
    pub fn redis_target(&self) -> Result<Option<RedisTarget>, ConfigError> {
        let url_ok = |url: &str| url.starts_with("redis://") || url.starts_with("rediss://");
        match (&self.redis_url, &self.redis_cluster_urls) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(ConfigError::Value {
                setting: "REDIS_CLUSTER_URLS",
                problem: "set together with REDIS_URL; set one: REDIS_URL for one Redis, \
                          REDIS_CLUSTER_URLS for a Redis Cluster"
                    .to_owned(),
            }),
            (Some(url), None) if url_ok(url) => Ok(Some(RedisTarget::Single(url.clone()))),
            (Some(url), None) => Err(ConfigError::Value {
                setting: "REDIS_URL",
                problem: format!("expected redis://host:port/db, got {url:?}"),
            }),
            (None, Some(urls)) => {
                let seeds: Vec<String> = urls
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect();
                match seeds.iter().find(|u| !url_ok(u)) {
                    _ if seeds.is_empty() => Err(ConfigError::Value {
                        setting: "REDIS_CLUSTER_URLS",
                        problem:
                            "names no seed node; expected redis://host:port[,redis://host:port…]"
                                .to_owned(),
                    }),
                    Some(bad) => Err(ConfigError::Value {
                        setting: "REDIS_CLUSTER_URLS",
                        problem: format!("expected redis://host:port, got {bad:?}"),
                    }),
                    None => Ok(Some(RedisTarget::Cluster(seeds))),
                }
            }
        }
    }

    /// Which archive the node keeps: none, Postgres, or DynamoDB.
    pub fn archive_target(&self) -> Result<Option<ArchiveTarget>, ConfigError> {
        let table = match (&self.database_url, &self.archive_dynamodb_table) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Value {
                    setting: "CHORUS_ARCHIVE_DYNAMODB_TABLE",
                    problem: "set together with DATABASE_URL; set one: DATABASE_URL for an \
                              archive in Postgres, CHORUS_ARCHIVE_DYNAMODB_TABLE for one in \
                              DynamoDB"
                        .to_owned(),
                });
            }
            (Some(url), None) => return Ok(Some(ArchiveTarget::Postgres(url.clone()))),
            (None, None) if self.archive_dynamodb_endpoint.is_some() => {
                return Err(ConfigError::Value {
                    setting: "CHORUS_ARCHIVE_DYNAMODB_ENDPOINT",
                    problem: "set without CHORUS_ARCHIVE_DYNAMODB_TABLE, which names the table"
                        .to_owned(),
                });
            }
            (None, None) => return Ok(None),
            (None, Some(table)) => table,
        };
        // DynamoDB's rule for table names.
        let name_ok = (3..=255).contains(&table.len())
            && table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !name_ok {
            return Err(ConfigError::Value {
                setting: "CHORUS_ARCHIVE_DYNAMODB_TABLE",
                problem: format!(
                    "expected 3 to 255 of a-z, A-Z, 0-9, '_', '-' and '.', got {table:?}"
                ),
            });
        }
        let endpoint = match &self.archive_dynamodb_endpoint {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(url.clone())
            }
            Some(url) => {
                return Err(ConfigError::Value {
                    setting: "CHORUS_ARCHIVE_DYNAMODB_ENDPOINT",
                    problem: format!("expected http://host:port or https://…, got {url:?}"),
                });
            }
            None => None,
        };
        Ok(Some(ArchiveTarget::DynamoDb {
            table: table.clone(),
            endpoint,
        }))
    }

    /// Where uploads go: the bucket if set; else a folder in embedded mode
    /// (the setting or the default); else nowhere (uploads off).
    pub fn upload_storage(&self) -> Result<Option<UploadStorage>, ConfigError> {
        let cluster = self.redis_url.is_some() || self.redis_cluster_urls.is_some();
        match (&self.upload_dir, &self.s3_bucket) {
            (Some(_), Some(_)) => Err(ConfigError::Value {
                setting: "CHORUS_UPLOAD_DIR",
                problem: "set together with CHORUS_S3_BUCKET; set one".to_owned(),
            }),
            (_, Some(bucket)) if bucket.trim().is_empty() => Err(ConfigError::Value {
                setting: "CHORUS_S3_BUCKET",
                problem: "is empty".to_owned(),
            }),
            (_, Some(bucket)) => Ok(Some(UploadStorage::S3(bucket.trim().to_owned()))),
            (Some(_), None) if cluster => Err(ConfigError::Value {
                setting: "CHORUS_UPLOAD_DIR",
                problem: "a local upload folder serves one node only; set CHORUS_S3_BUCKET"
                    .to_owned(),
            }),
            (Some(dir), None) => Ok(Some(UploadStorage::Local(dir.clone()))),
            (None, None) if cluster => Ok(None),
            (None, None) => Ok(Some(UploadStorage::Local(PathBuf::from(
                DEFAULT_UPLOAD_DIR,
            )))),
        }
    }

    /// This node's id: the setting, or hostname plus a short random suffix.
    pub fn node_id(&self) -> NodeId {
        self.node_id
            .as_deref()
            .and_then(NodeId::parse)
            .unwrap_or_else(|| {
                let host = gethostname::gethostname().to_string_lossy().into_owned();
                let suffix = uuid::Uuid::new_v4().simple().to_string();
                let id = format!("{host}-{}", &suffix[..6]);
                NodeId::parse(&id).unwrap_or_else(|| {
                    NodeId::parse(&format!("node-{}", &suffix[..6]))
                        .unwrap_or_else(|| unreachable!("hex digits make a valid id"))
                })
            })
    }

    /// How long a quiet history lives; `None`: forever.
    pub fn history_ttl(&self) -> Option<Duration> {
        (self.history_ttl_secs > 0).then(|| Duration::from_secs(self.history_ttl_secs))
    }

    /// How long a dead node's users stay visible.
    pub fn presence_ttl(&self) -> Duration {
        Duration::from_secs(self.presence_ttl_secs)
    }

    /// The shortest time between two fan-out writes to one socket.
    pub fn write_delay(&self) -> Duration {
        Duration::from_millis(self.write_delay_ms)
    }

    /// How long a connection may stay silent.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// How long a socket may take no bytes while output waits.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }

    /// How long a new connection may take to send its request head.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    /// The header a trusted proxy names the client address in, if any.
    pub fn proxy_header(&self) -> Result<Option<HeaderName>, ConfigError> {
        self.trusted_proxy_header
            .as_deref()
            .map(|name| {
                HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| ConfigError::Value {
                    setting: "CHORUS_TRUSTED_PROXY_HEADER",
                    problem: format!(
                        "expected an HTTP header name such as X-Forwarded-For, got {name:?}"
                    ),
                })
            })
            .transpose()
    }

    /// The browser origins allowed to use this node.
    pub fn origins(&self) -> Result<AllowedOrigins, ConfigError> {
        AllowedOrigins::parse(&self.allowed_origins).map_err(|problem| ConfigError::Value {
            setting: "CHORUS_ALLOWED_ORIGINS",
            problem,
        })
    }

    /// The keepalive interval.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }
}
