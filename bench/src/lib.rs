//! chorus-bench: many chorus WebSocket clients from one process, on loopback.
//!
//! The clients speak chorus's protocol, or Socket.IO ([`Protocol`]) to load
//! the peers chorus is compared with in BENCHMARKS.md the same way.
//!
//! A run is one [`Scenario`] against a [`Target`] (the nodes' base URLs and,
//! when known, their process ids for CPU and memory readings). Traffic
//! scenarios ([`traffic`]) put clients in rooms and publish at a fixed rate;
//! every message carries its publisher, a sequence and its send time, so each
//! receiver counts what it got exactly once, what it got twice and how late.
//! The idle scenario ([`idle`]) only holds connections and reads the node's
//! resident memory. Each run ends in one [`Report`], written as a JSON line.
//! Given the ports of the Redis servers behind the nodes, a traffic run also
//! reports each server's CPU and commands and how the keys spread over the
//! primaries ([`redis`]).

pub mod client;
pub mod idle;
pub mod probe;
pub mod redis;
pub mod report;
pub mod traffic;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, bail};

pub use client::Protocol;
pub use report::Report;
pub use traffic::Traffic;

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URLs of the nodes, e.g. `http://127.0.0.1:8080`; clients are
    /// spread over them round-robin.
    pub nodes: Vec<String>,
    /// Process ids of the nodes, for CPU seconds and resident memory.
    pub pids: Vec<u32>,
    /// Process id of Redis, whose CPU is reported apart from the nodes'.
    pub redis_pid: Option<u32>,
    /// Client ports on 127.0.0.1 of every Redis server behind the nodes (a
    /// lone Redis, or each primary and replica of a cluster), read per
    /// process in traffic runs.
    pub redis_ports: Vec<u16>,
    /// The wire the nodes speak (chorus unless [`Target::with_protocol`]).
    pub protocol: Protocol,
}

impl Target {
    /// Checks that every node is on loopback: this tool never loads a host
    /// it does not share.
    pub fn new(nodes: Vec<String>, pids: Vec<u32>, redis_pid: Option<u32>) -> anyhow::Result<Self> {
        if nodes.is_empty() {
            bail!("at least one node URL is needed");
        }
        for node in &nodes {
            let url = reqwest::Url::parse(node)
                .ok()
                .filter(|url| url.scheme() == "http")
                .with_context(|| format!("{node}: node URLs look like http://127.0.0.1:8080"))?;
            let loopback = match url.host_str() {
                Some("localhost") => true,
                Some(host) => host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback()),
                None => false,
            };
            if !loopback {
                bail!("{node}: only loopback nodes (127.0.0.0/8, ::1, localhost) may be loaded");
            }
        }
        Ok(Self {
            nodes: nodes
                .into_iter()
                .map(|n| n.trim_end_matches('/').to_owned())
                .collect(),
            pids,
            redis_pid,
            redis_ports: Vec::new(),
            protocol: Protocol::Chorus,
        })
    }

    /// The same nodes, over the Redis servers on `ports` (127.0.0.1).
    pub fn with_redis_ports(self, redis_ports: Vec<u16>) -> Self {
        Self {
            redis_ports,
            ..self
        }
    }

    /// The same nodes, spoken to in `protocol`.
    pub fn with_protocol(self, protocol: Protocol) -> Self {
        Self { protocol, ..self }
    }

    /// The WebSocket URL of client `index` (round-robin over the nodes).
    pub fn ws_url(&self, index: usize, user: &str) -> String {
        let base = &self.nodes[index % self.nodes.len()];
        format!("ws{}{}", &base["http".len()..], self.protocol.ws_path(user))
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// Rooms of members, some of whom publish at a fixed rate.
    Traffic {
        /// `fanout` or `rooms`: the name in the report.
        name: &'static str,
        /// The shape and rate of the traffic.
        traffic: Traffic,
    },
    /// Connections that join one room each and stay quiet.
    Idle {
        /// How many connections.
        connections: usize,
        /// Members per room.
        room_size: usize,
        /// How long to hold them after the last one joined.
        hold: Duration,
    },
}

/// Runs `scenario` against `target` and reports it under `label`.
/// The report's `server` is the protocol's name (`chorus`, `socketio`);
/// callers that know the server kind better set it afterwards.
pub async fn run(target: &Target, scenario: &Scenario, label: &str) -> anyhow::Result<Report> {
    let mut report = match scenario {
        Scenario::Traffic { name, traffic } => traffic::run(target, name, traffic, label).await,
        Scenario::Idle {
            connections,
            room_size,
            hold,
        } => idle::run(target, *connections, *room_size, *hold, label).await,
    }?;
    report.server = target.protocol.name().to_owned();
    Ok(report)
}
