#!/usr/bin/env bash
# Static checks of the container image definition, the Compose file and the
# Helm chart (nothing is built, started or deployed; README, "Containers and
# Kubernetes", says what is checked and what is not).
#
#   deploy/check-static.sh
#
# It installs its tools, pinned, once into
# ${ECOINTEGRA_CACHE:-$HOME/.cache/ecointegra}/tools (outside the clone) from
# the Go module proxy (helm, kubeconform), PyPI (kubernetes-validate's
# Kubernetes schemas, check-jsonschema's Compose spec schema, PyYAML), npm
# (dockerfile-utils) and Maven Central (Strimzi's API classes and fabric8's
# CRD generator, run once to make the KafkaTopic/KafkaUser schemas); later runs
# use them offline. Needs go (PATH or /usr/local/go/bin), python3 (3.11+),
# npm, java and mvn for the first run.
#
# With ECOINTEGRA_BIN (the ecointegra binary) and a secure cluster
# (ECOINTEGRA_SECURE_KAFKA, KAFKA_OPERATOR_LIBRDKAFKA, as tests/run.sh gives its
# secure-cluster tests), it also compares the chart's KafkaTopics and
# KafkaUsers with what `ecointegra sector provision --dry-run` plans.
#
# Exits 1 naming each failed check.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

HELM_VERSION=v3.19.5
KUBECONFORM_VERSION=v0.7.0
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECK_JSONSCHEMA_VERSION=0.39.0
PYYAML_VERSION=6.0.3
DOCKERFILE_UTILS_VERSION=0.16.3
STRIMZI_VERSION=0.48.0          # the last whose API classes are kafka.strimzi.io/v1beta2
CRD_GENERATOR_VERSION=7.3.1
# Kubernetes versions the manifests are validated against: the chart's oldest
# (Chart.yaml kubeVersion) and the newest kubernetes-validate has schemas for.
KUBE_VERSIONS=(1.27.0 1.37.0)
RENDER_KUBE_VERSION=1.33.0

tools="${ECOINTEGRA_CACHE:-$HOME/.cache/ecointegra}/tools"
chart="deploy/helm/ecointegra"
checks="deploy/check-static/checks.py"
mkdir -p "$tools"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

