"""The MLServer runtime: loads one bundle, adapts V2 requests to predictors/."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse
from mlserver.utils import get_model_uri

from predictors import BundleError, InputError, load_config, load_predictor
from predictors.reasons import OUTPUT as REASONS, Reasons, ReasonsOptions
from predictors.signing import load_public_keys, verify_bundle
from predictors.versions import semver_key

from . import codec, decision_log, limits, loading, metrics, patches, ratelimit
from . import outcomes as outcomes_api
from .auth import Authenticator
from .settings import RuntimeSettings

patches.install()  # every MLServer/uvicorn patch and the runtime's request path, from one place: runtime/patches.py


class InvalidInput(MLServerError):
    """400 (gRPC INVALID_ARGUMENT) naming the offending input."""

    def __init__(self, error: InputError):
        super().__init__(str(error), status_code=400)


class ModelLoadError(MLServerError):
    """`public`: what the open model metadata may show (parameters.load_error); default the message."""

    def __init__(self, msg: str, public: Optional[str] = None):
        super().__init__(msg, status_code=500)
        self.public = public


class InsuranceModel(MLModel):
    """Lead scoring + pricing (LightGBM) or claims triage (scikit-learn), per the bundle."""

    reports_load_error = True  # runtime/loading.py: metadata carries parameters.load_error

    async def load(self) -> bool:
        try:
            return loading.loaded(self) if await self._load() else False
        except ModelLoadError as e:  # not ready with the reason, or raise: runtime/loading.py
            metrics.load_failed(self.name, self.version)
            return loading.failed(self, e)

    async def metadata(self) -> MetadataModelResponse:
        meta = loading.metadata(self, await super().metadata())
        # OIP model metadata: MLServer answers `versions: []` and `platform: ""` unless model-settings set them.
        predictor = getattr(self, "predictor", None)
        if not meta.platform and predictor is not None:
            meta.platform = predictor.manifest.get("framework", "")
        if not meta.versions:
            meta.versions = sorted(metrics.active(self.name), key=semver_key)
        return meta

    async def _load(self) -> bool:
        extra = (self._settings.parameters.extra if self._settings.parameters else None) or {}
        try:
            self.options = RuntimeSettings(**extra)
        except ValueError as e:
            raise ModelLoadError(f"model {self.name} {self.version}: {e}") from e
        try:  # key files: paths and contents stay in the log, out of the open metadata
            self.auth = Authenticator(self.options)
            self.rate_policy = ratelimit.Policy(self.options)
            keys = (load_public_keys(self.options.bundle_public_key_file)
                    if self.options.bundle_public_key_file is not None else None)
        except (ValueError, OSError) as e:
            raise ModelLoadError(f"model {self.name} {self.version}: {e}",
                                 public=f"model {self.name} {self.version}: a credential or key file could not be "
                                        f"read ({type(e).__name__}); the reason is in the server log") from e
        try:
            folder = await get_model_uri(self._settings)
            if keys is not None:
                verify_bundle(folder, keys)
            self.predictor = load_predictor(folder, load_config(self.options.config_path),
                                            threshold=self.options.decision_threshold,
                                            native=self.options.native_claims,
                                            cache_dir=self.options.compiled_trees_cache)
            if self.options.compiled_trees and hasattr(self.predictor, "use_compiled_trees"):
                self.predictor.use_compiled_trees(self.options.compiled_trees_cache)  # docs/performance.md
            if self.options.prediction_cache_ttl > 0:
                self.predictor.enable_cache(self.options.prediction_cache_ttl, self.options.prediction_cache_size)
        except (BundleError, ValueError, OSError) as e:
            raise ModelLoadError(f"model {self.name} {self.version}: {e}") from e
        bundle_version = self.predictor.manifest["version"]
        if self.version is not None and self.version != bundle_version:
            raise ModelLoadError(f"model {self.name}: model-settings version {self.version} but the bundle "
                                 f"is version {bundle_version}")
        # reason codes (optional output) and decision record: predictors/reasons.py, runtime/decision_log.py
        self.reasons = Reasons(self.predictor, ReasonsOptions.parse(self.name, self.predictor.vertical.reasons))
        self.output_types = {**self.predictor.outputs, REASONS: "BYTES"}
        try:
            self.decision_log = decision_log.open_for(self.name, self.version, folder, self.predictor, self.options)
        except (ValueError, OSError) as e:
            raise ModelLoadError(f"model {self.name} {self.version}: decision log: {e}") from e
        self.inputs, self.outputs = codec.metadata(self.predictor.features, self.output_types)
        self.monitoring = metrics.ModelMonitoring(self.name, bundle_version, self.predictor, self.options,
                                                  auth=self.auth)
        self.monitoring.rate_policy = self.rate_policy  # the outcomes endpoint's rate limit (runtime/outcomes.py)
        return True

    async def unload(self) -> bool:
        monitoring = getattr(self, "monitoring", None)
        if monitoring is not None:
            monitoring.close()  # ml_model_ready 0, drift series dropped: runtime/metrics.py
        return True

    # POST /v2/models/<name>/outcomes: ground truth for earlier predictions (runtime/outcomes.py)
    outcomes = outcomes_api.outcomes

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """MLServer's request path (and parallel workers, adaptive batching)."""
        principal = self.auth.check(payload, self.name)  # 401/403 before anything of the request is read
        self.rate_policy.admit(principal, self.name)  # 429
        with self.monitoring.scoring():  # latency observed for every call, errors counted by type
            params = payload.parameters.model_extra if payload.parameters is not None else None
            wanted = [o.name for o in payload.outputs] if payload.outputs else None
            n, outputs, names = self.score(payload, params, wanted, principal.owner if principal else "")
            return codec.encode(self.name, self.version, payload.id, n, outputs, self.output_types, names)

    def infer_plain(self, request: Any, headers: Optional[Mapping[str, Any]]) -> tuple[int, dict, list[str]]:
        """The runtime's own request path (runtime/fastpath.py): the same checks and outputs as
        predict(), on a request already decoded to plain Python (`id`, `inputs`, `parameters`,
        `outputs`) and its HTTP headers / gRPC metadata."""
        principal = self.auth.check_headers(headers, self.name)
        self.rate_policy.admit(principal, self.name)
        with self.monitoring.scoring():
            return self.score(request, request.parameters, request.outputs, principal.owner if principal else "")

    def score(self, request: Any, parameters: Optional[Mapping[str, Any]], wanted: Optional[Sequence[str]],
              owner: str = "") -> tuple[int, dict, list[str]]:
        """Limits, decoding, prediction and accounting of one request: rows, outputs, output names."""
        try:
            limits.check(request, self.options.max_string_bytes)
            raw, n = codec.decode(request.inputs, self.predictor.features, self.options.max_batch_rows)
            k = self.reasons.requested(parameters, wanted, n)  # None unless the request asks for reasons
            prediction = self.predictor.predict(raw, n, now=codec.quote_time_of(parameters))
            names = self.reasons.output_names(self.predictor.outputs, wanted, k, codec.output_names)
            outputs = prediction.outputs
            if k is not None:
                outputs = {**outputs, REASONS: self.reasons.compute(prediction, raw, k)}
        except InputError as e:
            raise InvalidInput(e) from e
        self.monitoring.observe(request.id, prediction, owner)  # owner: whose outcomes may match it
        if self.decision_log is not None:
            self.decision_log.write(request.id, n, raw, prediction.outputs, outputs.get(REASONS))
        return n, outputs, names
