//! Readings from the Redis servers behind the nodes, found by their ports on
//! loopback: each server's process, role and slots, the CPU seconds and
//! commands it used during a run, and at the end of a run how the keys
//! spread over the primaries.
//!
//! It speaks just enough RESP to ask `INFO`, `CLUSTER NODES`, `DBSIZE` and
//! `SCAN`, so the load generator needs no Redis client of its own.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::probe;

/// The suffixes of chorus's cluster-wide tallies, split into partitions
/// whose hash tags spread over the slots (chorus's
/// `src/cluster/redis/keys.rs`): online users, the room directory, the live
/// nodes. A Redis that held every one of them would carry the tallies alone.
pub const TALLIES: [&str; 3] = [":online", ":rooms", ":nodes"];

/// Keys asked per `SCAN` step.
const SCAN_COUNT: &str = "1000";

/// One Redis server process, as found at the start of a run.
#[derive(Debug, Clone)]
pub struct RedisServer {
    port: u16,
    pid: u32,
    role: Role,
    /// The primary a replica follows.
    primary_port: Option<u16>,
    /// A cluster primary's slot ranges, as `CLUSTER NODES` lists them.
    slots: Option<String>,
    cluster: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Primary,
    Replica,
}

/// What a server had used so far: CPU seconds (`/proc`) and commands
/// (`INFO stats`, and per command `INFO commandstats`).
#[derive(Debug, Clone)]
pub struct Usage {
    cpu_s: f64,
    commands: u64,
    by_command: BTreeMap<String, CommandUsage>,
}

/// Calls of one command and the microseconds Redis spent in them
/// (`INFO commandstats`; commands a script runs count under their own name
/// too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CommandUsage {
    /// Calls.
    pub calls: u64,
    /// Microseconds spent executing them.
    pub usec: u64,
}

/// How the keys and channels of one primary stood at the end of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KeySpread {
    /// `DBSIZE`: every key the primary holds.
    pub dbsize: u64,
    /// Keys ending in `:online` (the online-users tally's partitions).
    pub online: u64,
    /// Keys ending in `:rooms` (the room directory's partitions).
    pub rooms: u64,
    /// Keys ending in `:nodes` (the live-node index's partitions).
    pub nodes: u64,
    /// Classic pub/sub channels with subscribers (`pubsub_channels`).
    pub channels: u64,
    /// Shard channels with subscribers (`pubsubshard_channels`).
    pub shard_channels: u64,
}

/// One Redis process in a run's report.
#[derive(Debug, Clone, Serialize)]
pub struct RedisProcess {
    /// `primary` or `replica` (a lone Redis is a primary).
    pub role: &'static str,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// Its process id.
    pub pid: u32,
    /// The port of the primary a replica follows.
    pub primary_port: Option<u16>,
    /// A cluster primary's slot ranges, e.g. `0-5460`.
    pub slots: Option<String>,
    /// User plus system CPU seconds during the run (`/proc/<pid>/stat`).
    pub cpu_s: f64,
    /// Commands it processed during the run (`total_commands_processed`;
    /// a replica counts those it applied from its primary).
    pub commands: u64,
    /// Per command (lower case, as `INFO commandstats` names them), the
    /// calls and time during the run; commands not called are left out.
    pub by_command: BTreeMap<String, CommandUsage>,
    /// A primary's keys and channels at the end of the run.
    pub keys: Option<KeySpread>,
}

impl RedisServer {
    /// Finds the server listening on `port` at 127.0.0.1: its pid, role and
    /// slots.
    pub async fn discover(port: u16) -> anyhow::Result<Self> {
        let mut conn = Connection::open(port).await?;
        let info = conn.info().await?;
        let pid = info_field(&info, "process_id")?;
        let cluster = info_field::<u8>(&info, "cluster_enabled")? == 1;
        let role = match info_text(&info, "role") {
            Some("master") => Role::Primary,
            Some("slave") => Role::Replica,
            other => bail!("redis on {port}: unknown role {other:?}"),
        };
        let primary_port = match role {
            Role::Replica => Some(info_field(&info, "master_port")?),
            Role::Primary => None,
        };
        let slots = if cluster && role == Role::Primary {
            let nodes = conn.text(&["CLUSTER", "NODES"]).await?;
            Some(own_slots(&nodes).with_context(|| format!("redis on {port}: no myself line"))?)
        } else {
            None
        };
        Ok(Self {
            port,
            pid,
            role,
            primary_port,
            slots,
            cluster,
        })
    }

    /// Whether this server is part of a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// CPU seconds and commands used so far.
    pub async fn usage(&self) -> anyhow::Result<Usage> {
        let cpu_s = probe::cpu_seconds(&[self.pid])?;
        let mut conn = Connection::open(self.port).await?;
        let info = conn.info().await?;
        let stats = conn.text(&["INFO", "commandstats"]).await?;
        Ok(Usage {
            cpu_s,
            commands: info_field(&info, "total_commands_processed")?,
            by_command: command_stats(&stats),
        })
    }

