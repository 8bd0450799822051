//! A real `redis-server` on a free port, owned by the test: stop, SIGKILL and
//! restart it on the same port. It never touches 6379, keeps nothing on disk,
//! and dies with its owner.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TIMEOUT;
use super::netns::Hosts;
use super::tools::free_port;

pub struct RedisServer {
    port: u16,
    /// Where it listens: loopback, or its host's address in a namespace.
    host: IpAddr,
    /// The namespace it runs in (`ip netns exec`), if not the test's own.
    netns: Option<String>,
    child: Option<Child>,
}

fn answers_ping(host: IpAddr, port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&(host, port).into(), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    /// `--port 0` would disable TCP in redis-server, so a port is picked here
    /// and a collision is retried.
    pub fn start() -> Self {
        Self::start_on(Ipv4Addr::LOCALHOST.into(), None)
    }

    /// Starts a server inside the "redis" host of `hosts`, listening on that
    /// host's address (reachable from the root namespace and, while the link
    /// is up, from the "node" host).
    pub fn start_in(hosts: &Hosts) -> Self {
        Self::start_on(hosts.redis_ip.into(), Some(hosts.redis_ns.clone()))
    }

    fn start_on(host: IpAddr, netns: Option<String>) -> Self {
        for _ in 0..5 {
            let mut server = Self {
                port: free_port(),
                host,
                netns: netns.clone(),
                child: None,
            };
            if server.launch() {
                return server;
            }
        }
        panic!("redis-server did not start (is it installed? ./scripts/test.sh installs it)");
    }

    /// Spawns on `self.port`; false if it exited (port taken) or never answered.
    fn launch(&mut self) -> bool {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut command = Command::new(super::tools::require_tool("ip", "iproute2"));
                command.args(["netns", "exec", ns, "redis-server"]);
                // Its address is on a veth of a namespace of this test, so
                // no other machine can reach it.
                command.args(["--protected-mode", "no"]);
                command
            }
            None => Command::new("redis-server"),
        };
        let child = command
            .args(["--port", &self.port.to_string()])
            .args([
                "--bind",
                &self.host.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if answers_ping(self.host, self.port) {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && matches!(child.try_wait(), Ok(Some(_)))
            {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://<host>:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://{}:{}/0", self.host, self.port)
    }

    /// SIGKILL: gone at once, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server stalls, its sockets stay open and unanswered.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::SIGSTOP);
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal(nix::sys::signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = &self.child {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            nix::sys::signal::kill(pid, signal).expect("signal redis-server");
        }
    }

    /// SIGTERM and wait: a clean stop (still nothing saved).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, empty, as a restarted Redis would be.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + TIMEOUT;
        // The old socket may linger a moment; retry until the port is ours.
        while !self.launch() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Keeps the server alive until the current tokio runtime shuts down:
    /// for factories that must return a backend and nothing else.
    pub fn keep_for_this_test(self) {
        tokio::spawn(async move {
            let _server = self;
            std::future::pending::<()>().await;
        });
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
