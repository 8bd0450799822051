//! The idle scenario: connections that join one room each and stay quiet,
//! to read what a held connection costs the node in resident memory.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::client::{self, Client, Inbound};
use crate::probe;
use crate::report::{Progress, Report};
use crate::{Protocol, Target};

/// Connects `connections` clients in rooms of `room_size`, holds them for
/// `hold`, and reports the nodes' memory per connection.
pub async fn run(
    target: &Target,
    connections: usize,
    room_size: usize,
    hold: Duration,
    label: &str,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        connections > 0 && room_size > 0,
        "need connections and a room size"
    );
    let started_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let run_id = started_at % 1_000_000;
    let rss = || {
        (!target.pids.is_empty())
            .then(|| probe::rss_bytes(&target.pids))
            .transpose()
    };
    let baseline = rss()?;
    let cpu = || {
        (!target.pids.is_empty())
            .then(|| probe::cpu_seconds(&target.pids))
            .transpose()
    };
    // What connecting and joining costs the nodes: what a reconnect storm
    // after a node loss costs the survivors.
    let cpu_before = cpu()?;

    eprintln!("{label}: connecting {connections} idle clients");
    let clients = client::connect_all(target, connections, |i| {
        format!("idle-{run_id}-{}", i / room_size)
    })
    .await?;
    let connect_cpu_s = cpu_before.zip(cpu()?).map(|(before, after)| after - before);
    let holding = Held::start(clients, target.protocol);
    let progress = Progress::start({
        let label = label.to_owned();
        let pids = target.pids.clone();
        move |t| {
            let rss = probe::rss_bytes(&pids).map_or(0, |b| b / 1_048_576);
            format!("{label}: {t:5.1}s holding {connections} connections, node RSS {rss} MiB")
        }
    });
    tokio::time::sleep(hold).await;
    let held = rss()?;
    drop(progress);
    holding.release().await;

    let per_connection = baseline
        .zip(held)
        .map(|(before, after)| after.saturating_sub(before) as f64 / connections as f64);
    Ok(Report {
        scenario: "idle".to_owned(),
        label: label.to_owned(),
        started_at,
        params: serde_json::json!({
            "connections": connections,
            "room_size": room_size,
            "hold_s": hold.as_secs_f64(),
            "nodes": target.nodes.len(),
        }),
        connections,
        server_rss_bytes: held,
        connect_cpu_s,
        baseline_rss_bytes: baseline,
        rss_per_connection_bytes: per_connection,
        ..Report::default()
    })
}

/// The idle clients while they are held.
enum Held {
    /// chorus clients sit unread, as they always have here: chorus needs
    /// nothing from an idle client.
    Unread(Vec<Client>),
    /// Socket.IO servers ping every 25 s and drop a client that does not
    /// answer, so each client reads (and answers pings) in a task of its own.
    Answering {
        stop: CancellationToken,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    },
}

impl Held {
    fn start(clients: Vec<Client>, protocol: Protocol) -> Self {
        match protocol {
            Protocol::Chorus => Self::Unread(clients),
            Protocol::SocketIo => {
                let stop = CancellationToken::new();
                let tasks = clients
                    .into_iter()
                    .map(|mut client| {
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            loop {
                                tokio::select! {
                                    () = stop.cancelled() => break,
                                    inbound = client.recv() => {
                                        if let Inbound::Closed = inbound { break; }
                                    }
                                }
                            }
                        })
                    })
                    .collect();
                Self::Answering { stop, tasks }
            }
        }
    }

    /// Lets every connection go.
    async fn release(self) {
        match self {
            Self::Unread(clients) => drop(clients),
            Self::Answering { stop, tasks } => {
                stop.cancel();
                for task in tasks {
                    // A task that panicked only lost its own connection.
                    let _ = task.await;
                }
            }
        }
    }
}
