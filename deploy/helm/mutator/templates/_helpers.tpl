{{/*
The chart's name, and the name of (nearly) every object: the release name
when it already contains the chart's name, so that `helm install mutator`
names the objects "mutator" like deploy/standalone.
*/}}
{{- define "mutator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mutator.fullname" -}}
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

{{- define "mutator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: only app.kubernetes.io/name, as in deploy/standalone. A
Deployment's selector is immutable, so keeping it identical lets a kustomize
installation be taken over by the chart (--take-ownership) in place.
*/}}
{{- define "mutator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mutator.name" . }}
{{- end }}

{{/*
Labels of every object: those of deploy/standalone plus Helm's.
*/}}
{{- define "mutator.labels" -}}
{{ include "mutator.selectorLabels" . }}
app.kubernetes.io/part-of: mutator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "mutator.chart" . }}
{{- end }}

{{- define "mutator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mutator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mutator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "mutator.certSecretName" -}}
{{- default (printf "%s-certs" (include "mutator.fullname" .)) .Values.certificates.selfManaged.secretName }}
{{- end }}

{{- define "mutator.servingCertName" -}}
{{- printf "%s-serving" (include "mutator.fullname" .) }}
{{- end }}

{{/*
webhook.namespaceSelector rendered (its strings are templates), with
cert-manager's namespace added to the first NotIn list on
kubernetes.io/metadata.name when cert-manager issues the certificate: the
same edit as deploy/standalone/cert-manager's patch. Output is YAML.
*/}}
{{- define "mutator.namespaceSelector" -}}
{{- $sel := fromYaml (tpl (toYaml .Values.webhook.namespaceSelector) .) }}
{{- if eq .Values.certificates.source "cert-manager" }}
{{- $done := false }}
{{- range $sel.matchExpressions }}
{{- if and (not $done) (eq .key "kubernetes.io/metadata.name") (eq .operator "NotIn") }}
{{- if not (has $.Values.certificates.certManager.namespace .values) }}
{{- $_ := set . "values" (append .values $.Values.certificates.certManager.namespace) }}
{{- end }}
{{- $done = true }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $sel }}
{{- end }}

{{/*
The names the namespace policy protects: namespacePolicy.protectedNamespaces,
every name of config.excludeNamespaces (EXCLUDE_NAMESPACES) and every name the
webhook's namespaceSelector exempts by name (NotIn on
kubernetes.io/metadata.name), so the lists cannot disagree; sorted, once
each, as `mutator namespace-policy` prints them. Output is a JSON list.
*/}}
{{- define "mutator.protectedNamespaces" -}}
{{- $names := list }}
{{- range .Values.namespacePolicy.protectedNamespaces }}
{{- $names = append $names (tpl . $) }}
{{- end }}
{{- range .Values.config.excludeNamespaces }}
{{- $names = append $names (tpl . $) }}
{{- end }}
{{- $sel := fromYaml (include "mutator.namespaceSelector" .) }}
{{- range $sel.matchExpressions }}
{{- if and (eq .key "kubernetes.io/metadata.name") (eq .operator "NotIn") }}
{{- $names = concat $names .values }}
{{- end }}
{{- end }}
{{- toJson (uniq $names | sortAlpha) }}
{{- end }}

{{/*
One env entry per set configuration value, in the order of
deploy/standalone/base/deployment.yaml, then the rest. A value that is null
or "" is left out, so the program's own default applies.
*/}}
{{- define "mutator.configEnv" -}}
{{- $c := .Values.config }}
{{- $m := $c.mirror }}
{{- $registryMap := list }}
{{- range $c.registryMap }}
{{- $registryMap = append $registryMap (printf "%s=%s" .source .target) }}
{{- end }}
{{- $mirrorCredentials := "" }}
{{- if $m.credentialsSecret }}
{{- $mirrorCredentials = "/etc/mutator/mirror-credentials/.dockerconfigjson" }}
{{- end }}
{{- $env := list
  (list "PORT" $c.port)
  (list "METRICS_PORT" $c.metricsPort)
  (list "SHUTDOWN_DELAY" $c.shutdownDelay)
  (list "REGISTRY" $c.registry)
  (list "IGNORED_REGISTRIES" (tpl (join "," $c.ignoredRegistries) .))
  (list "FORCE_IMAGE_PULL_POLICY" $c.forceImagePullPolicy)
  (list "IMAGE_PULL_POLICY_TO_FORCE" $c.imagePullPolicyToForce)
  (list "EXCLUDE_NAMESPACES" (tpl (join "," $c.excludeNamespaces) .))
  (list "MODE" $c.mode)
  (list "WARNINGS" $c.warnings)
  (list "RECORD_ORIGINAL_IMAGES" $c.recordOriginalImages)
  (list "LOG_LEVEL" $c.logLevel)
  (list "IMAGE_PULL_SECRET" $c.imagePullSecret)
  (list "IMAGE_PULL_SECRET_APPEND" $c.imagePullSecretAppend)
  (list "DEFAULT_STORAGE_CLASS" $c.defaultStorageClass)
  (list "REGISTRY_MAP" (join "," $registryMap))
  (list "REQUEST_BODY_BUDGET" $c.requestBodyBudget)
  (list "ENABLE_HTTP2" $c.enableHTTP2)
  (list "WEBHOOK_TLS_MIN_VERSION" $c.tlsMinVersion)
  (list "K_SINK" $c.sink)
  (list "EVENT_SOURCE" $c.eventSource)
  (list "TLS_CLIENT_CA_FILE" $c.tlsClientCAFile)
  (list "GOGC" $c.goGC)
  (list "GOMEMLIMIT" $c.goMemLimit)
  (list "MIRROR_CHECK" $m.check)
  (list "MIRROR_CHECK_TIMEOUT" $m.checkTimeout)
  (list "MIRROR_CHECK_REVIEW_BUDGET" $m.checkReviewBudget)
  (list "MIRROR_CHECK_MAX_LOOKUPS" $m.checkMaxLookups)
  (list "MIRROR_CHECK_MAX_IN_FLIGHT" $m.checkMaxInFlight)
  (list "MIRROR_MISSING" $m.missing)
  (list "MIRROR_COPY_SINK" $m.copySink)
  (list "PIN_DIGESTS" $m.pinDigests)
  (list "MIRROR_UNREACHABLE" $m.unreachable)
  (list "MIRROR_CREDENTIALS" $mirrorCredentials)
  (list "MIRROR_CACHE_TTL" $m.cacheTTL)
  (list "MIRROR_NEGATIVE_CACHE_TTL" $m.negativeCacheTTL)
  (list "MIRROR_CACHE_SIZE" $m.cacheSize)
  (list "MIRROR_CIRCUIT_FAILURES" $m.circuitFailures)
  (list "MIRROR_CIRCUIT_COOLDOWN" $m.circuitCooldown)
  (list "MIRROR_INSECURE" $m.insecure)
}}
{{- range $env }}
{{- $v := index . 1 }}
{{- if and (not (kindIs "invalid" $v)) (ne (toString $v) "") }}
{{- if or (kindIs "float64" $v) (kindIs "int64" $v) (kindIs "int" $v) }}
{{- $v = int64 $v }}
{{- end }}
- name: {{ index . 0 }}
  value: {{ toString $v | quote }}
{{- end }}
{{- end }}
{{- end }}
