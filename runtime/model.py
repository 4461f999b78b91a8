"""The MLServer runtime: loads one bundle, adapts V2 requests to predictors/."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse
from mlserver.utils import get_model_uri

from predictors import BundleError, InputError, load_config, load_predictor
from predictors.signing import load_public_keys, verify_bundle

from . import codec, fastpath, grpc_metrics, hardening, limits, loading, metrics
from . import outcomes as outcomes_api
from .auth import Authenticator
from .settings import RuntimeSettings

hardening.install()  # MLServer 1.7.1 gRPC fixes (401 -> UNAUTHENTICATED, malformed raw contents -> 400, ...)
loading.install()  # parallel workers report a bundle that failed to load as not ready
fastpath.install()  # the runtime's own V2 infer path (REST, gRPC) for its models: runtime/fastpath.py
grpc_metrics.install()  # MLServer's gRPC Prometheus series from a cheaper interceptor: runtime/grpc_metrics.py


class InvalidInput(MLServerError):
    """400 (gRPC INVALID_ARGUMENT) naming the offending input."""

    def __init__(self, error: InputError):
        super().__init__(str(error), status_code=400)


class ModelLoadError(MLServerError):
    def __init__(self, msg: str):
        super().__init__(msg, status_code=500)


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
        return loading.metadata(self, await super().metadata())

    async def _load(self) -> bool:
        extra = (self._settings.parameters.extra if self._settings.parameters else None) or {}
        try:
            self.options = RuntimeSettings(**extra)
            self.auth = Authenticator(self.options)
            folder = await get_model_uri(self._settings)
            if self.options.bundle_public_key_file is not None:
                verify_bundle(folder, load_public_keys(self.options.bundle_public_key_file))
            self.predictor = load_predictor(folder, load_config(self.options.config_path),
                                            threshold=self.options.decision_threshold)
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
        self.inputs, self.outputs = codec.metadata(self.predictor.features, self.predictor.outputs)
        self.monitoring = metrics.ModelMonitoring(self.name, bundle_version, self.predictor, self.options,
                                                  auth=self.auth)
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
        self.auth.check(payload, self.name)  # 401 before anything of the request is read
        with self.monitoring.scoring():  # latency observed for every call, errors counted by type
            params = payload.parameters.model_extra if payload.parameters is not None else None
            wanted = [o.name for o in payload.outputs] if payload.outputs else None
            n, outputs, names = self.score(payload, params, wanted)
            return codec.encode(self.name, self.version, payload.id, n, outputs, self.predictor.outputs, names)

    def infer_plain(self, request: Any, headers: Optional[Mapping[str, Any]]) -> tuple[int, dict, list[str]]:
        """The runtime's own request path (runtime/fastpath.py): the same checks and outputs as
        predict(), on a request already decoded to plain Python (`id`, `inputs`, `parameters`,
        `outputs`) and its HTTP headers / gRPC metadata."""
        self.auth.check_headers(headers, self.name)
        with self.monitoring.scoring():
            return self.score(request, request.parameters, request.outputs)

    def score(self, request: Any, parameters: Optional[Mapping[str, Any]], wanted: Optional[Sequence[str]]
              ) -> tuple[int, dict, list[str]]:
        """Limits, decoding, prediction and accounting of one request: rows, outputs, output names."""
        try:
            limits.check(request, self.options.max_string_bytes)
            raw, n = codec.decode(request.inputs, self.predictor.features, self.options.max_batch_rows)
            prediction = self.predictor.predict(raw, n, now=codec.quote_time_of(parameters))
            names = codec.output_names(self.predictor.outputs, wanted)
        except InputError as e:
            raise InvalidInput(e) from e
        self.monitoring.observe(request.id, prediction)
        return n, prediction.outputs, names
