//! Black-box end-to-end tests: real nodes on free ports, spoken to over
//! WebSocket and HTTP. One binary, so it links once.

#![expect(
    clippy::unwrap_used,
    reason = "a test should stop at the first unexpected error, wherever it is"
)]

mod support;

mod admin;
mod archive;
mod archive_dynamodb;
mod auth;
mod backend_contract;
mod bench;
mod cluster;
mod config;
mod deploy;
mod deploy_scripts;
mod failover;
mod faults;
mod hardening;
mod http_api;
mod idempotency;
mod limits;
mod malformed;
mod metrics;
mod partition;
mod redis_cluster;
mod redis_cluster_faults;
mod redis_cluster_shards;
mod redis_outage;
mod rest_limits;
mod rooms;
mod seed_routes;
mod shutdown;
mod trust;
mod uploads;
