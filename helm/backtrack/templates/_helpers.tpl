{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "backtrack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; component names append to it, so it leaves them room. */}}
{{- define "backtrack.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "backtrack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "backtrack.nodeName" -}}{{ include "backtrack.fullname" . }}-node{{- end }}
{{- define "backtrack.postgresqlName" -}}{{ include "backtrack.fullname" . }}-postgresql{{- end }}

{{- define "backtrack.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "backtrack.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels: pass (dict "ctx" $ "component" "control-plane") ------------------------------ */}}

{{- define "backtrack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "backtrack.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "backtrack.labels" -}}
helm.sh/chart: {{ include "backtrack.chart" .ctx }}
{{ include "backtrack.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: backtrack
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/* The image of both programs. */}}
{{- define "backtrack.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Secrets: where the node token and the database URL come from --------------------- */}}

{{- define "backtrack.tokenSecretName" -}}
{{- default (include "backtrack.fullname" .) .Values.nodeToken.existingSecret }}
{{- end }}

{{- define "backtrack.tokenSecretKey" -}}
{{- if .Values.nodeToken.existingSecret }}{{ .Values.nodeToken.existingSecretKey }}{{ else }}node-token{{ end }}
{{- end }}

{{- define "backtrack.keysSecretName" -}}
{{- default (include "backtrack.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{- define "backtrack.keysSecretKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}access-keys{{ end }}
{{- end }}

{{- define "backtrack.databaseSecretName" -}}
{{- default (include "backtrack.fullname" .) .Values.database.existingSecret }}
{{- end }}

{{- define "backtrack.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}database-url{{ end }}
{{- end }}

{{- define "backtrack.sqlite" -}}
{{- if eq .Values.database.type "sqlite" }}true{{ end }}
{{- end }}

{{/* The bundled PostgreSQL runs only for database.type postgresql. */}}
{{- define "backtrack.bundledPostgresql" -}}
{{- if and (eq .Values.database.type "postgresql") .Values.postgresql.enabled }}true{{ end }}
{{- end }}

{{/*
A generated secret that survives upgrades: the value given, else the one the release's Secret
already holds, else a new random one. Pass (list $ "key" given).
*/}}
{{- define "backtrack.keptSecret" -}}
{{- $ctx := index . 0 }}
{{- $key := index . 1 }}
{{- $given := index . 2 }}
{{- if $given }}
{{- $given }}
{{- else }}
{{- $existing := lookup "v1" "Secret" $ctx.Release.Namespace (include "backtrack.fullname" $ctx) }}
{{- $data := dig "data" dict ($existing | default dict) }}
{{- if hasKey $data $key }}
{{- index $data $key | b64dec }}
{{- else if eq $key "access-key-id" }}
{{- printf "AKBT%s" (randAlphaNum 16 | upper) }}
{{- else }}
{{- randAlphaNum 40 }}
{{- end }}
{{- end }}
{{- end }}

{{/* The storage nodes as the control plane names them: node-N=http://POD.SERVICE…:PORT */}}
{{- define "backtrack.nodeEndpoints" -}}
{{- $node := include "backtrack.nodeName" . }}
{{- $endpoints := list }}
{{- range $i := until (int .Values.storageNode.replicas) }}
{{- $endpoints = append $endpoints (printf "node-%d=http://%s-%d.%s.%s.svc.%s:%d" $i $node $i $node $.Release.Namespace $.Values.clusterDomain (int $.Values.storageNode.port)) }}
{{- end }}
{{- join "," $endpoints }}
{{- end }}

{{/* Pod placement: the component's own, else spread its pods over Kubernetes nodes. */}}
{{- define "backtrack.affinity" -}}
{{- $values := .values }}
{{- if $values.affinity }}
{{- toYaml $values.affinity }}
{{- else }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "backtrack.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 12 }}
{{- end }}
{{- end }}

{{/* Refusals: combinations the chart will not render, each with what to do instead. */}}
{{- define "backtrack.validate" -}}
{{- $db := .Values.database }}
{{- if eq $db.type "sqlite" }}
{{- if gt (int .Values.controlPlane.replicas) 1 }}
{{- fail (printf "controlPlane.replicas is %d, but database.type sqlite keeps the metadata on one pod's volume: set controlPlane.replicas=1, or use PostgreSQL (database.type=postgresql) for several replicas." (int .Values.controlPlane.replicas)) }}
{{- end }}
{{- if or $db.url $db.existingSecret }}
{{- fail "database.type sqlite does not use database.url or database.existingSecret: leave them empty, or set database.type=postgresql." }}
{{- end }}
{{- else }}
{{- $sources := 0 }}
{{- if $db.url }}{{ $sources = add1 $sources }}{{ end }}
{{- if $db.existingSecret }}{{ $sources = add1 $sources }}{{ end }}
{{- if .Values.postgresql.enabled }}{{ $sources = add1 $sources }}{{ end }}
{{- if ne (int $sources) 1 }}
{{- fail "database.type postgresql needs exactly one of: postgresql.enabled=true (the bundled PostgreSQL), database.url, or database.existingSecret (with an external PostgreSQL, set postgresql.enabled=false)." }}
{{- end }}
{{- if and $db.url (not (or (hasPrefix "postgres://" $db.url) (hasPrefix "postgresql://" $db.url))) }}
{{- fail "database.url must start with postgres:// or postgresql://." }}
{{- end }}
{{- end }}
{{- if and .Values.nodeToken.value .Values.nodeToken.existingSecret }}
{{- fail "Give nodeToken.value or nodeToken.existingSecret, not both." }}
{{- end }}
{{- $auth := .Values.auth }}
{{- if and (or $auth.accessKeyId $auth.secretAccessKey) $auth.existingSecret }}
{{- fail "Give auth.accessKeyId and auth.secretAccessKey, or auth.existingSecret, not both." }}
{{- end }}
{{- if ne (empty $auth.accessKeyId) (empty $auth.secretAccessKey) }}
{{- fail "Give auth.accessKeyId and auth.secretAccessKey together (or neither, to have a pair generated)." }}
{{- end }}
{{- if and $auth.metricsAuth .Values.metrics.serviceMonitor.enabled }}
{{- fail "auth.metricsAuth=true makes /metrics require a SigV4 signature, which a ServiceMonitor's scrapes cannot carry: turn one of them off." }}
{{- end }}
{{- end }}
