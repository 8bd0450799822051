//! Nodes under test: [`TestNode`] runs the library in this process on port 0;
//! [`ProcessNode`] runs the real `chorus` binary for signal tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chorus::app::App;
use chorus::config::Settings;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::TIMEOUT;

/// Shared helpers for anything listening on an address.
pub trait Endpoint {
    /// Where the node listens.
    fn addr(&self) -> SocketAddr;

    /// `ws://…/ws?username=user`.
    fn ws_url(&self, user: &str) -> String {
        format!("ws://{}/ws?username={user}", self.addr())
    }

    /// `ws://…/ws?<query>`.
    fn ws_url_query(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.addr())
    }

    /// `http://…<path>`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }
}

/// A node running in this process.
pub struct TestNode {
    pub addr: SocketAddr,
    pub node_id: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Endpoint for TestNode {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Settings for a test node: loopback, port 0, the embedded web client.
pub fn test_settings() -> Settings {
    let mut settings = Settings::defaults();
    settings.host = [127, 0, 0, 1].into();
    settings.port = 0;
    settings
}

impl TestNode {
    /// A node with default settings.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A node with settings adjusted by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        *super::TRACING;
        let mut settings = test_settings();
        adjust(&mut settings);
        let app = App::build(settings).await.expect("node builds");
        let addr = app.local_addr().expect("bound");
        let node_id = app.node().to_string();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            node_id,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Drains the node and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("node drains in time")
                .expect("node task")
                .expect("node run");
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The real `chorus` binary in a child process.
pub struct ProcessNode {
    pub addr: SocketAddr,
    child: Child,
    /// Every log line the node wrote (JSON), for assertions.
    pub logs: mpsc::Receiver<Value>,
}

impl Endpoint for ProcessNode {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl ProcessNode {
    /// Starts the binary with `env` on a free port and waits for it to listen.
    pub fn spawn(env: &[(&str, &str)]) -> Self {
        Self::launch(
            Command::new(env!("CARGO_BIN_EXE_chorus")),
            Path::new(env!("CARGO_MANIFEST_DIR")),
            env,
        )
    }

    /// Like [`ProcessNode::spawn`], with `dir` as the working directory.
    pub fn spawn_from(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::launch(Command::new(env!("CARGO_BIN_EXE_chorus")), dir, env)
    }

    /// Starts the binary inside network namespace `ns` of `hosts`
    /// (`ip netns exec`, which execs: the child is the node itself). `env`
    /// should set `HOST` to an address of that namespace.
    pub fn spawn_in(hosts: &super::netns::Hosts, ns: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(
            hosts.command_in(ns, env!("CARGO_BIN_EXE_chorus")),
            Path::new(env!("CARGO_MANIFEST_DIR")),
            env,
        )
    }

    fn launch(mut command: Command, dir: &Path, env: &[(&str, &str)]) -> Self {
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("CHORUS_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("chorus starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (lines_tx, lines) = mpsc::channel();
        let (addr_tx, addr_rx) = mpsc::channel();
        let echo = std::env::var_os("TEST_LOG").is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[node] {line}");
                }
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if value["message"] == "listening"
                    && let Some(addr) = value["addr"].as_str().and_then(|a| a.parse().ok())
                {
                    let _ = addr_tx.send(addr);
                }
                let _ = lines_tx.send(value);
            }
        });
        let addr: SocketAddr = match addr_rx.recv_timeout(TIMEOUT) {
            Ok(addr) => addr,
            Err(error) => {
                // Not yet owned by a `ProcessNode`, whose drop would end it.
                let _ = child.kill();
                let _ = child.wait();
                panic!("node listens in time: {error}");
            }
        };
        Self {
            addr,
            child,
            logs: lines,
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    /// Sends SIGTERM (drain).
    pub fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::SIGTERM,
        )
        .expect("signal sent");
    }

    /// Sends SIGKILL (crash, no cleanup).
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, failing after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "node did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
