#!/usr/bin/env bash
# deploy/kafka/secure-check.sh - check that a secure cluster (kafka.sh start --secure)
# really is one: TLS, SASL/SCRAM-SHA-512, ACLs, replication.
#
# Usage: deploy/kafka/secure-check.sh [--keep]
#
# Starts a 3-broker secure cluster with deploy/kafka/kafka.sh (or reuses the one running
# there), then, with a fresh topic:
#   - TLS: the client port presents a broker certificate the local CA verifies for
#     127.0.0.1; the controller port refuses a client without a certificate;
#   - the operator (sector-operator) creates the topic with the cluster defaults:
#     replication factor 3, 3 replicas in sync, min.insync.replicas=2,
#     unclean.leader.election.enable=false; it writes and reads it;
#   - kafka.sh scram-user makes a SCRAM user b; without ACLs b is refused writing and
#     reading the topic (TopicAuthorizationException) and does not see it;
#   - b with a wrong password is refused (authentication failed);
#   - after the operator adds ACLs with kafka-acls (producer on the topic, consumer on the
#     topic and a group), b writes and reads it; b still may not create a topic.
# Then removes the topic, b's ACLs and b. Prints one line per check; exits 1 at the first
# failure (with the tool's output), 0 if all pass. Stops the cluster at the end if this
# script started it, unless --keep.
#
# Environment (passed on to kafka.sh; the defaults keep away from the dev broker):
#   KAFKA_DATA_DIR   default ${TMPDIR:-/tmp}/ecointegra-secure-kafka-<uid>
#   KAFKA_PORT       default 9192 (brokers 9192-9194, controllers 19192-19194)
#   KAFKA_HEAP_OPTS  default "-Xmx384m -Xms128m" (per broker)
#   SECURE_CHECK_USER  the SCRAM user to make and remove (default b)

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
K="$SCRIPT_DIR/kafka.sh"

export KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-${TMPDIR:-/tmp}/ecointegra-secure-kafka-$(id -u)}"
export KAFKA_PORT="${KAFKA_PORT:-9192}"
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx384m -Xms128m}"
unset KAFKA_BROKERS KAFKA_SECURE
USER_B="${SECURE_CHECK_USER:-b}"

KEEP=0
case "${1:-}" in
  --keep) KEEP=1 ;;
  "") ;;
  -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
esac

WORK="$(mktemp -d "${TMPDIR:-/tmp}/secure-check.XXXXXX")"
STARTED=0
CHECKS=0
TOPIC="secure-check-$(date +%s)-$$"
GROUP="$TOPIC-group"

cleanup() {
  local rc=$?
  if ((STARTED && !KEEP)); then
    "$K" stop >/dev/null 2>&1 || true
    echo "# stopped the cluster this script started (data kept in $KAFKA_DATA_DIR)"
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

ok() { CHECKS=$((CHECKS + 1)); echo "ok $CHECKS - $*"; }
fail() { # MESSAGE [OUTPUT_FILE]
  echo "FAIL - $1"
  if [[ -n "${2:-}" && -s "$2" ]]; then
    echo "---- output ($2) ----"
    tail -n 40 "$2" | sed 's/^/    /'
  fi
  exit 1
}

# run NAME CMD...: run CMD with stdout+stderr in $WORK/NAME.out; never fails.
run() {
  local name="$1"
  shift
  "$@" >"$WORK/$name.out" 2>&1 || echo "exit status $?" >>"$WORK/$name.out"
  echo "$WORK/$name.out"
}

# Operator tools: kafka.sh adds the bootstrap and the operator's client config.
op() { "$K" tool --operator "$@"; }
# b's tools: explicit bootstrap and b's client config (CONFIG is a file).
as_user() { # CONFIG TOOL ARGS...
  local cfg="$1" tool="$2" flag=--command-config
  shift 2
  case "$tool" in
    console-producer) flag=--producer.config ;;
    console-consumer) flag=--consumer.config ;;
  esac
  "$K" tool "$tool" --bootstrap-server "$KAFKA_BOOTSTRAP" "$flag" "$cfg" "$@"
}
produce() { # CONFIG MESSAGES...  (as CONFIG's user; op for the operator)
  local cfg="$1"
  shift
  printf '%s\n' "$@" | as_user "$cfg" console-producer --topic "$TOPIC" \
    --producer-property max.block.ms=15000 --producer-property delivery.timeout.ms=20000 \
    --producer-property request.timeout.ms=10000
}