    /// A primary's keys and channels now; `None` for a replica.
    pub async fn key_spread(&self) -> anyhow::Result<Option<KeySpread>> {
        if self.role == Role::Replica {
            return Ok(None);
        }
        let mut conn = Connection::open(self.port).await?;
        let mut spread = KeySpread {
            dbsize: conn.integer(&["DBSIZE"]).await?,
            ..KeySpread::default()
        };
        let mut cursor = "0".to_owned();
        loop {
            let (next, keys) = conn.scan(&cursor).await?;
            for key in keys {
                let key = key.as_slice();
                let counter = match TALLIES.iter().position(|t| key.ends_with(t.as_bytes())) {
                    Some(0) => &mut spread.online,
                    Some(1) => &mut spread.rooms,
                    Some(_) => &mut spread.nodes,
                    None => continue,
                };
                *counter += 1;
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        let info = conn.info().await?;
        spread.channels = info_field(&info, "pubsub_channels")?;
        // Absent before Redis 7.
        spread.shard_channels = info_field(&info, "pubsubshard_channels").unwrap_or(0);
        Ok(Some(spread))
    }

    /// This server in a report: what it used between `before` and `after`.
    pub fn report(&self, before: &Usage, after: &Usage, keys: Option<KeySpread>) -> RedisProcess {
        let by_command = after
            .by_command
            .iter()
            .filter_map(|(name, now)| {
                let then = before.by_command.get(name).copied().unwrap_or_default();
                let used = CommandUsage {
                    calls: now.calls.saturating_sub(then.calls),
                    usec: now.usec.saturating_sub(then.usec),
                };
                (used.calls > 0).then(|| (name.clone(), used))
            })
            .collect();
        RedisProcess {
            role: match self.role {
                Role::Primary => "primary",
                Role::Replica => "replica",
            },
            port: self.port,
            pid: self.pid,
            primary_port: self.primary_port,
            slots: self.slots.clone(),
            cpu_s: after.cpu_s - before.cpu_s,
            commands: after.commands.saturating_sub(before.commands),
            by_command,
            keys,
        }
    }
}

/// The slot ranges on the `myself` line of `CLUSTER NODES`, e.g.
/// `0-5460` (importing and migrating entries, in brackets, left out).
fn own_slots(nodes: &str) -> Option<String> {
    let line = nodes.lines().find(|line| {
        line.split(' ')
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|f| f == "myself"))
    })?;
    let ranges: Vec<&str> = line
        .split(' ')
        .skip(8)
        .filter(|s| !s.is_empty() && !s.starts_with('['))
        .collect();
    Some(ranges.join(" "))
}

/// Calls and time per command from an `INFO commandstats` reply
/// (`cmdstat_evalsha:calls=3,usec=40,usec_per_call=13.33,…`).
fn command_stats(info: &str) -> BTreeMap<String, CommandUsage> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let value = |key: &str| {
                fields
                    .split(',')
                    .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.trim().parse().ok())
            };
            let usage = CommandUsage {
                calls: value("calls")?,
                usec: value("usec")?,
            };
            Some((name.to_owned(), usage))
        })
        .collect()
}

/// The value of `name:` in an `INFO` reply.
fn info_text<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn info_field<T: std::str::FromStr>(info: &str, name: &str) -> anyhow::Result<T> {
    info_text(info, name)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {name} in INFO"))
}

/// A RESP2 reply.
#[derive(Debug, PartialEq)]
enum Reply {
    Status(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// One connection to a Redis on loopback, one command at a time.
struct Connection {
    stream: BufReader<TcpStream>,
    port: u16,
}

impl Connection {
    async fn open(port: u16) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("no redis on 127.0.0.1:{port}"))?;
        Ok(Self {
            stream: BufReader::new(stream),
            port,
        })
    }

