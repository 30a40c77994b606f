#!/usr/bin/env python3
"""The checks of deploy/check-static.sh that no off-the-shelf tool makes.

Each subcommand prints what it checked and exits 1 naming every failure:

  k8s-schemas SRC OUT MANIFEST...   standalone JSON schemas (for kubeconform) of
                                    the Kubernetes kinds the manifests use, from
                                    kubernetes-validate's schemas in SRC; fails
                                    on a kind it has no schema for
  strimzi-schemas CRD_DIR OUT       kubeconform schemas of KafkaTopic and
                                    KafkaUser (v1beta2) from the CRDs generated
                                    from Strimzi's published API classes
  security MANIFEST...              every workload is non-root, read-only, no
                                    capabilities, seccomp RuntimeDefault, ...
  node-configs EXAMPLE MANIFEST...  every rendered node.toml parses and uses
                                    only keys of deploy/config/node.example.toml
  strimzi MANIFEST VALUES           KafkaTopics and KafkaUsers are exactly the
                                    sector's plan (broker/src/topics.rs,
                                    broker/src/sector.rs) for VALUES
  rust-fixture MANIFEST             the chart's ACLs for prefix eco and
                                    institutions a, b, c equal the expectations
                                    of the Rust unit test in broker/src/sector.rs
  dry-run MANIFEST OUTPUT           KafkaTopics and KafkaUsers equal what
                                    `ecointegra sector provision --dry-run`
                                    printed (create topic / add ACL lines)
  compose COMPOSE                   the Compose file's own rules (loopback
                                    ports, hardened nodes, health checks)
"""

import json
import os
import re
import sys
import tomllib

import yaml

failures = []


def fail(message):
    failures.append(message)


def done(what):
    if failures:
        for f in failures:
            print(f"FAIL: {f}", file=sys.stderr)
        print(f"check-static: {what}: {len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def documents(paths):
    for path in paths:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    yield path, doc


# --- Kubernetes schemas ------------------------------------------------------

def kind_file(kind, api_version):
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def k8s_schemas(src, out, manifests):
    with open(os.path.join(src, "_definitions.json")) as f:
        defs = json.load(f)["$defs"]
    os.makedirs(out, exist_ok=True)
    kinds = set()
    for _, doc in documents(manifests):
        if not doc["apiVersion"].startswith("kafka.strimzi.io/"):
            kinds.add((doc["kind"], doc["apiVersion"]))
    ref = re.compile(r'"\$ref":\s*"[^"#]*#/\$defs/([^"]+)"')
    for kind, api_version in sorted(kinds):
        name = kind_file(kind, api_version)
        path = os.path.join(src, name)
        if not os.path.exists(path):
            fail(f"no Kubernetes schema for {kind} {api_version} ({name})")
            continue
        with open(path) as f:
            text = f.read()
        # Gather the definitions it reaches, and point its references at them.
        needed, todo = {}, ref.findall(text)
        while todo:
            d = todo.pop()
            if d in needed:
                continue
            needed[d] = defs[d]
            todo.extend(ref.findall(json.dumps(defs[d])))
        schema = json.loads(ref.sub(r'"$ref": "#/definitions/\1"', text))
        schema["definitions"] = json.loads(
            ref.sub(r'"$ref": "#/definitions/\1"', json.dumps(needed)))
        with open(os.path.join(out, name), "w") as f:
            json.dump(schema, f)
    done(f"Kubernetes schemas for {len(kinds)} kind(s) used")


# --- Strimzi schemas ---------------------------------------------------------

ACL_OPERATIONS = ["Read", "Write", "Create", "Delete", "Alter", "Describe",
                  "ClusterAction", "AlterConfigs", "DescribeConfigs",
                  "IdempotentWrite", "All"]

# Strimzi's polymorphic types (KafkaUserAuthentication, KafkaUserAuthorization)
# come out of the CRD generator as bare {type}; these are the v1beta2 forms the
# chart uses, written from Strimzi's API reference (KafkaUserScramSha512-
# ClientAuthentication, KafkaUserAuthorizationSimple, AclRule, AclRule*Resource).
AUTHENTICATION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["scram-sha-512"]},
        "password": {"type": "object"},
    },
}
AUTHORIZATION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["simple"]},
        "acls": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["resource", "operations"],
                "properties": {
                    "type": {"type": "string", "enum": ["allow", "deny"]},
                    "host": {"type": "string"},
                    "operations": {
                        "type": "array", "minItems": 1, "uniqueItems": True,
                        "items": {"type": "string", "enum": ACL_OPERATIONS},
                    },
                    "resource": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type"],
                        "properties": {
                            "type": {"type": "string", "enum": [
                                "topic", "group", "cluster", "transactionalId"]},
                            "name": {"type": "string", "minLength": 1},
                            "patternType": {"type": "string",
                                            "enum": ["literal", "prefix"]},
                        },
                    },
                },
            },
        },
    },
}


