#!/usr/bin/env bash
# deploy/kafka/kafka.sh - run a real Apache Kafka 4.x cluster (KRaft, loopback only)
# for local development and tests of ecointegra.
#
# Usage:
#   deploy/kafka/kafka.sh install                 fetch the Kafka jars (no-op once cached)
#   deploy/kafka/kafka.sh start [--brokers N] [--secure] [--fresh]
#                                                 start 1 (default) or N brokers, wait until
#                                                 they answer metadata requests, then print
#                                                 KAFKA_BOOTSTRAP=127.0.0.1:9092[,...] on stdout
#                                                 (--secure: TLS + SASL/SCRAM + ACLs, below;
#                                                 --fresh: a cluster that is not running starts
#                                                 empty, its topics and messages deleted)
#   deploy/kafka/kafka.sh stop                    stop the brokers this script started
#   deploy/kafka/kafka.sh status                  exit 0 if all brokers run, 3 if not
#   deploy/kafka/kafka.sh tool [--operator] CLASS|ALIAS [ARGS]
#                                                 run a Kafka CLI tool on the same classpath,
#                                                 e.g. `tool topics --bootstrap-server
#                                                 127.0.0.1:9092 --list`. Aliases: topics,
#                                                 console-producer, console-consumer,
#                                                 consumer-groups, configs, acls, api-versions,
#                                                 metadata-quorum, cluster, storage.
#                                                 --operator (secure cluster): add the
#                                                 cluster's --bootstrap-server (unless given)
#                                                 and the sector operator's client config
#   deploy/kafka/kafka.sh scram-user NAME [PASSWORD]
#                                                 secure cluster: create or update the
#                                                 SCRAM-SHA-512 user NAME (no ACLs) and write
#                                                 its client configs; prints KAFKA_SCRAM_*
#
# The only stdout lines of `start`/`status`/`scram-user` are KEY=VALUE lines, so this works:
#   eval "$(deploy/kafka/kafka.sh start)"; echo "$KAFKA_BOOTSTRAP"
# Everything else goes to stderr. All commands are idempotent; any cwd works.
#
# Topology: every broker is a combined broker+controller (process.roles=broker,controller)
# with a static voter quorum (controller.quorum.voters). Broker N (node.id=N, N=1..brokers)
# listens on 127.0.0.1:(KAFKA_PORT+N-1) (PLAINTEXT) and 127.0.0.1:(KAFKA_CONTROLLER_PORT+N-1)
# (CONTROLLER). One broker: every replication factor / min ISR is 1. Three or more brokers:
# default/internal-topic replication factor 3, min.insync.replicas=2.
# auto.create.topics.enable=false: create topics explicitly.
#
# Secure cluster (start --secure, or KAFKA_SECURE=1), the shape of a production cluster
# (docs: DESIGN.md, Scale), same ports:
#   - client listener SASL_SSL on 127.0.0.1:(KAFKA_PORT+N-1): TLS with a broker certificate
#     of a local CA, SASL/SCRAM-SHA-512 the only mechanism. It is also the inter-broker
#     listener: brokers authenticate to each other as the SCRAM user kafka-broker.
#   - controller listener SSL on 127.0.0.1:(KAFKA_CONTROLLER_PORT+N-1) with mutual TLS
#     (ssl.client.auth=required): controllers and brokers present their broker certificate
#     (CN=kafka-broker, mapped to User:kafka-broker). Not plaintext: a plaintext controller
#     listener would need User:ANONYMOUS as super user. (SCRAM cannot protect it: SCRAM
#     credentials live in the metadata log that the controllers serve.)
#   - StandardAuthorizer, allow.everyone.if.no.acl.found=false, super.users =
#     User:sector-operator (the sector operator) and User:kafka-broker (the brokers).
#     Everybody else needs ACLs (tool acls, or the provisioning command).
#   - unclean.leader.election.enable=false (and RF 3 / min.insync.replicas=2 from 3 brokers).
#   - SCRAM credentials of sector-operator and kafka-broker are added when the storage is
#     formatted (kafka-storage format --add-scram); their passwords are generated once.
#   The CA, certificates, passwords and client configs live under $KAFKA_DATA_DIR/secure
#   (mode 700; password and config files 600), are made on first use with openssl and
#   reused across starts and reformats (certificates are renewed when they expire within
#   30 days). start/status print, besides KAFKA_BOOTSTRAP:
#     KAFKA_SECURE_CA=<dir>/secure/ca.pem                        the CA certificate (PEM)
#     KAFKA_OPERATOR_CONFIG=<dir>/secure/operator.properties     Java client config
#                                                                (--command-config etc.)
#     KAFKA_OPERATOR_LIBRDKAFKA=<dir>/secure/operator.librdkafka.properties
#                                   librdkafka: security.protocol, sasl.mechanism,
#                                   sasl.username, sasl.password, ssl.ca.location
#   scram-user NAME writes the same pair for NAME under <dir>/secure/users/ and prints
#   KAFKA_SCRAM_USER, KAFKA_SCRAM_PASSWORD, KAFKA_SCRAM_CONFIG, KAFKA_SCRAM_LIBRDKAFKA.
#   Without PASSWORD it reuses NAME's stored password, or generates one.
#   The files hold the passwords in clear (mode 600), and kafka-storage format gets the two
#   SCRAM passwords on its command line (visible in ps while it runs): a development
#   cluster, not a vault. Admin tools go through the brokers; the controller port accepts
#   only broker certificates, so --bootstrap-controller with the operator config fails.
#
# Installation: deploy/kafka/pom.xml depends on org.apache.kafka:kafka_2.13, kafka-tools and
# log4j2; `mvn dependency:copy-dependencies` copies the official jars from Maven Central into
#   ${ECOINTEGRA_CACHE:-$HOME/.cache/ecointegra}/kafka-<version>/libs
# (outside the work tree). If KAFKA_HOME points at an unpacked Apache Kafka binary
# distribution (with libs/), its libs/ is used instead and Maven is not needed.
# Needs Java 17+ (and Maven unless KAFKA_HOME is used); --secure also needs openssl.
#
# Data layout (default <repo>/.kafka, override with KAFKA_DATA_DIR; owned by this script):
#   cluster.env               the cluster shape (brokers, ports, version, secure) and cluster id
#   config/log4j2.xml         broker logging config (regenerated on every start)
#   broker-N/server.properties  broker config (regenerated on every start)
#   broker-N/data/            log.dirs (KRaft metadata + topic data)
#   broker-N/kafka.pid        pid of the running broker
#   logs/server.log           broker 1 log (server-N.log for broker N>1)
#   logs/broker-N.out         broker JVM stdout/stderr
#   secure/                   --secure only: CA, broker keys and certificates, passwords,
#                             client configs (see above)
# The shape is fixed when storage is formatted. Starting with another shape (other
# --brokers, --secure or not, KAFKA_PORT, KAFKA_CONTROLLER_PORT or Kafka version) while
# stopped DELETES the broker-* data and reformats (with a message); while brokers run, start
# refuses and asks you to stop first. `start` is fast on an existing, matching shape (no
# reformat).
#
# Environment:
#   KAFKA_VERSION         Kafka version from Maven Central (default 4.1.1)
#   KAFKA_DATA_DIR        data directory (default <repo>/.kafka)
#   ECOINTEGRA_CACHE      cache root for downloaded jars (default $HOME/.cache/ecointegra)
#   KAFKA_HOME            use $KAFKA_HOME/libs of an unpacked Kafka distribution instead
#   KAFKA_PORT            first client port (default 9092)
#   KAFKA_CONTROLLER_PORT first CONTROLLER port (default KAFKA_PORT+10000)
#   KAFKA_BROKERS         number of brokers when --brokers is not given (default 1)
#   KAFKA_SECURE          1: start --secure even without the option (default 0)
#   KAFKA_START_TIMEOUT   seconds to wait for readiness (default 90)
#   KAFKA_STOP_TIMEOUT    seconds to wait after SIGTERM before SIGKILL (default 30)
#   KAFKA_HEAP_OPTS       broker heap (default "-Xmx512m -Xms256m")
#   KAFKA_JVM_PERFORMANCE_OPTS  broker GC/JIT options (default as in kafka-run-class.sh)
#   KAFKA_OPTS            extra broker JVM options
#   KAFKA_LOG_LEVEL       broker root log level (default INFO)
#   JAVA_HOME             Java to use (default: java on PATH)

