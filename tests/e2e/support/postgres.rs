//! Postgres for the archive tests, never a stand-in: [`PgDatabase`] is a
//! database of the test's own on a shared server (`CHORUS_TEST_DATABASE_URL`,
//! which `scripts/test.sh` sets, else the one on 127.0.0.1:5432), dropped
//! with it; [`PgServer`] is a private server in a scratch folder that a
//! fault test can stop and start.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

use super::tools::{ScratchDir, free_port};
use super::{TIMEOUT, unique};

/// The server URL (its `postgres` database) the shared databases live on.
fn shared_server() -> String {
    std::env::var("CHORUS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (server, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{server}/{name}")
}

/// A database created for one test and dropped after it.
pub struct PgDatabase {
    server: String,
    name: String,
    /// Its `DATABASE_URL`.
    pub url: String,
}

impl PgDatabase {
    /// A fresh database on the shared server.
    pub async fn create() -> Self {
        Self::create_on(&shared_server()).await
    }

    /// A fresh database on the server `server` (a URL of any database of it).
    pub async fn create_on(server: &str) -> Self {
        let name = unique("chorus_test").replace('-', "_");
        let mut admin = tokio::time::timeout(TIMEOUT, PgConnection::connect(server))
            .await
            .expect("postgres answers in time")
            .unwrap_or_else(|e| panic!("cannot reach postgres at {server}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        Self {
            url: with_database(server, &name),
            server: server.to_owned(),
            name,
        }
    }

    /// Every archived `(log, id, frame)`, in the archive's order.
    pub async fn rows(&self) -> Vec<(String, String, String)> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(TIMEOUT)
            .connect(&self.url)
            .await
            .expect("connect to the test database");
        let rows: Vec<(String, i64, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT log, id_ms, id_seq, frame FROM messages ORDER BY log, id_ms, id_seq",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        pool.close().await;
        rows.into_iter()
            .map(|(log, ms, seq, frame)| {
                (
                    log,
                    format!("{ms}-{seq}"),
                    String::from_utf8(frame).expect("frames are JSON"),
                )
            })
            .collect()
    }

    /// The rows once `done` says so, or when `within` ran out (the caller's
    /// assertions then say what is missing).
    pub async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[(String, String, String)]) -> bool,
    ) -> Vec<(String, String, String)> {
        let deadline = Instant::now() + within;
        loop {
            let rows = self.rows().await;
            if done(&rows) || Instant::now() > deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs inside the test's runtime: a thread of its own blocks.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(Ok(mut admin)) =
                    tokio::time::timeout(TIMEOUT, PgConnection::connect(&server)).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A Postgres server of the test's own, on a free port.
pub struct PgServer {
    bin: PathBuf,
    dir: ScratchDir,
    port: u16,
}

/// The newest installed server's programs (Debian keeps them off `PATH`).
fn server_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|bin| bin.join("pg_ctl").exists());
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    found.pop().unwrap_or_else(|| {
        panic!(
            "no Postgres server is installed (Debian package `postgresql`): \
             run ./scripts/test.sh, which installs it"
        )
    })
}

/// Runs a server program as `postgres` when this is root (initdb and the
/// server refuse to run as root).
fn as_postgres(program: PathBuf) -> Command {
    if nix::unistd::Uid::effective().is_root() {
        let mut command = Command::new("runuser");
        command.arg("-u").arg("postgres").arg("--").arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl PgServer {
    /// Creates and starts a server.
    pub fn start() -> Self {
        let bin = server_bin();
        let dir = ScratchDir::create("chorus-pg");
        if nix::unistd::Uid::effective().is_root() {
            let status = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the scratch folder to postgres");
        }
        let status = as_postgres(bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb");
        let server = Self {
            bin,
            dir,
            port: free_port(),
        };
        server.run();
        server
    }

    /// `postgres://` URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        as_postgres(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn run(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let started = self.pg_ctl(&[
            "-o",
            &options,
            "-l",
            log.to_str().expect("utf-8 path"),
            "-w",
            "-t",
            "30",
            "start",
        ]);
        assert!(started, "postgres starts: {}", self.dir.tail("server.log"));
    }

    /// Stops it (fast shutdown: open connections are cut).
    pub fn stop(&self) {
        assert!(self.pg_ctl(&["-m", "fast", "-w", "stop"]), "postgres stops");
    }

    /// Starts it again on the same port, with its data.
    pub fn restart(&self) {
        self.run();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }
}