def strict(node):
    """openAPIV3Schema to JSON schema: no property outside the schema."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node \
                and not node.get("x-kubernetes-preserve-unknown-fields") \
                and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in list(node.values()):
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)


def strimzi_schemas(crd_dir, out):
    os.makedirs(out, exist_ok=True)
    made = 0
    for name in sorted(os.listdir(crd_dir)):
        if not name.endswith((".yml", ".yaml")):
            continue
        with open(os.path.join(crd_dir, name)) as f:
            crd = yaml.safe_load(f)
        kind = crd["spec"]["names"]["kind"]
        group = crd["spec"]["group"]
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            schema.pop("x-kubernetes-preserve-unknown-fields", None)
            strict(schema)
            props = schema["properties"]
            props["apiVersion"] = {"type": "string",
                                   "enum": [f"{group}/{version['name']}"]}
            props["kind"] = {"type": "string", "enum": [kind]}
            props["metadata"] = {"type": "object"}
            schema["additionalProperties"] = False
            schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
            if kind == "KafkaTopic":
                # Map<String, Object> in the API classes; any scalar in Strimzi's CRD.
                props["spec"]["properties"]["config"] = {
                    "type": "object",
                    "additionalProperties": {"type": ["string", "number", "boolean"]}}
            if kind == "KafkaUser":
                spec = props["spec"]["properties"]
                spec["authentication"] = AUTHENTICATION
                spec["authorization"] = AUTHORIZATION
            path = os.path.join(
                out, f"{kind.lower()}-{group.split('.')[0]}-{version['name']}.json")
            with open(path, "w") as f:
                json.dump(schema, f, indent=1)
            made += 1
    if made < 2:
        fail(f"expected the KafkaTopic and KafkaUser CRDs in {crd_dir}, made {made} schema(s)")
    done(f"Strimzi schemas ({made})")


# --- Security of the workloads ----------------------------------------------

def security(manifests):
    seen = 0
    for path, doc in documents(manifests):
        if doc["kind"] not in ("StatefulSet", "Deployment", "DaemonSet", "Job", "Pod"):
            continue
        seen += 1
        name = f"{doc['kind']} {doc['metadata']['name']}"
        pod = doc["spec"]["template"]["spec"] if doc["kind"] != "Pod" else doc["spec"]
        psc = pod.get("securityContext", {})
        if doc["kind"] == "StatefulSet" and doc["spec"].get("replicas") != 1:
            fail(f"{name}: replicas must be 1 (one process holds a node's store)")
        if pod.get("automountServiceAccountToken") is not False:
            fail(f"{name}: automountServiceAccountToken must be false")
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            fail(f"{name}: uses the host's namespaces")
        for volume in pod.get("volumes", []):
            if "hostPath" in volume:
                fail(f"{name}: hostPath volume {volume['name']}")
        for c in pod.get("initContainers", []) + pod["containers"]:
            csc = c.get("securityContext", {})
            where = f"{name} container {c['name']}"

            def get(key):
                return csc.get(key, psc.get(key))
            if get("runAsNonRoot") is not True:
                fail(f"{where}: runAsNonRoot is not true")
            if get("runAsUser") in (0, None) and psc.get("runAsUser") in (0, None):
                fail(f"{where}: no non-zero runAsUser")
            if csc.get("readOnlyRootFilesystem") is not True:
                fail(f"{where}: readOnlyRootFilesystem is not true")
            if csc.get("allowPrivilegeEscalation") is not False:
                fail(f"{where}: allowPrivilegeEscalation is not false")
            if csc.get("privileged"):
                fail(f"{where}: privileged")
            caps = csc.get("capabilities", {})
            if caps.get("drop") != ["ALL"] or caps.get("add"):
                fail(f"{where}: capabilities must drop ALL and add none, got {caps}")
            seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                fail(f"{where}: seccompProfile is {seccomp!r}, not RuntimeDefault")
            res = c.get("resources", {})
            for k in ("requests", "limits"):
                if not res.get(k, {}).get("memory") or not res.get(k, {}).get("cpu"):
                    fail(f"{where}: resources.{k} lacks cpu or memory")
            probes = {p: c.get(p, {}).get("httpGet", {}).get("path")
                      for p in ("startupProbe", "livenessProbe", "readinessProbe")}
            if probes != {"startupProbe": "/livez", "livenessProbe": "/livez",
                          "readinessProbe": "/readyz"}:
                fail(f"{where}: probes {probes}; want /livez, /livez, /readyz")
            for env in c.get("env", []):
                if "value" in env and re.search(r"passw|secret|token", env["name"], re.I):
                    fail(f"{where}: env {env['name']} holds a literal value")
                if "value" in env and re.search(r"sasl\.password\"=\"(?!\$\()", env["value"]):
                    fail(f"{where}: env {env['name']} holds a literal password")
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            if "/var/lib/ecointegra" not in mounts:
                fail(f"{where}: no volume at /var/lib/ecointegra (the data directory)")
            for path_ in ("/etc/ecointegra/keys", "/etc/ecointegra/node.toml"):
                if path_ in mounts and not mounts[path_].get("readOnly"):
                    fail(f"{where}: {path_} is not mounted read-only")
        if doc["kind"] == "StatefulSet":
            claims = [t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])]
            if claims != ["data"]:
                fail(f"{name}: volumeClaimTemplates {claims}, want [data]")
        for volume in pod.get("volumes", []):
            if volume["name"] == "keys" and "secret" not in volume:
                fail(f"{name}: the keys volume is not a Secret")
    for path, doc in documents(manifests):
        if doc["kind"] == "ConfigMap":
            text = json.dumps(doc.get("data", {}))
            if re.search(r"sasl\.password|BEGIN [A-Z ]*PRIVATE KEY", text):
                fail(f"ConfigMap {doc['metadata']['name']}: holds a secret")
    if seen == 0:
        fail("no workload in the manifests")
    done(f"security of {seen} workload(s)")


# --- node.toml ---------------------------------------------------------------

def known_keys(example):
    """Every key path of node.example.toml, commented-out ones included."""
    keys, table = set(), ""
    maps = set()
    for line in open(example):
        s = line.strip().lstrip("#").strip()
        m = re.fullmatch(r"\[\[?([a-z_.]+)\]\]?", s)
        if m:
            table = m.group(1)
            keys.add(table)
            continue
        m = re.match(r'^("?[a-z0-9_.-]+"?)\s*=', s)
        if m and line.lstrip().startswith(("#", m.group(1))):
            key = m.group(1)
            if key.startswith('"'):
                maps.add(table)  # a free-form table: kafka.options, business_days_by_type
            else:
                keys.add(f"{table}.{key}" if table else key)
    return keys, maps


def node_configs(example, manifests):
    keys, maps = known_keys(example)
    n = 0
    for _, doc in documents(manifests):
        if doc["kind"] != "ConfigMap" or "node.toml" not in doc.get("data", {}):
            continue
        n += 1
        name = doc["metadata"]["name"]
        try:
            config = tomllib.loads(doc["data"]["node.toml"])
        except tomllib.TOMLDecodeError as e:
            fail(f"ConfigMap {name}: node.toml does not parse: {e}")
            continue

        def walk(table, prefix):
            for k, v in table.items():
                path = f"{prefix}.{k}" if prefix else k
                if prefix in maps:
                    if not isinstance(v, str):
                        fail(f"ConfigMap {name}: {path} must be a string")
                    continue
                if path not in keys:
                    fail(f"ConfigMap {name}: unknown key {path}")
                elif isinstance(v, dict):
                    walk(v, path)
                elif isinstance(v, list) and v and isinstance(v[0], dict):
                    for item in v:
                        walk(item, path)
        walk(config, "")
        for k in ("institution", "data_dir"):
            if k not in config:
                fail(f"ConfigMap {name}: no {k}")
        if not re.fullmatch(r"[0-9a-f]{64}", config.get("keys", {}).get("authority_public_key", "")):
            fail(f"ConfigMap {name}: keys.authority_public_key is not 64 hex")
        if config.get("development") and config["kafka"].get("manage_topics") is False:
            fail(f"ConfigMap {name}: development with manage_topics = false")
    if n == 0:
        fail("no node.toml rendered")
    done(f"{n} node.toml(s) against {os.path.basename(example)}")


# --- The sector's plan (broker/src/topics.rs, broker/src/sector.rs) ---------

def plan_topics(prefix, ids, partitions, replicas, max_bytes):
    """sector_plans: name -> (partitions, replicas, configs)."""
    base = {"max.message.bytes": str(max_bytes),
            "min.insync.replicas": str(max(replicas - 1, 1))}
    plans = {}
    for i in ids:
        plans[f"{prefix}.inbox.{i}"] = (partitions, replicas, {**base, "retention.ms": "1209600000"})
        plans[f"{prefix}.dlq.{i}"] = (1, replicas, {**base, "retention.ms": "-1"})
    plans[f"{prefix}.tracking"] = (partitions, replicas, {**base, "retention.ms": "-1"})
    plans[f"{prefix}.directory"] = (1, replicas, {**base, "cleanup.policy": "compact"})
    return plans


def plan_acls(prefix, ident, ids, may_write):
    """institution_acls: a set of (principal, resource type, name, operation),
    each ALLOW, from any host, on a literal name."""
    user = f"User:{ident}"
    peers = [p for p in ids if p != ident]
    inbox = lambda i: f"{prefix}.inbox.{i}"  # noqa: E731
    readable = [inbox(ident), f"{prefix}.dlq.{ident}", f"{prefix}.tracking", f"{prefix}.directory"]
    acls = set()
    for t in readable:
        acls.add((user, "topic", t, "READ"))
    group = f"{prefix}.node.{ident}"
    for g in (f"{group}.tracking", f"{group}.directory", group):
        acls.add((user, "group", g, "READ"))
    for p in peers:
        acls.add((user, "group", f"{prefix}.node.{p}", "DESCRIBE"))
    for t in readable + [inbox(p) for p in peers]:
        acls.add((user, "topic", t, "DESCRIBE"))
        acls.add((user, "topic", t, "DESCRIBE_CONFIGS"))
    if may_write:
        for t in [inbox(p) for p in peers] + [f"{prefix}.tracking", f"{prefix}.dlq.{ident}"]:
            acls.add((user, "topic", t, "WRITE"))
    return acls


OPERATION = {"Read": "READ", "Write": "WRITE", "Describe": "DESCRIBE",
             "DescribeConfigs": "DESCRIBE_CONFIGS", "Create": "CREATE",
             "Delete": "DELETE", "Alter": "ALTER", "AlterConfigs": "ALTER_CONFIGS",
             "ClusterAction": "CLUSTER_ACTION", "IdempotentWrite": "IDEMPOTENT_WRITE",
             "All": "ALL"}


def rendered(manifests):
    """The KafkaTopics and the KafkaUsers' ACLs of rendered manifests."""
    topics, users = {}, {}
    for _, doc in documents(manifests):
        if doc["kind"] == "KafkaTopic":
            s = doc["spec"]
            name = s.get("topicName", doc["metadata"]["name"])
            if name in topics:
                fail(f"topic {name} declared twice")
            topics[name] = (s["partitions"], s["replicas"],
                            {k: str(v) for k, v in s.get("config", {}).items()})
        elif doc["kind"] == "KafkaUser":
            user = doc["metadata"]["name"]
            s = doc["spec"]
            if s.get("authentication") != {"type": "scram-sha-512"}:
                fail(f"KafkaUser {user}: authentication {s.get('authentication')}, want scram-sha-512")
            auth = s.get("authorization", {})
            if auth.get("type") != "simple":
                fail(f"KafkaUser {user}: authorization type {auth.get('type')}, want simple")
            acls = set()
            for rule in auth.get("acls", []):
                r = rule["resource"]
                if rule.get("type", "allow") != "allow" or rule.get("host", "*") != "*" \
                        or r.get("patternType", "literal") != "literal":
                    fail(f"KafkaUser {user}: rule {rule} is not allow/any host/literal")
                for op in rule["operations"]:
                    acl = (f"User:{user}", r["type"], r.get("name", ""), OPERATION[op])
                    if acl in acls:
                        fail(f"KafkaUser {user}: {acl} twice")
                    acls.add(acl)
            users[user] = acls
    return topics, users