set -euo pipefail

PROG="kafka.sh"
SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/../.." && pwd -P)"
POM="$SCRIPT_DIR/pom.xml"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
HOST="127.0.0.1"
BASE_PORT="${KAFKA_PORT:-9092}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
LOG_LEVEL="${KAFKA_LOG_LEVEL:-INFO}"

DATA_DIR="${KAFKA_DATA_DIR:-$REPO_ROOT/.kafka}"
case "$DATA_DIR" in /*) ;; *) DATA_DIR="$PWD/$DATA_DIR" ;; esac
DATA_DIR="${DATA_DIR%/}"
OWNER_MARKER="$DATA_DIR/.ecointegra-kafka"
SHAPE_FILE="$DATA_DIR/cluster.env"
LOG_DIR="$DATA_DIR/logs"
CONF_DIR="$DATA_DIR/config"
SECURE_DIR="$DATA_DIR/secure"
OPERATOR_USER="sector-operator" # super user: the sector operator
BROKER_USER="kafka-broker"      # super user: brokers and controllers among themselves
SCRAM_MECHANISM="SCRAM-SHA-512"
SECURE=0 # set by start --secure / KAFKA_SECURE, or from the shape file

CACHE_ROOT="${ECOINTEGRA_CACHE:-${HOME:?HOME is not set; set ECOINTEGRA_CACHE}/.cache/ecointegra}"
LIB_CACHE="$CACHE_ROOT/kafka-$KAFKA_VERSION"

# Set by resolve_libs / find_java.
LIBS=""
LIBS_VERSION=""
JAVA=""

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

is_uint "$BASE_PORT" || die "KAFKA_PORT must be a number (got '$BASE_PORT')"
CONTROLLER_BASE_PORT="${KAFKA_CONTROLLER_PORT:-$((BASE_PORT + 10000))}"
is_uint "$CONTROLLER_BASE_PORT" || die "KAFKA_CONTROLLER_PORT must be a number (got '$CONTROLLER_BASE_PORT')"
is_uint "$START_TIMEOUT" || die "KAFKA_START_TIMEOUT must be a number of seconds"
is_uint "$STOP_TIMEOUT" || die "KAFKA_STOP_TIMEOUT must be a number of seconds"

broker_port() { echo $((BASE_PORT + $1 - 1)); }
controller_port() { echo $((CONTROLLER_BASE_PORT + $1 - 1)); }
broker_dir() { echo "$DATA_DIR/broker-$1"; }
pid_file() { echo "$DATA_DIR/broker-$1/kafka.pid"; }
props_file() { echo "$DATA_DIR/broker-$1/server.properties"; }
server_log() { if [[ "$1" == 1 ]]; then echo "$LOG_DIR/server.log"; else echo "$LOG_DIR/server-$1.log"; fi; }
out_file() { echo "$LOG_DIR/broker-$1.out"; }

bootstrap_for() { # N -> 127.0.0.1:9092,...
  local n="$1" i s=""
  for ((i = 1; i <= n; i++)); do s+="${s:+,}$HOST:$(broker_port "$i")"; done
  echo "$s"
}

# ---------------------------------------------------------------------------
# Prerequisites and installation
# ---------------------------------------------------------------------------

install_hint() { # PACKAGES...
  log "  to install on Debian/Ubuntu: apt-get update && apt-get install -y $*"
  log "  (or set JAVA_HOME to a Java 17+ runtime; with KAFKA_HOME=<unpacked Kafka> Maven is not needed)"
}

find_java() { # sets JAVA or returns 1 with a message
  [[ -n "$JAVA" ]] && return 0
  local j
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    j="$JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then
    j="$(command -v java)"
  else
    log "error: Java 17+ is required but no 'java' was found (JAVA_HOME unset and none on PATH)."
    return 1
  fi
  local spec
  spec="$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p' | head -n1)"
  spec="${spec#1.}"
  spec="${spec%%.*}"
  if ! is_uint "${spec:-x}" || ((spec < 17)); then
    log "error: Java 17+ is required, but $j is Java '${spec:-unknown}'."
    return 1
  fi
  JAVA="$j"
}

need_java() {
  find_java || { install_hint openjdk-17-jre-headless; exit 1; }
}

libs_marker() { echo "$LIB_CACHE/.installed"; }

pom_digest() { sha256sum "$POM" | cut -d' ' -f1; }

maven_libs_ok() {
  local marker
  marker="$(libs_marker)"
  [[ -f "$marker" && -f "$LIB_CACHE/libs/kafka_2.13-$KAFKA_VERSION.jar" ]] &&
    grep -qx "pom_sha256=$(pom_digest)" "$marker"
}

resolve_libs() { # sets LIBS and LIBS_VERSION; returns 1 if not installed
  if [[ -n "${KAFKA_HOME:-}" ]]; then
    [[ -d "$KAFKA_HOME/libs" ]] || die "KAFKA_HOME=$KAFKA_HOME has no libs/ directory (expected an unpacked Apache Kafka distribution)"
    local jar="" f
    for f in "$KAFKA_HOME"/libs/kafka_2.1[0-9]-*.jar; do
      case "$f" in *-test*.jar | *-sources.jar | *-javadoc.jar) continue ;; esac
      [[ -f "$f" ]] && { jar="$f"; break; }
    done
    [[ -n "$jar" ]] || die "KAFKA_HOME=$KAFKA_HOME/libs contains no kafka_2.1x-<version>.jar"
    jar="$(basename "$jar" .jar)"
    LIBS="$(cd "$KAFKA_HOME/libs" && pwd -P)"
    LIBS_VERSION="${jar#kafka_2.1?-}"
    return 0
  fi
  if maven_libs_ok; then
    LIBS="$LIB_CACHE/libs"
    LIBS_VERSION="$KAFKA_VERSION"
    return 0
  fi
  return 1
}

cmd_install() {
  if [[ -n "${KAFKA_HOME:-}" ]]; then
    need_java
    resolve_libs
    log "using Kafka $LIBS_VERSION from KAFKA_HOME: $LIBS"
    return 0
  fi
  if resolve_libs; then
    need_java
    log "Kafka $KAFKA_VERSION already installed in $LIBS"
    return 0
  fi
  local -a missing=()
  find_java || missing+=(openjdk-17-jre-headless)
  if ! command -v mvn >/dev/null 2>&1; then
    log "error: Maven ('mvn') is required to download Kafka $KAFKA_VERSION from Maven Central."
    missing+=(maven)
  fi
  if ((${#missing[@]})); then install_hint "${missing[@]}"; exit 1; fi
  [[ -f "$POM" ]] || die "missing $POM"

  mkdir -p "$LIB_CACHE"
  exec 8>"$LIB_CACHE/.lock"
  if command -v flock >/dev/null 2>&1; then flock -w 900 8 || die "timed out waiting for another install ($LIB_CACHE/.lock)"; fi
  if resolve_libs; then # installed by a concurrent run while we waited
    exec 8>&-
    log "Kafka $KAFKA_VERSION already installed in $LIBS"
    return 0
  fi

  log "downloading Apache Kafka $KAFKA_VERSION (org.apache.kafka:kafka_2.13 + tools + log4j2) from Maven Central into $LIB_CACHE/libs ..."
  local tmp start=$SECONDS
  tmp="$(mktemp -d "$LIB_CACHE/.install.XXXXXX")"
  cp "$POM" "$tmp/pom.xml"
  # Run from the temp dir so Maven leaves nothing (e.g. target/) in the work tree.
  if ! (cd "$tmp" && mvn -q -B -Dstyle.color=never -f "$tmp/pom.xml" \
    -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$tmp/libs" -DincludeScope=runtime 2>&1 |
    sed 's/\x1b\[[0-9;]*m//g') >&2; then # strip the stray ANSI codes of Debian's mvn 3.8
    rm -rf "$tmp"
    [[ -d "$LIB_CACHE/libs" ]] || rm -rf "$LIB_CACHE" # nothing installed there: leave no empty dir
    die "Maven could not fetch Kafka $KAFKA_VERSION (org.apache.kafka:kafka_2.13:$KAFKA_VERSION) from Maven Central; see the output above"
  fi
  [[ -f "$tmp/libs/kafka_2.13-$KAFKA_VERSION.jar" ]] || { rm -rf "$tmp"; die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is missing"; }
  rm -rf "$LIB_CACHE/libs"
  mv "$tmp/libs" "$LIB_CACHE/libs"
  cp "$POM" "$LIB_CACHE/pom.xml"
  printf 'kafka_version=%s\npom_sha256=%s\n' "$KAFKA_VERSION" "$(pom_digest)" >"$(libs_marker)"
  rm -rf "$tmp"
  exec 8>&-
  resolve_libs || die "installation of Kafka $KAFKA_VERSION failed"
  log "installed Kafka $KAFKA_VERSION ($(find "$LIBS" -name '*.jar' | wc -l) jars) in $((SECONDS - start))s: $LIBS"
}

ensure_installed() {
  resolve_libs || cmd_install
  resolve_libs || die "Kafka is not installed"
  need_java
}

# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

# True if PID is a live java process running kafka.Kafka with broker N's config.
is_our_broker() {
  local pid="$1" n="$2" exe cmdline
  is_uint "$pid" || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  [[ "$(basename -- "${exe:-none}")" == java ]] || return 1
  cmdline="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  grep -qx 'kafka.Kafka' <<<"$cmdline" || return 1
  grep -qxF "$(props_file "$n")" <<<"$cmdline"
}

broker_pid() { # prints the pid of broker N if it runs (ours), else returns 1
  local n="$1" f pid="" c
  f="$(pid_file "$n")"
  [[ -f "$f" ]] && pid="$(head -n1 "$f" 2>/dev/null || true)"
  if ! is_our_broker "$pid" "$n"; then
    # Pid file missing or stale: look for a java kafka.Kafka running broker N's config file.
    pid=""
    for c in /proc/[0-9]*/cmdline; do
      c="${c#/proc/}"
      c="${c%/cmdline}"
      if is_our_broker "$c" "$n"; then pid="$c"; break; fi
    done 2>/dev/null
    [[ -n "$pid" ]] || return 1
    [[ -d "$(broker_dir "$n")" ]] && echo "$pid" >"$f"
  fi
  echo "$pid"
}

