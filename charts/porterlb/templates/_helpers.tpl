{{/* The chart name, cut to the 63 characters of a label value. */}}
{{- define "porterlb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name: the release name, plus the chart name unless it holds it. */}}
{{- define "porterlb.fullname" -}}
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

{{- define "porterlb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "porterlb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "porterlb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "porterlb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one role's objects: include with (dict "ctx" $ "role" "manager"). */}}
{{- define "porterlb.roleLabels" -}}
{{ include "porterlb.labels" .ctx }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "porterlb.roleSelectorLabels" -}}
{{ include "porterlb.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/* The ServiceAccount of a role: include with (dict "ctx" $ "role" "manager"). */}}
{{- define "porterlb.serviceAccountName" -}}
{{- $account := index .ctx.Values .role "serviceAccount" }}
{{- if $account.create }}
{{- default (printf "%s-%s" (include "porterlb.fullname" .ctx) .role) $account.name }}
{{- else }}
{{- default "default" $account.name }}
{{- end }}
{{- end }}

{{- define "porterlb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The manager's election Lease: the name is fixed in porterlb (porterlb.kube.election). */}}
{{- define "porterlb.leaseName" -}}
porterlb-manager
{{- end }}

{{- define "porterlb.heartbeatSecret" -}}
{{ .Release.Namespace }}/{{ .Values.heartbeat.secretName }}
{{- end }}

{{- define "porterlb.podSecurity" -}}
seccompProfile:
  type: RuntimeDefault
{{- end }}
