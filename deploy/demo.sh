#!/usr/bin/env bash
# A local federation: Apache Kafka (deploy/kafka/kafka.sh) and the nodes of
# three institutions, minam, senamhi and oefa, each with its own key, config
# and data directory under .demo/ (git-ignored).
#
#   deploy/demo.sh up [--brokers N] [--secure]
#                          build, start Kafka and the three nodes, file a sample
#                          filing from senamhi to oefa and show its receipt.
#                          Without options: on the development broker
#                          (deploy/kafka/kafka.sh start, port 9092), and the
#                          nodes create their topics. With --brokers N (N >= 2)
#                          or --secure: on a cluster of its own (data under
#                          .demo-N[-secure]/kafka, ports from 9392). --secure
#                          (3 brokers unless --brokers says more) runs it as
#                          production does: TLS, SASL/SCRAM, ACLs; the sector
#                          operator provisions topics, users and ACLs from the
#                          signed directory (ecointegra sector provision) and
#                          each node connects with its own institution's user.
#   deploy/demo.sh down    stop the nodes, and Kafka if `up` started it (every
#                          demo under .demo*/ unless DEMO_DIR is set)
#   deploy/demo.sh status  what runs, and where
#
# Environment: DEMO_DIR (default <repo>/.demo, or .demo-N[-secure] with the
# options above), DEMO_PREFIX (topic prefix;
# default: one made when .demo/ is first created, kept in .demo/prefix, so a new
# federation with new keys never reads an old one's records), DEMO_BASE_PORT (gRPC of minam, senamhi, oefa: base, +1,
# +2; default 50051), DEMO_KAFKA_PORT (first broker port of a cluster of the
# demo's own; default 9392). KAFKA_* variables reach deploy/kafka/kafka.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
demo="${DEMO_DIR:-}"
prefix="${DEMO_PREFIX:-}"
base_port="${DEMO_BASE_PORT:-50051}"
kafka_script="$root/deploy/kafka/kafka.sh"
brokers=1
secure=0
institutions=(minam senamhi oefa)
declare -A names=(
  [minam]="Ministerio del Ambiente"
  [senamhi]="Servicio Nacional de Meteorología e Hidrología del Perú"
  [oefa]="Organismo de Evaluación y Fiscalización Ambiental"
)

say() { printf 'demo: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# The demo's Kafka: the development broker, or a cluster of the demo's own
# whose place (data directory, ports) is kept in $demo/kafka.env.
kafka() {
  local settings=()
  if [[ -f "$demo/kafka.env" ]]; then mapfile -t settings < "$demo/kafka.env"; fi
  env "${settings[@]}" "$kafka_script" "$@"
}

parse_up_options() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --brokers)
        [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--brokers takes a number"
        brokers="$2"; shift 2 ;;
      --secure) secure=1; shift ;;
      *) die "unknown option $1; usage: deploy/demo.sh up [--brokers N] [--secure]" ;;
    esac
  done
  if [[ $secure -eq 1 && $brokers -eq 1 ]]; then brokers=3; fi
  if [[ $secure -eq 1 && $brokers -lt 3 ]]; then
    die "--secure runs as production does, replication factor 3: it needs --brokers 3 or more"
  fi
  if [[ -z "$demo" ]]; then
    demo="$root/.demo"
    if [[ $brokers -gt 1 || $secure -eq 1 ]]; then
      demo="$root/.demo-$brokers$([[ $secure -eq 1 ]] && echo -secure)"
    fi
  fi
  mkdir -p "$demo"
  if [[ $brokers -gt 1 || $secure -eq 1 ]]; then
    printf '%s\n' "KAFKA_DATA_DIR=$demo/kafka" "KAFKA_PORT=${DEMO_KAFKA_PORT:-9392}" \
      "KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx384m -Xms128m}" > "$demo/kafka.env"
  else
    rm -f "$demo/kafka.env"
  fi
}

# Replication as the cluster allows: 3 copies from three brokers on.
replication() { echo $(( brokers < 3 ? brokers : 3 )); }

random_password() { head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32; }

port_of() {
  local i
  for i in "${!institutions[@]}"; do
    [[ "${institutions[$i]}" == "$1" ]] && { echo $((base_port + i)); return; }
  done
}

