"""Runtime settings of the insurance models.

Read per model from ``parameters.extra`` of its model-settings.json (MLServer also fills
that from the MLSERVER_MODEL_EXTRA JSON variable), falling back to INSURANCE_* environment
variables, then to the defaults below.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


#: Largest request body (REST, after decoding Content-Encoding), as MLServer's gRPC message limit.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024


#: Asymmetric JWT algorithms the runtime accepts (HS* would let a public key act as a shared secret).
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
#: Roles a credential can hold (runtime/auth.py); without any marked it holds "inference" only.
ROLES = ("inference", "outcomes", "admin")


def parse_rate(text: Any) -> tuple[float, float]:
    """'<per second>[/<burst>]' -> (rate, burst); burst defaults to max(rate, 1)."""
    per_s, _, burst = str(text).partition("/")
    try:
        rate = float(per_s)
        size = float(burst) if burst else max(rate, 1.0)
    except ValueError:
        raise ValueError("a rate is '<requests per second>[/<burst>]', e.g. '10/20'") from None
    if not (rate >= 0 and size >= 1 and math.isfinite(rate) and math.isfinite(size)):
        raise ValueError("a rate needs requests per second >= 0 and a burst >= 1")
    return rate, size


class RuntimeSettings(BaseSettings):
    # hide_input_in_errors: a validation error must not echo api_keys (or any other input) into a log.
    model_config = SettingsConfigDict(env_prefix="INSURANCE_", extra="forbid", hide_input_in_errors=True)

    #: Lead scoring: "accept" at or above this score; default: the vertical's decision_threshold in
    #: verticals.yaml (0.65). Claims triage keeps its own thresholds (verticals.yaml `triage`).
    decision_threshold: Optional[float] = Field(None, ge=0.0, le=1.0)
    #: Largest batch (rows) one request may carry; larger requests get a 400 naming the limit.
    max_batch_rows: int = Field(10_000, ge=1)
    #: Path of an alternative verticals.yaml (business rules); default: the packaged one.
    config_path: Optional[Path] = None

    # ---- monitoring (runtime/metrics.py, predictors/drift.py, predictors/outcomes.py) -----------
    #: Rows in the sliding window of live inputs that drift (PSI, KS) is computed on, per model version.
    drift_window: int = Field(1000, ge=1)
    #: No drift statistic is exported before the window holds this many rows (small windows are noisy).
    drift_min_rows: int = Field(500, ge=1)
    #: Drift gauges are recomputed at most this often (seconds), off the request path.
    drift_refresh_seconds: float = Field(1.0, gt=0.0)
    #: Scored rows remembered for outcomes (POST /v2/models/<name>/outcomes); 0 turns outcomes off.
    outcomes_capacity: int = Field(100_000, ge=0)
    #: SQLite file of the remembered scores and outcomes; default: memory, or with parallel workers a
    #: file in MLServer's metrics_dir shared by the workers.
    outcomes_db: Optional[str] = None
    #: ml_model_performance{source="live"} is computed over this many latest outcomes per version...
    performance_window: int = Field(1000, ge=1)
    #: ...once at least this many have arrived.
    performance_min_outcomes: int = Field(100, ge=1)

    # ---- security (runtime/auth.py, predictors/signing.py; docs/security.md) ----------------
    #: API keys accepted on inference (`X-API-Key: <key>` or `Authorization: Bearer <key>`), separated by
    #: newlines or commas. Set (even empty, which refuses everything) it turns API-key authentication on.
    #: Prefer api_keys_file: a variable changes only with a restart. Only SHA-256 digests are kept.
    api_keys: Optional[SecretStr] = None
    #: File with the accepted API keys, one per line (`#` comments allowed), e.g. a mounted Secret; re-read
    #: when it changes, so keys rotate without a restart. A file that cannot be read at load fails the load.
    api_keys_file: Optional[Path] = None
    #: Seconds between checks (one stat) whether api_keys_file or the JWT key files changed.
    auth_reload_seconds: float = Field(5.0, ge=0.0)
    #: PEM file with the public key(s) that sign JWT bearer tokens; setting it (or jwt_jwks_file) turns JWT
    #: verification on. Re-read on change like api_keys_file.
    jwt_public_key_file: Optional[Path] = None
    #: JWKS file (JSON, public keys chosen by the token's `kid`), e.g. the issuer's keys in a ConfigMap.
    jwt_jwks_file: Optional[Path] = None
    #: Required `iss` claim of JWT bearer tokens (required when JWT verification is on).
    jwt_issuer: Optional[str] = None
    #: Accepted `aud` values, comma-separated; a token must name one (required when JWT verification is on).
    jwt_audience: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Accepted JWT signature algorithms, comma-separated; asymmetric only (HS* and none are refused).
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    #: Clock skew allowed when checking `exp` / `nbf` / `iat`, in seconds.
    jwt_leeway_seconds: float = Field(30.0, ge=0.0)
    #: JWT claim with the caller's roles (a list, or a space/comma separated string): `inference`, `outcomes`,
    #: `admin`; a token naming none of them is an inference credential.
    jwt_roles_claim: str = Field("roles", min_length=1)
    #: JWT claim naming the caller's tenant: outcomes match predictions of the same tenant (default: of the
    #: same subject only).
    jwt_tenant_claim: Optional[str] = None
    #: Serve FastAPI's generated /openapi.json (every route of the server); read from the environment only
    #: (INSURANCE_OPENAPI: one setting for the server). Off by default; the swagger pages
    #: (/v2/docs, which load swagger-ui from a CDN) are never served; the packaged OIP schema
    #: /v2/docs/dataplane.json always is.
    openapi: bool = False

    # ---- rate limits (runtime/ratelimit.py; docs/security.md) ------------------------------------
    #: Requests per second each credential (API key, JWT subject; the whole server with authentication off)
    #: may send to the models, as a token bucket; 0 (the default) and no rate_limit_roles / key `rate=`: off.
    rate_limit: float = Field(0.0, ge=0.0)
    #: Bucket size of rate_limit (requests at once after a quiet period); default: max(rate_limit, 1).
    rate_limit_burst: Optional[float] = Field(None, ge=1.0)
    #: Per role instead of rate_limit, JSON, e.g. {"outcomes": "5/10", "admin": "1/5"} ("<per second>/<burst>");
    #: a credential with several roles gets the highest, a role at rate 0 is unlimited. A key's own `rate=` in the
    #: keys file wins over both.
    rate_limit_roles: dict[str, str] = Field(default_factory=dict)
    #: Longest BYTES element (a categorical or text value) of a request, in bytes; longer gets a 400
    #: naming the input and row. Bounds the work per request together with max_batch_rows.
    max_string_bytes: int = Field(16_384, ge=1)
    #: Largest REST inference body of this model, in bytes, on the runtime's request path (`fast_path`): a
    #: larger one gets a 413 naming the limit. Every POST route of the server is also bounded by the server-wide
    #: EdgeSettings.max_request_bytes (same variable, INSURANCE_MAX_REQUEST_BYTES), decoded size included.
    max_request_bytes: int = Field(DEFAULT_MAX_REQUEST_BYTES, ge=1)
    #: PEM file with Ed25519 public key(s): when set, a bundle loads only if its manifest.sig is a valid
    #: signature of its manifest.json by one of them (`python -m predictors.signing`).
    bundle_public_key_file: Optional[Path] = None
    #: A bundle that fails to load when its model name has no version serving: `not-ready` keeps the model
    #: registered but not ready, with the reason in its metadata (`parameters.load_error`) and the log, so
    #: the other models keep serving (MLServer 1.7.1 otherwise exits at startup); `error` fails the load.
    #: A failing reload of a serving model always fails, so the serving version stays.
    load_failure: Literal["not-ready", "error"] = "not-ready"

    # ---- performance (predictors/scoring.py, predictors/cache.py; docs/performance.md) --------
    #: Answer V2 `infer` of this model (REST and gRPC) with the runtime's own request path
    #: (runtime/fastpath.py) instead of MLServer's generic one: same protocol, responses, errors and
    #: metrics, a fraction of the work per request. Applies in the server process (parallel_workers 0)
    #: to models without adaptive batching; false: every request takes MLServer's path.
    fast_path: bool = True
    #: gzip level of the runtime's request path (REST) for answers of 500 bytes and more to clients that
    #: send `Accept-Encoding: gzip` (MLServer compresses at 9, which costs more CPU than the bytes save on
    #: a cluster network: docs/performance.md); 0: leave it to MLServer's GZip middleware (level 9).
    gzip_level: int = Field(1, ge=0, le=9)
    #: Lead scoring: score with the trees compiled to machine code by lleaves (optional dependency,
    #: `pip install 'insurance-serving[compiled]'`) once they are compiled and verified equal to
    #: LightGBM's within 1e-9; LightGBM serves meanwhile, and for good if lleaves is missing or differs.
    #: With a linker (binutils' ld) they load as a plain shared library (+6 MB); without, through llvmlite
    #: (+~100 MB). Off here, on in the image (INSURANCE_COMPILED_TREES=true; docs/performance.md).
    compiled_trees: bool = False
    #: Claims triage: score with the skops pipeline translated to numpy and LightGBM trees by a child
    #: process (predictors/claims_native.py), used only once equal to the pipeline within 1e-9 on probe
    #: rows: no scikit-learn, SciPy or pandas in the server (~250 -> ~110 MB). false, or any failure
    #: (logged): the pipeline itself, in the server process.
    native_claims: bool = True
    #: Where compiled trees and the claims translation are kept, keyed by model, library versions and
    #: CPU (never inside a bundle); default $XDG_CACHE_HOME/insurance-serving/compiled (~/.cache/...), or
    #: under /tmp ($TMPDIR) when that cannot be written (a read-only container). Compiling takes ~3-10 s
    #: per model once, the claims translation ~2 s.
    compiled_trees_cache: Optional[Path] = None
    #: Prediction cache: seconds the outputs of a request are reused for an identical request; 0 (the
    #: default) turns the cache off.
    prediction_cache_ttl: float = Field(0.0, ge=0.0)
    #: Prediction cache: most requests kept (least recently used dropped first).
    prediction_cache_size: int = Field(10_000, ge=1)

    # ---- decision record (runtime/decision_log.py, predictors/decisions.py; docs/reasons.md) -----
    #: Record every scored row (one JSON line per row): true / false override the vertical's
    #: `decision_log.enabled` in verticals.yaml; unset follows it (off by default).
    decision_log: Optional[bool] = None
    #: File the decision records are appended to (one JSON object per line); unset: the process's stdout.
    decision_log_file: Optional[Path] = None
    #: Key of the keyed hash (HMAC-SHA256) of features whose `personal` policy is `hashed`; unset: plain
    #: SHA-256, which a dictionary of likely values reverses (docs/reasons.md).
    decision_log_hash_key: Optional[SecretStr] = None

    @field_validator("jwt_audience", "jwt_algorithms", mode="before")
    @classmethod
    def _comma_list(cls, value):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    def rate_limits(self) -> tuple[Optional[tuple[float, float]], dict[str, tuple[float, float]]]:
        """The rate limit as runtime/ratelimit.py applies it: the default (rate, burst), or None when
        rate_limit is 0, and (rate, burst) per role of rate_limit_roles (a role at rate 0 is unlimited)."""
        rate = float(self.rate_limit)
        default = (rate, float(self.rate_limit_burst or max(rate, 1.0))) if rate > 0 else None
        return default, {role: parse_rate(r) for role, r in (self.rate_limit_roles or {}).items()}

    @field_validator("rate_limit_roles")
    @classmethod
    def _rate_roles(cls, value):
        for role, rate in value.items():
            if role not in ROLES:
                raise ValueError(f"rate_limit_roles: unknown role {role!r} (roles: {', '.join(ROLES)})")
            parse_rate(rate)
        return value

    @model_validator(mode="after")
    def _check_jwt(self):
        if self.jwt_public_key_file is None and self.jwt_jwks_file is None:
            return self
        if not self.jwt_issuer or not self.jwt_audience:
            raise ValueError("JWT verification needs jwt_issuer and jwt_audience (INSURANCE_JWT_ISSUER, "
                             "INSURANCE_JWT_AUDIENCE)")
        bad = [a for a in self.jwt_algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not self.jwt_algorithms:
            raise ValueError(f"jwt_algorithms {bad or '[]'}: only asymmetric algorithms are accepted "
                             f"({', '.join(ASYMMETRIC_ALGORITHMS)})")
        return self


class EdgeSettings(BaseSettings):
    """Server-wide limits of the serving edge (runtime/edge.py), applied before any model is known:
    read once at start-up from INSURANCE_* variables (not per model). docs/security.md."""

    model_config = SettingsConfigDict(env_prefix="INSURANCE_", extra="ignore", hide_input_in_errors=True)

    #: Largest REST body on every POST route, in bytes, counted as received and again after decoding
    #: `Content-Encoding: gzip` (decoded as it arrives, never past the limit): 413 naming this setting.
    max_request_bytes: int = Field(DEFAULT_MAX_REQUEST_BYTES, ge=1)
    #: Most header lines of one HTTP request; more gets a 431 before any header is parsed.
    max_header_count: int = Field(100, ge=1)
    #: Most bytes of the header lines of one HTTP request (request line excluded); more gets a 431.
    max_header_bytes: int = Field(64 * 1024, ge=256)
    #: Longest request target (path and query), in bytes; longer gets a 414.
    max_url_bytes: int = Field(8 * 1024, ge=64)
    #: Seconds a client may take from connecting, or from the first bytes of a request head, to the end of
    #: its request headers; slower connections are answered 408 and closed (slow-header floods).
    header_timeout_seconds: float = Field(10.0, gt=0.0)
