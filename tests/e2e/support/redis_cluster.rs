//! A real Redis Cluster of 3 primaries and 3 replicas on free ports, owned by
//! the test: seed URLs in the format of `REDIS_CLUSTER_URLS`, who owns a key,
//! and the faults the cluster tests need (SIGKILL a primary and wait for the
//! real failover, restart the killed node as a replica, migrate one slot to
//! another primary while clients use it). Like [`super::RedisServer`] it
//! never touches 6379, keeps nothing on disk but each node's cluster config
//! and log, and dies with its owner.
//!
//! # Use
//!
//! A cluster is expensive (six processes, a second to form), so tests share
//! one, and keep apart by using distinct keys and channels ([`super::unique`],
//! a unique key prefix for chorus nodes):
//!
//! ```ignore
//! static CLUSTER: SharedRedisCluster = SharedRedisCluster::new();
//!
//! #[tokio::test]
//! async fn something() {
//!     let cluster = CLUSTER.get().await; // attached or started by the first test that asks
//!     let mut redis = cluster.connection().await;
//!     let key = unique("key");
//!     let owner = cluster.primary_of(&key).await;
//! }
//! ```
//!
//! cargo-nextest runs every test in its own process, so a cluster per
//! `static` would form once per test (about 2.5 s each). `scripts/test.sh`
//! therefore starts one cluster for the whole run with
//! `scripts/redis-cluster.sh` and names it in [`SHARED_URLS_VAR`] (and its
//! directory, for the nodes' logs, in [`SHARED_DIR_VAR`]);
//! [`SharedRedisCluster::get`] attaches to it. Without the variable (a plain
//! `cargo nextest run`, `cargo test`) the first test that asks starts a
//! cluster for its process, as before.
//!
//! A shared cluster is shared by tests running at the same time, so they
//! never change its shape for others:
//! - A test that kills, restarts or stops a node owns its cluster
//!   (`RedisCluster::start()`): a failover makes the whole cluster refuse
//!   commands for seconds (`cluster-require-full-coverage` keeps its
//!   default, as in production), and a stopped primary stalls every client
//!   of its shard. A shared cluster refuses [`RedisCluster::kill`] and
//!   [`RedisCluster::restart`].
//! - A test that migrates a slot puts its keys and channels under a tag from
//!   [`RedisCluster::unused_tag`]: a slot that held no key and no shard
//!   channel of anyone when the test picked it. The migration then moves
//!   nothing of another test's: no multi-key script of theirs meets
//!   `TRYAGAIN`, and no subscriber of theirs gets the `SUNSUBSCRIBE` that
//!   ends its sharded subscriber's life. Every other slot keeps its owner.
//!
//! The fixture holds no connection and no task, so tests running on
//! different tokio runtimes can share it: every method opens its
//! connections on the caller's runtime.
//!
//! # Why it spawns `redis-server` itself instead of calling `scripts/redis-cluster.sh`
//!
//! The faults act on one node's process: its pid to SIGKILL, the same port,
//! bus port and `nodes.conf` to restart it with. And a shared cluster lives in
//! a `static`, which is never dropped, so its nodes must die with the test
//! process however it ends (nextest SIGKILLs a test that overruns). Each node
//! therefore runs under a small `sh` parent that SIGKILLs it when a pipe from
//! this process closes; the kernel closes it when the process exits, for any
//! reason. The script daemonizes its nodes for people and for
//! `scripts/test.sh`'s shared cluster (which nobody kills), and is tested
//! apart (`tests/e2e/redis_cluster.rs`). The cluster is still formed by
//! `redis-cli --cluster create`, as the script does.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, PipeReader, PipeWriter};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::TIMEOUT;
use super::tools::free_port;

/// The environment variable naming a cluster started outside the test
/// process (by `scripts/test.sh`) that [`SharedRedisCluster::get`] attaches
/// to: its seeds, comma-separated, as `REDIS_CLUSTER_URLS`.
pub const SHARED_URLS_VAR: &str = "CHORUS_TEST_REDIS_CLUSTER_URLS";

/// The directory `scripts/redis-cluster.sh start` keeps that cluster in
/// (optional): failure messages then show the nodes' logs.
pub const SHARED_DIR_VAR: &str = "CHORUS_TEST_REDIS_CLUSTER_DIR";

