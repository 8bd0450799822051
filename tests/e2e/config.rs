//! Settings as an operator meets them: the real binary, its environment, its
//! `--help`, and how a bad value stops it.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;

use serde_json::{Value, json};

use crate::support::node::Endpoint;
use crate::support::{ProcessNode, TIMEOUT, unique};

/// What a finished run of the binary left behind.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `chorus` with only `env` (and PATH) and waits, bounded, for it to
/// exit.
fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chorus"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("chorus starts");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    let (mut out, mut err) = (
        child.stdout.take().expect("stdout"),
        child.stderr.take().expect("stderr"),
    );
    let stderr = std::thread::spawn(move || {
        let mut stderr = String::new();
        let _ = err.read_to_string(&mut stderr);
        stderr
    });
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = String::new();
        let _ = out.read_to_string(&mut stdout);
        let stderr = stderr.join().unwrap_or_default();
        let status = child.wait().expect("wait");
        let _ = done_tx.send(Run {
            status,
            stdout,
            stderr,
        });
    });
    match done.recv_timeout(TIMEOUT) {
        Ok(run) => run,
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            panic!("chorus {args:?} with {env:?} did not exit within {TIMEOUT:?}");
        }
    }
}

/// Asserts that `env` stops start-up with a non-zero exit and exactly one
/// line on stderr that names `setting`.
fn assert_refused(env: &[(&str, &str)], setting: &str) {
    // Loopback and port 0 unless under test, so that a run that wrongly
    // starts cannot take a real port.
    let mut full = vec![("HOST", "127.0.0.1"), ("PORT", "0")];
    full.retain(|(key, _)| env.iter().all(|(k, _)| k != key));
    full.extend_from_slice(env);
    let run = run(&[], &full);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!run.status.success(), "{env:?} must stop the node");
    assert_eq!(lines.len(), 1, "{env:?}: one line, got {:?}", run.stderr);
    assert!(
        lines[0].contains(setting),
        "{env:?}: the line names {setting}: {:?}",
        lines[0]
    );
    assert!(
        !lines[0].contains("error: error:"),
        "{env:?}: one clear line, not a doubled prefix: {:?}",
        lines[0]
    );
}

/// The `--help` block of the option whose environment variable is `var`.
fn help_block<'a>(help: &'a str, var: &str) -> &'a str {
    // Each option's block starts at a line indented by two spaces then `-`.
    let blocks: Vec<&str> = help.split("\n  -").collect();
    let mut found = blocks
        .iter()
        .filter(|b| b.contains(&format!("[env: {var}=")) || b.contains(&format!("[env: {var}]")));
    let block = found
        .next()
        .unwrap_or_else(|| panic!("--help mentions {var}:\n{help}"));
    assert!(found.next().is_none(), "{var} documented once");
    block
}

#[test]
fn a_non_numeric_history_limit_stops_start_up_with_one_line_naming_it() {
    assert_refused(&[("CHORUS_HISTORY_LIMIT", "x")], "CHORUS_HISTORY_LIMIT");
}

#[test]
fn an_out_of_range_port_stops_start_up_with_one_line_naming_it() {
    assert_refused(&[("PORT", "99999")], "PORT");
}

#[test]
fn a_negative_rate_limit_stops_start_up_with_one_line_naming_it() {
    assert_refused(&[("CHORUS_RATE_LIMIT", "-1")], "CHORUS_RATE_LIMIT");
}

#[test]
fn a_write_delay_over_a_second_stops_start_up_with_one_line_naming_it() {
    assert_refused(
        &[("CHORUS_WRITE_DELAY_MS", "1001")],
        "CHORUS_WRITE_DELAY_MS",
    );
}

#[test]
fn a_zero_presence_ttl_stops_start_up_with_one_line_naming_it() {
    assert_refused(
        &[("CHORUS_PRESENCE_TTL_SECS", "0")],
        "CHORUS_PRESENCE_TTL_SECS",
    );
}

#[test]
fn a_node_id_with_a_space_stops_start_up_with_one_line_naming_it() {
    assert_refused(&[("CHORUS_NODE_ID", "a b")], "CHORUS_NODE_ID");
}

#[test]
fn a_redis_url_that_is_not_redis_stops_start_up_with_one_line_naming_it() {
    assert_refused(&[("REDIS_URL", "http://x")], "REDIS_URL");
}

