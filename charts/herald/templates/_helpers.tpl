{{/*
Names. With the release named "herald" every name is the one the binaries
default to (herald-webhook, herald-webhook-cert, herald-validating-webhook,
herald-memberlist); the templates pass them as flags anyway.
*/}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "herald.fullname" -}}
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

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "herald.controller.fullname" -}}{{ include "herald.fullname" . }}-controller{{- end }}
{{- define "herald.speaker.fullname" -}}{{ include "herald.fullname" . }}-speaker{{- end }}
{{- define "herald.webhook.serviceName" -}}{{ include "herald.fullname" . }}-webhook{{- end }}
{{- define "herald.webhook.secretName" -}}{{ include "herald.fullname" . }}-webhook-cert{{- end }}
{{- define "herald.webhook.configName" -}}{{ include "herald.fullname" . }}-validating-webhook{{- end }}

{{- define "herald.gossip.secretName" -}}
{{- default (printf "%s-memberlist" (include "herald.fullname" .)) .Values.speaker.gossip.secret.name }}
{{- end }}

{{- define "herald.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "herald.controller.fullname" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "herald.speaker.serviceAccountName" -}}
{{- if .Values.speaker.serviceAccount.create }}
{{- default (include "herald.speaker.fullname" .) .Values.speaker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.speaker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: herald
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "herald.componentLabels" -}}
{{ include "herald.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* image reference of a component's image values. */}}
{{- define "herald.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* Checks of value combinations the schema cannot express. */}}
{{- define "herald.validate" -}}
{{- if and (gt (int .Values.controller.replicas) 1) (not .Values.controller.leaderElection.enabled) }}
{{- fail "controller.replicas > 1 needs controller.leaderElection.enabled: two replicas would allocate at once" }}
{{- end }}
{{- /* The speaker stops at most handoverTimeout + 5s after SIGTERM (speaker/main.go). */}}
{{- $handover := .Values.speaker.handoverTimeout | toString }}
{{- if regexMatch "^[0-9]+s$" $handover }}
{{- if le (int .Values.speaker.terminationGracePeriodSeconds) (add (int (trimSuffix "s" $handover)) 5) }}
{{- fail (printf "speaker.terminationGracePeriodSeconds (%v) must exceed speaker.handoverTimeout (%s) + 5s, or the kubelet kills speakers mid-handover" .Values.speaker.terminationGracePeriodSeconds $handover) }}
{{- end }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and .Values.speaker.gossip.enabled (not .Values.speaker.gossip.secret.create) (not .Values.speaker.gossip.secret.name) }}
{{- fail "speaker.gossip.secret.create=false needs speaker.gossip.secret.name: the Secret holding your gossip key" }}
{{- end }}
{{- end }}
