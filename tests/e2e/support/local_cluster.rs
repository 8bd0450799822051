//! `deploy/local-cluster.sh` run as a person runs it: in the foreground on
//! free ports with this build's `chorus` (`CHORUS_BIN`), its output read as
//! it comes, stopped with the Ctrl-C signal (SIGINT). Every wait is bounded;
//! if a test fails the script is stopped the same way, and killed, with
//! whatever it started, if it does not stop in time.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::tools::{ScratchDir, free_port, require_tool};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local-cluster.sh");

/// The nodes the script starts (its default `NODES`).
pub const NODES: u16 = 3;

/// How long the script may take to say it is up: a Redis Cluster to form
/// (its own limit is 30 s), then each node ready (10 s each), nginx, and
/// Prometheus (30 s).
const START_LIMIT: Duration = Duration::from_secs(120);

/// How long the script may take to stop after SIGINT: nginx 5 s and
/// Prometheus 10 s at most, the nodes' drains 15 s, Redis 5 s.
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// The line the script prints once everything is up.
const UP: &str = "Ctrl-C to stop.";

/// Starts tried before a port collision fails the test: free ports are only
/// free when picked, and the tests running beside take ports all the time.
const START_ATTEMPTS: usize = 3;

pub struct LocalCluster {
    child: Option<Child>,
    /// Holds `RUN_DIR` (`run/`) and the script's own stdout and stderr.
    dir: ScratchDir,
    pub lb_port: u16,
    pub prom_port: u16,
    pub base_port: u16,
    /// `None` with `--redis-cluster`.
    pub redis_port: Option<u16>,
    /// The private Postgres's port (`PG_PORT`) with `--archive`; `None`
    /// without.
    pub pg_port: Option<u16>,
}

impl LocalCluster {
    /// Starts `deploy/local-cluster.sh ARGS` on free ports and waits until it
    /// says it is up; fails with its output and the nodes' logs if it exits
    /// first or takes longer than [`START_LIMIT`]. A port taken by another
    /// process between its pick and its use (the script's check or a node
    /// says it is already in use) is a collision, not a failure: it tries
    /// again on new ports, a few times.
    pub async fn start(args: &[&str]) -> Self {
        for _ in 1..START_ATTEMPTS {
            if let Some(cluster) = Self::try_start(args, true).await {
                return cluster;
            }
        }
        Self::try_start(args, false)
            .await
            .expect("the last attempt fails instead of returning None")
    }

    /// One attempt of [`LocalCluster::start`]; `None` when the script exited
    /// on a port collision and `may_retry`.
    async fn try_start(args: &[&str], may_retry: bool) -> Option<Self> {
        for (tool, package) in [
            ("redis-server", "redis-server"),
            ("redis-cli", "redis-tools"),
            ("nginx", "nginx"),
            ("prometheus", "prometheus"),
            ("curl", "curl"),
        ] {
            require_tool(tool, package);
        }
        let redis_cluster = args.contains(&"--redis-cluster");
        let archive = args.contains(&"--archive");
        if archive {
            // The script creates the database with it; initdb and postgres
            // it finds itself (Debian keeps them off PATH).
            require_tool("psql", "postgresql-client");
        }
        let dir = ScratchDir::create("chorus-local-cluster");
        let mut cluster = Self {
            child: None,
            lb_port: free_port(),
            prom_port: free_port(),
            base_port: free_ports(NODES),
            redis_port: (!redis_cluster).then(free_port),
            pg_port: archive.then(free_port),
            dir,
        };
        let run_dir = cluster.run_dir();
        let mut command = Command::new("bash");
        command
            .arg(SCRIPT)
            .args(args)
            .env("LB_PORT", cluster.lb_port.to_string())
            .env("PROM_PORT", cluster.prom_port.to_string())
            .env("BASE_PORT", cluster.base_port.to_string())
            .env("NODES", NODES.to_string())
            .env("RUN_DIR", &run_dir)
            .env("CHORUS_BIN", env!("CARGO_BIN_EXE_chorus"))
            .env_remove("REDIS_CLUSTER_PORT")
            .env_remove("REDIS_URL")
            .env_remove("REDIS_CLUSTER_URLS")
            // With --archive: a private Postgres, never the caller's.
            .env_remove("DATABASE_URL")
            .env_remove("CHORUS_ARCHIVE_DYNAMODB_TABLE")
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(cluster.dir.path().join("stdout")).expect("stdout file"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(cluster.dir.path().join("stderr")).expect("stderr file"),
            ));
        if let Some(port) = cluster.redis_port {
            command.env("REDIS_PORT", port.to_string());
        }
        if let Some(port) = cluster.pg_port {
            command.env("PG_PORT", port.to_string());
        }
        cluster.child = Some(command.spawn().expect("bash runs"));

