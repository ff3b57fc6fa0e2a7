{{/* Names --------------------------------------------------------------------------------------- */}}

{{- define "finetune-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "finetune-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "finetune-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "finetune-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "finetune-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "finetune-operator.labels" -}}
helm.sh/chart: {{ include "finetune-operator.chart" . }}
{{ include "finetune-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: finetune-operator
{{- end }}

{{- define "finetune-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "finetune-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "finetune-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "finetune-operator.leaseName" -}}
{{- default (include "finetune-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "finetune-operator.metricsJob" -}}
{{- printf "%s-metrics" (include "finetune-operator.fullname" .) }}
{{- end }}

{{/* RBAC ---------------------------------------------------------------------------------------
One helper for the namespaced rules: a ClusterRole uses them when watching every namespace, a Role in
each of watchNamespaces otherwise. Each rule names the code that needs it (operator/finetune_operator).
*/}}
{{- define "finetune-operator.rules" -}}
# FineTuneJobs: kopf lists/watches them and patches its finalizer and annotations; kube.get_ftj reads one.
- apiGroups: ["finetuning.io"]
  resources: ["finetunejobs"]
  verbs: ["get", "list", "watch", "patch"]
# kube.update_status: optimistic read-modify-write of status.
- apiGroups: ["finetuning.io"]
  resources: ["finetunejobs/status"]
  verbs: ["get", "update"]
# Children carry an ownerReference with blockOwnerDeletion; where OwnerReferencesPermissionEnforcement
# is on (OpenShift's default) creating them needs update on the owner's finalizers subresource.
- apiGroups: ["finetuning.io"]
  resources: ["finetunejobs/finalizers"]
  verbs: ["update"]
# The run's Job: kopf watches Jobs it manages; kube.create/get_job/set_job_suspend/delete_job, and
# list to retire a replaced run's Job (children.retire_other_jobs) and for the resync's paged read
# of many runs' Jobs (job_relist).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
# For nodes > 1, the run's headless Service (the trainer's config needs no object: it rides in the
# Job's pod template as an annotation, projected by the downward API).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "get"]
# preflight: kube.configmap_exists for spec.*.source.configMap (metadata-only GET).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
# kube.job_pods: the rank-0 pod's address for progress, and pod states for status.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Existence checks before a GPU is requested: metadata-only GET (PartialObjectMetadata).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
{{- if .Values.rbac.secretExistenceCheck }}
# rbac.secretExistenceCheck: the same check for Secrets (`get` only, never list or watch). Off, the
# operator holds no Secret permission and reads a missing Secret from the pod's status instead.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
# kopf posts Events on FineTuneJobs; kube.job_events reads the Job controller's verdict on a Job
# removed by its TTL while the operator was down.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
{{- end }}

{{/*
Cluster-scoped rules, cluster-wide mode only. kopf lists/watches namespaces and CRDs at start-up when it
serves every namespace; `list nodes` serves the GPU check (none with gpu.resourceCheck=off). With
watchNamespaces (exact names) the operator turns kopf's scanning off and skips the GPU check, so it
makes no cluster-scope request and the chart renders no ClusterRole at all.
*/}}
{{- define "finetune-operator.clusterRules" -}}
{{- if ne .Values.gpu.resourceCheck "off" }}
# kube.cluster_has_resource: does any node advertise the GPU resource (gpu.resourceCheck).
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list"]
{{- end }}
# kopf start-up: namespace discovery, and noticing the FineTuneJob CRD being (re)installed.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}

{{/* Guards for invariants values.schema.json cannot express. */}}
{{- define "finetune-operator.validate" -}}
{{- $le := .Values.leaderElection }}
{{- if and (gt (int .Values.replicaCount) 1) (not $le.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: without it every replica would reconcile every FineTuneJob" }}
{{- end }}
{{- if not (and (lt (int $le.retryPeriodSeconds) (int $le.renewDeadlineSeconds)) (lt (int $le.renewDeadlineSeconds) (int $le.leaseDurationSeconds))) }}
{{- fail "leaderElection needs retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds" }}
{{- end }}
{{- if eq (int .Values.operator.metricsPort) (int .Values.operator.healthPort) }}
{{- fail "operator.metricsPort and operator.healthPort must differ" }}
{{- end }}
{{- if and .Values.prometheusRule.enabled (not .Values.serviceMonitor.enabled) }}
{{- fail "prometheusRule.enabled needs serviceMonitor.enabled: FineTuneOperatorDown alerts on the ServiceMonitor's job" }}
{{- end }}
{{- if and (not .Values.rbac.create) (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "with rbac.create and serviceAccount.create both false, set serviceAccount.name to the account you bound yourself" }}
{{- end }}
{{- $si := .Values.serviceMonitor.interval | toString }}
{{- if and .Values.serviceMonitor.enabled (eq $si (.Values.serviceMonitor.scrapeTimeout | toString)) }}
{{- fail "serviceMonitor.scrapeTimeout must be shorter than serviceMonitor.interval" }}
{{- end }}
{{- range $k, $v := .Values.trainer.env }}
{{- if hasPrefix "FTJ_" $k }}
{{- fail (printf "trainer.env.%s: names starting with FTJ_ are reserved for the operator's settings" $k) }}
{{- end }}
{{- end }}
{{- end }}