bin() {
  local dir
  dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  echo "$dir/debug/ecointegra"
}

web_port_of() { echo $(( $(port_of "$1") - 50051 + 8081 )); }

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_federation() {
  local id exe="$1"
  mkdir -p "$demo"
  if [[ -z "$prefix" ]]; then
    [[ -f "$demo/prefix" ]] || echo "demo-$(date +%s)" > "$demo/prefix"
    prefix="$(cat "$demo/prefix")"
  fi
  # The sector authority signs every institution's directory entry.
  if [[ ! -f "$demo/directory.toml" ]]; then
    [[ -f "$demo/authority.key" ]] || "$exe" directory authority --out "$demo/authority.key" > "$demo/authority.pub"
    for id in "${institutions[@]}"; do
      [[ -f "$demo/$id.key" ]] || "$exe" keys generate --out "$demo/$id.key" >/dev/null
      "$exe" directory sign --authority "$demo/authority.key" --institution-key "$demo/$id.key" \
        --id "$id" --name "${names[$id]}" --version 1 --file "$demo/directory.toml.new" >/dev/null
    done
    mv "$demo/directory.toml.new" "$demo/directory.toml"
  fi
  # API tokens for the demo's clients, one per role, the same at every node.
  local role
  for role in system clerk operator; do
    if [[ ! -f "$demo/$role.token" ]]; then
      "$exe" keys token --role "$role" --name "demo-$role" > "$demo/$role.token.out"
      awk '/^token:/ {print $2}' "$demo/$role.token.out" > "$demo/$role.token"
      sed -n '/^\[\[auth.tokens\]\]/,$p' "$demo/$role.token.out" > "$demo/$role.auth.toml"
      rm -f "$demo/$role.token.out"
      chmod 600 "$demo/$role.token"
    fi
  done
  # On a secure cluster each institution has its own Kafka user; the sector
  # operator creates them with these passwords when provisioning.
  if [[ $secure -eq 1 && ! -f "$demo/kafka-passwords" ]]; then
    (umask 077; for id in "${institutions[@]}"; do echo "$id=$(random_password)"; done > "$demo/kafka-passwords")
  fi
  for id in "${institutions[@]}"; do
    (umask 077; node_config "$id" > "$demo/$id.toml")
  done
}

# The node config of institution $1.
node_config() {
  local id="$1" development=true kafka_options=""
  if [[ $secure -eq 1 ]]; then
    development=false
    kafka_options="
# Its own institution's Kafka user (deploy/demo.sh made the password; the sector
# operator provisioned the user and its ACLs).
[kafka.options]
\"security.protocol\" = \"SASL_SSL\"
\"sasl.mechanisms\" = \"SCRAM-SHA-512\"
\"sasl.username\" = \"$id\"
\"sasl.password\" = \"$(sed -n "s/^$id=//p" "$demo/kafka-passwords")\"
\"ssl.ca.location\" = \"$KAFKA_SECURE_CA\""
  fi
  cat <<TOML
# Written by deploy/demo.sh; see deploy/config/node.example.toml for every key.
institution = "$id"
data_dir = "$id-data"
# true: the node creates its topics (one local cluster); false, as in production:
# the sector operator provisions them, and the node only checks them.
development = $development

[grpc]
listen = "127.0.0.1:$(port_of "$id")"

[http]
# Prometheus /metrics, /livez and /readyz.
listen = "127.0.0.1:$(( $(port_of "$id") + 100 ))"

[web]
# The web console: citizen tracking, the clerk's desk, the operator's dashboard.
listen = "127.0.0.1:$(web_port_of "$id")"

[kafka]
bootstrap_servers = "$KAFKA_BOOTSTRAP"
topic_prefix = "$prefix"
# Copies of each record: as many as the demo's brokers, up to 3.
replication_factor = $(replication)

[keys]
signing_key_file = "$id.key"
directory_file = "directory.toml"
authority_public_key = "$(cat "$demo/authority.pub")"

[auth]
# Callers without a token may only track filings.
anonymous_role = "public"

$(cat "$demo/system.auth.toml")

$(cat "$demo/clerk.auth.toml")

$(cat "$demo/operator.auth.toml")
$kafka_options
TOML
}