# Broker numbers that have a broker-N directory (any shape).
known_brokers() {
  local d
  for d in "$DATA_DIR"/broker-*; do
    [[ -d "$d" ]] || continue
    d="${d##*/broker-}"
    is_uint "$d" && echo "$d"
  done | sort -n
}

running_brokers() {
  local n
  for n in $(known_brokers); do
    broker_pid "$n" >/dev/null && echo "$n"
  done
  return 0
}

port_open() { (: <>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

ensure_data_dir() {
  if [[ -d "$DATA_DIR" && ! -e "$OWNER_MARKER" ]] && [[ -n "$(ls -A "$DATA_DIR" 2>/dev/null)" ]]; then
    die "$DATA_DIR exists, is not empty and was not created by $PROG (no $OWNER_MARKER); choose another KAFKA_DATA_DIR"
  fi
  mkdir -p "$DATA_DIR" "$LOG_DIR" "$CONF_DIR"
  [[ -e "$OWNER_MARKER" ]] || echo "Kafka data directory owned by deploy/kafka/kafka.sh; safe to delete when Kafka is stopped." >"$OWNER_MARKER"
}

with_lock() { # serialize start/stop on the same data dir
  exec 9>"$DATA_DIR/.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 300 9 || die "another $PROG is busy with $DATA_DIR (lock $DATA_DIR/.lock)"
  fi
}

# ---------------------------------------------------------------------------
# Secure cluster: local CA, broker certificates, SCRAM passwords, client configs
# ---------------------------------------------------------------------------

ca_pem() { echo "$SECURE_DIR/ca.pem"; }
broker_keystore() { echo "$SECURE_DIR/broker-$1.keystore.pem"; } # key + certificate + CA
password_file() { echo "$SECURE_DIR/$1.password"; }
operator_config() { echo "$SECURE_DIR/operator.properties"; }
operator_librdkafka() { echo "$SECURE_DIR/operator.librdkafka.properties"; }
users_dir() { echo "$SECURE_DIR/users"; }

OPERATOR_PASSWORD=""
BROKER_PASSWORD=""

gen_password() { # 32 random characters of A-Z a-z 0-9
  local p=""
  while ((${#p} < 32)); do p+="$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"; done
  echo "${p:0:32}"
}

# Characters that survive every place a password goes unquoted or half-quoted: the
# --add-scram / --add-config [password=...] syntax, JAAS strings, properties files.
PASSWORD_CHARS='8-128 characters of A-Z a-z 0-9 . _ ~ + @ % -'
valid_password() { [[ "$1" =~ ^[A-Za-z0-9._~+@%-]{8,128}$ ]]; }

write_private() { # FILE: stdin -> FILE, mode 600, atomically
  local f="$1"
  (umask 077 && cat >"$f.tmp.$$" && mv -f "$f.tmp.$$" "$f") || { rm -f "$f.tmp.$$"; die "could not write $f"; }
}

ensure_password() { # FILE -> prints the password stored in FILE (generated once)
  local f="$1" p
  if [[ ! -s "$f" ]]; then
    gen_password | write_private "$f"
    log "generated a password in $f"
  fi
  chmod 600 "$f"
  p="$(head -n1 "$f")"
  valid_password "$p" || die "$f does not hold a usable password ($PASSWORD_CHARS)"
  echo "$p"
}

write_client_configs() { # USER PASSWORD JAVA_FILE LIBRDKAFKA_FILE
  local user="$1" pw="$2" java="$3" rdk="$4"
  write_private "$java" <<EOF
# Generated by deploy/kafka/kafka.sh: Java client config of the SCRAM user $user
# of the secure cluster in $DATA_DIR (for --command-config, --producer.config, ...).
security.protocol=SASL_SSL
sasl.mechanism=$SCRAM_MECHANISM
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$user" password="$pw";
ssl.truststore.type=PEM
ssl.truststore.location=$(ca_pem)
EOF
  # librdkafka option names, plain KEY=VALUE lines (no comments: easy for any reader).
  write_private "$rdk" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=$SCRAM_MECHANISM
sasl.username=$user
sasl.password=$pw
ssl.ca.location=$(ca_pem)
EOF
}

write_openssl_cnf() {
  cat >"$SECURE_DIR/openssl.cnf" <<'EOF'
# Generated by deploy/kafka/kafka.sh: extensions of the local CA and broker certificates.
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[broker_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
}

run_openssl() { # WHAT ARGS...: openssl with its chatter in secure/openssl.out
  local what="$1"
  shift
  if ! (umask 077 && openssl "$@") >"$SECURE_DIR/openssl.out" 2>&1; then
    cat "$SECURE_DIR/openssl.out" >&2
    die "openssl failed to make $what"
  fi
}

CERT_RENEW_SECONDS=$((30 * 86400))

# Makes what is missing of: the CA, broker 1..N keys and certificates, the passwords of
# sector-operator and kafka-broker, the operator's client configs. Sets OPERATOR_PASSWORD
# and BROKER_PASSWORD.
ensure_secure_material() { # N
  local n="$1" i ca key
  command -v openssl >/dev/null 2>&1 || { log "error: --secure needs openssl to make the certificates"; install_hint openssl; exit 1; }
  mkdir -p "$SECURE_DIR" "$(users_dir)"
  chmod 700 "$SECURE_DIR" "$(users_dir)"
  write_openssl_cnf
  ca="$(ca_pem)"
  key="$SECURE_DIR/ca.key"
  if [[ ! -s "$ca" || ! -s "$key" ]] || ! openssl x509 -checkend "$CERT_RENEW_SECONDS" -noout -in "$ca" >/dev/null 2>&1; then
    [[ -s "$ca" ]] && log "the local CA $ca is missing its key or expires within 30 days: making a new one (clients must trust the new $ca)"
    run_openssl "the local CA" req -x509 -new -config "$SECURE_DIR/openssl.cnf" -extensions ca_ext \
      -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$key" -out "$ca.tmp" -days 3650 \
      -subj "/O=ecointegra development/CN=ecointegra development Kafka CA ($(hostname 2>/dev/null || echo localhost))"
    chmod 644 "$ca.tmp"
    mv -f "$ca.tmp" "$ca"
    log "made a local CA: $ca (valid 10 years)"
  fi
  for ((i = 1; i <= n; i++)); do
    local cert="$SECURE_DIR/broker-$i.pem" bkey="$SECURE_DIR/broker-$i.key"
    if [[ -s "$cert" && -s "$bkey" && -s "$(broker_keystore "$i")" ]] &&
      openssl x509 -checkend "$CERT_RENEW_SECONDS" -noout -in "$cert" >/dev/null 2>&1 &&
      openssl verify -CAfile "$ca" "$cert" >/dev/null 2>&1; then
      continue
    fi
    run_openssl "the key of broker $i" req -new -config "$SECURE_DIR/openssl.cnf" \
      -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$bkey" -out "$SECURE_DIR/broker-$i.csr" \
      -subj "/O=ecointegra development/OU=broker-$i/CN=$BROKER_USER"
    run_openssl "the certificate of broker $i" x509 -req -in "$SECURE_DIR/broker-$i.csr" \
      -CA "$ca" -CAkey "$key" -set_serial "0x$(openssl rand -hex 16)" -days 825 \
      -extfile "$SECURE_DIR/openssl.cnf" -extensions broker_ext -out "$cert"
    rm -f "$SECURE_DIR/broker-$i.csr"
    cat "$bkey" "$cert" "$ca" | write_private "$(broker_keystore "$i")"
    log "made the certificate of broker $i: $cert (CN=$BROKER_USER, SAN IP:127.0.0.1 DNS:localhost, valid 825 days)"
  done
  OPERATOR_PASSWORD="$(ensure_password "$(password_file operator)")" || exit 1
  BROKER_PASSWORD="$(ensure_password "$(password_file "$BROKER_USER")")" || exit 1
  write_client_configs "$OPERATOR_USER" "$OPERATOR_PASSWORD" "$(operator_config)" "$(operator_librdkafka)"
}

# A short digest of the SCRAM passwords the storage was formatted with (not secret).
secure_fingerprint() {
  printf '%s\n%s\n' "$OPERATOR_PASSWORD" "$BROKER_PASSWORD" | sha256sum | cut -c1-16
}

print_secure_env() { # the KEY=VALUE lines of a secure cluster, after KAFKA_BOOTSTRAP
  printf 'KAFKA_SECURE_CA=%q\n' "$(ca_pem)"
  printf 'KAFKA_OPERATOR_CONFIG=%q\n' "$(operator_config)"
  printf 'KAFKA_OPERATOR_LIBRDKAFKA=%q\n' "$(operator_librdkafka)"
}

write_log4j_configs() {
  cat >"$CONF_DIR/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by deploy/kafka/kafka.sh on every start; do not edit. -->
<Configuration status="WARN" name="ecointegra-kafka-broker" shutdownHook="disable">
  <Appenders>
    <RollingFile name="server" fileName="\${sys:kafka.log.file}" filePattern="\${sys:kafka.log.file}.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="100 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="$LOG_LEVEL"><AppenderRef ref="server"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
  </Loggers>
</Configuration>
EOF
  cat >"$CONF_DIR/tools-log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by deploy/kafka/kafka.sh; logging of the Kafka CLI tools it runs. -->
<Configuration status="WARN" name="ecointegra-kafka-tools">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stderr"/></Root>
  </Loggers>
</Configuration>
EOF
}

write_server_properties() { # N BROKERS
  local n="$1" total="$2" i voters="" rf isr client=PLAINTEXT controller_protocol=PLAINTEXT
  for ((i = 1; i <= total; i++)); do voters+="${voters:+,}$i@$HOST:$(controller_port "$i")"; done
  if ((total >= 3)); then rf=3; isr=2; else rf="$total"; isr=1; fi
  if ((SECURE)); then client=SASL_SSL; controller_protocol=SSL; fi
  mkdir -p "$(broker_dir "$n")/data"
  # The secure config holds the kafka-broker password: not readable by others.
  if ((SECURE)); then rm -f "$(props_file "$n")"; (umask 077 && : >"$(props_file "$n")"); fi
  cat >"$(props_file "$n")" <<EOF
# Generated by deploy/kafka/kafka.sh on every start; do not edit.
# Broker $n of a $total-broker KRaft cluster (combined broker+controller).
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=$client://$HOST:$(broker_port "$n"),CONTROLLER://$HOST:$(controller_port "$n")
advertised.listeners=$client://$HOST:$(broker_port "$n")
inter.broker.listener.name=$client
controller.listener.names=CONTROLLER
listener.security.protocol.map=$client:$client,CONTROLLER:$controller_protocol
log.dirs=$(broker_dir "$n")/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
  ((SECURE)) || return 0
  cat >>"$(props_file "$n")" <<EOF
# --secure: see the header of deploy/kafka/kafka.sh.
# Client and inter-broker listener SASL_SSL: SCRAM-SHA-512 over TLS; brokers log in to each
# other as $BROKER_USER.
sasl.enabled.mechanisms=$SCRAM_MECHANISM
sasl.mechanism.inter.broker.protocol=$SCRAM_MECHANISM
listener.name.sasl_ssl.$(tr '[:upper:]' '[:lower:]' <<<"$SCRAM_MECHANISM").sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$BROKER_USER" password="$BROKER_PASSWORD";
ssl.keystore.type=PEM
ssl.keystore.location=$(broker_keystore "$n")
ssl.truststore.type=PEM
ssl.truststore.location=$(ca_pem)
ssl.endpoint.identification.algorithm=https
# Controller listener SSL with client certificates; CN=$BROKER_USER -> User:$BROKER_USER.
listener.name.controller.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([^,]+),.*\$/\$1/,RULE:^CN=([^,]+)\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$OPERATOR_USER;User:$BROKER_USER
unclean.leader.election.enable=false
EOF
}

# Run a JVM tool on the Kafka classpath (stdout/stderr as the caller wants).
TOOL_CMD=()
tool_cmd() { # sets TOOL_CMD to "java <opts> -cp libs/*" (append the main class and args)
  local -a opts
  read -r -a opts <<<"${KAFKA_TOOL_JVM_OPTS:--Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto -Djava.awt.headless=true}"
  TOOL_CMD=("$JAVA" "${opts[@]}" -Dlog4j2.configurationFile="$CONF_DIR/tools-log4j2.xml" -cp "$LIBS/*")
}
tool_java() {
  tool_cmd
  "${TOOL_CMD[@]}" "$@"
}

shape_string() { # N
  local s="brokers=$1 port=$BASE_PORT controller_port=$CONTROLLER_BASE_PORT version=$LIBS_VERSION"
  if ((SECURE)); then s+=" secure=1"; fi
  echo "$s"
}

shape_get() { # KEY -> value from the shape file
  [[ -f "$SHAPE_FILE" ]] || return 1
  sed -n "s/^$1=//p" "$SHAPE_FILE" | head -n1
}

wipe_brokers() {
  local d
  for d in "$DATA_DIR"/broker-*; do
    [[ -d "$d" ]] && rm -rf -- "$d"
  done
  rm -f -- "$SHAPE_FILE"
}

# Make sure storage of brokers 1..N is formatted for the requested shape.
ensure_formatted() { # N
  local n="$1" want have cid i
  want="$(shape_string "$n")"
  have="$(shape_get shape || true)"
  if [[ -n "$have" && "$have" != "$want" ]]; then
    log "cluster shape changed: formatted as [$have], requested [$want]."
    log "deleting the Kafka data under $DATA_DIR/broker-* and reformatting (all topics and messages are lost)."
    wipe_brokers
  elif [[ -z "$have" ]] && [[ -n "$(known_brokers)" ]]; then
    log "no $SHAPE_FILE (incomplete earlier setup): deleting $DATA_DIR/broker-* and reformatting."
    wipe_brokers
  elif ((SECURE)) && [[ -n "$have" && "$(shape_get secure_fp || true)" != "$(secure_fingerprint)" ]]; then
    log "the passwords under $SECURE_DIR are not those the storage was formatted with."
    log "deleting the Kafka data under $DATA_DIR/broker-* and reformatting (all topics, messages, users and ACLs are lost)."
    wipe_brokers
  fi
  local -a scram=()
  if ((SECURE)); then
    scram=(--add-scram "$SCRAM_MECHANISM=[name=$OPERATOR_USER,password=$OPERATOR_PASSWORD]"
      --add-scram "$SCRAM_MECHANISM=[name=$BROKER_USER,password=$BROKER_PASSWORD]")
  fi
  cid="$(shape_get cluster_id || true)"
  if [[ -z "$cid" ]]; then
    # Same format as `kafka-storage.sh random-uuid` (16 random bytes, base64url, no padding),
    # without paying for a JVM start; like Kafka, avoid a leading '-'.
    local tries=0
    while :; do
      cid="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
      [[ "$cid" =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{21}$ ]] && break
      ((++tries < 20)) || die "could not generate a cluster id (got '$cid')"
    done
  fi
  local -a fpids=() fnodes=()
  for ((i = 1; i <= n; i++)); do
    write_server_properties "$i" "$n"
    if [[ ! -f "$(broker_dir "$i")/data/meta.properties" ]]; then
      fnodes+=("$i")
      tool_java kafka.tools.StorageTool format -t "$cid" -c "$(props_file "$i")" "${scram[@]}" \
        >"$(broker_dir "$i")/format.out" 2>&1 8>&- 9>&- &
      fpids+=($!)
    fi
  done
  if ((${#fnodes[@]})); then
    log "formatting storage of broker(s) ${fnodes[*]} (cluster id $cid) ..."
    local failed=0
    for i in "${!fpids[@]}"; do
      if ! wait "${fpids[$i]}"; then
        cat "$(broker_dir "${fnodes[$i]}")/format.out" >&2
        log "error: formatting storage of broker ${fnodes[$i]} failed"
        failed=1
      fi
    done
    ((failed == 0)) || exit 1
  fi
  printf 'shape=%s\ncluster_id=%s\nbrokers=%s\nport=%s\ncontroller_port=%s\n' \
    "$want" "$cid" "$n" "$BASE_PORT" "$CONTROLLER_BASE_PORT" >"$SHAPE_FILE"
  if ((SECURE)); then
    printf 'secure=1\nsecure_fp=%s\n' "$(secure_fingerprint)" >>"$SHAPE_FILE"
  fi
}

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

launch_broker() { # N
  local n="$1" out
  local -a heap perf extra
  out="$(out_file "$n")"
  read -r -a heap <<<"${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
  read -r -a perf <<<"${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}"
  read -r -a extra <<<"${KAFKA_OPTS:-}"
  local -a setsid_cmd=()
  command -v setsid >/dev/null 2>&1 && setsid_cmd=(setsid)
  printf '===== %s starting broker %s (Kafka %s) =====\n' "$(date '+%F %T')" "$n" "$LIBS_VERSION" >"$out"
  (
    cd "$(broker_dir "$n")"
    # exec keeps the pid: $! below is the java process. fd 8/9 (locks) are not inherited.
    exec "${setsid_cmd[@]}" nohup "$JAVA" "${heap[@]}" "${perf[@]}" "${extra[@]}" \
      -Dlog4j2.configurationFile="$CONF_DIR/log4j2.xml" \
      -Dkafka.log.file="$(server_log "$n")" -Dkafka.logs.dir="$LOG_DIR" \
      -cp "$LIBS/*" kafka.Kafka "$(props_file "$n")" </dev/null >>"$out" 2>&1 8>&- 9>&-
  ) &
  local pid=$! i
  echo "$pid" >"$(pid_file "$n")"
  # Wait until the subshell has exec'ed into java, so the pid file check is meaningful.
  for ((i = 0; i < 100; i++)); do
    is_our_broker "$pid" "$n" && return 0
    kill -0 "$pid" 2>/dev/null || return 0 # died: reported by wait_ready
    sleep 0.1
  done
}

print_failure_logs() { # N...
  local n f
  for n in "$@"; do
    f="$(server_log "$n")"
    if [[ -s "$f" ]]; then
      log "---- last 50 lines of $f ----"
      tail -n 50 "$f" >&2
    fi
    f="$(out_file "$n")"
    if [[ -s "$f" ]]; then
      log "---- last 20 lines of $f ----"
      tail -n 20 "$f" >&2
    fi
  done
}

fail_start() { # MESSAGE STARTED_BROKERS...
  local msg="$1" n pid
  shift
  log "error: $msg"
  print_failure_logs $(seq 1 "$WANT_BROKERS")
  for n in "$@"; do # do not leave half-started brokers of this run behind
    if pid="$(broker_pid "$n")"; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$(pid_file "$n")"
  done
  [[ $# -gt 0 ]] && log "killed the broker(s) this run started: $*"
  exit 1
}

# Wait until every broker listens and the cluster metadata lists all of them.
wait_ready() { # DEADLINE STARTED...
  local deadline="$1" n port remaining out absent=""
  shift
  for ((n = 1; n <= WANT_BROKERS; n++)); do
    port="$(broker_port "$n")"
    until port_open "$port"; do
      broker_pid "$n" >/dev/null || fail_start "broker $n exited during startup" "$@"
      ((SECONDS < deadline)) || fail_start "broker $n did not listen on $HOST:$port within ${START_TIMEOUT}s" "$@"
      sleep 0.5
    done
  done
  local bootstrap
  bootstrap="$(bootstrap_for "$WANT_BROKERS")"
  tool_cmd
  if ((SECURE)); then # as the operator (the file holds the password)
    { cat "$(operator_config)"; printf 'request.timeout.ms=10000\ndefault.api.timeout.ms=15000\n'; } |
      write_private "$CONF_DIR/tools-client.properties"
  else
    rm -f "$CONF_DIR/tools-client.properties" # a secure run's copy is mode 600
    printf 'request.timeout.ms=10000\ndefault.api.timeout.ms=15000\n' >"$CONF_DIR/tools-client.properties"
  fi
  while :; do
    remaining=$((deadline - SECONDS))
    ((remaining > 0)) || fail_start "brokers did not answer metadata requests within ${START_TIMEOUT}s${absent:+ (brokers not in the metadata: $absent)}" "$@"
    out="$(timeout -k 5 "$remaining" "${TOOL_CMD[@]}" org.apache.kafka.tools.BrokerApiVersionsCommand \
      --bootstrap-server "$bootstrap" --command-config "$CONF_DIR/tools-client.properties" 2>&1 || true)"
    absent=""
    for ((n = 1; n <= WANT_BROKERS; n++)); do
      grep -qF "$HOST:$(broker_port "$n") (id: $n " <<<"$out" || absent+="${absent:+ }$n"
    done
    [[ -z "$absent" ]] && return 0
    for ((n = 1; n <= WANT_BROKERS; n++)); do
      broker_pid "$n" >/dev/null || fail_start "broker $n exited during startup" "$@"
    done
    sleep 1
  done
}

WANT_BROKERS=1

cmd_start() {
  WANT_BROKERS="${KAFKA_BROKERS:-1}"
  local FRESH=0
  SECURE="${KAFKA_SECURE:-0}"
  [[ "$SECURE" == 0 || "$SECURE" == 1 ]] || die "KAFKA_SECURE must be 0 or 1 (got '$SECURE')"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --brokers) [[ $# -ge 2 ]] || die "--brokers needs a number"; WANT_BROKERS="$2"; shift 2 ;;
      --brokers=*) WANT_BROKERS="${1#*=}"; shift ;;
      --secure) SECURE=1; shift ;;
      --fresh) FRESH=1; shift ;;
      *) die "unknown option for start: $1" ;;
    esac
  done
  if ! { is_uint "$WANT_BROKERS" && ((WANT_BROKERS >= 1 && WANT_BROKERS <= 9)); }; then die "--brokers must be 1..9 (got '$WANT_BROKERS')"; fi
  local i
  for ((i = 1; i <= WANT_BROKERS; i++)); do
    ((BASE_PORT + i - 1 <= 65535 && CONTROLLER_BASE_PORT + i - 1 <= 65535)) || die "ports out of range (KAFKA_PORT=$BASE_PORT, KAFKA_CONTROLLER_PORT=$CONTROLLER_BASE_PORT)"
  done

  ensure_installed
  ensure_data_dir
  with_lock

  local t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT)) running want have
  running="$(running_brokers | tr '\n' ' ')"
  running="${running% }"
  want="$(shape_string "$WANT_BROKERS")"
  have="$(shape_get shape || true)"
  if [[ -n "$running" && "$have" != "$want" ]]; then
    die "Kafka is running as [${have:-unknown shape}] (brokers: $running) but [$want] was requested; run '$0 stop' first"
  fi
  if ((SECURE)); then
    ensure_secure_material "$WANT_BROKERS"
    if [[ -n "$running" && "$(shape_get secure_fp || true)" != "$(secure_fingerprint)" ]]; then
      die "the passwords under $SECURE_DIR changed while Kafka runs (brokers: $running); run '$0 stop' first (start then reformats)"
    fi
  fi
  for ((i = WANT_BROKERS + 1; i <= 9; i++)); do
    if [[ " $running " == *" $i "* ]]; then die "broker $i runs but is not part of a $WANT_BROKERS-broker cluster; run '$0 stop' first"; fi
  done

  write_log4j_configs
  if ((FRESH)) && [[ -z "$running" ]] && [[ -n "$(known_brokers)" ]]; then
    log "--fresh: deleting the Kafka data under $DATA_DIR/broker-* (all topics and messages)."
    wipe_brokers
  fi
  # With brokers of this shape already running, the storage is formatted and the configs exist.
  [[ -n "$running" ]] || ensure_formatted "$WANT_BROKERS"

  local -a started=()
  for ((i = 1; i <= WANT_BROKERS; i++)); do
    if broker_pid "$i" >/dev/null; then continue; fi
    local p cp
    p="$(broker_port "$i")"
    cp="$(controller_port "$i")"
    if port_open "$p" || port_open "$cp"; then
      die "port $p or $cp on $HOST is already in use by a process not started by $PROG (data dir $DATA_DIR); stop it or set KAFKA_PORT"
    fi
    [[ -f "$(broker_dir "$i")/data/meta.properties" ]] || ensure_formatted "$WANT_BROKERS"
    launch_broker "$i"
    started+=("$i")
  done
  if ((${#started[@]})); then
    log "started broker(s) ${started[*]} (Kafka $LIBS_VERSION, data $DATA_DIR, logs $LOG_DIR); waiting up to ${START_TIMEOUT}s ..."
  else
    log "Kafka already running (brokers: $running); checking metadata ..."
  fi
  wait_ready "$deadline" "${started[@]}"
  log "Kafka ready: $WANT_BROKERS broker(s)$( ((SECURE)) && echo ", secure (SASL_SSL, SCRAM-SHA-512, ACLs)"), Kafka $LIBS_VERSION, $((SECONDS - t0))s"
  echo "KAFKA_BOOTSTRAP=$(bootstrap_for "$WANT_BROKERS")"
  if ((SECURE)); then print_secure_env; fi
}

cmd_stop() {
  [[ -d "$DATA_DIR" ]] || { log "not running (no $DATA_DIR)"; return 0; }
  with_lock
  local n pid f
  local -a pids=() names=()
  for n in $(known_brokers); do
    f="$(pid_file "$n")"
    if pid="$(broker_pid "$n")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$n")
    elif [[ -f "$f" ]]; then
      log "broker $n: not running (removing stale pid file)"
      rm -f "$f"
    fi
  done
  if ((${#pids[@]} == 0)); then
    log "not running"
    return 0
  fi
  log "stopping broker(s) ${names[*]} (SIGTERM, up to ${STOP_TIMEOUT}s) ..."
  local deadline=$((SECONDS + STOP_TIMEOUT)) alive i
  while :; do
    alive=0
    for i in "${!pids[@]}"; do
      is_our_broker "${pids[$i]}" "${names[$i]}" && alive=1
    done
    ((alive)) || break
    if ((SECONDS >= deadline)); then
      for i in "${!pids[@]}"; do
        if is_our_broker "${pids[$i]}" "${names[$i]}"; then
          log "broker ${names[$i]} (pid ${pids[$i]}) did not stop in ${STOP_TIMEOUT}s: SIGKILL"
          kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
      done
      sleep 0.5
      break
    fi
    sleep 0.5
  done
  for n in "${names[@]}"; do rm -f "$(pid_file "$n")"; done
  log "stopped broker(s) ${names[*]}"
}

cmd_status() {
  local total n pid rc=0 state
  # Report the ports the cluster was formatted with, whatever KAFKA_PORT says now.
  load_shape
  total="$WANT_BROKERS"
  for ((n = 1; n <= total; n++)); do
    if pid="$(broker_pid "$n")"; then
      if port_open "$(broker_port "$n")"; then state="running"; else state="running (not listening yet)"; fi
      log "broker $n: $state, pid $pid, $HOST:$(broker_port "$n")"
    else
      log "broker $n: stopped"
      rc=3
    fi
  done
  if ((rc == 0)); then
    echo "KAFKA_BOOTSTRAP=$(bootstrap_for "$total")"
    if ((SECURE)); then print_secure_env; fi
  fi
  return "$rc"
}

# Load the shape of the formatted cluster (brokers, ports, secure) for status-like commands.
load_shape() {
  local total p
  total="$(shape_get brokers 2>/dev/null || true)"
  is_uint "${total:-x}" || total=1
  WANT_BROKERS="$total"
  p="$(shape_get port 2>/dev/null || true)"
  is_uint "${p:-x}" && BASE_PORT="$p"
  if [[ "$(shape_get secure 2>/dev/null || true)" == 1 ]]; then SECURE=1; else SECURE=0; fi
}

need_secure_cluster() { # WHAT
  load_shape
  ((SECURE)) || die "$1 needs a secure cluster in $DATA_DIR (start one with: $0 start --brokers 3 --secure)"
  [[ -s "$(operator_config)" ]] || die "$1: missing $(operator_config); run '$0 start --secure' again"
}

cmd_tool() {
  local operator=0
  if [[ "${1:-}" == --operator ]]; then operator=1; shift; fi
  [[ $# -ge 1 ]] || die "usage: $0 tool [--operator] CLASS|ALIAS [ARGS...]"
  local cls="$1"
  shift
  case "$cls" in
    topics) cls=org.apache.kafka.tools.TopicCommand ;;
    console-producer) cls=org.apache.kafka.tools.ConsoleProducer ;;
    console-consumer) cls=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    consumer-groups) cls=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    configs) cls=kafka.admin.ConfigCommand ;;
    acls) cls=org.apache.kafka.tools.AclCommand ;;
    api-versions) cls=org.apache.kafka.tools.BrokerApiVersionsCommand ;;
    metadata-quorum) cls=org.apache.kafka.tools.MetadataQuorumCommand ;;
    cluster) cls=org.apache.kafka.tools.ClusterTool ;;
    storage) cls=kafka.tools.StorageTool ;;
  esac
  local -a args=("$@")
  if ((operator)); then
    need_secure_cluster "tool --operator"
    local flag=--command-config a has_bootstrap=0
    case "$cls" in
      org.apache.kafka.tools.ConsoleProducer) flag=--producer.config ;;
      org.apache.kafka.tools.consumer.ConsoleConsumer) flag=--consumer.config ;;
      org.apache.kafka.tools.ClusterTool) flag=--config ;;
      kafka.tools.StorageTool) die "tool --operator: the storage tool does not talk to the cluster" ;;
    esac
    for a in "${args[@]}"; do
      case "$a" in --bootstrap-server | --bootstrap-server=* | --bootstrap-controller | --bootstrap-controller=*) has_bootstrap=1 ;; esac
    done
    local -a extra=("$flag" "$(operator_config)")
    ((has_bootstrap)) || extra=(--bootstrap-server "$(bootstrap_for "$WANT_BROKERS")" "${extra[@]}")
    if [[ "$cls" == org.apache.kafka.tools.ClusterTool ]]; then
      args+=("${extra[@]}") # options of the subcommand: after it
    else
      args=("${extra[@]}" "${args[@]}") # before any subcommand (metadata-quorum)
    fi
  fi
  ensure_installed
  if [[ ! -f "$CONF_DIR/tools-log4j2.xml" ]]; then ensure_data_dir; write_log4j_configs; fi
  tool_java "$cls" "${args[@]}"
}