# ---------------------------------------------------------------------------
echo "# secure-check: KAFKA_DATA_DIR=$KAFKA_DATA_DIR KAFKA_PORT=$KAFKA_PORT topic $TOPIC"
if "$K" status >/dev/null 2>&1 && [[ "$("$K" status 2>/dev/null | grep -c '^KAFKA_SECURE_CA=')" == 1 ]]; then
  echo "# reusing the secure cluster running in $KAFKA_DATA_DIR"
else
  STARTED=1
fi
t0=$SECONDS
out="$(run start "$K" start --brokers 3 --secure)"
grep -q '^KAFKA_BOOTSTRAP=' "$out" || fail "kafka.sh start --brokers 3 --secure" "$out"
env_lines="$("$K" status 2>/dev/null)" || fail "kafka.sh status after start"
if grep -qv '^[A-Z_]*=' <<<"$env_lines"; then fail "status printed a line that is not KEY=VALUE: $env_lines"; fi
eval "$env_lines"
for v in KAFKA_BOOTSTRAP KAFKA_SECURE_CA KAFKA_OPERATOR_CONFIG KAFKA_OPERATOR_LIBRDKAFKA; do
  [[ -n "${!v:-}" ]] || fail "start/status did not print $v" "$out"
done
[[ "$KAFKA_BOOTSTRAP" == "127.0.0.1:$KAFKA_PORT,127.0.0.1:$((KAFKA_PORT + 1)),127.0.0.1:$((KAFKA_PORT + 2))" ]] ||
  fail "unexpected KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP"
ok "3-broker secure cluster up in $((SECONDS - t0))s: KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP"

for f in "$KAFKA_OPERATOR_CONFIG" "$KAFKA_OPERATOR_LIBRDKAFKA" "$KAFKA_DATA_DIR/secure/operator.password"; do
  [[ -f "$f" ]] || fail "missing $f"
  [[ "$(stat -c %a "$f")" == 600 ]] || fail "$f has mode $(stat -c %a "$f"), not 600"
done
for k in security.protocol=SASL_SSL sasl.mechanism=SCRAM-SHA-512 sasl.username=sector-operator \
  "sasl.password=$(head -n1 "$KAFKA_DATA_DIR/secure/operator.password")" "ssl.ca.location=$KAFKA_SECURE_CA"; do
  grep -qxF -- "$k" "$KAFKA_OPERATOR_LIBRDKAFKA" || fail "$KAFKA_OPERATOR_LIBRDKAFKA lacks the line ${k%%=*}=..."
done
ok "operator configs (Java, librdkafka) and password file exist with mode 600"

# --- TLS -------------------------------------------------------------------
out="$(run tls-client bash -c "echo | timeout 20 openssl s_client -connect 127.0.0.1:$KAFKA_PORT -CAfile '$KAFKA_SECURE_CA' -verify_ip 127.0.0.1 -verify_return_error")"
grep -q 'Verify return code: 0 (ok)' "$out" || fail "TLS on the client port 127.0.0.1:$KAFKA_PORT is not verified by $KAFKA_SECURE_CA" "$out"
ok "client port $KAFKA_PORT: TLS, certificate verified by the local CA for IP 127.0.0.1"
cport=$((KAFKA_PORT + 10000))
out="$(run tls-controller bash -c "(sleep 2; echo) | timeout 20 openssl s_client -connect 127.0.0.1:$cport -CAfile '$KAFKA_SECURE_CA'")"
grep -qiE 'alert (bad certificate|certificate required|handshake failure)' "$out" ||
  fail "the controller port $cport accepted a TLS client without a certificate" "$out"
ok "controller port $cport refuses a TLS client without a certificate"

