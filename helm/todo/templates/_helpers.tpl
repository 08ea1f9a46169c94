{{/*
Helpers shared by every template. A "component" is "auth" or "task": the key of its values block.
Templates that exist once per component range over (include "todo.components" .) and pass
(dict "root" $ "c" $c) to the per-component helpers below.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "todo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>" (or fullnameOverride), 63 characters at most. */}}
{{- define "todo.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The components, in a fixed order. */}}
{{- define "todo.components" -}}
auth task
{{- end }}

{{/* The binary (and app) name of a component: auth-service or task-service. */}}
{{- define "todo.binary" -}}
{{- printf "%s-service" .c }}
{{- end }}

{{/* Name of a component's objects: "<fullname>-auth-service"; 63 characters at most. */}}
{{- define "todo.componentName" -}}
{{- printf "%s-%s-service" (include "todo.fullname" .root | trunc 50 | trimSuffix "-") .c }}
{{- end }}

{{/*
Name of a component's admin Service: "<fullname>-auth-admin". It carries only the admin port
(9000: /metrics, /readyz, the revoked-sessions feed) and is always ClusterIP, so no value can
publish that port outside the cluster.
*/}}
{{- define "todo.adminServiceName" -}}
{{- printf "%s-%s-admin" (include "todo.fullname" .root | trunc 50 | trimSuffix "-") .c }}
{{- end }}

{{/*
TRUSTED_PROXIES from auth.trustedProxies: the CIDRs joined with commas, or empty for [] and for
[none] (the explicit "no proxy to trust"), which leave the variable unset.
*/}}
{{- define "todo.trustedProxies" -}}
{{- without .Values.auth.trustedProxies "none" | join "," }}
{{- end }}

{{/*
With the Ingress on, an empty auth.trustedProxies would make auth-service see every client as the
ingress controller's address: one rate-limit bucket for everyone. The chart cannot know the
controller's addresses, so it refuses to guess; [none] is the explicit way to accept that.
*/}}
{{- define "todo.requireTrustedProxies" -}}
{{- if and .Values.ingress.enabled (not .Values.auth.trustedProxies) }}
{{- fail "auth.trustedProxies is empty while ingress.enabled is true: auth-service would see every client as the ingress controller's address, so all clients would share one login and registration rate limit. Set auth.trustedProxies to the CIDRs of every proxy hop in front of auth-service (the ingress controller's pods, e.g. the cluster pod CIDR, plus any cloud load balancer that adds its own X-Forwarded-For entry; helm/README.md lists them per controller), or to [none] to accept that all clients share one address." }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "todo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "todo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: todo
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of a component's pods (never change them: Deployment selectors are immutable). */}}
{{- define "todo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "todo.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ include "todo.binary" . }}
{{- end }}

{{/* Labels of a component's objects. */}}
{{- define "todo.componentLabels" -}}
{{ include "todo.labels" .root }}
app.kubernetes.io/component: {{ include "todo.binary" . }}
{{- end }}

{{/* The service image, pinned by digest when one is given. */}}
{{- define "todo.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Name of the Secret the services read (the chart's own, or secrets.existingSecret). */}}
{{- define "todo.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "todo.fullname" .)) }}
{{- end }}

{{/*
Name of the Secret the migrate Jobs read: a pre-install hook of its own, because pre-install hooks
run before the chart's ordinary Secret exists. With existingSecret the Jobs read that one.
*/}}
{{- define "todo.migrationSecretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-migrations" (include "todo.fullname" .)) }}
{{- end }}

{{/* "true" when migrate runs as hook Jobs (migrations.mode hook) for at least one service. */}}
{{- define "todo.hookMigrations" -}}
{{- if and (eq .Values.migrations.mode "hook") (or .Values.auth.migrations.enabled .Values.task.migrations.enabled) }}true{{ end }}
{{- end }}

{{/*
The `<binary> migrate` container of a component, for its hook Job or as its Deployment's init
container: (dict "root" $ "c" $c "secret" <the Secret to read the database URLs from>).
MIGRATION_DATABASE_URL is optional: without it migrate uses DATABASE_URL.
*/}}
{{- define "todo.migrateContainer" -}}
{{- $v := index .root.Values .c -}}
name: migrate
image: {{ include "todo.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
command: [{{ include "todo.binary" . | quote }}, "migrate"]
env:
  - name: DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ .secret }}
        key: {{ .c }}-database-url
  # A direct, non-pooled endpoint when the operator gives one; else migrate uses DATABASE_URL.
  - name: MIGRATION_DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ .secret }}
        key: {{ .c }}-migration-database-url
        optional: true
  - name: MIGRATION_LOCK_TIMEOUT_MS
    value: {{ $v.migrations.lockTimeoutMs | int64 | quote }}
  - name: RUST_LOG
    value: {{ $v.rustLog | quote }}
  {{- include "todo.databaseCAEnv" .root | nindent 2 }}
resources:
  {{- toYaml $v.migrations.resources | nindent 2 }}
securityContext:
  {{- include "todo.containerSecurityContext" .root | nindent 2 }}
{{- with include "todo.databaseCAMount" .root }}
volumeMounts:
  {{- . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The database CA bundle (databaseCA): a read-only volume from the operator's Secret or ConfigMap,
mounted in every container that connects to the database, with PGSSLROOTCERT pointing at it
(sqlx reads it like libpq; sslrootcert in the URL still wins) and PGSSLMODE=verify-full (the
URL's sslmode still wins). Each helper renders nothing when no bundle is configured.
*/}}
{{- define "todo.databaseCADir" -}}/etc/todo/database-ca{{- end }}

{{- define "todo.databaseCAPath" -}}{{ include "todo.databaseCADir" . }}/ca.crt{{- end }}

{{- define "todo.databaseCA" -}}
{{- $ca := .Values.databaseCA }}
{{- if and $ca.secret $ca.configMap }}
{{- fail "databaseCA: set secret or configMap, not both" }}
{{- end }}
{{- if or $ca.secret $ca.configMap }}true{{ end }}
{{- end }}

{{- define "todo.databaseCAEnv" -}}
{{- if include "todo.databaseCA" . }}
- name: PGSSLROOTCERT
  value: {{ include "todo.databaseCAPath" . | quote }}
- name: PGSSLMODE
  value: verify-full
{{- end }}
{{- end }}

{{- define "todo.databaseCAMount" -}}
{{- if include "todo.databaseCA" . }}
- name: database-ca
  mountPath: {{ include "todo.databaseCADir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "todo.databaseCAVolume" -}}
{{- $ca := .Values.databaseCA }}
{{- if $ca.secret }}
- name: database-ca
  secret:
    secretName: {{ $ca.secret }}
    defaultMode: 0444
    items:
      - key: {{ $ca.key }}
        path: ca.crt
{{- else if $ca.configMap }}
- name: database-ca
  configMap:
    name: {{ $ca.configMap }}
    defaultMode: 0444
    items:
      - key: {{ $ca.key }}
        path: ca.crt
{{- end }}
{{- end }}

{{/* Name of the hook ServiceAccount the migrate Jobs run as. */}}
{{- define "todo.migrationServiceAccountName" -}}
{{- printf "%s-migrations" (include "todo.fullname" .) }}
{{- end }}

{{/* JWT_KEYS from secrets.jwtKeys: "kid:secret,kid:secret", the first signs. */}}
{{- define "todo.jwtKeys" -}}
{{- $keys := list }}
{{- range .Values.secrets.jwtKeys }}
{{- $keys = append $keys (printf "%s:%s" .kid .secret) }}
{{- end }}
{{- join "," $keys }}
{{- end }}

{{/* The data of the chart's Secret; also hashed into checksum/secret so a change rolls the pods. */}}
{{- define "todo.secretData" -}}
{{- $db := .Values.secrets.database }}
{{- if not .Values.secrets.jwtKeys }}
{{- fail "secrets.jwtKeys must list at least one {kid, secret} (or set secrets.existingSecret)" }}
{{- end -}}
jwt-keys: {{ include "todo.jwtKeys" . | b64enc | quote }}
auth-database-url: {{ required "secrets.database.auth.url is required (or set secrets.existingSecret)" $db.auth.url | b64enc | quote }}
task-database-url: {{ required "secrets.database.task.url is required (or set secrets.existingSecret)" $db.task.url | b64enc | quote }}
{{- if eq .Values.migrations.mode "initContainer" }}
{{- /* The init containers read this Secret: a separate migration endpoint must be in it. */}}
{{- with $db.auth.migrationUrl }}
auth-migration-database-url: {{ . | b64enc | quote }}
{{- end }}
{{- with $db.task.migrationUrl }}
task-migration-database-url: {{ . | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The data of the migrations' hook Secret: the same DATABASE_URLs (no JWT keys: migrate needs none),
and MIGRATION_DATABASE_URL per service, defaulting to its DATABASE_URL.
*/}}
{{- define "todo.migrationSecretData" -}}
{{- $db := .Values.secrets.database -}}
auth-database-url: {{ required "secrets.database.auth.url is required (or set secrets.existingSecret)" $db.auth.url | b64enc | quote }}
task-database-url: {{ required "secrets.database.task.url is required (or set secrets.existingSecret)" $db.task.url | b64enc | quote }}
auth-migration-database-url: {{ $db.auth.migrationUrl | default $db.auth.url | b64enc | quote }}
task-migration-database-url: {{ $db.task.migrationUrl | default $db.task.url | b64enc | quote }}
{{- end }}

{{/* terminationGracePeriodSeconds: the shutdown delay, the drain timeout, and a margin. */}}
{{- define "todo.terminationGracePeriodSeconds" -}}
{{- add .Values.shutdown.delaySeconds .Values.shutdown.timeoutSeconds .Values.shutdown.graceMarginSeconds }}
{{- end }}

{{/* Pod securityContext: the "restricted" Pod Security Standard. 65532 is distroless's nonroot. */}}
{{- define "todo.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container securityContext: the "restricted" Pod Security Standard, plus a read-only root. */}}
{{- define "todo.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}
