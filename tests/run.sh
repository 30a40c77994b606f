#!/usr/bin/env bash
# The one test command: builds the workspace and runs every test against a real
# Apache Kafka broker.
#
# - If KAFKA_BOOTSTRAP is set, that cluster is used and left alone; the tests
#   that stop and restart the broker are skipped (they need this script's broker).
# - Otherwise the dev broker (deploy/kafka/kafka.sh) is installed and started,
#   and stopped at the end if this run started it.
# Exits non-zero if anything failed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

kafka="$root/deploy/kafka/kafka.sh"
started_here=0
if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
  if ! "$kafka" status >/dev/null 2>&1; then
    started_here=1
  fi
  eval "$("$kafka" start)"
  export ECOINTEGRA_KAFKA_SCRIPT="$kafka"
  if [[ $started_here -eq 1 ]]; then
    trap '"$kafka" stop || true' EXIT
  fi
fi
export KAFKA_BOOTSTRAP
echo "tests/run.sh: Kafka at $KAFKA_BOOTSTRAP" >&2

# The web console's tests drive a real headless Chromium.
tests/browser/setup.sh

# The integration tests run the real `ecointegra` binary as separate processes.
cargo build --workspace --all-targets --locked
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
export ECOINTEGRA_BIN="$target_dir/debug/ecointegra"

status=0
log="$(mktemp)"
# Everything that can run side by side (each test has its own topic prefix).
cargo test --workspace --locked --no-fail-fast -- --skip serial_ 2>&1 | tee -a "$log" || status=1
# Tests that stop and start the broker itself run alone.
if [[ -n "${ECOINTEGRA_KAFKA_SCRIPT:-}" ]]; then
  cargo test --workspace --tests --locked --no-fail-fast -- serial_ --test-threads=1 2>&1 | tee -a "$log" || status=1
else
  echo "tests/run.sh: KAFKA_BOOTSTRAP was given; skipping the tests that restart the broker" >&2
fi
# One closing line over both passes.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }' "$log" || status=1
rm -f "$log"
exit $status
