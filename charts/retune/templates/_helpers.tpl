{{/* The chart's short name. */}}
{{- define "retune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object the chart makes. */}}
{{- define "retune.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "retune.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "retune.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "retune.serviceAccountName" -}}
{{- default (include "retune.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "retune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "retune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "retune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "retune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* RETUNE_LLM_KEY_<NAME>: NAME upper-cased, `-` as `_`. */}}
{{- define "retune.llmEnvSuffix" -}}
{{- . | upper | replace "-" "_" }}
{{- end }}

{{/*
What the operator does in a namespace it serves. Bound cluster-wide by a ClusterRole when
every namespace is watched, else by a Role in each watched namespace. docs/install.md says
why each rule exists; tests/cluster/test_helm_chart.py checks them on a real API server.
*/}}
{{- define "retune.namespacedRules" -}}
- apiGroups: ["retune.dev"]
  resources: ["optimizationtargets"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["retune.dev"]
  resources: ["optimizationtargets/status"]
  verbs: ["get", "patch", "update"]
# Checked by the OwnerReferencesPermissionEnforcement admission plugin (OpenShift) when the
# operator makes an object owned by a target, with blockOwnerDeletion; grants nothing else.
- apiGroups: ["retune.dev"]
  resources: ["optimizationtargets/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
  {{- with .Values.rbac.secretNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
{{- end }}
