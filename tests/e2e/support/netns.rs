//! Test hosts made of Linux network namespaces, so a live process can lose
//! the network instead of dying: [`Hosts`] builds two namespaces, "redis"
//! and "node", each linked to the root namespace (where the test runs) by a
//! veth pair. The root namespace forwards between the two links, and only
//! between them: forwarding is switched on per interface, on our two root
//! ends, never globally. [`Hosts::cut`] switches it off, which drops the
//! node↔redis packets silently (no RST, no ICMP: the kernel discards a
//! packet that arrives on an interface that does not forward), while the
//! root namespace still reaches both hosts directly. [`Hosts::heal`] switches
//! it back on.
//!
//! Every address is in a /29 of 10.200.0.0/13 on our own veths; neither
//! namespace has a default route, so nothing can leave the machine. Names
//! carry the pid and a counter, so parallel runs do not collide, and `Drop`
//! deletes everything, also when the test fails.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use super::tools::require_tool;

/// Hosts built so far by this process: part of every name.
static BUILT: AtomicU32 = AtomicU32::new(0);
/// Address blocks tried before giving up: each is checked against the
/// machine's routes, so a block someone else uses is skipped.
const BLOCK_ATTEMPTS: u32 = 16;

/// Two namespaces and their links; everything is removed on drop.
pub struct Hosts {
    ip: PathBuf,
    /// The namespace Redis runs in.
    pub redis_ns: String,
    /// The namespace the node that will be cut off runs in.
    pub node_ns: String,
    /// Redis's address, on its veth.
    pub redis_ip: Ipv4Addr,
    /// The cut node's address, on its veth.
    pub node_ip: Ipv4Addr,
    /// The root ends of the two veth pairs: their forwarding flags are the
    /// link between the hosts.
    root_links: Vec<String>,
    /// Namespaces created so far, for `Drop`.
    namespaces: Vec<String>,
}

impl Hosts {
    /// Builds the two hosts. `Err` (with the kernel's words) only when this
    /// sandbox refuses network namespaces (`ip netns add` fails: not root,
    /// no CAP_SYS_ADMIN, no netns support); any later failure panics.
    pub fn build() -> Result<Self, String> {
        let ip = require_tool("ip", "iproute2");
        let pid = std::process::id();
        let k = BUILT.fetch_add(1, Ordering::SeqCst);
        let mut hosts = Self {
            ip,
            redis_ns: format!("chorus-{pid}-{k}-redis"),
            node_ns: format!("chorus-{pid}-{k}-node"),
            redis_ip: Ipv4Addr::UNSPECIFIED,
            node_ip: Ipv4Addr::UNSPECIFIED,
            root_links: Vec::new(),
            namespaces: Vec::new(),
        };
        for ns in [hosts.redis_ns.clone(), hosts.node_ns.clone()] {
            // A namespace of this name can only be left over by a dead
            // process that had our pid: ours to remove.
            if PathBuf::from("/run/netns").join(&ns).exists() {
                let _ = hosts.run(&["netns", "del", &ns]);
            }
            let added = hosts.run(&["netns", "add", &ns]);
            if !added.status.success() {
                return Err(format!(
                    "ip netns add {ns}: {}",
                    String::from_utf8_lossy(&added.stderr).trim()
                ));
            }
            hosts.namespaces.push(ns);
        }
        let base = hosts.free_block(pid, k);
        let at = |offset: u32| Ipv4Addr::from(u32::from(base) + offset);
        // Root ↔ node on base+0/30, root ↔ redis on base+4/30.
        let (node_ns, redis_ns) = (hosts.node_ns.clone(), hosts.redis_ns.clone());
        hosts.link(&node_ns, &format!("ch{pid:x}k{k}n"), at(1), at(2));
        hosts.link(&redis_ns, &format!("ch{pid:x}k{k}r"), at(5), at(6));
        // Each host reaches the other's link through the root namespace.
        hosts.must(&[
            "-n",
            &node_ns,
            "route",
            "add",
            &format!("{}/30", at(4)),
            "via",
            &at(1).to_string(),
        ]);
        hosts.must(&[
            "-n",
            &redis_ns,
            "route",
            "add",
            &format!("{}/30", at(0)),
            "via",
            &at(5).to_string(),
        ]);
        hosts.node_ip = at(2);
        hosts.redis_ip = at(6);
        hosts.heal();
        Ok(hosts)
    }

