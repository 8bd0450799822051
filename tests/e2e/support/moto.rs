//! A real S3-compatible server (`moto_server`) on a free port, owned by the
//! test and killed on drop, with a bucket per test.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus::uploads::S3Overrides;

use super::TIMEOUT;
use super::tools::{free_port, probe_status};

pub struct MotoServer {
    port: u16,
    child: Option<Child>,
}

impl MotoServer {
    /// Starts `moto_server` on a free port and waits until it answers.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "moto_server runs (./scripts/test.sh installs it: pip install 'moto[server]')",
                );
            let mut server = Self {
                port,
                child: Some(child),
            };
            if server.wait_ready() {
                return server;
            }
        }
        panic!("moto_server did not start");
    }

    /// True once it answers; false if it exited (port taken) or timed out.
    fn wait_ready(&mut self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if probe_status(addr, "/").is_some() {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && matches!(child.try_wait(), Ok(Some(_)))
            {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The client settings a node needs to reach this server.
    pub fn overrides(&self) -> S3Overrides {
        S3Overrides {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".to_owned()),
            credentials: Some(("testing".to_owned(), "testing".to_owned())),
        }
    }

    /// Creates bucket `name` whose CORS lets any page PUT and GET, as the
    /// deploy docs configure a real one for the chat's origins.
    pub async fn create_bucket(&self, name: &str) {
        let client = reqwest::Client::new();
        let url = format!("{}/{name}", self.endpoint());
        let created = tokio::time::timeout(TIMEOUT, client.put(&url).send())
            .await
            .expect("moto answers in time")
            .expect("moto answers");
        assert!(
            created.status().is_success(),
            "create bucket: {}",
            created.status()
        );
        let cors = "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>\
                    <AllowedMethod>PUT</AllowedMethod><AllowedMethod>GET</AllowedMethod>\
                    <AllowedHeader>*</AllowedHeader></CORSRule></CORSConfiguration>";
        let set =
            tokio::time::timeout(TIMEOUT, client.put(format!("{url}?cors")).body(cors).send())
                .await
                .expect("moto answers in time")
                .expect("moto answers");
        assert!(set.status().is_success(), "bucket CORS: {}", set.status());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.kill();
    }
}