def compare(what, want, have):
    for k in sorted(set(want) | set(have)):
        if k not in have:
            fail(f"{what}: missing {k}")
        elif k not in want:
            fail(f"{what}: not in the plan: {k}")
        elif want[k] != have[k]:
            w, h = want[k], have[k]
            if isinstance(w, set):
                for x in sorted(w - h):
                    fail(f"{what} {k}: missing {' '.join(x)}")
                for x in sorted(h - w):
                    fail(f"{what} {k}: not in the plan: {' '.join(x)}")
            else:
                fail(f"{what} {k}: {h}, the plan says {w}")


def strimzi(manifest, values_file):
    values = yaml.safe_load(open(values_file))
    sector = values.get("sector", {})
    prefix = sector.get("topicPrefix", "ecointegra")
    partitions = sector.get("partitions", 3)
    replicas = sector.get("replicationFactor", 3)
    max_bytes = sector.get("maxRecordBytes", 1000000)
    insts = values["institutions"]
    ids = [i["id"] for i in insts]
    topics, users = rendered([manifest])
    compare("KafkaTopic", plan_topics(prefix, ids, partitions, replicas, max_bytes), topics)
    want = {i["id"]: plan_acls(prefix, i["id"], ids, i.get("active", True) is not False)
            for i in insts}
    compare("KafkaUser", want, users)
    n = sum(len(a) for a in users.values())
    done(f"{len(topics)} KafkaTopic(s) and {len(users)} KafkaUser(s) with {n} ACL(s) "
         f"equal the plan of `ecointegra sector provision`")