sample_pdf() {
  # A small, valid one-page PDF.
  cat > "$1" <<'PDF'
%PDF-1.4
1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >> endobj
4 0 obj << /Length 70 >> stream
BT /F1 18 Tf 72 760 Td (Solicitud de informacion ambiental) Tj ET
endstream endobj
5 0 obj << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> endobj
trailer << /Root 1 0 R >>
%%EOF
PDF
}

cmd_up() {
  say "building ecointegra (cargo build) ..."
  (cd "$root" && cargo build --bin ecointegra --quiet)
  local exe; exe="$(bin)"
  if ! kafka status >/dev/null 2>&1; then
    touch "$demo/kafka.started-by-demo"
  fi
  local start=(start)
  [[ $brokers -gt 1 ]] && start+=(--brokers "$brokers")
  [[ $secure -eq 1 ]] && start+=(--secure)
  eval "$(kafka "${start[@]}")"
  write_federation "$exe"
  local publish=()
  if [[ $secure -eq 1 ]]; then
    say "provisioning topics, users and ACLs from the signed directory ..."
    "$exe" sector provision --directory "$demo/directory.toml" \
      --authority-public-key "$(cat "$demo/authority.pub")" \
      --bootstrap-servers "$KAFKA_BOOTSTRAP" --admin-config "$KAFKA_OPERATOR_LIBRDKAFKA" \
      --topic-prefix "$prefix" --replication-factor "$(replication)" \
      --credentials "$demo/kafka-passwords" >> "$demo/provision.log" \
      || die "provisioning failed; see $demo/provision.log"
    # Only the sector operator may write the directory topic.
    publish=(--client-config "$KAFKA_OPERATOR_LIBRDKAFKA")
  fi
  local id
  for id in "${institutions[@]}"; do
    if running "$demo/$id.pid"; then
      say "$id already runs (pid $(cat "$demo/$id.pid"))"
      continue
    fi
    rm -f "$demo/$id-data/grpc.addr"
    nohup "$exe" node run --config "$demo/$id.toml" >> "$demo/$id.log" 2>&1 &
    echo $! > "$demo/$id.pid"
  done
  for id in "${institutions[@]}"; do
    local n=0
    until grep -q "Consuming the inbox" "$demo/$id.log" 2>/dev/null; do
      running "$demo/$id.pid" || die "$id stopped; see $demo/$id.log"
      n=$((n + 1)); [[ $n -lt 600 ]] || die "$id is not consuming after 60 s; see $demo/$id.log"
      sleep 0.1
    done
  done
  # The topics exist (the nodes created them, or provisioning did); the signed
  # entries also go to the compacted directory topic, where nodes pick up later
  # changes (new institutions, rotations, suspensions).
  "$exe" directory publish --bootstrap-servers "$KAFKA_BOOTSTRAP" --topic-prefix "$prefix" \
    "${publish[@]}" --file "$demo/directory.toml" >/dev/null
  say "federation up; filing a sample from senamhi to oefa ..."
  export ECOINTEGRA_TOKEN
  ECOINTEGRA_TOKEN="$(cat "$demo/system.token")"
  sample_pdf "$demo/solicitud.pdf"
  printf 'Anexo 1: coordenadas de la estación de monitoreo.\n' > "$demo/anexo.txt"
  local senamhi="127.0.0.1:$(port_of senamhi)" oefa="127.0.0.1:$(port_of oefa)" out code
  out="$("$exe" filing submit --node "$senamhi" --to oefa \
    --subject "Solicitud de información ambiental" --name "María Quispe Mamani" \
    --doc-type dni --doc-number 45781236 --email maria.quispe@example.pe --folios 2 \
    "$demo/solicitud.pdf" "$demo/anexo.txt")"
  echo "$out"
  code="$(echo "$out" | awk '/^tracking code:/ {print $3}')"
  local n=0
  until "$exe" filing get --node "$senamhi" "$code" | grep -q "status: *DELIVERED"; do
    n=$((n + 1)); [[ $n -lt 300 ]] || die "$code was not delivered within 30 s; see $demo/*.log"
    sleep 0.1
  done
  echo
  "$exe" filing receipt --node "$senamhi" "$code"
  echo
  echo "At oefa's node:"
  "$exe" filing inbox --node "$oefa"
  echo
  echo "The citizen tracks it at minam's portal (any node answers, no token needed):"
  local verification minam="127.0.0.1:$(port_of minam)"
  verification="$(echo "$out" | awk '/^verification code:/ {print $3}')"
  # A failed look-up counts against this client's limit (10 a minute): ask
  # a few times, half a second apart, while minam reads the tracking topic.
  n=0
  until ECOINTEGRA_TOKEN="" "$exe" track --node "$minam" --verification "$verification" "$code" 2>/dev/null | grep -q entregado; do
    n=$((n + 1)); [[ $n -lt 8 ]] || break
    sleep 0.5
  done
  ECOINTEGRA_TOKEN="" "$exe" track --node "$minam" --verification "$verification" "$code"
  echo
  cmd_status
  cat <<EOF_HELP

Clients authenticate with an API token (roles: system, clerk, operator):
  export ECOINTEGRA_TOKEN=\$(cat $demo/system.token)     # or clerk.token, operator.token
Try:
  $exe filing submit --node $senamhi --to minam --subject "Consulta" FILE...
  $exe filing get --node $oefa $code
  $exe filing download --node $oefa $code /tmp/descarga
  $exe filing receive --node $oefa $code --registry-number OEFA-INT-1 --office "Mesa de partes"
  ECOINTEGRA_TOKEN=\$(cat $demo/operator.token) $exe queues --node $oefa
  $exe track --node $minam --verification $verification $code
The web console (Spanish; English from the header): http://127.0.0.1:$(web_port_of minam)/ (minam),
  :$(web_port_of senamhi) (senamhi), :$(web_port_of oefa) (oefa). Clerks sign in with $demo/clerk.token,
  operators with $demo/operator.token; citizens track without signing in.
Stop everything with: deploy/demo.sh down
EOF_HELP
}

