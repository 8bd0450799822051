//! The real load balancer: `nginx` with the project's deploy/nginx/chorus.conf
//! rendered for the nodes under test, on a free port, in the foreground,
//! stopped on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TIMEOUT;
use super::node::Endpoint;
use super::tools::{ScratchDir, free_port, probe_status, require_tool, stop_child};

/// deploy/nginx/, where the template and the standalone main config live.
const DEPLOY_NGINX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx");

pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: ScratchDir,
}

impl Endpoint for Nginx {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// deploy/nginx/chorus.conf with its placeholders filled in, as
/// deploy/nginx/render.sh and the nginx image do.
pub fn render(listen: &str, upstreams: &[SocketAddr]) -> String {
    let template = std::fs::read_to_string(format!("{DEPLOY_NGINX}/chorus.conf"))
        .expect("deploy/nginx/chorus.conf");
    let servers: String = upstreams.iter().map(|a| format!("server {a}; ")).collect();
    let rendered = template
        .replace("${CHORUS_LISTEN}", listen)
        .replace("${CHORUS_UPSTREAM_SERVERS}", &servers);
    assert!(
        !rendered.contains("${CHORUS_"),
        "chorus.conf has a placeholder the test does not fill"
    );
    rendered
}

impl Nginx {
    /// Starts nginx in front of `upstreams` and waits until it answers.
    pub fn start(upstreams: &[SocketAddr]) -> Self {
        let nginx = require_tool("nginx", "nginx");
        let dir = ScratchDir::create("chorus-nginx");
        std::fs::copy(
            format!("{DEPLOY_NGINX}/nginx.conf"),
            dir.path().join("nginx.conf"),
        )
        .expect("copy deploy/nginx/nginx.conf");
        // A free port may be taken again before nginx binds it: retry.
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            std::fs::write(
                dir.path().join("chorus.conf"),
                render(&addr.to_string(), upstreams),
            )
            .expect("write chorus.conf");
            let _ = std::fs::remove_file(dir.path().join("error.log"));
            let mut child = Command::new(&nginx)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                // chorus.conf logs requests to stdout.
                .stdout(Stdio::from(
                    std::fs::File::create(dir.path().join("access.log"))
                        .expect("create access.log"),
                ))
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx starts");
            match wait_listening(&mut child, addr) {
                Ok(()) => return Self { addr, child, dir },
                Err(()) if dir.tail("error.log").contains("Address already in use") => continue,
                Err(()) => {
                    stop_child(&mut child, nix::sys::signal::SIGTERM, TIMEOUT);
                    panic!(
                        "nginx did not start with deploy/nginx/chorus.conf; error.log:\n{}",
                        dir.tail("error.log")
                    );
                }
            }
        }
        panic!("nginx found no free port in 5 tries")
    }

    /// What nginx wrote to its access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The rendered configuration this nginx runs.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chorus.conf")).expect("chorus.conf")
    }
}

/// Until `/health` is proxied (any status: a node answers) or nginx exits.
fn wait_listening(child: &mut Child, addr: SocketAddr) -> Result<(), ()> {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if probe_status(addr, "/health").is_some() {
            return Ok(());
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(())
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the workers close their
        // connections (WebSockets included) and exit with the master.
        // SIGQUIT would wait for every open WebSocket.
        stop_child(&mut self.child, nix::sys::signal::SIGTERM, TIMEOUT);
    }
}
