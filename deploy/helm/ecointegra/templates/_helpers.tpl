{{/* Names and labels. */}}
{{- define "ecointegra.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The name of one institution's objects: <fullname>-<id>. */}}
{{- define "ecointegra.node" -}}
{{- printf "%s-%s" (include "ecointegra.fullname" .root) .id | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecointegra.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ecointegra
{{- end -}}

{{/* Selector labels of institution .id's node. */}}
{{- define "ecointegra.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: node
ecointegra.example/institution: {{ .id }}
{{- end -}}

{{- define "ecointegra.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Topic names (broker/src/topics.rs). */}}
{{- define "ecointegra.inbox" -}}{{ printf "%s.inbox.%s" .prefix .id }}{{- end -}}
{{- define "ecointegra.dlq" -}}{{ printf "%s.dlq.%s" .prefix .id }}{{- end -}}

{{/* A topic's KafkaTopic object name: a DNS subdomain (the topic name itself
     goes in spec.topicName). */}}
{{- define "ecointegra.topicObject" -}}
{{- regexReplaceAll "[^a-z0-9.-]" (lower .) "-" | trunc 253 | trimSuffix "-" | trimSuffix "." -}}
{{- end -}}

{{- define "ecointegra.bootstrap" -}}
{{- if .Values.kafka.bootstrapServers -}}
{{- .Values.kafka.bootstrapServers -}}
{{- else if .Values.strimzi.enabled -}}
{{- printf "%s-kafka-bootstrap:%d" .Values.strimzi.cluster (int .Values.strimzi.bootstrapPort) -}}
{{- else -}}
{{- fail "kafka.bootstrapServers is required without strimzi.enabled" -}}
{{- end -}}
{{- end -}}

{{/*
The ACLs of institution .id in a sector of .ids, as `ecointegra sector
provision` plans them (broker/src/sector.rs, institution_acls), all ALLOW,
host *, literal names, grouped by resource:
- READ its inbox and DLQ, the tracking and directory topics, and its node's
  three consumer groups (<prefix>.node.<id>, .tracking, .directory);
- DESCRIBE and DESCRIBE_CONFIGS its inbox and DLQ, the shared topics and
  every other institution's inbox;
- DESCRIBE every other institution's inbox group (<prefix>.node.<peer>);
- only while .active: WRITE every other institution's inbox, the tracking
  topic and its own DLQ.
Nothing else: no CREATE, ALTER, DELETE, no cluster ACLs, no IDEMPOTENT_WRITE.
*/}}
{{- define "ecointegra.acls" -}}
{{- $p := .prefix -}}
{{- $id := .id -}}
{{- $write := .active -}}
{{- $rw := list "Read" "Describe" "DescribeConfigs" "Write" -}}
{{- $r := list "Read" "Describe" "DescribeConfigs" -}}
{{- $own := ternary $rw $r $write -}}
{{- $peer := ternary (list "Describe" "DescribeConfigs" "Write") (list "Describe" "DescribeConfigs") $write -}}
- resource: {type: topic, name: {{ printf "%s.inbox.%s" $p $id | quote }}, patternType: literal}
  operations: {{ toJson $r }}
  host: "*"
  type: allow
- resource: {type: topic, name: {{ printf "%s.dlq.%s" $p $id | quote }}, patternType: literal}
  operations: {{ toJson $own }}
  host: "*"
  type: allow
- resource: {type: topic, name: {{ printf "%s.tracking" $p | quote }}, patternType: literal}
  operations: {{ toJson $own }}
  host: "*"
  type: allow
- resource: {type: topic, name: {{ printf "%s.directory" $p | quote }}, patternType: literal}
  operations: {{ toJson $r }}
  host: "*"
  type: allow
{{- range $group := list (printf "%s.node.%s" $p $id) (printf "%s.node.%s.tracking" $p $id) (printf "%s.node.%s.directory" $p $id) }}
- resource: {type: group, name: {{ $group | quote }}, patternType: literal}
  operations: ["Read"]
  host: "*"
  type: allow
{{- end }}
{{- range $other := .ids }}
{{- if ne $other $id }}
- resource: {type: topic, name: {{ printf "%s.inbox.%s" $p $other | quote }}, patternType: literal}
  operations: {{ toJson $peer }}
  host: "*"
  type: allow
- resource: {type: group, name: {{ printf "%s.node.%s" $p $other | quote }}, patternType: literal}
  operations: ["Describe"]
  host: "*"
  type: allow
{{- end }}
{{- end }}
{{- end -}}
