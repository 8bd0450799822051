#!/usr/bin/env bash
# Fuzzes the parsers of client input (the WebSocket frame decoder, user and
# room names, message ids, content) with libFuzzer for a bounded time: the
# cargo-fuzz target `decode`, fuzz/fuzz_targets/decode.rs.
#
#   scripts/fuzz.sh          # 60 seconds
#   scripts/fuzz.sh 600      # ten minutes
#
# Needs the nightly toolchain (`rustup toolchain install nightly`) and
# installs cargo-fuzz when it is missing. The run starts from the committed
# seed corpus fuzz/corpus/decode/, which it only reads: inputs that reach new
# code go to the scratch directory fuzz/scratch/decode/ (git-ignored; set
# FUZZ_SCRATCH to use another), which later runs start from too.
# Exits non-zero on a crash (a panic or a broken invariant in the target, a
# hang over 10 s, or memory over 2 GiB); the input that did it is written to
# fuzz/artifacts/decode/ and can be replayed with
#   cargo +nightly fuzz run decode fuzz/artifacts/decode/<file>
#
# CI does not run this script: `cargo test` replays the committed corpus
# through the decoder (tests/properties.rs). To keep what a run found, merge
# only the inputs that add coverage into the committed corpus, then commit it:
#   cargo +nightly fuzz run decode fuzz/corpus/decode fuzz/scratch/decode -- -merge=1
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*)
    echo "usage: $0 [seconds]   (got \"$seconds\")" >&2
    exit 2
    ;;
esac

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "error: the nightly toolchain is missing: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

scratch="${FUZZ_SCRATCH:-fuzz/scratch/decode}"
mkdir -p "$scratch"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "fuzzing decode for ${seconds}s from fuzz/corpus/decode; new inputs go to $scratch"
# libFuzzer writes new inputs to the first corpus directory and only reads
# the others.
set +e
cargo +nightly fuzz run decode "$scratch" fuzz/corpus/decode -- \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
set -e

done_line="$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)"
if [ "$status" -ne 0 ]; then
  echo "fuzz: FAILED (exit $status); the input is in fuzz/artifacts/decode/" >&2
  exit "$status"
fi
echo "fuzz: no crash. ${done_line:-}; $(find "$scratch" -type f | wc -l) inputs in $scratch"
