//! Embeds the web client (`static/`, `static/js/` included) and the admin
//! console (`console/`) into the binary, so `GET /` and `/admin` answer
//! wherever the node is started from. memory-serve
//! computes each file's ETag here and, in release builds, its brotli and
//! gzip bodies, so none of that work happens per request.

fn main() {
    // Always embed, debug builds too: the tests run debug binaries from
    // other directories, and a debug binary that read `static/` at run time
    // would hide the very defect this fixes.
    // Two sets, not one folder: the console must not be among the web
    // client's files, which are served whether or not an admin token is set.
    memory_serve::load_names_directories([("web", "static"), ("console", "console")], true);
}
