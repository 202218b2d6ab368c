{{/* Chart name, overridable. */}}
{{- define "tributary.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name, suffixed with the chart name unless it has it. */}}
{{- define "tributary.fullname" -}}
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

{{- define "tributary.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels. The component keeps the operator's selector apart from the coordinator and
worker pods the operator creates, which also carry app.kubernetes.io/name: tributary.
*/}}
{{- define "tributary.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tributary.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "tributary.labels" -}}
helm.sh/chart: {{ include "tributary.chart" . }}
{{ include "tributary.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tributary
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tributary.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tributary.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image: REPOSITORY:TAG, the tag defaulting to the chart's appVersion. */}}
{{- define "tributary.image" -}}
{{- printf "%s:%s" .repository (.tag | default .appVersion | toString) }}
{{- end }}

{{- define "tributary.operatorImage" -}}
{{- include "tributary.image" (merge (dict "appVersion" .Chart.AppVersion) .Values.image.operator) }}
{{- end }}

{{- define "tributary.workerImage" -}}
{{- include "tributary.image" (merge (dict "appVersion" .Chart.AppVersion) .Values.image.worker) }}
{{- end }}

{{/*
What the operator may do with the objects it reconciles and creates, and nothing more: it
writes by server-side apply (create, patch) and never deletes (owner references let the garbage
collector remove a run's objects). A Role in the watched namespace, or a ClusterRole with clusterWide.
*/}}
{{- define "tributary.workloadRules" -}}
- apiGroups: ["tributary.dev"]
  resources: ["trainingruns", "contributors"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["tributary.dev"]
  resources: ["trainingruns/status", "contributors/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["tributary.dev"]
  resources: ["trainingruns/finalizers", "contributors/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
- apiGroups: [""]
  resources: ["services", "configmaps", "persistentvolumeclaims", "secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
