//! What the deployment tests need from the machine: external tools found on
//! the `PATH` (or an explicit failure naming the fix), free ports, and
//! scratch directories that disappear with their owner.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A port that was free a moment ago. The caller retries on a collision.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// The path of the executable `name`, looked up on `PATH` and in the sbin
/// folders (Debian's nginx lives in /usr/sbin, not on every user's `PATH`).
/// A missing tool fails the test: these tests are never skipped.
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed (Debian package `{package}`): \
                 run ./scripts/test.sh, which installs it, or apt-get install {package}"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The status code of `GET path` on `addr`, with plain blocking HTTP/1.0 and
/// a short timeout: for start-up probes outside an async context. `None`
/// while nothing answers.
pub fn probe_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A fresh directory under the system temp folder, removed on drop, except
/// when the test is failing: then it is kept (and named on stderr) so its
/// logs can be read.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<tmp>/<prefix>-<random>`, world-readable: nginx started by
    /// root runs its workers as `nobody`, and they write inside it.
    pub fn create(prefix: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(super::unique(prefix));
        std::fs::create_dir_all(&path).expect("create scratch dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("scratch dir permissions");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last lines of `file` in this directory, for failure messages.
    pub fn tail(&self, file: &str) -> String {
        let text = std::fs::read_to_string(self.path.join(file)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for inspection: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Asks a child process to stop with `signal`, waits at most `limit`, then
/// kills it. Returns whether it stopped by itself.
pub fn stop_child(
    child: &mut std::process::Child,
    signal: nix::sys::signal::Signal,
    limit: Duration,
) -> bool {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return true;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}
