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

{{/* Labels shared by every object of the release (the stable ones plus the chart and app versions). Not for
InferenceServices: KServe copies their labels into the predictor pod templates. */}}
{{- define "insurance-serving.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "insurance-serving.stableLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Labels that stay the same across chart releases, canaries and promotions: the only ones on InferenceServices,
whose metadata KServe copies into pod templates (buildObjectMeta), so any change would roll every predictor. */}}
{{- define "insurance-serving.stableLabels" -}}
{{ include "insurance-serving.selectorLabels" . }}
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

{{/* Name of the serving runtime the InferenceServices select. A cluster-scoped runtime carries the namespace, so
releases of the same name in two namespaces do not overwrite each other's runtime. */}}
{{- define "insurance-serving.runtimeName" -}}
{{- $fullname := include "insurance-serving.fullname" . -}}
{{- $default := ternary (printf "%s-%s-mlserver" $fullname .Release.Namespace) (printf "%s-mlserver" $fullname) (eq .Values.servingRuntime.kind "ClusterServingRuntime") -}}
{{- default $default .Values.servingRuntime.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The deployment mode as KServe names it today: legacy RawDeployment -> Standard, Serverless -> Knative. KServe's
webhook rejects updates of an InferenceService whose annotation is a legacy name (kserve#5885), and its canary
validation accepts only the exact string "Standard". */}}
{{- define "insurance-serving.deploymentMode" -}}
{{- get (dict "RawDeployment" "Standard" "Serverless" "Knative" "Standard" "Standard" "Knative" "Knative") .Values.deploymentMode -}}
{{- end -}}

{{/* "true" when the release runs in KServe's Standard (raw Deployment) mode, "" in Knative mode. */}}
{{- define "insurance-serving.isStandard" -}}
{{- if eq (include "insurance-serving.deploymentMode" .) "Standard" -}}true{{- end -}}
{{- end -}}

{{/* Ports of the MLServer container: the one place they are written (env, container ports, probes, monitor,
NetworkPolicy, Istio policy). */}}
{{- define "insurance-serving.httpPort" -}}8080{{- end -}}
{{- define "insurance-serving.grpcPort" -}}8081{{- end -}}
{{- define "insurance-serving.metricsPort" -}}8082{{- end -}}
{{/* KServe's agent (payload logger) port: the Service targets it instead of the HTTP port when the logger is on
(reconcilers/service/service_reconciler.go, constants.InferenceServiceDefaultAgentPort). */}}
{{- define "insurance-serving.agentPort" -}}9081{{- end -}}

{{/* Name of a vertical's InferenceService: inferenceServiceNamePrefix + vertical. Arg: dict "root" $ "vertical" name. */}}
{{- define "insurance-serving.isvcName" -}}
{{- printf "%s%s" .root.Values.inferenceServiceNamePrefix .vertical -}}
{{- end -}}

{{/* Namespaces of the ingress pods that connect to the predictors: ingress.namespaces, else the kind's default. */}}
{{- define "insurance-serving.ingressNamespaces" -}}
{{- $defaults := dict "gatewayApi" (list "envoy-gateway-system") "ingress" (list "istio-system") "istio" (list "istio-system") "kourier" (list "kourier-system") "none" (list) -}}
{{- $ns := .Values.ingress.namespaces | default (get $defaults .Values.ingress.kind) -}}
{{- join "," $ns -}}
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
    port: {{ include "insurance-serving.httpPort" .root }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- if $p.startup.enabled }}
startupProbe:
  httpGet:
    path: {{ $path }}
    port: {{ include "insurance-serving.httpPort" .root }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
{{- end }}
{{- end -}}

{{/* Names of all verticals, in the order of predictors/verticals.yaml (tests/k8s checks the two agree). */}}
{{- define "insurance-serving.verticalNames" -}}auto,home,health,life,claims{{- end -}}

{{/* Names of the enabled verticals, in the fixed order of predictors/verticals.yaml. */}}
{{- define "insurance-serving.enabledVerticals" -}}
{{- $out := list -}}
{{- range $name := include "insurance-serving.verticalNames" . | splitList "," -}}
{{- $v := index $.Values.verticals $name -}}
{{- if and $v $v.enabled -}}{{- $out = append $out $name -}}{{- end -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* A number (or numeric string) as Python's float() reads it, whole numbers without exponent: 10000000, not the
1e+07 of Go's %v (still a valid float, but not what the values said). */}}
{{- define "insurance-serving.number" -}}
{{- $f := float64 . -}}
{{- if and (eq $f (float64 (int64 $f))) (lt $f 1e15) -}}{{ int64 $f }}{{- else -}}{{ $f }}{{- end -}}
{{- end -}}
