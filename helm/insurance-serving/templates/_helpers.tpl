{{/* Chart name, overridable. */}}
{{- define "insurance-serving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of release-wide resource names: the release name, plus the chart name unless it is already in it. */}}
{{- define "insurance-serving.fullname" -}}
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

{{/* Labels shared by every object of the release. */}}
{{- define "insurance-serving.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "insurance-serving.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: insurance-serving
{{- end -}}

{{/* Labels that select the objects (and the predictor pods) of this release. */}}
{{- define "insurance-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "insurance-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of predictor pods (set through predictor.labels, which KServe copies onto the pods). */}}
{{- define "insurance-serving.predictorSelectorLabels" -}}
{{ include "insurance-serving.selectorLabels" . }}
app.kubernetes.io/component: predictor
{{- end -}}

{{/* Name of the serving runtime the InferenceServices select. */}}
{{- define "insurance-serving.runtimeName" -}}
{{- default (printf "%s-mlserver" (include "insurance-serving.fullname" .)) .Values.servingRuntime.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "true" when the release runs in KServe's Standard (raw Deployment) mode, "" in Knative mode. */}}
{{- define "insurance-serving.isStandard" -}}
{{- if has .Values.deploymentMode (list "Standard" "RawDeployment") -}}true{{- end -}}
{{- end -}}

{{/* Image reference. */}}
{{- define "insurance-serving.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Name of a canary predictor for a version: "v" + the semver with dots and pluses as dashes (1.1.0 -> v1-1-0). */}}
{{- define "insurance-serving.canaryName" -}}
{{- printf "v%s" (. | lower | replace "." "-" | replace "+" "-") | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* The versioned per-model ready path: dict "vertical" "version". */}}
{{- define "insurance-serving.readyPath" -}}
{{- printf "/v2/models/%s/versions/%s/ready" .vertical .version -}}
{{- end -}}

{{/* Readiness and startup probes of one model version: dict "root" $ "vertical" name "version" semver. */}}
{{- define "insurance-serving.modelProbes" -}}
{{- $p := .root.Values.probes -}}
{{- $path := include "insurance-serving.readyPath" . -}}
readinessProbe:
  httpGet:
    path: {{ $path }}
    port: 8080
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- if $p.startup.enabled }}
startupProbe:
  httpGet:
    path: {{ $path }}
    port: 8080
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
{{- end }}
{{- end -}}

{{/* Names of the enabled verticals, in the fixed order of predictors/verticals.yaml. */}}
{{- define "insurance-serving.enabledVerticals" -}}
{{- $out := list -}}
{{- range $name := list "auto" "home" "health" "life" "claims" -}}
{{- $v := index $.Values.verticals $name -}}
{{- if and $v $v.enabled -}}{{- $out = append $out $name -}}{{- end -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}