    async fn call(&mut self, args: &[&str]) -> anyhow::Result<Reply> {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request += &format!("${}\r\n{arg}\r\n", arg.len());
        }
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        read_reply(&mut self.stream)
            .await
            .with_context(|| format!("redis on {}: {}", self.port, args.join(" ")))
    }

    async fn text(&mut self, args: &[&str]) -> anyhow::Result<String> {
        match self.call(args).await? {
            Reply::Bulk(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Reply::Status(text) => Ok(text),
            other => bail!("{}: expected text, got {other:?}", args.join(" ")),
        }
    }

    async fn integer(&mut self, args: &[&str]) -> anyhow::Result<u64> {
        match self.call(args).await? {
            Reply::Integer(n) => Ok(u64::try_from(n)?),
            other => bail!("{}: expected an integer, got {other:?}", args.join(" ")),
        }
    }

    async fn info(&mut self) -> anyhow::Result<String> {
        self.text(&["INFO"]).await
    }

    /// One `SCAN` step: the next cursor and the keys of this one.
    async fn scan(&mut self, cursor: &str) -> anyhow::Result<(String, Vec<Vec<u8>>)> {
        let reply = self.call(&["SCAN", cursor, "COUNT", SCAN_COUNT]).await?;
        let Reply::Array(Some(mut parts)) = reply else {
            bail!("SCAN: expected an array, got {reply:?}");
        };
        let (Some(Reply::Array(Some(keys))), Some(Reply::Bulk(Some(next))), None) =
            (parts.pop(), parts.pop(), parts.pop())
        else {
            bail!("SCAN: expected a cursor and an array of keys");
        };
        let keys = keys
            .into_iter()
            .filter_map(|key| match key {
                Reply::Bulk(Some(bytes)) => Some(bytes),
                _ => None,
            })
            .collect();
        Ok((String::from_utf8_lossy(&next).into_owned(), keys))
    }
}

type ReplyFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Reply>> + Send + 'a>>;

/// Reads one reply; boxed because arrays nest.
fn read_reply<R>(reader: &mut R) -> ReplyFuture<'_>
where
    R: tokio::io::AsyncBufRead + Unpin + Send,
{
    Box::pin(async move {
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let line = line
            .strip_suffix("\r\n")
            .context("connection closed mid-reply")?;
        let (kind, rest) = line.split_at_checked(1).context("empty reply line")?;
        Ok(match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => bail!("{rest}"),
            ":" => Reply::Integer(rest.parse()?),
            "$" => {
                let len: i64 = rest.parse()?;
                match usize::try_from(len) {
                    Err(_) => Reply::Bulk(None),
                    Ok(len) => {
                        let mut bytes = vec![0; len + 2];
                        reader.read_exact(&mut bytes).await?;
                        bytes.truncate(len);
                        Reply::Bulk(Some(bytes))
                    }
                }
            }
            "*" => {
                let len: i64 = rest.parse()?;
                match usize::try_from(len) {
                    Err(_) => Reply::Array(None),
                    Ok(len) => {
                        let mut items = Vec::with_capacity(len.min(4096));
                        for _ in 0..len {
                            items.push(read_reply(reader).await?);
                        }
                        Reply::Array(Some(items))
                    }
                }
            }
            _ => bail!("unknown reply type {kind:?}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(wire: &[u8]) -> anyhow::Result<Reply> {
        let mut reader = BufReader::new(wire);
        read_reply(&mut reader).await
    }

    #[tokio::test]
    async fn replies_nest() {
        let scan = parse(b"*2\r\n$1\r\n0\r\n*2\r\n$5\r\na:b\r\n\r\n$-1\r\n").await;
        assert_eq!(
            scan.expect("a reply"),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"0".to_vec())),
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"a:b\r\n".to_vec())),
                    Reply::Bulk(None)
                ])),
            ]))
        );
        assert_eq!(
            parse(b":42\r\n").await.expect("a reply"),
            Reply::Integer(42)
        );
        let error = parse(b"-ERR unknown command\r\n")
            .await
            .expect_err("an error");
        assert_eq!(error.to_string(), "ERR unknown command");
        assert!(parse(b"$5\r\nab").await.is_err());
    }

    #[test]
    fn info_fields_are_read_by_name() {
        let info = "# Server\r\nprocess_id:4242\r\ntcp_port:7000\r\n# Stats\r\ntotal_commands_processed:17\r\n";
        assert_eq!(info_field::<u32>(info, "process_id").expect("a pid"), 4242);
        assert_eq!(info_text(info, "tcp_port"), Some("7000"));
        assert_eq!(info_text(info, "tcp"), None);
        assert!(info_field::<u64>(info, "pubsub_channels").is_err());
    }

    #[test]
    fn command_stats_are_read_per_command() {
        let info = "# Commandstats\r\n\
cmdstat_evalsha:calls=3,usec=40,usec_per_call=13.33,rejected_calls=0,failed_calls=0\r\n\
cmdstat_cluster|nodes:calls=1,usec=9,usec_per_call=9.00,rejected_calls=0,failed_calls=0\r\n";
        let stats = command_stats(info);
        assert_eq!(stats.len(), 2);
        assert_eq!(stats["evalsha"], CommandUsage { calls: 3, usec: 40 });
        assert_eq!(stats["cluster|nodes"].calls, 1);
    }

    #[test]
    fn own_slots_come_from_the_myself_line() {
        let nodes = "\
a1 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922\n\
b2 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5461->-a1]\n\
c3 127.0.0.1:7003@17003 slave b2 0 1 1 connected\n";
        assert_eq!(own_slots(nodes).as_deref(), Some("0-5460"));
        assert_eq!(
            own_slots("a1 127.0.0.1:7001@17001 master - 0 1 2 connected 1"),
            None
        );
    }
}
