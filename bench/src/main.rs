//! `chorus-bench`: the command line of the load generator.

use std::path::PathBuf;
use std::time::Duration;

use chorus_bench::{Protocol, Scenario, Target, Traffic};
use clap::{Parser, Subcommand};

/// Load generator for chorus: many WebSocket clients from one process, on
/// loopback only. Each run appends one JSON line to --out. With `--protocol
/// socketio` it loads a Socket.IO server instead (the peers in bench/peers/).
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Base URL of a node; repeat for several (clients are spread round-robin).
    #[arg(long = "node", default_value = "http://127.0.0.1:8080", global = true)]
    nodes: Vec<String>,
    /// Process id of a node, for CPU and memory readings; repeat per node.
    #[arg(long = "pid", global = true)]
    pids: Vec<u32>,
    /// Process id of Redis, whose CPU is reported separately.
    #[arg(long, global = true)]
    redis_pid: Option<u32>,
    /// Port of a Redis server on 127.0.0.1 behind the nodes: a lone Redis, or
    /// each primary and replica of a Redis Cluster; repeat per server. Traffic
    /// runs then report each server's CPU seconds and commands, and each
    /// primary's keys at the end of the run.
    #[arg(long = "redis-port", global = true)]
    redis_ports: Vec<u16>,
    /// JSON-lines file the result is appended to.
    #[arg(long, default_value = "bench/results/latest.jsonl", global = true)]
    out: PathBuf,
    /// Name of the run in the results (default: derived from the scenario,
    /// after `<server>-` when --server is given).
    #[arg(long, global = true)]
    label: Option<String>,
    /// The wire the nodes speak: `chorus`, or `socketio` (engine.io v4 over
    /// WebSocket, as bench/peers/ serve it).
    #[arg(long, default_value = "chorus", global = true)]
    protocol: Protocol,
    /// The server kind in the results, e.g. `socketioxide` (default: the
    /// protocol's name).
    #[arg(long, global = true)]
    server: Option<String>,
    #[command(subcommand)]
    scenario: Command,
}

#[derive(Subcommand)]
enum Command {
    /// R rooms of S subscribers plus P publishers each sending at a fixed rate.
    Fanout {
        /// Rooms.
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Subscribers per room.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Publishers per room (members too: they get their own messages).
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Messages per second per publisher.
        #[arg(long, default_value_t = 75.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Extra content bytes per message.
        #[arg(long, default_value_t = 0)]
        payload: usize,
    },
    /// Many small rooms, every member sending.
    Rooms {
        /// Clients in all.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Members per room.
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Messages per second per client.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
    },
    /// Idle connections, one room each; reports node memory per connection.
    Idle {
        /// Connections to hold.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Members per room.
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Seconds to hold them before reading memory.
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
    },
}

impl Command {
    fn scenario(&self) -> anyhow::Result<(Scenario, String)> {
        let seconds = |s: f64| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| anyhow::anyhow!("{s}: not a duration in seconds"))
        };
        Ok(match *self {
            Self::Fanout {
                rooms,
                subscribers,
                publishers,
                rate,
                duration,
                payload,
            } => (
                Scenario::Traffic {
                    name: "fanout",
                    traffic: Traffic {
                        rooms,
                        members: subscribers + publishers,
                        publishers,
                        rate,
                        duration: seconds(duration)?,
                        payload,
                    },
                },
                format!(
                    "fanout-{rooms}x{subscribers}-{}mps",
                    rate * (rooms * publishers) as f64
                ),
            ),
            Self::Rooms {
                clients,
                room_size,
                rate,
                duration,
            } => {
                anyhow::ensure!(
                    room_size > 0 && clients % room_size == 0,
                    "clients must be a multiple of the room size"
                );
                (
                    Scenario::Traffic {
                        name: "rooms",
                        traffic: Traffic {
                            rooms: clients / room_size,
                            members: room_size,
                            publishers: room_size,
                            rate,
                            duration: seconds(duration)?,
                            payload: 0,
                        },
                    },
                    format!("rooms-{clients}x{rate}mps"),
                )
            }
            Self::Idle {
                connections,
                room_size,
                hold,
            } => (
                Scenario::Idle {
                    connections,
                    room_size,
                    hold: seconds(hold)?,
                },
                format!("idle-{connections}"),
            ),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = Target::new(cli.nodes, cli.pids, cli.redis_pid)?
        .with_protocol(cli.protocol)
        .with_redis_ports(cli.redis_ports);
    let (scenario, default_label) = cli.scenario.scenario()?;
    let label = match (cli.label, &cli.server) {
        (Some(label), _) => label,
        (None, Some(server)) => format!("{server}-{default_label}"),
        (None, None) => default_label,
    };
    let mut report = chorus_bench::run(&target, &scenario, &label).await?;
    if let Some(server) = cli.server {
        report.server = server;
    }
    report.append_to(&cli.out)?;
    println!("{}", report.summary());
    Ok(())
}
