//! A real moto server (`moto_server`, which speaks S3's and DynamoDB's APIs)
//! on a free loopback port, owned by the test and killed on drop; or the one
//! `scripts/test.sh` started for the whole run (`CHORUS_TEST_MOTO_URL`).
//! Tests keep apart by bucket ([`MotoServer::create_bucket`] with a unique
//! name) and table ([`unique_table`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus::uploads::S3Overrides;

use super::tools::{free_port, probe_status};
use super::{TIMEOUT, unique};

/// How long a moto server may take to answer after it starts (a Python
/// process that imports every mocked service: about 2 s on an idle
/// machine, more when the tests load it).
const STARTUP: Duration = Duration::from_secs(30);

/// The moto server of a test: its own, or the run's shared one.
pub struct MotoServer {
    url: String,
    child: Option<Child>,
}

impl MotoServer {
    /// The run's shared server when `CHORUS_TEST_MOTO_URL` names one,
    /// otherwise a server of this test's own.
    pub fn shared_or_start() -> Self {
        match std::env::var("CHORUS_TEST_MOTO_URL") {
            Ok(url) if !url.trim().is_empty() => Self {
                url: url.trim().trim_end_matches('/').to_owned(),
                child: None,
            },
            _ => Self::start(),
        }
    }

    /// Starts `moto_server` on a free port and waits until it answers
    /// HTTP; a port taken in between is retried on another.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| {
                    panic!(
                        "moto_server does not run ({error}): ./scripts/test.sh installs it \
                         (pip install 'moto[server]')"
                    )
                });
            let mut server = Self {
                url: format!("http://127.0.0.1:{port}"),
                child: Some(child),
            };
            if server.wait_answering(SocketAddr::from((Ipv4Addr::LOCALHOST, port))) {
                return server;
            }
            server.kill();
        }
        panic!("moto_server did not start");
    }

    /// True once the server answers; false if it exited or never answered.
    fn wait_answering(&mut self, addr: SocketAddr) -> bool {
        let deadline = Instant::now() + STARTUP;
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
        false
    }

    /// `http://127.0.0.1:PORT`: the endpoint for an S3 or DynamoDB client.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The client settings a node needs to reach this server's S3.
    pub fn overrides(&self) -> S3Overrides {
        S3Overrides {
            endpoint: Some(self.url.clone()),
            region: Some("us-east-1".to_owned()),
            credentials: Some(("testing".to_owned(), "testing".to_owned())),
        }
    }

    /// Creates bucket `name` whose CORS lets any page PUT and GET, as the
    /// deploy docs configure a real one for the chat's origins.
    pub async fn create_bucket(&self, name: &str) {
        let client = reqwest::Client::new();
        let url = format!("{}/{name}", self.url);
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

/// A DynamoDB table name no other test uses.
pub fn unique_table() -> String {
    unique("chorus-archive")
}
