{{/* Name of the chart. */}}
{{- define "fastagentic-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already contains the chart name. */}}
{{- define "fastagentic-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "fastagentic-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "fastagentic-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fastagentic
{{- end }}

{{- define "fastagentic-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fastagentic-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "fastagentic-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fastagentic-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The rules the operator needs on the namespaces it watches. Every rule says why it is there.
Used by the ClusterRole (all namespaces) or by one Role per watched namespace.
*/}}
{{- define "fastagentic-operator.rules" -}}
# Watch FastAgentic resources (the controller's primary stream) and read them while reconciling.
- apiGroups: ["fastagentic.io"]
  resources: ["fastagentics"]
  verbs: ["get", "list", "watch"]
# Write status: observedGeneration, replicas, conditions and the connection budget.
- apiGroups: ["fastagentic.io"]
  resources: ["fastagentics/status"]
  verbs: ["get", "patch"]
# The Deployment running the agent pods: server-side apply (create on first apply, then patch),
# watched for drift (.owns()). No delete: children are garbage-collected through their owner
# references when the FastAgentic is deleted.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The Service in front of the pods: applied and watched like the Deployment.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The HorizontalPodAutoscaler: applied when spec.autoscaling is set, deleted when it is removed.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The PodDisruptionBudget: applied when spec.disruptionBudget is set, deleted when it is removed.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The NetworkPolicy of spec.networkPolicy: applied when the field is set, watched like the
# Deployment, deleted when the field is removed.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Referenced Secrets (REDIS_URL, DATABASE_URL): the operator checks that the Secret and key
# exist and folds the Secret's resourceVersion into the pod-template hash so a rotation rolls the
# pods. It watches metadata only and never copies a value.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
# Events on FastAgentic resources (for example a missing Secret), shown by kubectl describe.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.metricsApi.enabled }}
# Concurrency autoscaling: the leader watches the agent pods to scrape their in-flight requests,
# and annotates them with controller.kubernetes.io/pod-deletion-cost (nothing else is patched).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/* The metrics API's Service (selector-less: the leader writes its EndpointSlice). */}}
{{- define "fastagentic-operator.metricsApiService" -}}
{{- printf "%s-metrics-api" (include "fastagentic-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
