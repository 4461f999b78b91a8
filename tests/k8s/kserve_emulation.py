"""What KServe's controller and webhook do with a rendered InferenceService, mirrored in a few
small Python functions. There is no KServe controller or API server in these tests, so this
stands in for the parts of it that decide what reaches the predictor pods; each function names
the Go code it mirrors, read at kserve/kserve@aaac4e294dae2c7b1aa1886447793f3aa1c30912 (the
commit of tests/k8s/crds). Simplifications are said where they are made; none of them touches
metadata, which is what the chart's defects were about.
"""

from __future__ import annotations

import copy
from typing import Any

# pkg/constants/constants.go
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
DEFAULT_AUTOSCALER_CLASS = "hpa"  # constants.DefaultAutoscalerClass
STORAGE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
#: constants.ServiceAnnotationDisallowedList (the default inferenceservice-config adds nothing)
DISALLOWED_ANNOTATIONS = frozenset({
    "autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale", STORAGE_URI_ANNOTATION,
    "kubectl.kubernetes.io/last-applied-configuration", "modelFormat",
})
LEGACY_MODES = {"RawDeployment": "Standard", "Serverless": "Knative"}  # constants.ParseDeploymentMode

#: ComponentExtensionSpec fields that configure the Deployment, autoscaler or route, not the pod
#: template (buildPredictorResources never copies them into the pod spec).
SCALING_FIELDS = frozenset({"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "autoScaling",
                            "canaryTrafficPercent", "deploymentStrategy"})
#: Fields of the model spec that are KServe's, not the container's (PredictorExtensionSpec).
MODEL_FIELDS = frozenset({"modelFormat", "runtime", "protocolVersion", "storageUri", "runtimeVersion", "storage"})


def parse_deployment_mode(mode: str) -> str:
    """constants.ParseDeploymentMode: "" -> Standard, legacy names -> current ones."""
    return LEGACY_MODES.get(mode, mode or "Standard")


def validate_deployment_mode_update(new: dict, old_status_mode: str) -> str | None:
    """pkg/apis/serving/v1beta1/inference_service_validation.go validateDeploymentMode: the error
    of an update (None = allowed). Compares the raw new annotation with the normalised status."""
    if not old_status_mode:
        return None
    status = parse_deployment_mode(old_status_mode)
    annotation = new["metadata"].get("annotations", {}).get(DEPLOYMENT_MODE)
    if annotation is not None and annotation != status:
        return f"update rejected: deploymentMode cannot be changed from '{status}' to '{annotation}'"
    return None


def validate_canary_mode(isvc: dict) -> str | None:
    """validateCanarySpecs: spec.canary needs the annotation to be exactly "Standard"."""
    if isvc["spec"].get("canary") and isvc["metadata"].get("annotations", {}).get(DEPLOYMENT_MODE) != "Standard":
        return "canary is only supported in Standard deployment mode"
    return None


def _filter(annotations: dict | None) -> dict:
    return {k: v for k, v in (annotations or {}).items() if k not in DISALLOWED_ANNOTATIONS}


def _merge(dst: Any, src: Any) -> Any:
    """mergo.Merge(dst, src, WithOverride) as buildCanaryPredictor uses it: maps merge key by key,
    non-empty values of src win. (mergo replaces slices; so does this.)"""
    if isinstance(dst, dict) and isinstance(src, dict):
        out = copy.deepcopy(dst)
        for k, v in src.items():
            out[k] = _merge(out.get(k), v) if k in out else copy.deepcopy(v)
        return out
    return copy.deepcopy(src) if src not in (None, "", 0, [], {}) else copy.deepcopy(dst)


