{{/* The prefix of every object's name: the release name, with "-kinfer" unless it has it. */}}
{{- define "kinfer.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The operator's objects: kinfer-operator for the release "kinfer". */}}
{{- define "kinfer.operator" -}}
{{- include "kinfer.fullname" . }}-operator
{{- end -}}

{{/* Every object's labels: kustomize's (part-of) and Helm's. */}}
{{- define "kinfer.labels" -}}
app.kubernetes.io/part-of: kinfer
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The operator pods' selector (a Deployment's selector never changes). */}}
{{- define "kinfer.selector" -}}
app.kubernetes.io/name: kinfer-operator
{{- end -}}

{{/* repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "kinfer.image" -}}
{{- printf "%s:%s" .repository (.tag | default .appVersion) -}}
{{- end -}}