def rust_fixture(manifest):
    """broker/src/sector.rs, an_institution_reads_its_own_writes_its_peers_and_nothing_more."""
    _, users = rendered([manifest])
    if "b" not in users:
        fail("no KafkaUser b rendered")
        return done("the Rust unit test's fixture")
    acls = users["b"]

    def names(op):
        return sorted(f"{'Topic' if t == 'topic' else 'Group'} {n}"
                      for (_, t, n, o) in acls if o == op)
    want_read = ["Group eco.node.b", "Group eco.node.b.directory", "Group eco.node.b.tracking",
                 "Topic eco.directory", "Topic eco.dlq.b", "Topic eco.inbox.b", "Topic eco.tracking"]
    want_write = ["Topic eco.dlq.b", "Topic eco.inbox.a", "Topic eco.inbox.c", "Topic eco.tracking"]
    described = ["Topic eco.directory", "Topic eco.dlq.b", "Topic eco.inbox.a", "Topic eco.inbox.b",
                 "Topic eco.inbox.c", "Topic eco.tracking", "Group eco.node.a", "Group eco.node.c"]
    for op, want in (("READ", want_read), ("WRITE", want_write),
                     ("DESCRIBE", sorted(described)), ("DESCRIBE_CONFIGS", sorted(described[:6]))):
        if names(op) != want:
            fail(f"KafkaUser b {op}: {names(op)}, the Rust test wants {want}")
    if len(acls) != 7 + 4 + 8 + 6:
        fail(f"KafkaUser b has {len(acls)} ACLs, the Rust test wants 25")
    if {o for (_, _, _, o) in users.get("c", set())} & {"WRITE"}:
        fail("KafkaUser c (suspended) has a WRITE ACL")
    done("the chart's ACLs for eco/a,b,c equal the Rust unit test's")


