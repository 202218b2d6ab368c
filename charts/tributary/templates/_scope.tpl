{{/* The namespace whose objects the operator reconciles: watchNamespace, or the release's. */}}
{{- define "tributary.watchNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- end }}

{{/* Fails on values that contradict each other. */}}
{{- define "tributary.checkScope" -}}
{{- if and .Values.clusterWide .Values.watchNamespace }}
{{- fail "clusterWide=true watches every namespace: leave watchNamespace empty" }}
{{- end }}
{{- if and .Values.clusterWide .Values.networkPolicy.enabled }}
{{- fail "networkPolicy.enabled needs one watched namespace: it cannot be used with clusterWide=true" }}
{{- end }}
{{- end }}