#[test]
fn redis_url_and_redis_cluster_urls_together_stop_start_up_with_one_line_naming_both() {
    let run = run(
        &[],
        &[
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("REDIS_URL", "redis://127.0.0.1:1/0"),
            ("REDIS_CLUSTER_URLS", "redis://127.0.0.1:2"),
        ],
    );
    assert_eq!(run.status.code(), Some(2), "{:?}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    assert!(
        run.stderr.starts_with("error: REDIS_CLUSTER_URLS: ") && run.stderr.contains("REDIS_URL"),
        "{:?}",
        run.stderr
    );
}

#[test]
fn dynamodb_table_and_database_url_together_stop_start_up_with_one_line_naming_both() {
    let run = run(
        &[],
        &[
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("DATABASE_URL", "postgres://127.0.0.1:1/chorus"),
            ("CHORUS_ARCHIVE_DYNAMODB_TABLE", "chorus-archive"),
        ],
    );
    assert_eq!(run.status.code(), Some(2), "{:?}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    assert!(
        run.stderr
            .starts_with("error: CHORUS_ARCHIVE_DYNAMODB_TABLE: ")
            && run.stderr.contains("DATABASE_URL"),
        "{:?}",
        run.stderr
    );
}

#[test]
fn a_bad_dynamodb_table_or_endpoint_stops_start_up_with_one_line_naming_it() {
    assert_refused(
        &[("CHORUS_ARCHIVE_DYNAMODB_TABLE", "no spaces")],
        "CHORUS_ARCHIVE_DYNAMODB_TABLE",
    );
    assert_refused(
        &[("CHORUS_ARCHIVE_DYNAMODB_ENDPOINT", "http://127.0.0.1:1")],
        "CHORUS_ARCHIVE_DYNAMODB_ENDPOINT",
    );
    assert_refused(
        &[
            ("CHORUS_ARCHIVE_DYNAMODB_TABLE", "chorus-archive"),
            ("CHORUS_ARCHIVE_DYNAMODB_ENDPOINT", "127.0.0.1:1"),
        ],
        "CHORUS_ARCHIVE_DYNAMODB_ENDPOINT",
    );
}

#[test]
fn redis_cluster_urls_without_a_seed_or_with_a_foreign_scheme_stop_start_up() {
    assert_refused(&[("REDIS_CLUSTER_URLS", " , ")], "REDIS_CLUSTER_URLS");
    assert_refused(
        &[("REDIS_CLUSTER_URLS", "redis://127.0.0.1:2,http://x")],
        "REDIS_CLUSTER_URLS",
    );
}

#[test]
fn a_redis_prefix_with_a_hash_tag_brace_stops_start_up() {
    assert_refused(&[("CHORUS_REDIS_PREFIX", "app{1}:")], "CHORUS_REDIS_PREFIX");
}

#[test]
fn an_empty_jwt_secret_stops_start_up_with_one_line_naming_it() {
    assert_refused(&[("CHORUS_JWT_SECRET", "")], "CHORUS_JWT_SECRET");
}

#[test]
fn a_jwt_secret_shorter_than_32_bytes_stops_start_up_with_one_line_and_exit_code_2() {
    let short = "x".repeat(31);
    assert_refused(&[("CHORUS_JWT_SECRET", &short)], "CHORUS_JWT_SECRET");
    let run = run(
        &[],
        &[
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("CHORUS_JWT_SECRET", &short),
        ],
    );
    assert_eq!(run.status.code(), Some(2), "a bad setting exits 2");
    assert!(
        run.stderr.starts_with("error: CHORUS_JWT_SECRET: "),
        "{:?}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(&short),
        "the secret itself is never printed: {:?}",
        run.stderr
    );
}

#[test]
fn an_admin_token_shorter_than_32_bytes_stops_start_up_with_one_line_and_never_shows_it() {
    let short = "y".repeat(31);
    let run = run(
        &[],
        &[
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("CHORUS_ADMIN_TOKEN", &short),
        ],
    );
    assert_eq!(run.status.code(), Some(2), "a bad setting exits 2");
    assert!(
        run.stderr.starts_with("error: CHORUS_ADMIN_TOKEN: "),
        "{:?}",
        run.stderr
    );
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{:?}", run.stderr);
    assert!(!run.stderr.contains(&short), "{:?}", run.stderr);
    let help = self::run(
        &["--help"],
        &[("CHORUS_ADMIN_TOKEN", "hunter2-admin-very-secret")],
    );
    assert!(!help.stdout.contains("hunter2-admin-very-secret"));
}