# Create or update a SCRAM user (no ACLs) on the running secure cluster, as the operator,
# and wait until it can authenticate to every broker.
cmd_scram_user() {
  [[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 scram-user NAME [PASSWORD]"
  local name="$1" pw="${2:-}" pwfile stored=""
  [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] || die "scram-user: NAME must be 1-64 characters of A-Z a-z 0-9 . _ - (got '$name')"
  [[ "$name" != "$OPERATOR_USER" && "$name" != "$BROKER_USER" ]] ||
    die "scram-user: $name is a super user of the cluster itself; its password is managed by start"
  need_secure_cluster "scram-user"
  local n
  for ((n = 1; n <= WANT_BROKERS; n++)); do
    broker_pid "$n" >/dev/null || die "scram-user: broker $n of the secure cluster in $DATA_DIR is not running; run '$0 start --secure' first"
  done
  ensure_installed
  if [[ ! -f "$CONF_DIR/tools-log4j2.xml" ]]; then write_log4j_configs; fi
  pwfile="$(users_dir)/$name.password"
  if [[ -n "$pw" ]]; then
    valid_password "$pw" || die "scram-user: the password must be $PASSWORD_CHARS"
  elif [[ -s "$pwfile" ]]; then
    pw="$(head -n1 "$pwfile")"
    valid_password "$pw" || die "$pwfile does not hold a usable password ($PASSWORD_CHARS)"
    stored=" (stored password)"
  else
    pw="$(gen_password)"
  fi
  local bootstrap tmp out
  bootstrap="$(bootstrap_for "$WANT_BROKERS")"
  mkdir -p "$(users_dir)"
  chmod 700 "$(users_dir)"
  # The SCRAM config goes through a mode 600 file, not the command line. In the file the
  # value has no brackets: SCRAM-SHA-512=password=... (--add-config: ...=[password=...]).
  tmp="$(users_dir)/.$name.add-config.$$"
  printf '%s=password=%s\n' "$SCRAM_MECHANISM" "$pw" | write_private "$tmp"
  if ! out="$(tool_java kafka.admin.ConfigCommand --bootstrap-server "$bootstrap" \
    --command-config "$(operator_config)" --alter --entity-type users --entity-name "$name" \
    --add-config-file "$tmp" 2>&1)"; then
    rm -f "$tmp"
    printf '%s\n' "$out" >&2
    die "scram-user: kafka-configs could not set the $SCRAM_MECHANISM credential of $name"
  fi
  rm -f "$tmp"
  printf '%s\n' "$pw" | write_private "$pwfile"
  local java="$(users_dir)/$name.properties" rdk="$(users_dir)/$name.librdkafka.properties"
  write_client_configs "$name" "$pw" "$java" "$rdk"
  # Brokers learn the credential from the metadata log: wait until every one accepts it.
  local deadline=$((SECONDS + 30)) absent cfg="$(users_dir)/.$name.check.properties"
  { cat "$java"; printf 'request.timeout.ms=10000\ndefault.api.timeout.ms=15000\n'; } | write_private "$cfg"
  tool_cmd
  while :; do
    out="$(timeout -k 5 40 "${TOOL_CMD[@]}" org.apache.kafka.tools.BrokerApiVersionsCommand \
      --bootstrap-server "$bootstrap" --command-config "$cfg" 2>&1 || true)"
    absent=""
    for ((n = 1; n <= WANT_BROKERS; n++)); do
      grep -qF "$HOST:$(broker_port "$n") (id: $n " <<<"$out" || absent+="${absent:+ }$n"
    done
    [[ -z "$absent" ]] && ! grep -q 'ERROR' <<<"$out" && break
    if ((SECONDS >= deadline)); then
      rm -f "$cfg"
      printf '%s\n' "$out" | tail -n 20 >&2
      die "scram-user: $name cannot authenticate to every broker after 30s"
    fi
    sleep 1
  done
  rm -f "$cfg"
  log "SCRAM user $name ($SCRAM_MECHANISM)$stored ready on all $WANT_BROKERS broker(s); no ACLs were added (tool acls)"
  printf 'KAFKA_SCRAM_USER=%s\n' "$name"
  printf 'KAFKA_SCRAM_PASSWORD=%s\n' "$pw"
  printf 'KAFKA_SCRAM_CONFIG=%q\n' "$java"
  printf 'KAFKA_SCRAM_LIBRDKAFKA=%q\n' "$rdk"
}

usage() {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    install) [[ $# -eq 0 ]] || die "install takes no arguments"; cmd_install ;;
    start) cmd_start "$@" ;;
    stop) [[ $# -eq 0 ]] || die "stop takes no arguments"; cmd_stop ;;
    status) [[ $# -eq 0 ]] || die "status takes no arguments"; cmd_status || exit $? ;;
    tool) cmd_tool "$@" ;;
    scram-user) cmd_scram_user "$@" ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