    /// A command that runs `program` inside namespace `ns`.
    pub fn command_in(&self, ns: &str, program: &str) -> Command {
        let mut command = Command::new(&self.ip);
        command.args(["netns", "exec", ns, program]);
        command
    }

    /// Cuts the node off from Redis: both directions dropped silently.
    pub fn cut(&self) {
        self.forwarding(false);
    }

    /// Restores the link between the node and Redis.
    pub fn heal(&self) {
        self.forwarding(true);
    }

    fn forwarding(&self, on: bool) {
        for link in &self.root_links {
            let path = format!("/proc/sys/net/ipv4/conf/{link}/forwarding");
            std::fs::write(&path, if on { "1" } else { "0" })
                .unwrap_or_else(|e| panic!("write {path}: {e}"));
        }
    }

    /// A veth pair: `name` in the root namespace with `root_ip`, its peer
    /// `<name>x` in `ns` with `ns_ip`, both /30 and up.
    fn link(&mut self, ns: &str, name: &str, root_ip: Ipv4Addr, ns_ip: Ipv4Addr) {
        let peer = format!("{name}x");
        self.must(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        self.root_links.push(name.to_owned());
        self.must(&["link", "set", &peer, "netns", ns]);
        self.must(&["addr", "add", &format!("{root_ip}/30"), "dev", name]);
        self.must(&["link", "set", name, "up"]);
        self.must(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &peer,
        ]);
        self.must(&["-n", ns, "link", "set", &peer, "up"]);
        self.must(&["-n", ns, "link", "set", "lo", "up"]);
    }

    /// A /29 in 10.200.0.0/13 that no route of the machine overlaps, chosen
    /// from the pid so parallel runs start apart.
    fn free_block(&self, pid: u32, k: u32) -> Ipv4Addr {
        let routes = String::from_utf8_lossy(
            &self
                .must(&["-4", "-o", "route", "show", "table", "all"])
                .stdout,
        )
        .into_owned();
        let taken: Vec<(u32, u32)> = routes
            .lines()
            .filter_map(|line| {
                let dest = line.split_whitespace().find(|w| w.contains('.'))?;
                let (addr, len) = dest.split_once('/').unwrap_or((dest, "32"));
                let addr: Ipv4Addr = addr.parse().ok()?;
                let len: u32 = len.parse().ok()?;
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                Some((u32::from(addr) & mask, mask))
            })
            .collect();
        let first = u32::from(Ipv4Addr::new(10, 200, 0, 0));
        for attempt in 0..BLOCK_ATTEMPTS {
            let slot = (pid
                .wrapping_mul(4)
                .wrapping_add(k)
                .wrapping_add(attempt * 7919))
                % (1 << 16);
            let base = first + slot * 8;
            let overlaps = taken
                .iter()
                .any(|&(net, mask)| (base & mask) == net || (net & 0xFFFF_FFF8) == base);
            if !overlaps {
                return Ipv4Addr::from(base);
            }
        }
        panic!("no free /29 in 10.200.0.0/13 after {BLOCK_ATTEMPTS} tries:\n{routes}");
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.ip)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run ip {}: {e}", args.join(" ")))
    }

    fn must(&self, args: &[&str]) -> Output {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        output
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting the root end removes its peer too, even if a process
        // still holds the namespace open.
        for link in &self.root_links {
            let _ = self.run(&["link", "del", link]);
        }
        for ns in &self.namespaces {
            let _ = self.run(&["netns", "del", ns]);
        }
    }
}
