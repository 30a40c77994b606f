#!/usr/bin/env bash
# The one test command: builds the workspace and runs every test against a real
# Apache Kafka broker.
#
# - If KAFKA_BOOTSTRAP is set, that cluster is used and left alone; the tests
#   that stop and restart the broker are skipped (they need this script's broker).
# - Otherwise the dev broker (deploy/kafka/kafka.sh) is installed and started,
#   and stopped at the end if this run started it.
# - The secure-cluster tests (tests/tests/secure_cluster.rs, named secure_*)
#   get a 3-broker secure cluster of their own (TLS, SASL/SCRAM, ACLs), started
#   once, on other ports and another data directory, for them alone, then
#   stopped. The other passes skip them; with KAFKA_BOOTSTRAP given they are
#   skipped altogether.
# Exits non-zero if anything failed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

kafka="$root/deploy/kafka/kafka.sh"
given_bootstrap="${KAFKA_BOOTSTRAP:-}"
# The secure cluster's place: away from the dev broker (9092) and from
# deploy/kafka/secure-check.sh (9192).
secure_env=(KAFKA_PORT="${ECOINTEGRA_SECURE_KAFKA_PORT:-9292}"
  KAFKA_DATA_DIR="${TMPDIR:-/tmp}/ecointegra-tests-secure-kafka-$(id -u)"
  KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx384m -Xms128m}")
started_here=0
secure_started=0
cleanup() {
  if [[ $secure_started -eq 1 ]]; then env "${secure_env[@]}" "$kafka" stop || true; fi
  if [[ $started_here -eq 1 ]]; then "$kafka" stop || true; fi
}
trap cleanup EXIT
if [[ -z "$given_bootstrap" ]]; then
  if ! "$kafka" status >/dev/null 2>&1; then
    started_here=1
  fi
  eval "$("$kafka" start)"
  export ECOINTEGRA_KAFKA_SCRIPT="$kafka"
fi
export KAFKA_BOOTSTRAP
echo "tests/run.sh: Kafka at $KAFKA_BOOTSTRAP" >&2

# The web console's tests drive a real headless Chromium.
tests/browser/setup.sh
# The notification tests mail through a real SMTP server (aiosmtpd).
ECOINTEGRA_SMTPD_PYTHON="$(tests/mail/setup.sh)"
export ECOINTEGRA_SMTPD_PYTHON
# The PIDE adapter's tests play both SGDs with Python's zeep (PyPI, pinned).
ECOINTEGRA_PIDE_PYTHON="$(tests/pide/setup.sh)"
export ECOINTEGRA_PIDE_PYTHON

target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

# The release before, for the rolling-upgrade test (tests/tests/upgrade.rs):
# built once from the commit tests/previous-release names, and kept outside
# the clone. In a target directory of its own: the same workspace at another
# commit would share this tree's artifact names, and its older files would
# pass for fresh.
cache="${ECOINTEGRA_CACHE:-$HOME/.cache/ecointegra}"
previous="$(tr -d '[:space:]' < tests/previous-release)"
export ECOINTEGRA_PREVIOUS_BIN="$cache/previous/ecointegra-$previous"
if [[ ! -x "$ECOINTEGRA_PREVIOUS_BIN" ]]; then
  if git cat-file -e "$previous^{commit}" 2>/dev/null; then
    work="$cache/previous/build"
    rm -rf "$work" && mkdir -p "$work/src"
    git archive "$previous" | tar -x -C "$work/src"
    if (cd "$work/src" && CARGO_TARGET_DIR="$work/target" CARGO_PROFILE_DEV_DEBUG=false cargo build --locked -p ecointegra-node --bin ecointegra); then
      cp "$work/target/debug/ecointegra" "$ECOINTEGRA_PREVIOUS_BIN"
    else
      echo "tests/run.sh: the release before ($previous) did not build; the upgrade test will fail" >&2
    fi
    rm -rf "$work"
  else
    echo "tests/run.sh: this clone lacks commit $previous (tests/previous-release); the upgrade test will fail" >&2
  fi
fi

# The integration tests run the real `ecointegra` binary as separate processes.
cargo build --workspace --all-targets --locked
export ECOINTEGRA_BIN="$target_dir/debug/ecointegra"

status=0
log="$(mktemp)"
# Everything that can run side by side (each test has its own topic prefix).
cargo test --workspace --locked --no-fail-fast -- --skip serial_ --skip secure_ 2>&1 | tee -a "$log" || status=1
# Tests that stop and start the broker itself run alone.
if [[ -n "${ECOINTEGRA_KAFKA_SCRIPT:-}" ]]; then
  cargo test --workspace --tests --locked --no-fail-fast -- serial_ --test-threads=1 2>&1 | tee -a "$log" || status=1
else
  echo "tests/run.sh: KAFKA_BOOTSTRAP was given; skipping the tests that restart the broker" >&2
fi
# The secure-cluster tests, one at a time, on their own cluster, started
# empty (--fresh: on a machine that ran them before, the topics of every
# earlier run made its brokers' start outlast kafka.sh's 90 s); its
# variables (KAFKA_BOOTSTRAP and the rest) stay inside the subshell.
if [[ -z "$given_bootstrap" ]]; then
  secure_started=1
  if secure_vars="$(env "${secure_env[@]}" "$kafka" start --brokers 3 --secure --fresh)"; then
    (
      eval "$secure_vars"
      export ECOINTEGRA_SECURE_KAFKA="$KAFKA_BOOTSTRAP" KAFKA_OPERATOR_LIBRDKAFKA KAFKA_SECURE_CA
      # The cluster's place, for the tests that stop and start its brokers.
      export "${secure_env[@]}" ECOINTEGRA_KAFKA_SCRIPT="$kafka"
      # The container image, Compose file and Helm chart, statically; with
      # this cluster, the chart's Kafka ACLs are compared with the plan of
      # `ecointegra sector provision --dry-run`.
      static=0
      deploy/check-static.sh || static=1
      # --workspace, as the passes above: the same features, nothing rebuilt.
      cargo test --workspace --test secure_cluster --locked --no-fail-fast -- --test-threads=1
      exit $(( $? || static ))
    ) 2>&1 | tee -a "$log" || status=1
  else
    echo "tests/run.sh: the secure cluster did not start" >&2
    status=1
  fi
  env "${secure_env[@]}" "$kafka" stop || true
  secure_started=0
else
  echo "tests/run.sh: KAFKA_BOOTSTRAP was given; skipping the secure-cluster tests" >&2
fi
# One closing line over every pass.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }' "$log" || status=1
rm -f "$log"
exit $status