# --- operator ----------------------------------------------------------------
out="$(run create op topics --create --topic "$TOPIC" --partitions 3)"
grep -q "Created topic $TOPIC" "$out" || fail "operator: create topic $TOPIC" "$out"
out="$(run describe op topics --describe --topic "$TOPIC")"
grep -q 'ReplicationFactor: 3' "$out" || fail "topic $TOPIC: replication factor is not 3" "$out"
parts="$(grep -c 'Partition: ' "$out" || true)"
[[ "$parts" == 3 ]] || fail "topic $TOPIC: expected 3 partitions, got $parts" "$out"
bad_isr="$(grep 'Partition: ' "$out" | grep -vE 'Isr: [0-9]+,[0-9]+,[0-9]+([^,0-9]|$)' || true)"
[[ -z "$bad_isr" ]] || fail "topic $TOPIC: partitions without 3 in-sync replicas: $bad_isr" "$out"
out2="$(run configs op configs --describe --entity-type topics --entity-name "$TOPIC" --all)"
grep -qE '^ *min\.insync\.replicas=2 ' "$out2" || fail "topic $TOPIC: min.insync.replicas is not 2" "$out2"
grep -qE '^ *unclean\.leader\.election\.enable=false ' "$out2" || fail "topic $TOPIC: unclean.leader.election.enable is not false" "$out2"
ok "operator created $TOPIC with the defaults: ReplicationFactor 3, Isr of 3 on every partition, min.insync.replicas=2, no unclean election"
sed 's/^/    /' "$out"

out="$(run op-produce produce "$KAFKA_OPERATOR_CONFIG" op-1 op-2 op-3)"
if grep -qE 'Exception|ERROR' "$out"; then fail "operator: produce to $TOPIC" "$out"; fi
out="$(run op-consume as_user "$KAFKA_OPERATOR_CONFIG" console-consumer --topic "$TOPIC" --group "$TOPIC-operator" \
  --from-beginning --max-messages 3 --timeout-ms 30000)"
grep -q 'Processed a total of 3 messages' "$out" || fail "operator: read back 3 messages from $TOPIC" "$out"
ok "operator wrote 3 messages to $TOPIC and read them back"

# --- user b without ACLs -------------------------------------------------------
out="$(run scram-user "$K" scram-user "$USER_B")"
grep -q "^KAFKA_SCRAM_USER=$USER_B\$" "$out" || fail "kafka.sh scram-user $USER_B" "$out"
eval "$(grep '^KAFKA_SCRAM_' "$out")"
[[ -n "${KAFKA_SCRAM_PASSWORD:-}" && -f "${KAFKA_SCRAM_CONFIG:-}" && -f "${KAFKA_SCRAM_LIBRDKAFKA:-}" ]] ||
  fail "scram-user printed no password or config files" "$out"
ok "kafka.sh scram-user $USER_B: SCRAM-SHA-512 user with a generated password, configs $KAFKA_SCRAM_CONFIG"
B_CFG="$KAFKA_SCRAM_CONFIG"

out="$(run b-produce-denied produce "$B_CFG" b-denied)"
grep -q "TopicAuthorizationException: Not authorized to access topics: \[$TOPIC\]" "$out" ||
  fail "$USER_B without ACLs was not refused writing $TOPIC (expected TopicAuthorizationException)" "$out"
ok "$USER_B without ACLs may not write $TOPIC: $(grep -m1 -o 'TopicAuthorizationException.*' "$out")"
out="$(run b-consume-denied as_user "$B_CFG" console-consumer --topic "$TOPIC" --partition 0 --offset earliest \
  --max-messages 1 --timeout-ms 20000)"
grep -q "TopicAuthorizationException: Not authorized to access topics: \[$TOPIC\]" "$out" ||
  fail "$USER_B without ACLs was not refused reading $TOPIC (expected TopicAuthorizationException)" "$out"
ok "$USER_B without ACLs may not read $TOPIC: $(grep -m1 -o 'TopicAuthorizationException.*' "$out")"
out="$(run b-list as_user "$B_CFG" topics --list)"
if grep -qE 'Exception|exit status' "$out"; then fail "$USER_B: topics --list" "$out"; fi
if grep -qxF "$TOPIC" "$out"; then fail "$USER_B without ACLs sees $TOPIC in topics --list" "$out"; fi
ok "$USER_B without ACLs does not see $TOPIC in topics --list"

