{{/* Object names: "<release>-phalanx" unless overridden, cut to 63 characters. */}}
{{- define "phalanx.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "phalanx.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>"; call with (list $ "scheduler"). */}}
{{- define "phalanx.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "phalanx.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{/* Labels of objects that belong to no one component (CRDs). */}}
{{- define "phalanx.labels" -}}
app.kubernetes.io/name: {{ include "phalanx.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "phalanx.sharedLabels" . }}
{{- end -}}

{{- define "phalanx.sharedLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: phalanx
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component; call with (list $ "scheduler"). */}}
{{- define "phalanx.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "phalanx.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* All labels of one component's objects; call with (list $ "scheduler"). */}}
{{- define "phalanx.componentLabels" -}}
{{ include "phalanx.sharedLabels" (index . 0) }}
{{ include "phalanx.selectorLabels" . }}
{{- end -}}

{{/* "registry/repository:tag"; call with (list $ .Values.scheduler.image). */}}
{{- define "phalanx.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- printf "%s%s:%s" $root.Values.imageRegistry $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/* ServiceAccount name of a component; call with (list $ "scheduler" .Values.scheduler.serviceAccount). */}}
{{- define "phalanx.serviceAccountName" -}}
{{- $sa := index . 2 -}}
{{- if $sa.name -}}
{{- $sa.name -}}
{{- else if $sa.create -}}
{{- include "phalanx.componentName" (list (index . 0) (index . 1)) -}}
{{- else -}}
{{- fail (printf "%s.serviceAccount.name must be set when %s.serviceAccount.create is false" (index . 1) (index . 1)) -}}
{{- end -}}
{{- end -}}

{{/*
The scheduler's effective config: the chart's defaults (Lease in the release's
namespace, named after the release; HTTP on metricsPort), then the user's
scheduler.config over them.
*/}}
{{- define "phalanx.scheduler.config" -}}
{{- $defaults := dict
  "leaderElection" (dict "leaseName" (include "phalanx.componentName" (list . "scheduler")) "leaseNamespace" .Release.Namespace)
  "http" (mustMergeOverwrite (dict "bindAddress" (printf "0.0.0.0:%d" (int .Values.scheduler.metricsPort))) (include "phalanx.httpSecurity" . | fromYaml)) -}}
{{- $config := mustMergeOverwrite $defaults (deepCopy .Values.scheduler.config) -}}
{{- if and (gt (int .Values.scheduler.replicas) 1) (not (dig "leaderElection" "enabled" true $config)) -}}
{{- fail "scheduler.config.leaderElection.enabled=false needs scheduler.replicas=1: unelected replicas would all schedule and place pods on the same GPUs" -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The autoscaler's effective config, built the same way. */}}
{{- define "phalanx.autoscaler.config" -}}
{{- $defaults := dict
  "leaderElection" (dict "leaseName" (include "phalanx.componentName" (list . "autoscaler")) "leaseNamespace" .Release.Namespace)
  "http" (mustMergeOverwrite (dict "bindAddress" (printf "0.0.0.0:%d" (int .Values.autoscaler.metricsPort))) (include "phalanx.httpSecurity" . | fromYaml)) -}}
{{- $config := mustMergeOverwrite $defaults (deepCopy .Values.autoscaler.config) -}}
{{- if and (gt (int .Values.autoscaler.replicas) 1) (not (dig "leaderElection" "enabled" true $config)) -}}
{{- fail "autoscaler.config.leaderElection.enabled=false needs autoscaler.replicas=1: unelected replicas would all scale the same targets" -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
The `http` section's HTTPS and delegated-auth keys when metricsSecurity is on
(the files where phalanx.metricsTlsVolumeMounts puts them); nothing otherwise.
*/}}
{{- define "phalanx.httpSecurity" -}}
{{- $ms := .Values.metricsSecurity -}}
{{- if $ms.enabled -}}
tls:
  certFile: /etc/phalanx-tls/tls.crt
  keyFile: /etc/phalanx-tls/tls.key
  {{- if $ms.clientCASecret }}
  clientCAFile: /etc/phalanx-client-ca/ca.crt
  {{- end }}
authentication: delegated
alwaysAllowPaths: {{ toJson $ms.alwaysAllowPaths }}
{{- end -}}
{{- end -}}

{{/* The Secret with the serving certificate of every component's metrics port. */}}
{{- define "phalanx.metricsTlsSecret" -}}
{{- .Values.metricsSecurity.certificateSecret | default (printf "%s-metrics-tls" (include "phalanx.fullname" .)) -}}
{{- end -}}

{{/* Where a container finds its serving certificate and client CA. */}}
{{- define "phalanx.metricsTlsVolumeMounts" -}}
{{- if .Values.metricsSecurity.enabled }}
- name: metrics-tls
  mountPath: /etc/phalanx-tls
  readOnly: true
{{- if .Values.metricsSecurity.clientCASecret }}
- name: metrics-client-ca
  mountPath: /etc/phalanx-client-ca
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{- define "phalanx.metricsTlsVolumes" -}}
{{- if .Values.metricsSecurity.enabled }}
- name: metrics-tls
  secret:
    secretName: {{ include "phalanx.metricsTlsSecret" . }}
{{- if .Values.metricsSecurity.clientCASecret }}
- name: metrics-client-ca
  secret:
    secretName: {{ .Values.metricsSecurity.clientCASecret }}
    items:
      - {key: ca.crt, path: ca.crt}
{{- end }}
{{- end }}
{{- end -}}

{{/* Probes speak HTTPS when the metrics port does (kubelet does not verify the certificate). */}}
{{- define "phalanx.probeScheme" -}}
{{- if .Values.metricsSecurity.enabled }}
scheme: HTTPS
{{- end }}
{{- end -}}

{{/* Restricted pod security for the scheduler and autoscaler: non-root, no privileges, read-only root. */}}
{{- define "phalanx.restrictedPodSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "phalanx.restrictedContainerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
Non-empty when the PodGroup CRD should be part of this release: always, or in
"auto" mode when the cluster does not serve scheduling.x-k8s.io/v1alpha1, or
serves it from a CRD this very release installed (so that an upgrade keeps it
rather than deleting it).
*/}}
{{- define "phalanx.installPodGroupCrd" -}}
{{- if eq .Values.crds.podGroup "always" -}}
true
{{- else if eq .Values.crds.podGroup "auto" -}}
{{- $existing := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" "podgroups.scheduling.x-k8s.io" -}}
{{- $owner := dig "metadata" "annotations" "meta.helm.sh/release-name" "" $existing -}}
{{- $ownerNamespace := dig "metadata" "annotations" "meta.helm.sh/release-namespace" "" $existing -}}
{{- $ours := and (eq $owner .Release.Name) (eq $ownerNamespace .Release.Namespace) -}}
{{- if or $ours (not (.Capabilities.APIVersions.Has "scheduling.x-k8s.io/v1alpha1")) -}}
true
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the chart renders its ServiceMonitors: turned on, and the cluster
serves the kind (or whenCrdMissing: render). Without the CRD an install would
fail on "no matches for kind"; the notes say what was skipped.
*/}}
{{- define "phalanx.serviceMonitor.render" -}}
{{- $served := .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor" -}}
{{- if and .Values.serviceMonitor.enabled (or $served (eq .Values.serviceMonitor.whenCrdMissing "render")) -}}
true
{{- end -}}
{{- end -}}

{{/*
"true" when the chart renders its PrometheusRule, as for the ServiceMonitors.
*/}}
{{- define "phalanx.prometheusRule.render" -}}
{{- $served := .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule" -}}
{{- if and .Values.prometheusRule.enabled (or $served (eq .Values.prometheusRule.whenCrdMissing "render")) -}}
true
{{- end -}}
{{- end -}}