say() { printf 'check-static: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

# --- tools ------------------------------------------------------------------
helm="$tools/helm-$HELM_VERSION/helm"
kubeconform="$tools/kubeconform-$KUBECONFORM_VERSION/kubeconform"
venv="$tools/python-kv$KUBERNETES_VALIDATE_VERSION-cj$CHECK_JSONSCHEMA_VERSION"
py="$venv/bin/python"
npmdir="$tools/npm-dockerfile-utils-$DOCKERFILE_UTILS_VERSION"
dockerfile_utils="$npmdir/node_modules/.bin/dockerfile-utils"
strimzi="$tools/strimzi-$STRIMZI_VERSION-crdgen-$CRD_GENERATOR_VERSION"

go_install() { # module@version, destination directory
  local go
  go="$(command -v go || echo /usr/local/go/bin/go)"
  [[ -x "$go" ]] || { echo "go is needed to install $1" >&2; return 1; }
  GOBIN="$2.tmp" GOFLAGS=-mod=mod GOTOOLCHAIN=local "$go" install "$1" && mv "$2.tmp" "$2"
}

install_tools() {
  local pids=() logs=() names=() i
  if [[ ! -x "$helm" ]]; then
    say "installing helm $HELM_VERSION (go install; a few minutes, once)"
    go_install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$tools/helm-$HELM_VERSION" \
      > "$work/helm.log" 2>&1 & pids+=($!); logs+=("$work/helm.log"); names+=(helm)
  fi
  if [[ ! -x "$kubeconform" ]]; then
    say "installing kubeconform $KUBECONFORM_VERSION (go install)"
    go_install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" \
      "$tools/kubeconform-$KUBECONFORM_VERSION" > "$work/kubeconform.log" 2>&1 &
    pids+=($!); logs+=("$work/kubeconform.log"); names+=(kubeconform)
  fi
  if [[ ! -f "$venv/.done" ]]; then
    say "installing kubernetes-validate, check-jsonschema, PyYAML (PyPI)"
    ( rm -rf "$venv" && python3 -m venv "$venv" \
      && "$venv/bin/pip" install -q --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
        "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" "PyYAML==$PYYAML_VERSION" \
      && touch "$venv/.done" ) > "$work/pip.log" 2>&1 &
    pids+=($!); logs+=("$work/pip.log"); names+=(python)
  fi
  if [[ ! -x "$dockerfile_utils" ]]; then
    say "installing dockerfile-utils $DOCKERFILE_UTILS_VERSION (npm)"
    ( mkdir -p "$npmdir" && cd "$npmdir" \
      && npm install --no-audit --no-fund --no-save --prefix "$npmdir" \
        "dockerfile-utils@$DOCKERFILE_UTILS_VERSION" ) > "$work/npm.log" 2>&1 &
    pids+=($!); logs+=("$work/npm.log"); names+=(dockerfile-utils)
  fi
  if [[ ! -f "$strimzi/crds/.done" ]]; then
    say "generating the Strimzi $STRIMZI_VERSION CRDs (Maven Central: io.strimzi:api, fabric8 crd-generator-cli)"
    ( rm -rf "$strimzi" && mkdir -p "$strimzi/crds" \
      && sed -e "s/@STRIMZI_VERSION@/$STRIMZI_VERSION/" -e "s/@CRD_GENERATOR_VERSION@/$CRD_GENERATOR_VERSION/" \
           deploy/check-static/strimzi-pom.xml > "$strimzi/pom.xml" \
      && mvn -q -B -Dstyle.color=never -f "$strimzi/pom.xml" dependency:copy-dependencies \
           -DoutputDirectory="$strimzi/lib" \
      && java -cp "$strimzi/lib/*" io.fabric8.crd.generator.cli.CRDGeneratorCLI -o "$strimzi/crds" \
           io.strimzi.api.kafka.model.topic.KafkaTopic io.strimzi.api.kafka.model.user.KafkaUser \
      && touch "$strimzi/crds/.done" ) > "$work/strimzi.log" 2>&1 &
    pids+=($!); logs+=("$work/strimzi.log"); names+=(strimzi)
  fi
  local failed=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      say "installing ${names[$i]} failed:"; tail -n 20 "${logs[$i]}" >&2; failed=1
    fi
  done
  [[ $failed -eq 0 ]] || die "tools could not be installed"
}
install_tools

failures=0
step() { # name, command...
  local name="$1"; shift
  if "$@" > "$work/step.log" 2>&1; then
    say "ok: $name"
  else
    cat "$work/step.log" >&2
    say "FAIL: $name"
    failures=$((failures + 1))
  fi
}

# --- the image definition ---------------------------------------------------
lint_containerfile() {
  local out
  out="$("$dockerfile_utils" lint deploy/container/Containerfile 2>&1)" || { echo "$out"; return 1; }
  # Warnings too: the file should have none.
  [[ -z "$out" ]] || { echo "$out"; return 1; }
}
step "Containerfile linted (dockerfile-utils $DOCKERFILE_UTILS_VERSION, errors and warnings)" lint_containerfile
step "Containerfile: multi-stage, release --locked, runtime last, non-root, binary only" \
  "$py" "$checks" containerfile deploy/container/Containerfile .dockerignore

# --- Compose ----------------------------------------------------------------
step "compose.yaml valid against the Compose specification's schema (check-jsonschema vendor.compose-spec)" \
  "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose/compose.yaml
step "compose.yaml: loopback ports, hardened nodes, /readyz health checks, start order" \
  "$py" "$checks" compose deploy/compose/compose.yaml
step "compose setup.sh parses (sh -n)" sh -n deploy/compose/setup.sh

# --- the chart --------------------------------------------------------------
render() { # name, helm arguments...: renders into $work/<name>.yaml
  local name="$1"; shift
  "$helm" template ecointegra "$chart" --kube-version "$RENDER_KUBE_VERSION" "$@" > "$work/$name.yaml"
}
values=(plain strimzi)
for v in "${values[@]}"; do
  step "helm lint --strict ($v values)" \
    "$helm" lint --strict --kube-version "$RENDER_KUBE_VERSION" "$chart" -f "$chart/ci/$v-values.yaml"
  step "helm template ($v values)" render "$v" -f "$chart/ci/$v-values.yaml"
done
step "helm lint --strict (default values)" "$helm" lint --strict "$chart"
# The ACLs for the Rust unit test's sector: prefix eco, institutions a, b, c (c suspended).
step "helm template (the Rust unit test's sector)" render abc --set strimzi.enabled=true \
  --set sector.topicPrefix=eco --set "sector.authorityPublicKey=$(printf '0%.0s' {1..64})" \
  --set 'institutions[0].id=a,institutions[0].deploy=false,institutions[1].id=b,institutions[1].deploy=false,institutions[2].id=c,institutions[2].deploy=false,institutions[2].active=false'
# Values the schema must refuse.
refuse() { # what, --set arguments...
  local what="$1"; shift
  if "$helm" template x "$chart" --kube-version "$RENDER_KUBE_VERSION" -f "$chart/ci/plain-values.yaml" "$@" > "$work/refused.log" 2>&1; then
    echo "values.schema.json accepted $what"; return 1
  fi
  grep -q "schema" "$work/refused.log" || { cat "$work/refused.log"; return 1; }
}
refuse_all() {
  refuse "a Kafka password in values" --set 'kafka.options.sasl\.password=x' &&
  refuse "a bad institution id" --set 'institutions[0].id=MINAM' &&
  refuse "a short authority key" --set sector.authorityPublicKey=abc &&
  refuse "a token instead of its SHA-256" --set 'node.tokens[0].name=x,node.tokens[0].role=system,node.tokens[0].token_sha256=secret' &&
  refuse "an unknown value" --set nodes.replicas=2
}
step "values.schema.json refuses passwords, bad ids, bad keys, raw tokens, unknown values" refuse_all

manifests=("$work/plain.yaml" "$work/strimzi.yaml")
for f in "${manifests[@]}"; do [[ -s "$f" ]] || die "a chart did not render; see above"; done
k8s_schemas() {
  local k src
  for k in "${KUBE_VERSIONS[@]}"; do
    src="$(echo "$venv"/lib/python3*/site-packages/kubernetes_validate/kubernetes-json-schema)/v$k-local-strict"
    "$py" "$checks" k8s-schemas "$src" "$work/schemas/v$k-standalone-strict" "${manifests[@]}" "$work/abc.yaml" || return 1
  done
}
step "Kubernetes schemas of every kind rendered (kubernetes-validate $KUBERNETES_VALIDATE_VERSION: ${KUBE_VERSIONS[*]})" k8s_schemas
step "Strimzi KafkaTopic/KafkaUser schemas (io.strimzi:api $STRIMZI_VERSION via fabric8 crd-generator $CRD_GENERATOR_VERSION)" \
  "$py" "$checks" strimzi-schemas "$strimzi/crds" "$work/schemas/strimzi"
for k in "${KUBE_VERSIONS[@]}"; do
  # Strict (no unknown or duplicate fields); a kind without a schema fails:
  # no -ignore-missing-schemas.
  step "kubeconform -strict, Kubernetes $k: every rendered manifest" \
    "$kubeconform" -strict -summary -kubernetes-version "$k" \
      -schema-location "$work/schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      -schema-location "$work/schemas/strimzi/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      "${manifests[@]}" "$work/abc.yaml"
done
step "workloads: non-root, read-only root, drop ALL, seccomp RuntimeDefault, no escalation, probes, resources" \
  "$py" "$checks" security "${manifests[@]}"
step "every rendered node.toml parses and has only node.example.toml's keys" \
  "$py" "$checks" node-configs deploy/config/node.example.toml "${manifests[@]}"
step "KafkaTopics and KafkaUser ACLs equal the sector plan (broker/src/topics.rs, sector.rs) for the strimzi values" \
  "$py" "$checks" strimzi "$work/strimzi.yaml" "$chart/ci/strimzi-values.yaml"
step "the chart's ACLs for eco/a,b,c equal the Rust unit test's expectations (broker/src/sector.rs)" \
  "$py" "$checks" rust-fixture "$work/abc.yaml"

# --- against the binary's own plan ------------------------------------------
dry_run() {
  local d="$work/dry-run" prefix="staticcheck$$x$RANDOM" exe="$ECOINTEGRA_BIN" id version=1
  mkdir -p "$d"
  "$exe" directory authority --out "$d/authority.key" > "$d/authority.pub"
  local ids=(minam senamhi oefa sernanp igp) set=()
  for i in "${!ids[@]}"; do
    id="${ids[$i]}"
    "$exe" keys generate --out "$d/$id.key" > /dev/null
    local status=active
    [[ $id == igp ]] && status=suspended
    "$exe" directory sign --authority "$d/authority.key" --institution-key "$d/$id.key" \
      --id "$id" --name "$id" --status "$status" --version "$version" --file "$d/directory.toml" > /dev/null
    set+=(--set "institutions[$i].id=$id,institutions[$i].deploy=false")
    [[ $id == igp ]] && set+=(--set "institutions[$i].active=false")
  done
  "$exe" sector provision --dry-run --directory "$d/directory.toml" \
    --authority-public-key "$(cat "$d/authority.pub")" --bootstrap-servers "$ECOINTEGRA_SECURE_KAFKA" \
    --admin-config "$KAFKA_OPERATOR_LIBRDKAFKA" --topic-prefix "$prefix" \
    --partitions 3 --replication-factor 3 --max-record-bytes 1000000 > "$d/plan.txt"
  "$helm" template ecointegra "$chart" --kube-version "$RENDER_KUBE_VERSION" --set strimzi.enabled=true \
    --set "sector.topicPrefix=$prefix" --set "sector.authorityPublicKey=$(cat "$d/authority.pub")" \
    "${set[@]}" > "$d/chart.yaml"
  "$py" "$checks" dry-run "$d/chart.yaml" "$d/plan.txt"
}
if [[ -n "${ECOINTEGRA_BIN:-}" && -n "${ECOINTEGRA_SECURE_KAFKA:-}" && -n "${KAFKA_OPERATOR_LIBRDKAFKA:-}" ]]; then
  step "KafkaTopics and KafkaUsers equal \`$ECOINTEGRA_BIN sector provision --dry-run\` on $ECOINTEGRA_SECURE_KAFKA" dry_run
else
  say "skipped: comparison with \`ecointegra sector provision --dry-run\` (needs ECOINTEGRA_BIN, ECOINTEGRA_SECURE_KAFKA and KAFKA_OPERATOR_LIBRDKAFKA)"
fi

if [[ $failures -gt 0 ]]; then
  die "$failures check(s) failed"
fi
say "all static checks passed"