def build_canary_predictor(stable: dict, canary: dict) -> dict:
    """components/predictor.go buildCanaryPredictor + canaryReplicaCount: the stable predictor
    overridden by the canary entry, autoscaling fields cleared, fixed replicas."""
    pred = _merge(stable, canary["predictor"])
    replicas = canary["predictor"].get("minReplicas")
    if replicas is None:
        stable_min = stable.get("minReplicas", 1)
        replicas = -(-stable_min * canary.get("trafficPercent", 0) // 100)  # math.Ceil
    for field in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
        pred.pop(field, None)
    pred["minReplicas"] = replicas
    return pred


def _runtime_container(runtime: dict) -> dict:
    [container] = [c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"]
    return container


def _merge_container(runtime_c: dict, model: dict) -> dict:
    """utils.MergeRuntimeContainers (a strategic merge patch of the model's container fields onto
    the runtime's container; args concatenated). Simplified: top-level fields override, env merged
    by name; the chart sets no field on both sides except env."""
    merged = copy.deepcopy(runtime_c)
    for k, v in model.items():
        if k in MODEL_FIELDS:
            continue
        if k == "env":
            env = {e["name"]: e for e in merged.get("env", [])}
            env.update({e["name"]: e for e in v})
            merged["env"] = list(env.values())
        elif k == "args":
            merged["args"] = merged.get("args", []) + v
        else:
            merged[k] = copy.deepcopy(v)
    return merged


def pod_template(isvc: dict, runtime: dict, predictor: dict | None = None, predictor_name: str = "") -> dict:
    """The pod template KServe gives a predictor (stable by default, or `predictor` built by
    build_canary_predictor): components/predictor.go buildPredictorResources -> buildObjectMeta
    (labels: runtime spec.labels < isvc labels < predictor labels < KServe's; annotations: runtime
    spec.annotations < isvc annotations + storage-initializer/logger annotations < predictor
    annotations, each filtered by the disallowed list), buildPodSpec (runtime container merged with
    the model's, MergePodSpec of the runtime's and predictor's pod fields). The raw Deployment uses
    this metadata for its pod template plus `app: isvc.<name>` (deployment_reconciler.go
    createRawDefaultDeployment); Knative makes its revision template of it."""
    pred = predictor if predictor is not None else isvc["spec"]["predictor"]
    name = isvc["metadata"]["name"]
    annotations = _filter(isvc["metadata"].get("annotations"))
    if pred["model"].get("storageUri"):  # addStorageInitializerAnnotations
        annotations[STORAGE_URI_ANNOTATION] = pred["model"]["storageUri"]
    if pred.get("logger"):  # components/component.go addLoggerAnnotations
        annotations["internal.serving.kserve.io/logger"] = "true"
        annotations["internal.serving.kserve.io/logger-sink-url"] = pred["logger"].get("url", "")
        annotations["internal.serving.kserve.io/logger-mode"] = pred["logger"].get("mode", "")
    rt_spec = runtime["spec"]
    labels = {**(rt_spec.get("labels") or {}), **(isvc["metadata"].get("labels") or {}), **(pred.get("labels") or {}),
              "serving.kserve.io/inferenceservice": name, "component": "predictor"}
    service = f"{name}-{predictor_name}-predictor" if predictor_name else f"{name}-predictor"
    if parse_deployment_mode(isvc["metadata"].get("annotations", {}).get(DEPLOYMENT_MODE, "")) == "Standard":
        labels["app"] = f"isvc.{service}"
    meta = {"labels": labels, "annotations": {**_filter(rt_spec.get("annotations")), **annotations,
                                              **_filter(pred.get("annotations"))}}
    pod = {k: copy.deepcopy(rt_spec[k]) for k in ("volumes", "imagePullSecrets", "nodeSelector", "affinity",
                                                 "tolerations") if k in rt_spec}
    for k, v in pred.items():
        if k not in SCALING_FIELDS | {"model", "labels", "annotations", "name"}:
            pod[k] = copy.deepcopy(v)  # predictor pod fields (and timeout/logger, which also shape the pod)
    pod["containers"] = [_merge_container(_runtime_container(runtime), pred["model"])]
    return {"metadata": meta, "spec": pod, "service": service}


def autoscaler_class(template: dict) -> str:
    """reconcilers/autoscaler/autoscaler_reconciler.go getAutoscalerClass (read from the component's
    metadata, i.e. the same annotations as the pod template)."""
    return template["metadata"]["annotations"].get(AUTOSCALER_CLASS, DEFAULT_AUTOSCALER_CLASS)


def keda_triggers(predictor: dict) -> list[dict]:
    """reconcilers/keda/keda_reconciler.go getKedaMetrics: one trigger per autoScaling metric
    (Resource -> cpu/memory, External -> its backend, e.g. prometheus); none without autoScaling."""
    out = []
    for m in (predictor.get("autoScaling") or {}).get("metrics", []):
        if m["type"] == "Resource":
            out.append({"type": m["resource"]["name"],
                        "metadata": {"value": str(m["resource"]["target"].get("averageUtilization", 0))}})
        elif m["type"] == "External":
            metric = m["external"]["metric"]
            out.append({"type": metric["backend"], "metadata": {
                "serverAddress": metric.get("serverAddress", ""), "query": metric.get("query", ""),
                "threshold": str(m["external"]["target"].get("value", "0"))}})
    return out