# --- wrong password --------------------------------------------------------------
sed 's/password="[^"]*"/password="not-the-password"/' "$B_CFG" >"$WORK/b-wrong.properties"
out="$(run b-wrong as_user "$WORK/b-wrong.properties" topics --list)"
grep -q 'exit status' "$out" || fail "$USER_B with a wrong password: topics --list succeeded" "$out"
grep -q 'Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512' "$out" ||
  fail "$USER_B with a wrong password: not refused for invalid credentials" "$out"
ok "$USER_B with a wrong password is refused: Authentication failed ... invalid credentials with SASL mechanism SCRAM-SHA-512"

# --- ACLs for b ---------------------------------------------------------------------
out="$(run acl-producer op acls --add --allow-principal "User:$USER_B" --producer --topic "$TOPIC")"
grep -q 'operation=WRITE' "$out" || fail "operator: kafka-acls --add --producer for $USER_B" "$out"
out="$(run acl-consumer op acls --add --allow-principal "User:$USER_B" --consumer --topic "$TOPIC" --group "$GROUP")"
grep -q 'operation=READ' "$out" || fail "operator: kafka-acls --add --consumer for $USER_B" "$out"
ok "operator added ACLs for User:$USER_B: producer on $TOPIC, consumer on $TOPIC with group $GROUP"

# ACLs reach every broker through the metadata log, asynchronously: retry briefly.
for try in 1 2 3; do
  out="$(run b-produce produce "$B_CFG" b-1 b-2)"
  grep -qE 'Exception|ERROR' "$out" || break
  ((try < 3)) || fail "$USER_B with the producer ACL could not write $TOPIC" "$out"
  sleep 2
done
ok "$USER_B with ACLs wrote 2 messages to $TOPIC"
for try in 1 2 3; do
  out="$(run b-consume as_user "$B_CFG" console-consumer --topic "$TOPIC" --group "$GROUP" --from-beginning \
    --max-messages 5 --timeout-ms 30000)"
  grep -q 'Processed a total of 5 messages' "$out" && break
  ((try < 3)) || fail "$USER_B with the consumer ACL could not read the 5 messages of $TOPIC" "$out"
  sleep 2
done
grep -qx 'b-2' "$out" && grep -qx 'op-1' "$out" || fail "$USER_B read other messages than were written" "$out"
ok "$USER_B with ACLs read all 5 messages of $TOPIC in group $GROUP"
out="$(run b-create as_user "$B_CFG" topics --create --topic "$TOPIC-b")"
grep -qE 'TopicAuthorizationException|ClusterAuthorizationException|Authorization failed' "$out" ||
  fail "$USER_B could create topic $TOPIC-b" "$out"
ok "$USER_B still may not create a topic: $(grep -m1 -oE '(Topic|Cluster)AuthorizationException.*|Authorization failed.*' "$out")"

# --- clean up ---------------------------------------------------------------------
# Deleting a topic keeps its ACLs: remove every ACL of the (fresh) topic and group.
out="$(run acl-remove op acls --remove --force --topic "$TOPIC" --group "$GROUP")"
if grep -q 'exit status' "$out"; then fail "operator: remove the ACLs of $TOPIC and $GROUP" "$out"; fi
out="$(run acl-list op acls --list --principal "User:$USER_B")"
if grep -qE "$TOPIC|exit status" "$out"; then fail "ACLs of User:$USER_B left on $TOPIC" "$out"; fi
run delete-topic op topics --delete --topic "$TOPIC" >/dev/null
out="$(run delete-groups op consumer-groups --delete --group "$GROUP" --group "$TOPIC-operator")"
grep -q 'Deletion of requested consumer groups' "$out" || fail "operator: delete the consumer groups $GROUP, $TOPIC-operator" "$out"
out="$(run delete-user op configs --alter --entity-type users --entity-name "$USER_B" --delete-config SCRAM-SHA-512)"
grep -q 'Completed' "$out" || fail "operator: delete the SCRAM credential of $USER_B" "$out"
rm -f "$KAFKA_DATA_DIR/secure/users/$USER_B".*
ok "removed $TOPIC, its ACLs and consumer groups, and the SCRAM user $USER_B"
echo "# all $CHECKS checks passed in $((SECONDS - t0))s"
