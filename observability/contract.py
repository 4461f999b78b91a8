"""The metric contract between the runtime, the alert rules and the dashboards: the one place for
each ``ml_*`` metric's name, type, labels, buckets and help. runtime/metrics.py builds its
prometheus_client collectors from ``ML_METRICS`` (a metric is added by adding an entry here),
and a test compares what a real server exports with this module.

The runtime exports the ``ML_METRICS`` on MLServer's metrics port (8082, ``/metrics``),
beside MLServer's own metrics (``MLSERVER_METRICS``). In Kubernetes the scrape adds
``namespace`` and ``pod`` (and ``job``, ``instance``, ...); locally they are absent, so every
rule and dashboard query works with and without them.

Names here are the *metric family* names; a histogram exports ``<name>_bucket``,
``<name>_sum`` and ``<name>_count``, a counter ``<name>`` (ending in ``_total``) and, from
prometheus_client, ``<name minus _total>_created``.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_LABELS = ("model_name", "model_version")


TYPES = ("counter", "gauge", "histogram", "summary")
#: prometheus_client's multi-process modes of a gauge (MLServer parallel workers).
GAUGE_MODES = ("all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent")


@dataclass(frozen=True)
class Metric:
    name: str
    type: str  # one of TYPES
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] | None = None
    #: Attribute of runtime.metrics.Families holding the collector (ML_METRICS only).
    key: str | None = None
    #: How a gauge's values of several worker processes combine (prometheus_client multi-process mode).
    multiprocess_mode: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.type not in TYPES:
            problems.append(f"type {self.type!r} is not one of {TYPES}")
        if self.type == "counter" and not self.name.endswith("_total"):
            problems.append("a counter's name ends in _total")
        if self.buckets is not None and self.type != "histogram":
            problems.append("buckets are for a histogram")
        if self.buckets is not None and list(self.buckets) != sorted(set(self.buckets)):
            problems.append("buckets are increasing")
        if self.multiprocess_mode is not None and (self.type != "gauge" or self.multiprocess_mode not in GAUGE_MODES):
            problems.append(f"multiprocess_mode is for a gauge, one of {GAUGE_MODES}")
        if problems:
            raise ValueError(f"metric {self.name}: " + "; ".join(problems))

    def series_names(self) -> tuple[str, ...]:
        """Sample names this family exposes in the Prometheus text format."""
        if self.type == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        if self.type == "summary":
            return (self.name, f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


#: Buckets of ml_prediction_score: 0.05, 0.10, ..., 1.00.
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
#: Buckets of ml_scoring_latency_seconds (prometheus_client's defaults). 0.5 must stay a
#: bucket bound: the p99 > 500 ms alert is exact only at a bucket bound.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: Buckets of ml_quoted_price (USD a year; base premiums run from 600 for life to 4,800 for health).
PRICE_BUCKETS = (100.0, 250.0, 500.0, 750.0, 1000.0, 1250.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0, 5000.0,
                 6000.0, 8000.0, 10000.0, 15000.0, 25000.0, 50000.0)

ML_METRICS: tuple[Metric, ...] = (
    Metric(
        "ml_scoring_latency_seconds", "histogram", MODEL_LABELS,
        "Time of the predictor's predict() from decode to encode, observed once per call, "
        "successful or not (its _count is the request count of the error ratio).",
        LATENCY_BUCKETS, key="latency",
    ),
    Metric(
        "ml_scoring_errors_total", "counter", MODEL_LABELS + ("error_type",),
        "Failed predict() calls by error_type (invalid_input, unknown_input, internal, ...).", key="errors",
    ),
    Metric("ml_rows_total", "counter", MODEL_LABELS, "Rows scored.", key="rows"),
    Metric(
        "ml_prediction_score", "histogram", MODEL_LABELS,
        "Distribution of the model's score (probability), buckets 0.05..1.0 step 0.05.",
        SCORE_BUCKETS, key="score",
    ),
    Metric(
        "ml_decisions_total", "counter", MODEL_LABELS + ("decision",),
        "Decisions by value: accept/reject (lead scoring), ML_APPROVED/ML_REJECTED/ML_REVIEW (claims).",
        key="decisions",
    ),
    Metric("ml_quoted_price", "histogram", MODEL_LABELS, "Quoted price (lead scoring only).", PRICE_BUCKETS,
           key="price"),
    Metric(
        "ml_feature_drift_psi", "gauge", MODEL_LABELS + ("feature",),
        "Population stability index of a feature: sliding window of live rows vs the training reference.",
        key="feature_psi", multiprocess_mode="liveall",  # each worker keeps its own window: max over pid
    ),
    Metric(
        "ml_feature_drift_ks", "gauge", MODEL_LABELS + ("feature",),
        "Two-sample Kolmogorov-Smirnov statistic of a numeric feature, same window and reference.",
        key="feature_ks", multiprocess_mode="liveall",
    ),
    Metric("ml_model_drift_psi", "gauge", MODEL_LABELS, "Max of ml_feature_drift_psi over the model's features.",
           key="model_psi", multiprocess_mode="liveall"),
    Metric(
        "ml_model_performance", "gauge", MODEL_LABELS + ("metric", "source"),
        "Model quality: metric in roc_auc|precision|recall|f1|accuracy, source training|live.",
        key="performance", multiprocess_mode="livemostrecent",  # the workers share the outcome store
    ),
    Metric("ml_model_ready", "gauge", MODEL_LABELS, "1 while the version is loaded, 0 after unload or a failed load.",
           key="ready", multiprocess_mode="livemin"),  # not ready if any live worker has it not ready
    Metric(
        "ml_fast_path_requests_total", "counter", MODEL_LABELS,
        "Inference requests answered by the runtime's own request path (runtime/fastpath.py); the "
        "rest of ml_scoring_latency_seconds_count went through MLServer's.",
        key="fast_path",
    ),
    Metric(
        "ml_prediction_cache_lookups_total", "counter", MODEL_LABELS + ("result",),
        "Prediction cache lookups by result (hit, miss), when the cache is on (prediction_cache_ttl > 0).",
        key="cache_lookups",
    ),
    Metric(
        "ml_auth_failures_total", "counter", ("model_name", "reason"),
        "Requests refused for a missing or invalid credential (401) or a missing role (403, reason forbidden); "
        "model_name _repository for the repository API, _edge for duplicated credential headers.",
        key="auth_failures",
    ),
    Metric(
        "ml_rate_limited_total", "counter", ("model_name", "reason"),
        "Requests refused with 429 by a credential's rate limit; reason: the limit that applied (key, role, "
        "default).",
        key="rate_limited",
    ),
    Metric(
        "ml_outcome_store_evictions_total", "counter", MODEL_LABELS,
        "Scored rows dropped from a version's outcome store to stay within outcomes_capacity (outcomes for them "
        "come back unknown).",
        key="outcome_evictions",
    ),
    # the serving edge (runtime/patches.py, runtime/edge.py, runtime/fastpath.py; docs/security.md)
    Metric("ml_fast_path_enabled", "gauge", (),
           "1 when the runtime's request path is installed, 0 when every request takes MLServer's path.",
           key="fast_path_enabled", multiprocess_mode="max"),
    Metric("ml_fast_path_fallbacks_total", "counter", MODEL_LABELS,
           "Requests handed to MLServer's path after an unexpected error in the runtime's.",
           key="fast_path_fallbacks"),
    Metric("ml_edge_refusals_total", "counter", ("reason",),
           "REST requests refused at the edge: body_too_large, url_too_long, header_count, header_bytes, "
           "header_timeout, bad_encoding.", key="edge_refusals"),
)

#: MLServer 1.7.1's built-in metrics that the dashboards/alerts use. Note the label names:
#: ``model``/``version`` (not model_name/model_version), and ``version`` is the version in
#: the request URL, "None" for /v2/models/<name>/infer. The REST and gRPC metrics carry no
#: model label at all (REST paths are route templates such as /v2/models/{model_name}/infer).
MLSERVER_METRICS: tuple[Metric, ...] = (
    Metric("model_infer_request_success_total", "counter", ("model", "version"), "Successful inference requests."),
    Metric(
        "model_infer_request_failure_total", "counter", ("model", "version"),
        "Inference requests that raised (model not found/not ready, predictor errors).",
    ),
    Metric(
        "model_infer_request_duration", "summary", ("model", "version"),
        "Inference request duration inside MLServer (no quantiles; _count counts every request).",
    ),
    Metric(
        "rest_server_requests_total", "counter", ("method", "path", "status_code", "app_name"),
        "HTTP requests by route template and status (starlette_exporter); not health or /metrics.",
    ),
    Metric(
        "rest_server_request_duration_seconds", "histogram", ("method", "path", "status_code", "app_name"),
        "HTTP request duration.",
    ),
    Metric(
        "grpc_server_handled_total", "counter", ("grpc_type", "grpc_service", "grpc_method", "grpc_code"),
        "gRPC calls by method and status code (py-grpc-prometheus); only after the first gRPC call.",
    ),
)

if len({m.key for m in ML_METRICS} - {None}) != len(ML_METRICS):
    raise ValueError("every ML_METRICS entry needs its own key (the runtime's attribute for it)")
if any(m.type == "histogram" and not m.buckets for m in ML_METRICS):
    raise ValueError("every histogram of ML_METRICS needs its buckets")
if len({m.name for m in ML_METRICS + MLSERVER_METRICS}) != len(ML_METRICS + MLSERVER_METRICS):
    raise ValueError("a metric name is in the contract twice")

#: Labels a scrape may add (Kubernetes) or Prometheus itself uses.
SCRAPE_LABELS = ("namespace", "pod", "job", "instance", "container", "endpoint", "service", "pid")


def known_series() -> dict[str, Metric]:
    """Every sample name the rules and dashboards may reference -> its metric family."""
    out: dict[str, Metric] = {}
    for metric in ML_METRICS + MLSERVER_METRICS:
        for name in metric.series_names():
            out[name] = metric
    return out
