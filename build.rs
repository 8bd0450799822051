//! Embeds the web client (`static/`, `static/js/` included) and the admin
//! console (`console/`) into the binary, so `GET /` and `/admin` answer
//! wherever the node is started from. memory-serve
//! computes each file's ETag here and, in release builds, its brotli and
//! gzip bodies, so none of that work happens per request.
//!
//! The page runs on the client package (`clients/js/src/index.js`), served
//! as `/js/chorus-client.js`: one implementation of the protocol, with no
//! second copy in `static/` to drift from it. memory-serve embeds a set
//! from one directory, so `static/` and the package are staged together
//! under `OUT_DIR` first. A symlink in `static/` would not do: it breaks on a
//! checkout without symlinks (Windows, some archives) and memory-serve's
//! walk does not follow it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The package's source, as the page imports it.
const CLIENT_PACKAGE: &str = "clients/js/src/index.js";
const CLIENT_ROUTE: &str = "js/chorus-client.js";

fn main() -> io::Result<()> {
    println!("cargo::rerun-if-changed=static");
    println!("cargo::rerun-if-changed={CLIENT_PACKAGE}");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "cargo sets OUT_DIR for build scripts",
        )
    })?);
    let staged = out_dir.join("web");
    // Staged afresh so that a file removed from static/ is not served still.
    if staged.exists() {
        fs::remove_dir_all(&staged)?;
    }
    stage_dir(Path::new("static"), &staged)?;
    stage_file(Path::new(CLIENT_PACKAGE), &staged.join(CLIENT_ROUTE))?;
    // Always embed, debug builds too: the tests run debug binaries from
    // other directories, and a debug binary that read files at run time
    // would hide the very defect this fixes.
    // Two sets, not one folder: the console must not be among the web
    // client's files, which are served whether or not an admin token is set.
    memory_serve::load_names_directories(
        [("web", staged), ("console", PathBuf::from("console"))],
        true,
    );
    Ok(())
}

/// Copies a directory tree. Every copy, directories included, keeps the
/// modification time of its source: memory-serve asks cargo to rerun this
/// script when anything under the staged directory is newer than the last
/// run, and fresh copies would be, so every build would stage, compress and
/// compile chorus again.
fn stage_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            stage_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
            keep_modified(&entry.path(), &target)?;
        }
    }
    keep_modified(from, to)
}

/// Adds a file to a staged directory, whose time stays what it was.
fn stage_file(from: &Path, to: &Path) -> io::Result<()> {
    let dir = to.parent().unwrap_or(Path::new("."));
    let dir_modified = fs::metadata(dir)?.modified()?;
    fs::copy(from, to)?;
    keep_modified(from, to)?;
    fs::File::open(dir)?.set_modified(dir_modified)
}

fn keep_modified(source: &Path, copy: &Path) -> io::Result<()> {
    let modified = fs::metadata(source)?.modified()?;
    fs::File::open(copy)?.set_modified(modified)
}
