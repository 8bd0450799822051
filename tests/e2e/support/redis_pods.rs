//! The Redis side of `k8s/overlays/redis-cluster` on one machine: six
//! `redis-server`s started with the StatefulSet's own arguments (read from
//! `redis-cluster.yaml`), not yet a cluster, as the pods are before the
//! create Job runs; and that Job's script, `create-cluster.sh`, run against
//! them.
//!
//! A pod has its own IP and a DNS name; here each node has its own loopback
//! address (`127.X.Y.1` … `.6`, one random block per fixture; Linux routes
//! all of 127.0.0.0/8 to the loopback interface) that stands for both, all
//! on one port with the cluster bus at port + 10000, as in the pods. [`RedisPods::restart_all_elsewhere`] stops every node and starts it
//! again on a new address with its volume (`nodes.conf`, AOF): what a
//! Kubernetes cluster does to the pods when all of them are rescheduled.
//!
//! Each node runs under a small `sh` that SIGKILLs it when its stdin (a pipe
//! from this process) closes, so the nodes die with the test however it ends.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::TIMEOUT;
use super::tools::{ScratchDir, require_tool};

/// The overlay's directory: the StatefulSet's arguments and the Job's script.
const OVERLAY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/overlays/redis-cluster");

/// As many nodes as the StatefulSet has pods.
pub const PODS: usize = 6;

/// How long the script may wait for the nodes, and again for the cluster to
/// settle (its `WAIT_SECS`); the whole run is bounded at twice this plus a
/// margin.
const SCRIPT_WAIT: Duration = Duration::from_secs(60);

/// Runs `redis-server …` ("$@") until its stdin closes, then SIGKILLs it;
/// exits when the server does. (An asynchronous list's stdin is /dev/null,
/// so the watcher reads the pipe through fd 3.)
const UNDER_LIFELINE: &str = r#"
exec 3<&0
"$@" 3<&- </dev/null >/dev/null 2>&1 &
server=$!
{ read -r _ <&3; kill -KILL "$server" 2>/dev/null; } &
exec 3<&- 0</dev/null
wait "$server"
"#;

/// One node: its volume and, while it runs, its process.
struct Pod {
    /// Holds `nodes.conf`, the AOF and the log, across restarts.
    dir: PathBuf,
    addr: Ipv4Addr,
    process: Option<(Child, ChildStdin)>,
}

/// Six Redis nodes configured like the overlay's pods; see the module
/// documentation. Dropping it kills them and removes their volumes.
pub struct RedisPods {
    pods: Vec<Pod>,
    port: u16,
    /// The StatefulSet container's command line, `$(…)` and paths still to
    /// fill.
    args: Vec<String>,
    dir: ScratchDir,
}

/// What `create-cluster.sh` did: its exit and everything it printed.
#[derive(Debug)]
pub struct ScriptRun {
    pub success: bool,
    pub output: String,
}

impl RedisPods {
    /// Starts the six nodes on a fresh block of loopback addresses and waits
    /// until each answers PING. They are cluster-enabled but know nobody.
    pub async fn start() -> Self {
        require_tool("redis-server", "redis-server");
        require_tool("redis-cli", "redis-tools");
        let args = statefulset_args();
        let mut last_log = String::new();
        // A port may be taken on one of the addresses: then another block
        // and port.
        for _ in 0..5 {
            let mut pods = Self {
                pods: Vec::new(),
                // Below 55535, so that the bus port (+10000) exists.
                port: 20000 + random_u16() % 10000,
                args: args.clone(),
                dir: ScratchDir::create("chorus-redis-pods"),
            };
            let block = random_block();
            let mut all = true;
            for i in 0..PODS {
                let pod_dir = pods.dir.path().join(format!("pod{i}"));
                std::fs::create_dir_all(&pod_dir).expect("a pod's volume");
                pods.pods.push(Pod {
                    dir: pod_dir,
                    addr: address(block, i),
                    process: None,
                });
                if !pods.launch(i).await {
                    last_log = pods.dir.tail(&format!("pod{i}/redis.log"));
                    all = false;
                    break;
                }
            }
            if all {
                return pods;
            }
        }
        panic!(
            "redis-server did not start with the StatefulSet's arguments; the last log:\n{last_log}"
        );
    }