/// `cluster-node-timeout`: a primary that answers nobody for this long is
/// failed over. Low so a failover takes seconds (about this plus one), not
/// high enough to be hit by a node that is merely slow on a busy machine.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(2000);

/// How long a failover may take, from the SIGKILL until every live node is
/// `cluster_state:ok` and agrees on the promoted replica: usually about
/// [`NODE_TIMEOUT`] + 1 s; the margin is for a machine busy with other tests.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long forming the cluster may take (it takes about 1.5 s).
const FORM_TIMEOUT: Duration = Duration::from_secs(20);

/// 3 primaries, each with one replica.
const PRIMARIES: usize = 3;
const NODES: usize = 2 * PRIMARIES;

/// Every hash slot of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// Between two looks at the cluster's state: Redis pushes no event when it
/// changes, so the waits poll (each bounded).
const POLL: Duration = Duration::from_millis(50);

/// Keys moved per `MIGRATE` while migrating a slot.
const MIGRATE_BATCH: usize = 100;

/// The parent of one node: starts `redis-server` in the background, prints
/// its pid, and SIGKILLs it when its copy of the lifeline (fd 3, this
/// process's pipe) reaches end of file. It exits when the server does, so a
/// server killed by a test is reaped at once and its pid never reused under
/// the watcher's feet.
const NODE_PARENT: &str = r#"
exec 3<&0
"$@" 3<&- </dev/null >/dev/null 2>&1 &
server=$!
{ read -r _ <&3; kill -KILL "$server" 2>/dev/null; } &
watcher=$!
exec 3<&- 0</dev/null
echo "$server"
wait "$server"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// Removes the cluster's directory once the lifeline closes (retrying while
/// the nodes are still being killed and may write a last line).
const JANITOR: &str = r#"
read -r _
for _ in 1 2 3 4 5 6 7 8 9 10; do
  rm -rf "$1" 2>/dev/null
  [ -e "$1" ] || exit 0
  sleep 0.2
done
"#;

/// What identifies a node for its whole life: restarting it reuses all three.
struct NodeSpec {
    port: u16,
    /// `cluster-port`: explicit, because the default (port + 10000) may not
    /// exist for a port picked among the ephemeral ones.
    bus_port: u16,
    /// Holds its `nodes.conf` (its identity in the cluster) and its log.
    dir: PathBuf,
}

/// A running node.
struct NodeProcess {
    /// The `sh` of [`NODE_PARENT`].
    parent: Child,
    /// The `redis-server` itself, for SIGKILL.
    server: nix::unistd::Pid,
}

/// The state of a Redis Cluster as every live node sees it (see
/// [`RedisCluster::topology`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Ordered by port.
    pub nodes: Vec<ClusterNode>,
}

/// One node of a [`Topology`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its client port, which names it in the fixture's methods.
    pub port: u16,
    /// Its cluster node id (40 hex characters).
    pub id: String,
    /// `None` for a primary; the port of its primary for a replica.
    pub replica_of: Option<u16>,
    /// The slots it serves (primaries only).
    pub slots: Vec<RangeInclusive<u16>>,
}

impl Topology {
    /// The ports of the primaries that serve slots.
    pub fn primaries(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.replica_of.is_none() && !n.slots.is_empty())
            .map(|n| n.port)
            .collect()
    }

    /// The ports of the replicas of `primary`.
    pub fn replicas_of(&self, primary: u16) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.replica_of == Some(primary))
            .map(|n| n.port)
            .collect()
    }

    /// The port of the primary serving `slot`.
    pub fn primary_of_slot(&self, slot: u16) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.slots.iter().any(|range| range.contains(&slot)))
            .unwrap_or_else(|| panic!("no primary serves slot {slot} in {self:?}"))
            .port
    }

    fn node(&self, port: u16) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no live node on {port} in {self:?}"))
    }
}

/// What [`RedisCluster::kill_primary`] did.
#[derive(Clone, Copy, Debug)]
pub struct Failover {
    /// The port of the primary that was SIGKILLed (now down).
    pub killed: u16,
    /// The port of its replica, now the primary of its slots.
    pub promoted: u16,
    /// From the SIGKILL until the cluster was ok again, everywhere.
    pub took: Duration,
}

