//! Embeds the web client (`static/`, `static/js/` included) into the binary,
//! so `GET /` answers wherever the node is started from. memory-serve
//! computes each file's ETag here and, in release builds, its brotli and
//! gzip bodies, so none of that work happens per request.

fn main() {
    // Always embed, debug builds too: the tests run debug binaries from
    // other directories, and a debug binary that read `static/` at run time
    // would hide the very defect this fixes.
    memory_serve::load_directory_with_embed("static", true);
}