        let deadline = Instant::now() + START_LIMIT;
        loop {
            if cluster.stdout().contains(UP) {
                return Some(cluster);
            }
            if let Some(status) = cluster
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten()
            {
                let report = cluster.report();
                // A node's `Address already in use`, or the script's own check.
                if may_retry && report.contains("already in use") {
                    eprintln!(
                        "deploy/local-cluster.sh {args:?}: a port was taken; new ports\n{report}"
                    );
                    return None;
                }
                panic!(
                    "deploy/local-cluster.sh {args:?} exited ({status}) before it was up\n{report}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "deploy/local-cluster.sh {args:?} was not up within {START_LIMIT:?}\n{}",
                cluster.report()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The script's `RUN_DIR`.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Everything the script printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// The address of node `i` (0-based), directly.
    pub fn node(&self, i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + i))
    }

    /// The value the script printed for `REDIS_CLUSTER_URLS`.
    pub fn printed_cluster_urls(&self) -> Option<String> {
        self.stdout().lines().find_map(|line| {
            let rest = line.split_once("REDIS_CLUSTER_URLS=")?.1;
            Some(rest.split_whitespace().next()?.to_owned())
        })
    }

    /// The pid of node `i` (0-based), from the script's pid file.
    pub fn node_pid(&self, i: u16) -> i32 {
        let file = self.run_dir().join(format!("node{}.pid", i + 1));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .parse()
            .expect("a pid")
    }

    /// The environment node `i` (0-based) runs with, as `NAME=value` lines.
    pub fn node_environment(&self, i: u16) -> Vec<String> {
        let environ = std::fs::read(format!("/proc/{}/environ", self.node_pid(i)))
            .expect("the node's environment");
        environ
            .split(|&b| b == 0)
            .filter(|entry| !entry.is_empty())
            .map(|entry| String::from_utf8_lossy(entry).into_owned())
            .collect()
    }

    /// The log of node `i` (0-based) so far.
    pub fn node_log(&self, i: u16) -> String {
        std::fs::read_to_string(self.run_dir().join(format!("node{}.log", i + 1)))
            .unwrap_or_default()
    }

    /// Sends the Ctrl-C signal and waits (bounded) until the script exits.
    pub async fn interrupt(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the script runs");
        let status = tokio::task::spawn_blocking(move || stop_script(&mut child, Signal::SIGINT))
            .await
            .expect("the stop task");
        status.unwrap_or_else(|| {
            panic!(
                "deploy/local-cluster.sh did not stop within {STOP_LIMIT:?} of SIGINT\n{}",
                self.report()
            )
        })
    }

    /// The private Postgres's log so far (`--archive`).
    pub fn postgres_log(&self) -> String {
        std::fs::read_to_string(self.run_dir().join("postgres.log")).unwrap_or_default()
    }

    /// The script's output and the tail of each node's log, for failures.
    pub fn report(&self) -> String {
        let mut report = format!(
            "--- stdout\n{}--- stderr\n{}",
            self.stdout(),
            std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
        );
        for i in 0..NODES {
            let log = self.node_log(i);
            let lines: Vec<&str> = log.lines().collect();
            report += &format!(
                "--- node{} log (end)\n{}\n",
                i + 1,
                lines[lines.len().saturating_sub(10)..].join("\n")
            );
        }
        report
    }

    /// True while something accepts connections on `addr`.
    pub fn listening(addr: SocketAddr) -> bool {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // A failed test: stop it as Ctrl-C would; if even that hangs, kill
        // the script and everything it started, from its pid files.
        if stop_script(&mut child, Signal::SIGTERM).is_none() {
            let run_dir = self.run_dir();
            if let Ok(entries) = std::fs::read_dir(&run_dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "pid")
                        && let Some(pid) = std::fs::read_to_string(&path)
                            .ok()
                            .and_then(|p| p.trim().parse::<i32>().ok())
                    {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            Signal::SIGKILL,
                        );
                    }
                }
            }
            // As root the private Postgres keeps its data outside RUN_DIR.
            if let Ok(data) = std::fs::read_to_string(run_dir.join("postgres-data-dir")) {
                let _ = std::fs::remove_dir_all(data.trim());
            }
            let cluster_dir = run_dir.join("redis-cluster");
            if cluster_dir.exists() {
                let _ = Command::new(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/redis-cluster.sh"),
                )
                .arg("stop")
                .arg(&cluster_dir)
                .output();
            }
        }
    }
}

/// Signals the script and waits up to [`STOP_LIMIT`]; `None` (after a
/// SIGKILL of the script alone) if it did not exit in time.
fn stop_script(child: &mut Child, signal: Signal) -> Option<ExitStatus> {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
    let deadline = Instant::now() + STOP_LIMIT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The first of `n` consecutive ports that were all free a moment ago.
fn free_ports(n: u16) -> u16 {
    for _ in 0..50 {
        let first = free_port();
        if first.checked_add(n).is_some()
            && (1..n).all(|i| TcpListener::bind(("127.0.0.1", first + i)).is_ok())
        {
            return first;
        }
    }
    panic!("found no {n} consecutive free ports");
}
