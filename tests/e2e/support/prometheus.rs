//! A real Prometheus scraping the nodes under test every second, with the
//! project's alert rules (deploy/prometheus/alerts.yml) loaded, on a free port
//! with its storage in a scratch directory; stopped on drop.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::TIMEOUT;
use super::tools::{ScratchDir, free_port, probe_status, require_tool, stop_child};

/// The alert rules every deployment loads.
pub const ALERT_RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");

/// The job name of the nodes, as in deploy/prometheus/prometheus.yml.
pub const JOB: &str = "chorus";

pub struct Prometheus {
    pub addr: SocketAddr,
    child: Child,
    dir: ScratchDir,
}

/// A configuration scraping `targets` every second as job `chorus`.
fn config(targets: &[SocketAddr]) -> String {
    let mut text = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n",
    );
    let _ = writeln!(text, "  - {ALERT_RULES}");
    let _ = write!(
        text,
        "scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets:\n"
    );
    for target in targets {
        let _ = writeln!(text, "          - {target}");
    }
    text
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` and waits until it is ready.
    pub fn start(targets: &[SocketAddr]) -> Self {
        let prometheus = require_tool("prometheus", "prometheus");
        let dir = ScratchDir::create("chorus-prometheus");
        std::fs::write(dir.path().join("prometheus.yml"), config(targets))
            .expect("write prometheus.yml");
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
            let mut child = Command::new(&prometheus)
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("prometheus starts");
            match wait_ready(&mut child, addr) {
                Ok(()) => return Self { addr, child, dir },
                Err(())
                    if dir
                        .tail("prometheus.log")
                        .contains("address already in use") =>
                {
                    continue;
                }
                Err(()) => {
                    stop_child(&mut child, nix::sys::signal::SIGTERM, TIMEOUT);
                    panic!(
                        "prometheus did not become ready; its log:\n{}",
                        dir.tail("prometheus.log")
                    );
                }
            }
        }
        panic!("prometheus found no free port in 5 tries")
    }

    /// `http://…<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `data` of an HTTP API call (`/api/v1/...`) with `params`; `None`
    /// when it did not answer with `"status":"success"` in time.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Option<Value> {
        let url = reqwest::Url::parse_with_params(&self.url(path), params).ok()?;
        let response = tokio::time::timeout(TIMEOUT, reqwest::get(url))
            .await
            .ok()?
            .ok()?;
        let body: Value = response.json().await.ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// The instant vector of `promql`: each series' labels and value.
    pub async fn query(&self, promql: &str) -> Option<Vec<(Value, f64)>> {
        let data = self.api("/api/v1/query", &[("query", promql)]).await?;
        data["result"]
            .as_array()?
            .iter()
            .map(|series| {
                let value = series["value"][1].as_str()?.parse().ok()?;
                Some((series["metric"].clone(), value))
            })
            .collect()
    }
}

/// Until `/-/ready` answers 200 or Prometheus exits. Prometheus replays its
/// (empty) storage first, which takes longer than a node's start.
fn wait_ready(child: &mut Child, addr: SocketAddr) -> Result<(), ()> {
    let deadline = Instant::now() + 3 * TIMEOUT;
    while Instant::now() < deadline {
        if probe_status(addr, "/-/ready") == Some(200) {
            return Ok(());
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(())
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        stop_child(&mut self.child, nix::sys::signal::SIGTERM, TIMEOUT);
    }
}