#[test]
fn an_idle_timeout_not_longer_than_the_ping_interval_stops_start_up_with_one_line_naming_it() {
    assert_refused(
        &[
            ("CHORUS_PING_INTERVAL_SECS", "20"),
            ("CHORUS_IDLE_TIMEOUT_SECS", "20"),
        ],
        "CHORUS_IDLE_TIMEOUT_SECS",
    );
}

#[test]
fn an_allowed_origin_that_is_not_an_origin_stops_start_up_with_one_line_naming_it() {
    for bad in [
        "chat.example.com",
        "https://chat.example.com/app",
        "*, https://a.example",
    ] {
        assert_refused(&[("CHORUS_ALLOWED_ORIGINS", bad)], "CHORUS_ALLOWED_ORIGINS");
    }
}

#[test]
fn a_trusted_proxy_header_that_is_not_a_header_name_stops_start_up_with_one_line_naming_it() {
    assert_refused(
        &[("CHORUS_TRUSTED_PROXY_HEADER", "X Forwarded For")],
        "CHORUS_TRUSTED_PROXY_HEADER",
    );
}

#[test]
fn a_metrics_address_that_is_not_an_address_stops_start_up_with_one_line_naming_it() {
    assert_refused(&[("CHORUS_METRICS_ADDR", "9100")], "CHORUS_METRICS_ADDR");
}

#[test]
fn a_zero_handshake_timeout_or_buffer_limit_stops_start_up_with_one_line_naming_it() {
    assert_refused(
        &[("CHORUS_HANDSHAKE_TIMEOUT_SECS", "0")],
        "CHORUS_HANDSHAKE_TIMEOUT_SECS",
    );
    assert_refused(
        &[("CHORUS_MAX_BUFFERED_BYTES", "0")],
        "CHORUS_MAX_BUFFERED_BYTES",
    );
}

#[test]
fn a_bad_log_filter_stops_start_up_with_one_line_naming_it() {
    assert_refused(&[("RUST_LOG", "[[")], "RUST_LOG");
}

#[test]
fn an_unparsable_host_stops_start_up_with_one_line_naming_it() {
    assert_refused(&[("HOST", "not-an-address")], "HOST");
}

#[test]
fn a_bad_flag_value_stops_start_up_with_one_line_naming_the_flag() {
    let run = run(
        &["--history-limit", "x"],
        &[("HOST", "127.0.0.1"), ("PORT", "0")],
    );

    let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(!run.status.success());
    assert_eq!(lines.len(), 1, "{:?}", run.stderr);
    assert!(lines[0].contains("--history-limit"), "{:?}", lines[0]);
}

#[test]
fn an_upload_folder_in_cluster_mode_or_beside_a_bucket_stops_start_up() {
    assert_refused(
        &[
            ("REDIS_URL", "redis://127.0.0.1:1/0"),
            ("CHORUS_UPLOAD_DIR", "/tmp/x"),
        ],
        "CHORUS_UPLOAD_DIR",
    );
    assert_refused(
        &[("CHORUS_UPLOAD_DIR", "/tmp/x"), ("CHORUS_S3_BUCKET", "b")],
        "CHORUS_UPLOAD_DIR",
    );
    assert_refused(
        &[("CHORUS_UPLOAD_MAX_BYTES", "0")],
        "CHORUS_UPLOAD_MAX_BYTES",
    );
}