    /// The nodes as the Job's `REDIS_CLUSTER_NODES` names them: `host:port`.
    pub fn nodes(&self) -> Vec<String> {
        self.pods
            .iter()
            .map(|pod| format!("{}:{}", pod.addr, self.port))
            .collect()
    }

    /// The nodes as seeds, the value of `REDIS_CLUSTER_URLS`.
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes()
            .iter()
            .map(|node| format!("redis://{node}"))
            .collect()
    }

    /// Runs `create-cluster.sh` with `REDIS_CLUSTER_NODES` naming the nodes,
    /// as the Job does, bounded.
    pub async fn run_create_job(&self) -> ScriptRun {
        let mut command = Command::new("sh");
        command
            .arg(Path::new(OVERLAY).join("create-cluster.sh"))
            .env("REDIS_CLUSTER_NODES", self.nodes().join(" "))
            .env("WAIT_SECS", SCRIPT_WAIT.as_secs().to_string());
        let output = run_bounded(command, 2 * SCRIPT_WAIT + TIMEOUT).await;
        ScriptRun {
            success: output.status.success(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    /// `CLUSTER INFO` field `name` of node `i`.
    pub async fn info_field(&self, i: usize, name: &str) -> String {
        let info: String = self.query(i, redis::cmd("CLUSTER").arg("INFO")).await;
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}:")))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Node `i`'s view of the cluster, one entry per node it knows, sorted:
    /// (node id, "master" or "slave", its primary's id or "-", its slots).
    pub async fn view(&self, i: usize) -> Vec<(String, String, String, String)> {
        let nodes: String = self.query(i, redis::cmd("CLUSTER").arg("NODES")).await;
        let mut view: Vec<_> = nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let role = if fields.get(2)?.contains("master") {
                    "master"
                } else {
                    "slave"
                };
                Some((
                    fields[0].to_owned(),
                    role.to_owned(),
                    fields.get(3)?.to_string(),
                    fields.get(8..).unwrap_or_default().join(" "),
                ))
            })
            .collect();
        view.sort();
        view
    }

    /// Stops every node (SHUTDOWN: the AOF is flushed) and starts each again
    /// with its volume on a new address, as pods rescheduled all at once
    /// come back with new IPs.
    pub async fn restart_all_elsewhere(&mut self) {
        for i in 0..PODS {
            self.stop(i).await;
        }
        for _ in 0..5 {
            let block = random_block();
            let mut all = true;
            for i in 0..PODS {
                self.pods[i].addr = address(block, i);
                all &= self.launch(i).await;
            }
            if all {
                return;
            }
            for i in 0..PODS {
                self.stop(i).await;
            }
        }
        panic!("the nodes did not start again on new addresses");
    }

    async fn query<T: redis::FromRedisValue>(&self, i: usize, command: &redis::Cmd) -> T {
        let url = format!("redis://{}:{}", self.pods[i].addr, self.port);
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let mut connection = redis::Client::open(url.as_str())
            .expect("a node URL")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        command
            .query_async(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    /// Starts node `i` with the StatefulSet's arguments on its address and
    /// waits until it answers; false if it exited (its port was taken).
    async fn launch(&mut self, i: usize) -> bool {
        let pod = &self.pods[i];
        let addr = pod.addr.to_string();
        let dir = pod.dir.to_str().expect("a UTF-8 temp path").to_owned();
        let args: Vec<String> = self
            .args
            .iter()
            .map(|arg| {
                arg.replace("$(POD_IP)", &addr)
                    // The pod's DNS name: here its address stands for it.
                    .replace("$(POD_NAME).chorus-redis-cluster", &addr)
                    .replace("/data", &dir)
            })
            .collect();
        let port_at = args
            .iter()
            .position(|a| a == "--port")
            .expect("the StatefulSet sets --port")
            + 1;
        let mut args = args;
        args[port_at] = self.port.to_string();
        let mut child = Command::new("sh")
            .args(["-c", UNDER_LIFELINE, "sh"])
            .args(&args)
            .args(["--bind", &addr, "--logfile"])
            .arg(pod.dir.join("redis.log"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        let lifeline = child.stdin.take().expect("piped stdin");
        let deadline = Instant::now() + TIMEOUT;
        let node = format!("{addr}:{}", self.port);
        while Instant::now() < deadline {
            if answers_ping(&node).await {
                self.pods[i].process = Some((child, lifeline));
                return true;
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(lifeline);
        let _ = child.wait();
        false
    }

    /// SHUTDOWN node `i` (bounded), then closes its lifeline.
    async fn stop(&mut self, i: usize) {
        let Some((mut child, lifeline)) = self.pods[i].process.take() else {
            return;
        };
        let node = format!("{}:{}", self.pods[i].addr, self.port);
        let (host, port) = node.split_once(':').expect("host:port");
        let mut shutdown = Command::new("redis-cli");
        shutdown.args(["-h", host, "-p", port, "shutdown"]);
        let _ = run_bounded(shutdown, TIMEOUT).await;
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(lifeline);
        let _ = child.wait();
    }
}

impl Drop for RedisPods {
    fn drop(&mut self) {
        for pod in &mut self.pods {
            if let Some((mut child, mut lifeline)) = pod.process.take() {
                let _ = lifeline.write_all(b"\n");
                drop(lifeline);
                let _ = child.wait();
            }
        }
    }
}

/// The `args` of the StatefulSet's container in `redis-cluster.yaml`
/// (`redis-server` first), read as the flat YAML list it is (one `- value`
/// per line), quotes removed.
fn statefulset_args() -> Vec<String> {
    let manifest = std::fs::read_to_string(Path::new(OVERLAY).join("redis-cluster.yaml"))
        .expect("k8s/overlays/redis-cluster/redis-cluster.yaml");
    let mut lines = manifest
        .lines()
        .skip_while(|line| line.trim() != "args:")
        .skip(1);
    let mut args = Vec::new();
    for line in lines.by_ref() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(value) = line.strip_prefix("- ") else {
            break;
        };
        args.push(value.trim_matches('"').to_owned());
    }
    assert!(
        args.first().map(String::as_str) == Some("redis-server")
            && args.iter().any(|a| a == "--cluster-enabled"),
        "the StatefulSet's args in redis-cluster.yaml: {args:?}"
    );
    args
}

/// Address `i` of a block: `127.X.Y.(i + 1)`.
fn address(block: (u8, u8), i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        block.0,
        block.1,
        u8::try_from(i + 1).expect("a few pods"),
    )
}

/// A random `127.X.Y.0/24` other than 127.0.0.0/24, where everything else
/// listens.
fn random_block() -> (u8, u8) {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    (bytes[0].max(1), bytes[1])
}

fn random_u16() -> u16 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u16::from_le_bytes([bytes[2], bytes[3]])
}

async fn answers_ping(node: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ping = async {
        let mut stream = tokio::net::TcpStream::connect(node).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        std::io::Result::Ok(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), ping).await,
        Ok(Ok(true))
    )
}

/// Runs `command` to its end off the runtime's threads, killed after
/// `limit` (then the output says so).
pub async fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    tokio::task::spawn_blocking(move || {
        // The pipes are read on their own threads, so a chatty child never
        // blocks on a full pipe while this thread waits.
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let out = std::thread::spawn(move || read_all(&mut stdout));
        let err = std::thread::spawn(move || read_all(&mut stderr));
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = err.join().expect("stderr reader");
        if Instant::now() >= deadline {
            stderr.extend_from_slice(format!("\n(killed after {limit:?})").as_bytes());
        }
        Output {
            status,
            stdout: out.join().expect("stdout reader"),
            stderr,
        }
    })
    .await
    .expect("the command's task")
}

fn read_all(reader: &mut impl std::io::Read) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = reader.read_to_end(&mut bytes);
    bytes
}
