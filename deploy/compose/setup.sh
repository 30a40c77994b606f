#!/busybox/sh
# One-shot setup of the Compose federation, run by the `setup` service in the
# ecointegra "tools" image (the CLI plus busybox), as deploy/demo.sh does it:
# the sector authority's key, a key per institution, the signed directory,
# API tokens per role, and each node's config. Writes:
#   /sector                 authority.key/.pub, directory.toml, <role>.token (the operator's)
#   /nodes/<id>             node.toml, node.key, directory.toml (mounted read-only by node <id>)
#   /data/<id>              the node's (empty) data directory, owned by the node's user
# Runs again without changing what exists (new institutions get theirs).
set -eu
PATH=/busybox:/usr/bin
ecointegra=/usr/bin/ecointegra
node_uid=65532
: "${INSTITUTIONS:?space-separated institution ids}"
prefix="${TOPIC_PREFIX:-ecointegra}"
bootstrap="${KAFKA_BOOTSTRAP:-kafka:9092}"

umask 077
cd /sector
[ -f authority.key ] || "$ecointegra" directory authority --out authority.key > authority.pub
authority="$(cat authority.pub)"

signed=0
for id in $INSTITUTIONS; do
  [ -f "$id.key" ] || "$ecointegra" keys generate --out "$id.key" > /dev/null
  if [ ! -f directory.toml ] || ! grep -q "^institution_id = \"$id\"$" directory.toml; then
    eval "name=\"\${NAME_$(echo "$id" | tr 'a-z-' 'A-Z_'):-$id}\""
    [ -f directory.toml ] && cp directory.toml directory.toml.new
    "$ecointegra" directory sign --authority authority.key --institution-key "$id.key" \
      --id "$id" --name "$name" --version 1 --file directory.toml.new > /dev/null
    mv directory.toml.new directory.toml
    signed=1
  fi
done

# API tokens, one per role, the same at every node (as the demo does).
for role in system clerk operator; do
  if [ ! -f "$role.token" ]; then
    "$ecointegra" keys token --role "$role" --name "compose-$role" > "$role.token.out"
    awk '/^token:/ {print $2}' "$role.token.out" > "$role.token"
    sed -n '/^\[\[auth.tokens\]\]/,$p' "$role.token.out" > "$role.auth.toml"
    rm -f "$role.token.out"
  fi
done

for id in $INSTITUTIONS; do
  mkdir -p "/nodes/$id" "/data/$id"
  cp "$id.key" "/nodes/$id/node.key"
  cp directory.toml "/nodes/$id/directory.toml"
  cat > "/nodes/$id/node.toml" <<TOML
# Written by deploy/compose/setup.sh; see deploy/config/node.example.toml for every key.
institution = "$id"
data_dir = "/var/lib/ecointegra"
# One local broker: the node creates its topics and accepts replication 1.
development = true

[grpc]
listen = "0.0.0.0:50051"

[http]
# /metrics, /livez, /readyz: loopback only (the <id>-health service shares
# the node's network namespace to probe /readyz).
listen = "127.0.0.1:9464"

[web]
listen = "0.0.0.0:8080"

[kafka]
bootstrap_servers = "$bootstrap"
topic_prefix = "$prefix"
replication_factor = 1

[keys]
signing_key_file = "/etc/ecointegra/node.key"
directory_file = "/etc/ecointegra/directory.toml"
authority_public_key = "$authority"

[auth]
anonymous_role = "public"

$(cat system.auth.toml)

$(cat clerk.auth.toml)

$(cat operator.auth.toml)
TOML
  # The node's user reads its config and key (and nothing of the others'),
  # and owns its data directory.
  chown -R "$node_uid:$node_uid" "/nodes/$id" "/data/$id"
  chmod 700 "/nodes/$id" "/data/$id"
  chmod 600 "/nodes/$id"/*
done
chmod 644 directory.toml authority.pub
# The operator (you, on the host) reads the tokens with
#   docker compose run --rm --entrypoint /busybox/cat setup /sector/operator.token
[ "$signed" -eq 0 ] || echo "setup: directory signed for: $INSTITUTIONS"
echo "setup: authority public key $authority"