/// A Redis Cluster of [`NODES`] local nodes; see the module documentation.
/// Dropping it SIGKILLs every node and removes its directory.
pub struct RedisCluster {
    /// One temp directory with a folder per node.
    dir: PathBuf,
    nodes: Vec<NodeSpec>,
    /// The live nodes by port; a killed node is absent until restarted.
    /// A std mutex, never held across an `.await`.
    running: Mutex<BTreeMap<u16, NodeProcess>>,
    /// The write end of the lifeline: while it is open, the nodes live.
    /// Dropped first on drop; closed by the kernel if this process dies.
    lifeline: Option<PipeWriter>,
    /// The read end, kept to hand a copy to every node started later.
    lifeline_reader: PipeReader,
    /// The `sh` of [`JANITOR`].
    janitor: Option<Child>,
    /// Started outside this process ([`RedisCluster::attach`]): its nodes
    /// are not this process's to kill, restart or remove.
    external: bool,
    /// Shared with other tests (a [`SharedRedisCluster`]): nothing kills or
    /// restarts its nodes.
    shared: bool,
}

impl RedisCluster {
    /// Starts six nodes on free ports, forms the cluster with
    /// `redis-cli --cluster create --cluster-replicas 1`, and waits until
    /// every node is `cluster_state:ok`, all slots are served, all nodes
    /// agree on who serves them and every replica has synced with its
    /// primary (a replica that never synced would refuse to take over).
    pub async fn start() -> Self {
        super::tools::require_tool("redis-server", "redis-server");
        super::tools::require_tool("redis-cli", "redis-tools");
        let dir = std::env::temp_dir().join(super::unique("chorus-redis-cluster"));
        std::fs::create_dir_all(&dir).expect("create the cluster's directory");
        let (lifeline_reader, lifeline) = std::io::pipe().expect("a pipe");
        let janitor = Command::new("sh")
            .args(["-c", JANITOR, "sh"])
            .arg(&dir)
            .stdin(lifeline_reader.try_clone().expect("dup the pipe"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        let mut cluster = Self {
            dir,
            nodes: Vec::with_capacity(NODES),
            running: Mutex::new(BTreeMap::new()),
            lifeline: Some(lifeline),
            lifeline_reader,
            janitor: Some(janitor),
            external: false,
            shared: false,
        };
        for _ in 0..NODES {
            cluster.add_node().await;
        }
        cluster.create().await;
        let topology = cluster
            .wait_settled("the cluster to form", FORM_TIMEOUT)
            .await;
        let primaries = topology.primaries();
        assert_eq!(primaries.len(), PRIMARIES, "primaries in {topology:?}");
        for primary in primaries {
            assert_eq!(
                topology.replicas_of(primary).len(),
                1,
                "one replica per primary in {topology:?}"
            );
        }
        cluster
    }

    /// The cluster started outside this process whose seeds are `urls`
    /// (`redis://127.0.0.1:P,…`, as `scripts/redis-cluster.sh` prints them),
    /// once it is settled with three primaries each with a replica; `dir` is
    /// the script's directory, if known, for the nodes' logs. This process
    /// never kills, restarts or removes it.
    pub async fn attach(urls: &str, dir: Option<PathBuf>) -> Self {
        let nodes: Vec<NodeSpec> = urls
            .split(',')
            .map(|seed| {
                let port = seed
                    .trim()
                    .strip_prefix("redis://127.0.0.1:")
                    .and_then(|port| port.parse().ok())
                    .unwrap_or_else(|| panic!("{SHARED_URLS_VAR}: not a local seed: {seed:?}"));
                NodeSpec {
                    port,
                    bus_port: 0,
                    dir: dir.clone().unwrap_or_default().join(port.to_string()),
                }
            })
            .collect();
        assert_eq!(
            nodes.len(),
            NODES,
            "{SHARED_URLS_VAR}: {NODES} seeds: {urls}"
        );
        let (lifeline_reader, lifeline) = std::io::pipe().expect("a pipe");
        let cluster = Self {
            dir: dir.unwrap_or_default(),
            nodes,
            running: Mutex::new(BTreeMap::new()),
            lifeline: Some(lifeline),
            lifeline_reader,
            janitor: None,
            external: true,
            shared: true,
        };
        let topology = cluster
            .wait_settled("the shared cluster to be settled", TIMEOUT)
            .await;
        let primaries = topology.primaries();
        assert_eq!(primaries.len(), PRIMARIES, "primaries in {topology:?}");
        for primary in primaries {
            assert_eq!(
                topology.replicas_of(primary).len(),
                1,
                "one replica per primary in {topology:?}"
            );
        }
        cluster
    }

    /// Fails on a shared cluster: `what` would change its shape under the
    /// other tests using it.
    fn assert_owned(&self, what: &str) {
        assert!(
            !self.shared,
            "{what} on a shared cluster: a test that changes the cluster's \
             shape owns its cluster (RedisCluster::start())"
        );
    }

    /// Starts one more node on free ports (retrying on a collision).
    async fn add_node(&mut self) {
        for _ in 0..5 {
            let port = free_port();
            let spec = NodeSpec {
                port,
                bus_port: free_port(),
                dir: self.dir.join(port.to_string()),
            };
            std::fs::create_dir_all(&spec.dir).expect("create a node's directory");
            if let Some(process) = self.launch(&spec).await {
                self.running.get_mut().expect("lock").insert(port, process);
                self.nodes.push(spec);
                return;
            }
        }
        panic!(
            "redis-server did not start in cluster mode (see the logs in {:?})",
            self.dir
        );
    }

    /// Spawns `spec`'s node and waits until it answers PING; `None` if it
    /// exited (a port was taken) or never answered.
    async fn launch(&self, spec: &NodeSpec) -> Option<NodeProcess> {
        let lifeline = self.lifeline_reader.try_clone().expect("dup the pipe");
        let mut parent = Command::new("sh")
            .args(["-c", NODE_PARENT, "sh", "redis-server"])
            .args(["--port", &spec.port.to_string()])
            .args(["--cluster-port", &spec.bus_port.to_string()])
            .args(["--bind", "127.0.0.1", "--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(spec.dir.join("nodes.conf"))
            .args([
                "--cluster-node-timeout",
                &NODE_TIMEOUT.as_millis().to_string(),
            ])
            // A replica may take over however long it was cut off from its
            // primary (a loaded machine must not make a failover impossible).
            .args(["--cluster-replica-validity-factor", "0"])
            // A replica syncs at once, not after 5 s of waiting for others.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&spec.dir)
            .arg("--logfile")
            .arg(spec.dir.join("redis.log"))
            .stdin(lifeline)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        let mut line = String::new();
        BufReader::new(parent.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the node's pid");
        let server = nix::unistd::Pid::from_raw(line.trim().parse().expect("a pid"));
        let mut process = NodeProcess { parent, server };
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if answers_ping(spec.port).await {
                return Some(process);
            }
            if matches!(process.parent.try_wait(), Ok(Some(_))) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process.kill();
        None
    }

    /// `redis-cli --cluster create` over every node: slots split in three,
    /// one replica per primary.
    async fn create(&self) {
        let mut command = Command::new("redis-cli");
        command.arg("--cluster").arg("create");
        command.args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        command.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("redis-cli task")
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The seed URLs, one per node (`redis://127.0.0.1:P`).
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| node_url(n.port)).collect()
    }

    /// The seeds comma-separated: the value of `REDIS_CLUSTER_URLS`.
    pub fn urls(&self) -> String {
        self.seed_urls().join(",")
    }

    /// A cluster client's builder on the seeds with the tests' timeouts;
    /// add a push sender and RESP3 for pub/sub.
    pub fn client_builder(&self) -> ClusterClientBuilder {
        ClusterClientBuilder::new(self.seed_urls())
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
    }

    /// A cluster connection, as a client of the cluster would use.
    pub async fn connection(&self) -> ClusterConnection {
        let client = self.client_builder().build().expect("cluster client");
        tokio::time::timeout(TIMEOUT, client.get_async_connection())
            .await
            .expect("the cluster connects in time")
            .expect("the cluster connects")
    }

    /// A plain connection to the node on `port` alone (no redirections
    /// followed): to look at what one node holds or answers.
    pub async fn node_connection(&self, port: u16) -> MultiplexedConnection {
        connect(port)
            .await
            .unwrap_or_else(|e| panic!("connect to the node on {port}: {e}"))
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub async fn slot_of(&self, key: &str) -> u16 {
        let mut redis = self.node_connection(self.any_live_port()).await;
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut redis)
            .await
            .expect("CLUSTER KEYSLOT")
    }

    /// The port of the primary serving `key`, as every live node sees it.
    pub async fn primary_of(&self, key: &str) -> u16 {
        let slot = self.slot_of(key).await;
        self.topology().await.primary_of_slot(slot)
    }

    /// The cluster as every live node sees it, once they all agree and all
    /// say `cluster_state:ok` (waiting for that, within [`TIMEOUT`]).
    pub async fn topology(&self) -> Topology {
        self.wait_settled("the live nodes to agree", TIMEOUT).await
    }

    /// The port of every node now running (of an attached cluster: every
    /// node, which nobody kills).
    pub fn live_ports(&self) -> Vec<u16> {
        if self.external {
            let mut ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
            ports.sort_unstable();
            return ports;
        }
        self.running.lock().expect("lock").keys().copied().collect()
    }

    fn any_live_port(&self) -> u16 {
        *self.live_ports().first().expect("a live node")
    }

    /// A fresh [`super::unique`] name whose hash slot holds no key and no
    /// shard channel now: the tag for the keys and channels of a test that
    /// migrates their slot, so that the migration moves nothing of another
    /// test's sharing the cluster (see the module documentation).
    pub async fn unused_tag(&self, prefix: &str) -> String {
        for _ in 0..100 {
            let tag = super::unique(prefix);
            let slot = hash_slot(&tag);
            let owner = self.topology().await.primary_of_slot(slot);
            let mut redis = self.node_connection(owner).await;
            let keys: u64 = redis::cmd("CLUSTER")
                .arg("COUNTKEYSINSLOT")
                .arg(slot)
                .query_async(&mut redis)
                .await
                .expect("CLUSTER COUNTKEYSINSLOT");
            let channels: Vec<String> = redis::cmd("PUBSUB")
                .arg("SHARDCHANNELS")
                .query_async(&mut redis)
                .await
                .expect("PUBSUB SHARDCHANNELS");
            if keys == 0 && channels.iter().all(|c| hash_slot(c) != slot) {
                return tag;
            }
        }
        panic!("no unused slot in 100 tries: is the cluster full of keys?");
    }

    /// SIGKILLs the primary serving `key`; see [`RedisCluster::kill_primary`].
    pub async fn kill_primary_of(&self, key: &str) -> Failover {
        let primary = self.primary_of(key).await;
        self.kill_primary(primary).await
    }

    /// SIGKILLs the primary on `port` and waits (within
    /// [`FAILOVER_TIMEOUT`]) for the cluster's own failover: its replica
    /// elected primary of its slots, and every live node `cluster_state:ok`
    /// and agreeing on it. No `CLUSTER FAILOVER`: the replica takes over
    /// because the primary stopped answering. Writes not yet replicated are
    /// lost, as in production; [`RedisCluster::wait_replicated`] first to
    /// keep them.
    pub async fn kill_primary(&self, port: u16) -> Failover {
        self.assert_owned("killing a primary");
        let before = self.topology().await;
        assert!(
            before.primaries().contains(&port),
            "{port} is not a primary in {before:?}"
        );
        let replicas = before.replicas_of(port);
        assert_eq!(
            replicas.len(),
            1,
            "the primary on {port} needs exactly one replica to fail over to: {before:?}"
        );
        let slots = before.node(port).slots.clone();
        let started = Instant::now();
        self.kill(port).await;
        let after = self
            .wait_settled(
                &format!("the replica of {port} to take over"),
                FAILOVER_TIMEOUT,
            )
            .await;
        let promoted = after.primary_of_slot(*slots[0].start());
        assert_eq!(
            promoted, replicas[0],
            "the replica of {port} serves its slots: {after:?}"
        );
        assert_eq!(after.node(promoted).slots, slots, "{after:?}");
        Failover {
            killed: port,
            promoted,
            took: started.elapsed(),
        }
    }

    /// SIGKILLs the node on `port` (any role) and reaps it; no waiting for
    /// the cluster to notice.
    pub async fn kill(&self, port: u16) {
        self.assert_owned("killing a node");
        let process = self
            .running
            .lock()
            .expect("lock")
            .remove(&port)
            .unwrap_or_else(|| panic!("no live node on {port}"));
        let _ = nix::sys::signal::kill(process.server, nix::sys::signal::SIGKILL);
        process.reap().await;
    }

    /// Starts the killed node on `port` again, with its old ports and
    /// `nodes.conf`, and waits until it has rejoined: a former primary whose
    /// replica took over comes back as that replica's replica, synced.
    pub async fn restart(&self, port: u16) {
        self.assert_owned("restarting a node");
        let spec = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on {port}"));
        assert!(
            !self.running.lock().expect("lock").contains_key(&port),
            "the node on {port} is running"
        );
        let deadline = Instant::now() + TIMEOUT;
        // Its old sockets may linger a moment; retry until the ports are ours.
        let process = loop {
            if let Some(process) = self.launch(spec).await {
                break process;
            }
            assert!(
                Instant::now() < deadline,
                "the node on {port} did not restart:\n{}",
                self.log_tail(port)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.running.lock().expect("lock").insert(port, process);
        self.wait_settled(&format!("the node on {port} to rejoin"), TIMEOUT)
            .await;
    }

    /// Moves `slot` from the primary serving it to the primary on `to`, by
    /// hand as `redis-cli --cluster reshard` does, and correct while clients
    /// use the slot: `SETSLOT IMPORTING` on `to`, `SETSLOT MIGRATING` on the
    /// source, `MIGRATE … KEYS` in batches until the source holds none of its
    /// keys (new keys are meanwhile created on `to`, through `ASK`), then
    /// `SETSLOT NODE` on `to`, the source and the other primaries. Waits
    /// until every live node agrees that `to` serves it.
    pub async fn migrate_slot(&self, slot: u16, to: u16) {
        let before = self.topology().await;
        let from = before.primary_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        assert!(
            before.primaries().contains(&to),
            "{to} is not a primary: {before:?}"
        );
        let to_id = before.node(to).id.clone();
        let mut source = self.node_connection(from).await;
        let mut target = self.node_connection(to).await;
        setslot(&mut target, slot, "IMPORTING", &before.node(from).id).await;
        setslot(&mut source, slot, "MIGRATING", &to_id).await;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(MIGRATE_BATCH)
                .query_async(&mut source)
                .await
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot} still has keys on {from} after {TIMEOUT:?}"
            );
            // OK, or NOKEY when clients deleted them meanwhile.
            let _: redis::Value = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(TIMEOUT.as_millis() as u64)
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut source)
                .await
                .expect("MIGRATE");
        }
        // The target first, so that it owns the slot before the source
        // redirects there for good.
        setslot(&mut target, slot, "NODE", &to_id).await;
        setslot(&mut source, slot, "NODE", &to_id).await;
        for other in before.primaries() {
            if other != from && other != to {
                setslot(&mut self.node_connection(other).await, slot, "NODE", &to_id).await;
            }
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let state = match self.settled().await {
                Ok(topology) if topology.primary_of_slot(slot) == to => return,
                Ok(topology) => format!("{topology:?}"),
                Err(reason) => reason,
            };
            assert!(
                Instant::now() < deadline,
                "the nodes did not agree within {TIMEOUT:?} that {to} serves slot {slot}: {state}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every live replica has received every write its primary
    /// had taken when this was called (replication is asynchronous).
    pub async fn wait_replicated(&self) {
        let topology = self.topology().await;
        for primary in topology.primaries() {
            let offset = replication_field(
                &mut self.node_connection(primary).await,
                "master_repl_offset",
            )
            .await
            .expect("the primary's offset");
            for replica in topology.replicas_of(primary) {
                let mut redis = self.node_connection(replica).await;
                let deadline = Instant::now() + TIMEOUT;
                loop {
                    let seen = replication_field(&mut redis, "slave_repl_offset").await;
                    if seen.is_some_and(|seen| seen >= offset) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{replica} did not catch up with {primary} (offset {offset}) within {TIMEOUT:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Polls until the cluster has settled, within `limit`; fails with the
    /// last reason and the nodes' logs.
    async fn wait_settled(&self, what: &str, limit: Duration) -> Topology {
        let deadline = Instant::now() + limit;
        loop {
            let reason = match self.settled().await {
                Ok(topology) => return topology,
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("--- {} ---\n{}", n.port, self.log_tail(n.port)))
                    .collect();
                panic!(
                    "timed out after {limit:?} waiting for {what}: {reason}\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One look at every live node: `Ok` when each says `cluster_state:ok`
    /// with all slots served, each sees exactly the live nodes as alive with
    /// the same roles and slots as the others do, and each live replica's
    /// link to its primary is up. `Err` says what is not so yet.
    async fn settled(&self) -> Result<Topology, String> {
        let live = self.live_ports();
        let mut agreed: Option<(u16, Vec<ClusterNode>)> = None;
        for &port in &live {
            let mut redis = connect(port)
                .await
                .map_err(|e| format!("{port} does not answer: {e}"))?;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut redis)
                .await
                .map_err(|e| format!("CLUSTER INFO on {port}: {e}"))?;
            for wanted in ["cluster_state:ok", &format!("cluster_slots_ok:{SLOTS}")] {
                if !info.lines().any(|line| line.trim() == wanted) {
                    return Err(format!("{port} does not say {wanted}"));
                }
            }
            let text: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut redis)
                .await
                .map_err(|e| format!("CLUSTER NODES on {port}: {e}"))?;
            let view = parse_nodes(&text).map_err(|e| format!("CLUSTER NODES on {port}: {e}"))?;
            let seen: Vec<u16> = view.iter().map(|n| n.port).collect();
            if seen != live {
                return Err(format!("{port} sees {seen:?} alive, not {live:?}"));
            }
            if view
                .iter()
                .any(|n| n.port == port && n.replica_of.is_some())
                && replication_status(&mut redis).await.as_deref() != Some("up")
            {
                return Err(format!("the replica {port} has not synced"));
            }
            match &agreed {
                None => agreed = Some((port, view)),
                Some((first, first_view)) if *first_view != view => {
                    return Err(format!(
                        "{port} and {first} disagree: {view:?} / {first_view:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        let (_, nodes) = agreed.ok_or("no live node")?;
        Ok(Topology { nodes })
    }

    /// The last lines of a node's log, for failure messages.
    fn log_tail(&self, port: u16) -> String {
        let log = self.dir.join(port.to_string()).join("redis.log");
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// The cluster's directory (a folder per node: `nodes.conf`, `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // Every node's parent SIGKILLs its server on end of file.
        drop(self.lifeline.take());
        let running = std::mem::take(self.running.get_mut().expect("lock"));
        for (_, mut process) in running {
            process.wait_blocking();
        }
        if !self.external {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if let Some(mut janitor) = self.janitor.take() {
            let _ = janitor.wait();
        }
    }
}

impl NodeProcess {
    /// SIGKILLs the server and reaps its parent, from a sync context.
    fn kill(&mut self) {
        let _ = nix::sys::signal::kill(self.server, nix::sys::signal::SIGKILL);
        self.wait_blocking();
    }

    /// Waits for the parent to exit (it does as soon as its server has),
    /// killing both if it takes longer than [`TIMEOUT`].
    fn wait_blocking(&mut self) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while std::time::Instant::now() < deadline {
            if !matches!(self.parent.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = nix::sys::signal::kill(self.server, nix::sys::signal::SIGKILL);
        let _ = self.parent.kill();
        let _ = self.parent.wait();
    }

    /// Waits for the parent to exit after its server was killed.
    async fn reap(mut self) {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.parent.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.wait_blocking();
    }
}

/// The Redis Cluster of a test module: the one `scripts/test.sh` shares
/// between test processes ([`SHARED_URLS_VAR`]), else one started by the
/// module's first test that asks; see the module documentation.
pub struct SharedRedisCluster(OnceCell<RedisCluster>);

impl SharedRedisCluster {
    /// Nothing started yet: for a `static`.
    pub const fn new() -> Self {
        Self(OnceCell::const_new())
    }

    /// The module's cluster, attached or started on first use. Never
    /// dropped: the nodes of a started one die when the test process exits.
    pub async fn get(&'static self) -> &'static RedisCluster {
        self.0
            .get_or_init(|| async {
                match std::env::var(SHARED_URLS_VAR) {
                    Ok(urls) if !urls.trim().is_empty() => {
                        let dir = std::env::var_os(SHARED_DIR_VAR).map(PathBuf::from);
                        RedisCluster::attach(&urls, dir).await
                    }
                    _ => {
                        let mut cluster = RedisCluster::start().await;
                        cluster.shared = true;
                        cluster
                    }
                }
            })
            .await
    }
}

/// The hash slot of a key or shard channel, as Redis computes it: CRC16
/// (XMODEM) of its hash tag (the text between the first `{` and the next
/// `}`, if not empty), else of the whole name, modulo [`SLOTS`].
pub fn hash_slot(name: &str) -> u16 {
    let name = name.as_bytes();
    let tag = name.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &name[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(name)) % SLOTS
}

/// `redis://127.0.0.1:<port>`, the form of a `REDIS_CLUSTER_URLS` seed.
pub fn node_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

async fn connect(port: u16) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    redis::Client::open(node_url(port))?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn answers_ping(port: u16) -> bool {
    let ping = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
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

async fn setslot(redis: &mut MultiplexedConnection, slot: u16, state: &str, node_id: &str) {
    let () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(state)
        .arg(node_id)
        .query_async(redis)
        .await
        .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {state} {node_id}: {e}"));
}

/// A numeric field of `INFO replication`.
async fn replication_field(redis: &mut MultiplexedConnection, field: &str) -> Option<u64> {
    let info = replication_info(redis).await?;
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
}

/// `master_link_status` of a replica.
async fn replication_status(redis: &mut MultiplexedConnection) -> Option<String> {
    let info = replication_info(redis).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("master_link_status:"))
        .map(|status| status.trim().to_owned())
}

async fn replication_info(redis: &mut MultiplexedConnection) -> Option<String> {
    redis::cmd("INFO")
        .arg("replication")
        .query_async(redis)
        .await
        .ok()
}

/// The nodes a `CLUSTER NODES` reply shows alive, by port: failed (or
/// suspected) nodes are left out, replicas point at their primary's port,
/// and the `[slot->-id]` marks of a migration in progress are ignored.
fn parse_nodes(text: &str) -> Result<Vec<ClusterNode>, String> {
    struct Line<'a> {
        id: &'a str,
        port: u16,
        primary_id: Option<&'a str>,
        slots: Vec<RangeInclusive<u16>>,
    }
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [
            id,
            address,
            flags,
            primary,
            _ping,
            _pong,
            _epoch,
            _link,
            slots @ ..,
        ] = fields.as_slice()
        else {
            return Err(format!("unexpected line {line:?}"));
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if flags
            .iter()
            .any(|f| matches!(*f, "fail" | "fail?" | "handshake" | "noaddr"))
        {
            continue;
        }
        let port = address
            .split('@')
            .next()
            .and_then(|host_port| host_port.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .ok_or_else(|| format!("no port in {line:?}"))?;
        let mut ranges = Vec::new();
        for slot in slots.iter().filter(|s| !s.starts_with('[')) {
            let range = match slot.split_once('-') {
                Some((start, end)) => start.parse().ok().zip(end.parse().ok()),
                None => slot.parse().ok().map(|s| (s, s)),
            }
            .ok_or_else(|| format!("bad slot {slot:?} in {line:?}"))?;
            ranges.push(range.0..=range.1);
        }
        lines.push(Line {
            id,
            port,
            primary_id: flags.contains(&"slave").then_some(*primary),
            slots: ranges,
        });
    }
    let port_of = |id: &str| lines.iter().find(|l| l.id == id).map(|l| l.port);
    let mut nodes: Vec<ClusterNode> = lines
        .iter()
        .map(|l| ClusterNode {
            port: l.port,
            id: l.id.to_owned(),
            // A replica of a failed primary points at a node left out.
            replica_of: l.primary_id.map(|id| port_of(id).unwrap_or(0)),
            slots: l.slots.clone(),
        })
        .collect();
    nodes.sort_by_key(|n| n.port);
    Ok(nodes)
}