cmd_down() {
  local id
  for id in "${institutions[@]}"; do
    if running "$demo/$id.pid"; then
      kill -TERM "$(cat "$demo/$id.pid")"
      local n=0
      while running "$demo/$id.pid" && [[ $n -lt 150 ]]; do sleep 0.1; n=$((n + 1)); done
      running "$demo/$id.pid" && kill -KILL "$(cat "$demo/$id.pid")"
      say "stopped $id"
    fi
    rm -f "$demo/$id.pid"
  done
  if [[ -f "$demo/kafka.started-by-demo" ]]; then
    kafka stop
    rm -f "$demo/kafka.started-by-demo"
  fi
}

cmd_status() {
  local id
  echo "Kafka:    $(kafka status 2>/dev/null | sed -n 's/^KAFKA_BOOTSTRAP=//p' | grep . || echo 'not running')$([[ -f "$demo/kafka.env" ]] && echo " (the demo's own cluster, $demo/kafka)")"
  for id in "${institutions[@]}"; do
    if running "$demo/$id.pid"; then
      printf '%-8s  gRPC 127.0.0.1:%s  console http://127.0.0.1:%s/  metrics http://127.0.0.1:%s/metrics  pid %s  log %s\n' "$id" \
        "$(port_of "$id")" "$(web_port_of "$id")" "$(( $(port_of "$id") + 100 ))" "$(cat "$demo/$id.pid")" "$demo/$id.log"
    else
      printf '%-8s  not running\n' "$id"
    fi
  done
}

# down and status: DEMO_DIR, or every demo there is.
each_demo() {
  if [[ -n "$demo" ]]; then "$@"; return; fi
  local dir found=0
  for dir in "$root"/.demo "$root"/.demo-*; do
    [[ -d "$dir" ]] || continue
    found=1; demo="$dir"
    [[ "$dir" == "$root/.demo" ]] || echo "== $dir"
    "$@"
  done
  [[ $found -eq 1 ]] || say "no demo here (deploy/demo.sh up starts one)"
}

case "${1:-}" in
  up) shift; parse_up_options "$@"; cmd_up ;;
  down) each_demo cmd_down ;;
  status) each_demo cmd_status ;;
  *) echo "usage: deploy/demo.sh up [--brokers N] [--secure] | down | status" >&2; exit 2 ;;
esac