def dry_run(manifest, output):
    """`sector provision --dry-run` on a cluster that has none of this prefix:
    its `create topic` and `add ACL` lines are the whole plan."""
    topics, users = rendered([manifest])
    want_topics, want_acls = {}, {}
    line_topic = re.compile(
        r"create topic (\S+): (\d+) partition\(s\), replication factor (\d+), (.*)$")
    line_acl = re.compile(r"add ACL (User:\S+) ALLOW (\S+) (topic|group) (\S+)$")
    prefixes = {n.rsplit(".", 1)[0].rsplit(".", 1)[0] for n in topics}
    for line in open(output):
        line = line.rstrip("\n")
        m = line_topic.match(line)
        if m:
            configs = dict(kv.split("=", 1) for kv in m.group(4).split(", "))
            want_topics[m.group(1)] = (int(m.group(2)), int(m.group(3)), configs)
            continue
        m = line_acl.match(line)
        if m:
            if not any(m.group(4).startswith(p + ".") for p in prefixes):
                continue  # the user's ACLs of another prefix (other tests)
            user = m.group(1).split(":", 1)[1]
            want_acls.setdefault(user, set()).add(
                (m.group(1), m.group(3), m.group(4), m.group(2)))
        elif line.startswith("add ACL"):
            fail(f"unexpected dry-run line: {line}")
    if not want_topics or not want_acls:
        fail("the dry run planned no topic or no ACL: was the prefix new to the cluster?")
    compare("KafkaTopic (dry run)", want_topics, topics)
    compare("KafkaUser (dry run)", want_acls, users)
    done(f"KafkaTopics and KafkaUsers equal `ecointegra sector provision --dry-run` "
         f"({len(want_topics)} topics, {sum(len(a) for a in want_acls.values())} ACLs)")


