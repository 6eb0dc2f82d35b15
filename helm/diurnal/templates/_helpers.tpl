{{/* Chart name, truncated to 63 characters. */}}
{{- define "diurnal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already holds the chart name. */}}
{{- define "diurnal.fullname" -}}
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

{{- define "diurnal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "diurnal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "diurnal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "diurnal.labels" -}}
helm.sh/chart: {{ include "diurnal.chart" . }}
{{ include "diurnal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "diurnal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "diurnal.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "diurnal.secretName" -}}
{{- default (include "diurnal.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "diurnal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Whether the pod needs the Kubernetes API (and so a service-account token). */}}
{{- define "diurnal.needsApi" -}}
{{- if or .Values.rbac.scale.enabled (eq .Values.mode "fleet") }}true{{ end }}
{{- end }}

{{/* diurnal's settings file: the user's config with what the chart owns set over it. */}}
{{- define "diurnal.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $owned := dict "data_dir" "/var/lib/diurnal" "api" (dict "host" "0.0.0.0" "port" (int .Values.port)) }}
{{- if eq .Values.mode "sidecar" }}
{{- $_ := set $owned "router" (dict "metrics_url" (printf "http://127.0.0.1:%d%s" (int .Values.sidecar.routerMetricsPort) .Values.sidecar.routerMetricsPath)) }}
{{- if .Values.sidecar.decisionFile.enabled }}
{{- $file := dict "path" (printf "%s/%s" .Values.sidecar.decisionFile.mountPath .Values.sidecar.decisionFile.fileName) "shape" .Values.sidecar.decisionFile.shape "format" (ternary "json" "yaml" (hasSuffix ".json" .Values.sidecar.decisionFile.fileName)) }}
{{- $_ := set $owned "publish" (dict "file" $file) }}
{{- end }}
{{- end }}
{{- if eq .Values.mode "fleet" }}
{{- $_ := set $owned "ha" (dict "enabled" true "namespace" .Release.Namespace "lease_name" (include "diurnal.fullname" .)) }}
{{- $_ := set $owned "router" (dict "source" "prometheus") }}
{{- end }}
{{- toYaml (mustMergeOverwrite $config $owned) }}
{{- end }}

{{/* The diurnal container. The sidecar snippet includes it in a router's pod spec. */}}
{{- define "diurnal.container" -}}
- name: diurnal
  image: {{ include "diurnal.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["run", "--config", "/etc/diurnal/diurnal.yaml"]
  ports:
    - name: {{ ternary .Values.monitoring.podMonitor.portName "http" (eq .Values.mode "sidecar") }}
      containerPort: {{ .Values.port }}
      protocol: TCP
  env:
    - name: DIURNAL_API__TOKEN
      valueFrom: {secretKeyRef: {name: {{ include "diurnal.secretName" . }}, key: api-token, optional: true}}
    - name: DIURNAL_PROMETHEUS__BEARER_TOKEN
      valueFrom: {secretKeyRef: {name: {{ include "diurnal.secretName" . }}, key: prometheus-bearer-token, optional: true}}
    - name: DIURNAL_PROMETHEUS__BASIC_AUTH_PASSWORD
      valueFrom: {secretKeyRef: {name: {{ include "diurnal.secretName" . }}, key: prometheus-basic-auth-password, optional: true}}
    - name: DIURNAL_ROUTER__BEARER_TOKEN
      valueFrom: {secretKeyRef: {name: {{ include "diurnal.secretName" . }}, key: router-bearer-token, optional: true}}
    - name: MPLCONFIGDIR
      value: /tmp/matplotlib
    {{- if or (eq .Values.mode "standalone") (eq .Values.mode "fleet") }}
    - name: DIURNAL_CONTROL__SHUTDOWN_SECONDS
      value: {{ sub .Values.terminationGracePeriodSeconds 10 | quote }}
    {{- end }}
    {{- if eq .Values.mode "fleet" }}
    - name: POD_NAME  # this replica's name in the Lease
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    {{- end }}
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  startupProbe:
    httpGet: {path: /healthz, port: {{ .Values.port }}}
    periodSeconds: {{ .Values.probes.startup.periodSeconds }}
    failureThreshold: {{ .Values.probes.startup.failureThreshold }}
  livenessProbe:
    httpGet: {path: /healthz, port: {{ .Values.port }}}
    periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
    failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
  readinessProbe:
    httpGet: {path: /readyz, port: {{ .Values.port }}}
    periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
    failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: diurnal-config, mountPath: /etc/diurnal, readOnly: true}
    - {name: diurnal-data, mountPath: /var/lib/diurnal}
    - {name: diurnal-tmp, mountPath: /tmp}
    {{- if and (eq .Values.mode "sidecar") .Values.sidecar.decisionFile.enabled }}
    - {name: diurnal-shared, mountPath: {{ .Values.sidecar.decisionFile.mountPath }}}
    {{- end }}
{{- end }}

{{/* The volumes the container needs. In sidecar mode, add them to the router's pod too. */}}
{{- define "diurnal.volumes" -}}
- name: diurnal-config
  configMap:
    name: {{ include "diurnal.fullname" . }}
- name: diurnal-data
  {{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (include "diurnal.fullname" .) .Values.persistence.existingClaim }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: diurnal-tmp
  emptyDir: {}
{{- if and (eq .Values.mode "sidecar") .Values.sidecar.decisionFile.enabled }}
- name: diurnal-shared
  emptyDir: {}
{{- end }}
{{- end }}

{{/* For a router's chart or manifest: the container and volumes to add to its pod, as one
snippet. Usage: {{ include "diurnal.sidecarContainer" (dict "Values" .Values.diurnal ...) }}
or render it with `helm template --set mode=sidecar` and copy the NOTES. */}}
{{- define "diurnal.sidecarContainer" -}}
containers:
{{- include "diurnal.container" . | nindent 2 }}
volumes:
{{- include "diurnal.volumes" . | nindent 2 }}
{{- if .Values.litellmHook.enabled }}
  - name: diurnal-litellm-hook
    configMap:
      name: {{ include "diurnal.litellmHookName" . }}
# Add to the LiteLLM proxy's container (its config.yaml: litellm_settings.callbacks
# ["prometheus", "diurnal_litellm.hook"]):
litellmContainer:
{{- include "diurnal.litellmHookMount" . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "diurnal.litellmHookName" -}}
{{ printf "%s-litellm-hook" (include "diurnal.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The hook's address of diurnal's API: litellmHook.url, else the pod's loopback (sidecar)
or the Service. */}}
{{- define "diurnal.litellmHookUrl" -}}
{{- if .Values.litellmHook.url -}}
{{ .Values.litellmHook.url }}
{{- else if eq .Values.mode "sidecar" -}}
http://127.0.0.1:{{ .Values.port }}
{{- else -}}
http://{{ include "diurnal.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.service.port }}
{{- end }}
{{- end }}

{{/* The LiteLLM container's mount of the hook and the environment it reads. */}}
{{- define "diurnal.litellmHookMount" -}}
volumeMounts:
  - name: diurnal-litellm-hook
    mountPath: {{ .Values.litellmHook.configDir }}/diurnal_litellm.py
    subPath: diurnal_litellm.py
    readOnly: true
env:
  - name: DIURNAL_URL
    value: {{ include "diurnal.litellmHookUrl" . | quote }}
{{- end }}