#[test]
fn help_exits_0_and_documents_every_setting_with_its_default() {
    // What each setting's block must show: the contract's default, any
    // default for the project's own settings, nothing for unset-by-default.
    let expected = [
        ("PORT", "[default: 8080]"),
        ("HOST", "[default: 0.0.0.0]"),
        ("REDIS_URL", ""),
        ("CHORUS_NODE_ID", "hostname"),
        ("CHORUS_JWT_SECRET", ""),
        ("CHORUS_PRESENCE_TTL_SECS", "[default: 30]"),
        ("CHORUS_HISTORY_LIMIT", "[default: 1000]"),
        ("CHORUS_RATE_LIMIT", "[default: 20]"),
        ("CHORUS_RATE_BURST", "[default: 40]"),
        ("CHORUS_MAX_CONNECTIONS", "[default: 100000]"),
        ("CHORUS_REDIS_PREFIX", "[default: chorus:]"),
        ("RUST_LOG", "[default: info]"),
        ("CHORUS_MAX_ROOMS_PER_CONNECTION", "[default: "),
        ("CHORUS_OUTBOUND_QUEUE", "[default: "),
        ("CHORUS_PING_INTERVAL_SECS", "[default: "),
        ("CHORUS_WRITE_DELAY_MS", "[default: 25]"),
        ("CHORUS_IDLE_TIMEOUT_SECS", "[default: 60]"),
        ("CHORUS_HANDSHAKE_TIMEOUT_SECS", "[default: 10]"),
        ("CHORUS_MAX_CONNECTIONS_PER_IP", "[default: 1000]"),
        ("CHORUS_TRUSTED_PROXY_HEADER", ""),
        ("CHORUS_JOIN_RATE", "[default: 10]"),
        ("CHORUS_DM_RATE", "[default: 5]"),
        ("CHORUS_MAX_BUFFERED_BYTES", "[default: 268435456]"),
        ("CHORUS_ALLOWED_ORIGINS", ""),
        ("CHORUS_METRICS_ADDR", ""),
        ("DATABASE_URL", ""),
        ("CHORUS_ARCHIVE_DYNAMODB_TABLE", "DATABASE_URL"),
        ("CHORUS_ARCHIVE_DYNAMODB_ENDPOINT", ""),
        ("CHORUS_UPLOAD_DIR", "./data/uploads"),
        ("CHORUS_S3_BUCKET", ""),
        ("CHORUS_UPLOAD_MAX_BYTES", "[default: 26214400]"),
    ];

    let run = run(&["--help"], &[]);

    assert!(run.status.success(), "{}", run.stderr);
    for (var, shows) in expected {
        let block = help_block(&run.stdout, var);
        assert!(block.contains(shows), "{var} shows {shows:?}:\n{block}");
    }
}

#[test]
fn help_never_prints_the_jwt_secret_from_the_environment() {
    let run = run(&["--help"], &[("CHORUS_JWT_SECRET", "hunter2-very-secret")]);

    assert!(run.status.success());
    assert!(
        !run.stdout.contains("hunter2-very-secret"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn the_configured_node_id_is_reported_by_health_and_stats() {
    let id = unique("node.cfg");
    let node = ProcessNode::spawn(&[("CHORUS_NODE_ID", &id)]);

    let health: Value = reqwest::get(node.url("/health"))
        .await
        .expect("health")
        .json()
        .await
        .expect("JSON");
    let stats: Value = reqwest::get(node.url("/api/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("JSON");

    assert_eq!(health, json!({"status": "ok", "node": id}));
    assert_eq!(stats["node"], id.as_str());
    assert_eq!(stats["nodes"], json!([id]));
}

#[tokio::test]
async fn without_a_node_id_each_node_gets_its_own_hostname_based_id() {
    let first = ProcessNode::spawn(&[]);
    let second = ProcessNode::spawn(&[]);

    let mut ids = Vec::new();
    for node in [&first, &second] {
        let health: Value = reqwest::get(node.url("/health"))
            .await
            .expect("health")
            .json()
            .await
            .expect("JSON");
        ids.push(health["node"].as_str().expect("node id").to_owned());
    }

    assert_ne!(ids[0], ids[1], "a random suffix tells them apart");
    let host = |id: &str| id.rsplit_once('-').map(|(host, _)| host.to_owned());
    assert!(host(&ids[0]).is_some_and(|h| !h.is_empty()), "{ids:?}");
    assert_eq!(host(&ids[0]), host(&ids[1]), "same hostname: {ids:?}");
}

#[tokio::test]
async fn the_history_limit_from_the_environment_bounds_what_is_kept() {
    let node = ProcessNode::spawn(&[("CHORUS_HISTORY_LIMIT", "3")]);
    let room = unique("room");
    let url = node.url(&format!("/api/rooms/{room}/messages"));
    let client = reqwest::Client::new();
    for i in 0..5 {
        let status = client
            .post(&url)
            .json(&json!({"user": "alice", "content": format!("m{i}")}))
            .send()
            .await
            .expect("post")
            .status();
        assert_eq!(status, reqwest::StatusCode::CREATED);
    }

    let kept: Value = reqwest::get(&url)
        .await
        .expect("history")
        .json()
        .await
        .expect("JSON");

    let contents: Vec<&str> = kept
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(contents, ["m2", "m3", "m4"]);
}