# --- Containerfile ----------------------------------------------------------

def containerfile(path, dockerignore):
    stages, stage = [], None
    text = open(path).read().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stage = {"from": rest.split()[0], "name": rest.split()[-1] if " AS " in rest.upper() else "",
                     "lines": []}
            stages.append(stage)
        elif stage is not None:
            stage["lines"].append((word, rest))
    if len(stages) < 2:
        fail("the Containerfile is not multi-stage")
        return done("Containerfile rules")
    final = stages[-1]
    if final["name"] != "runtime" or "RUNTIME_IMAGE" not in final["from"]:
        fail(f"the last (default) stage is {final['name']!r} from {final['from']}, want runtime")
    if not re.search(r"ARG RUNTIME_IMAGE=gcr\.io/distroless/cc-debian12:nonroot\b", text):
        fail("the runtime base is not distroless cc-debian12:nonroot")
    users = [rest for word, rest in final["lines"] if word == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        fail(f"the runtime stage's USER is {users[-1:] or 'unset'}: it must be non-root")
    copies = [rest for word, rest in final["lines"] if word in ("COPY", "ADD")]
    for c in copies:
        if "--from=builder" not in c:
            fail(f"the runtime stage copies from outside the builder: {c}")
    if not copies or not any(c.rstrip().endswith("/usr/bin/ecointegra") for c in copies):
        fail("the runtime stage does not copy the binary")
    if any(word == "RUN" for word, _ in final["lines"]):
        fail("the runtime stage runs commands (it has no shell)")
    builds = [rest for s in stages for word, rest in s["lines"] if word == "RUN" and "cargo build" in rest]
    if not builds or not all("--release" in b and "--locked" in b for b in builds):
        fail("no `cargo build --release --locked` in the builder")
    ignored = {l.strip() for l in open(dockerignore) if l.strip() and not l.startswith("#")}
    for must in (".git", "target"):
        if must not in ignored:
            fail(f".dockerignore does not leave out {must}")
    done(f"Containerfile rules ({len(stages)} stages, runtime last)")


# --- Compose -----------------------------------------------------------------

def compose(path):
    doc = yaml.safe_load(open(path))
    services = doc["services"]
    nodes = [n for n, s in services.items()
             if s.get("image", "").startswith("ecointegra:")]
    if len(nodes) < 3:
        fail(f"{len(nodes)} node service(s); the federation has at least 3")
    for name, s in services.items():
        for p in s.get("ports", []):
            if not str(p).startswith("127.0.0.1:"):
                fail(f"service {name}: port {p} is not on loopback")
    for n in nodes:
        s = services[n]
        if not s.get("read_only"):
            fail(f"node {n}: read_only is not true")
        if s.get("cap_drop") != ["ALL"] or s.get("cap_add"):
            fail(f"node {n}: must drop ALL capabilities and add none")
        if str(s.get("user", "0")).split(":")[0] in ("0", "root"):
            fail(f"node {n}: runs as root")
        if "no-new-privileges:true" not in s.get("security_opt", []):
            fail(f"node {n}: no no-new-privileges")
        if not any(v.endswith(":/var/lib/ecointegra") for v in s.get("volumes", [])):
            fail(f"node {n}: no volume for /var/lib/ecointegra")
        if not any(v.endswith(":/etc/ecointegra:ro") for v in s.get("volumes", [])):
            fail(f"node {n}: /etc/ecointegra is not mounted read-only")
        health = [h for h, hs in services.items()
                  if hs.get("network_mode") == f"service:{n}"
                  and "/readyz" in " ".join(hs.get("healthcheck", {}).get("test", []))]
        if not health:
            fail(f"node {n}: no health check on its /readyz")
        deps = s.get("depends_on", {})
        if deps.get("setup", {}).get("condition") != "service_completed_successfully" \
                or deps.get("kafka", {}).get("condition") != "service_healthy":
            fail(f"node {n}: must wait for setup to complete and Kafka to be healthy")
    kafka = services.get("kafka", {})
    if not kafka.get("image", "").startswith("docker.io/apache/kafka:"):
        fail("kafka: not the official apache/kafka image")
    if "broker,controller" not in str(kafka.get("environment", {}).get("KAFKA_PROCESS_ROLES")):
        fail("kafka: not a single KRaft node (broker,controller)")
    if "healthcheck" not in kafka:
        fail("kafka: no health check")
    done(f"Compose rules ({len(nodes)} nodes: {', '.join(nodes)})")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "k8s-schemas": lambda: k8s_schemas(args[0], args[1], args[2:]),
        "strimzi-schemas": lambda: strimzi_schemas(args[0], args[1]),
        "security": lambda: security(args),
        "node-configs": lambda: node_configs(args[0], args[1:]),
        "strimzi": lambda: strimzi(args[0], args[1]),
        "rust-fixture": lambda: rust_fixture(args[0]),
        "dry-run": lambda: dry_run(args[0], args[1]),
        "compose": lambda: compose(args[0]),
        "containerfile": lambda: containerfile(args[0], args[1]),
    }[cmd]()


if __name__ == "__main__":
    main()
