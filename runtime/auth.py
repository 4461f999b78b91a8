"""Authentication of inference requests: API keys and JWT bearer tokens.

MLServer 1.7.1 copies the HTTP headers (REST) and the invocation metadata (gRPC) of every
inference request into ``payload.parameters.headers``, overwriting anything the client put
there (``mlserver.utils.insert_headers``), also when the request is handed to a parallel
worker. ``InsuranceModel.predict`` calls :meth:`Authenticator.check` on them before it looks
at the inputs (the runtime's own request path, runtime/fastpath.py, passes the same headers to
:meth:`Authenticator.check_headers`); health, readiness, metadata and metrics never reach a
model and stay open.

Credentials (either is enough when both methods are configured):

* ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``: API keys from ``api_keys_file``
  (one per line, re-read when the file changes, at most every ``auth_reload_seconds``) and/or
  ``api_keys`` (the INSURANCE_API_KEYS variable). Several keys are valid at once, so a key is
  rotated by adding the new one, moving the clients, then removing the old one. Only the
  SHA-256 digests of the keys are kept in memory; a presented key is hashed and compared with
  every digest in constant time.
* ``Authorization: Bearer <JWT>``: a token signed by a key of ``jwt_public_key_file`` (PEM)
  or ``jwt_jwks_file`` (JWKS, chosen by ``kid``), asymmetric algorithms only, with ``exp``,
  ``iss`` equal to ``jwt_issuer`` and ``aud`` naming one of ``jwt_audience``.

Roles (:data:`ROLES`): a credential may call inference unless marked otherwise; ``outcomes``
may post ground truth (runtime/outcomes.py) and ``admin`` may use MLServer's repository API
(guarded by :func:`install`, REST and gRPC). A key's roles, tenant and rate follow it on its
line of the keys file (:func:`parse_keys`); a JWT's roles are in the claim ``jwt_roles_claim``.

A missing or wrong credential raises :class:`Unauthenticated` (HTTP 401, gRPC UNAUTHENTICATED
through runtime/hardening.py's status mapping), a valid one without the role :class:`Forbidden`
(403, PERMISSION_DENIED); both count ``ml_auth_failures_total{model_name, reason}``; reasons are
the fixed set :data:`REASONS`, never anything taken from the request. Credentials are never
logged or put into an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from mlserver.errors import MLServerError

from .settings import ROLES

logger = logging.getLogger("mlserver.insurance.auth")

HTTP_UNAUTHORIZED, HTTP_FORBIDDEN = 401, 403
#: Label values of ml_auth_failures_total{reason}.
REASONS = ("missing", "malformed", "invalid_api_key", "invalid_token", "expired_token", "wrong_issuer",
           "wrong_audience", "duplicate_credential", "forbidden")
#: Roles a credential can hold. Without any of them marked it holds INFERENCE only.
INFERENCE, OUTCOMES, ADMIN = ROLES
#: The headers that carry a credential; a request carrying one of them twice is refused.
CREDENTIAL_HEADERS = ("x-api-key", "authorization")
#: ml_auth_failures_total's model_name for calls that do not name a loaded model.
REPOSITORY_LABEL, EDGE_LABEL = "_repository", "_edge"
HINT = "send 'Authorization: Bearer <API key or JWT>' or 'X-API-Key: <API key>'"
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class Unauthenticated(MLServerError):
    """401 (gRPC UNAUTHENTICATED): no valid credential. The message never holds the credential."""

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(f"unauthenticated: {message}", status_code=HTTP_UNAUTHORIZED)
        self.reason = reason

    def __reduce__(self):  # parallel workers send errors to the server process pickled
        return (type(self), (self.reason, str(self).removeprefix("unauthenticated: ")))


class Forbidden(MLServerError):
    """403 (gRPC PERMISSION_DENIED): a valid credential without the role the call needs."""

    reason = "forbidden"

    def __init__(self, role: str, what: str):
        super().__init__(f"forbidden: {what} needs a credential with the '{role}' role", status_code=HTTP_FORBIDDEN)
        self.role, self.what = role, what

    def __reduce__(self):
        return (type(self), (self.role, self.what))


# ---- the failure counter ----------------------------------------------------------------------

def count_failure(model_name: str, reason: str) -> None:
    """ml_auth_failures_total{model_name, reason} (runtime/metrics.py's families, created after
    MLServer has configured multiprocess metrics in a parallel worker)."""
    from . import metrics

    metrics.families().auth_failures.labels(model_name=model_name, reason=reason).inc()


# ---- files re-read on change ------------------------------------------------------------------

class WatchedFile:
    """A file parsed by `parse`, re-read when its (mtime, size, inode) changed, checked at most
    every `interval` seconds. Kubernetes updates a mounted Secret by swapping a symlink, which
    changes the inode seen through the path. A file that vanishes or fails to parse after a
    good read keeps the last good value (logged); one that was never read raises."""

    def __init__(self, path: Path, parse: Callable[[bytes], Any], interval: float, what: str):
        self.path, self._parse, self._interval, self._what = Path(path), parse, interval, what
        self._stamp: Optional[tuple] = None
        self._lock = threading.Lock()
        self.value = self._read(initial=True)
        self._checked = time.monotonic()

    def _read(self, initial: bool = False) -> Any:
        st = os.stat(self.path)
        data = self.path.read_bytes()
        try:
            value = self._parse(data)
        except Exception as e:  # e.g. PyJWKSetError; never echo the content
            raise ValueError(f"{self._what}: cannot parse {self.path}: {type(e).__name__}: {e}") from None
        self._stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if not initial:
            logger.info("%s: re-read %s after a change", self._what, self.path)
        return value

    def get(self) -> Any:
        now = time.monotonic()
        if now - self._checked < self._interval:
            return self.value
        with self._lock:
            if now - self._checked < self._interval:
                return self.value
            self._checked = now
            try:
                st = os.stat(self.path)
                if (st.st_mtime_ns, st.st_size, st.st_ino) != self._stamp:
                    self.value = self._read()
            except (OSError, ValueError) as e:
                logger.error("%s: cannot re-read %s (%s); keeping the previous value", self._what, self.path,
                             type(e).__name__)
        return self.value


# ---- API keys ---------------------------------------------------------------------------------

def digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode("utf-8") if isinstance(key, str) else key).digest()


@dataclass(frozen=True)
class KeyEntry:
    """What a key line grants: roles, the tenant its predictions belong to (None: the key itself),
    and its own rate limit (requests/s, burst; None: its roles' or the default)."""

    roles: frozenset = frozenset({INFERENCE})
    tenant: Optional[str] = None
    rate: Optional[tuple[float, float]] = None


_TENANT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _entry(tokens: list[str], where: str) -> KeyEntry:
    roles, tenant, rate = set(), None, None
    for t in tokens:
        name, eq, value = t.partition("=")
        if not eq and t in ROLES:
            roles.add(t)
        elif name == "tenant" and _TENANT.match(value):
            tenant = value
        elif name == "rate":
            from .settings import parse_rate

            try:
                rate = parse_rate(value)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        else:  # never echo the token: it may be part of a key
            raise ValueError(f"{where}: unknown word after the key (expected roles {', '.join(ROLES)}, "
                             "tenant=<name>, rate=<per second>[/<burst>])")
    return KeyEntry(frozenset(roles) if roles else frozenset({INFERENCE}), tenant, rate)


def parse_keys(text: str | bytes) -> dict[bytes, KeyEntry]:
    """Keys separated by newlines or commas; blank entries and `#` comment lines are ignored.

    An entry is ``<key>`` (an inference key, the format before roles existed) or ``<key>`` followed
    by space-separated words: roles (``inference``, ``outcomes``, ``admin``: a key holds only the
    roles listed), ``tenant=<name>``, ``rate=<per second>[/<burst>]``. Returns SHA-256 digest ->
    KeyEntry: the keys themselves are not kept."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    out: dict[bytes, KeyEntry] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split(","):
            words = part.split()
            if words:
                out[digest(words[0])] = _entry(words[1:], f"line {number}")
    return out


class ApiKeys:
    def __init__(self, env_keys: Optional[str], path: Optional[Path], interval: float):
        self._static = parse_keys(env_keys) if env_keys is not None else {}
        self._file = WatchedFile(path, parse_keys, interval, "API keys") if path is not None else None

    def entries(self) -> dict[bytes, KeyEntry]:
        return {**self._static, **self._file.get()} if self._file is not None else self._static

    def digests(self) -> frozenset[bytes]:
        return frozenset(self.entries())

    def __len__(self) -> int:
        return len(self.entries())

    def lookup(self, key: str) -> Optional[tuple[bytes, KeyEntry]]:
        """(digest, entry) of a known key, else None."""
        presented = digest(key)
        found = None
        for known, entry in self.entries().items():  # no early exit: the time does not tell which key matched
            if hmac.compare_digest(presented, known):
                found = (known, entry)
        return found

    def matches(self, key: str) -> bool:
        return self.lookup(key) is not None


# ---- JWT --------------------------------------------------------------------------------------

def _pem_keys(data: bytes) -> list:
    """The public keys of a PEM file; an empty file (or only whitespace) is no keys: it revokes."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if not data.strip():
        return []
    blocks = re.findall(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", data, flags=re.S)
    if not blocks:
        raise ValueError("no '-----BEGIN PUBLIC KEY-----' block")
    return [load_pem_public_key(b) for b in blocks]


def _jwks(data: bytes) -> list:
    """The keys of a JWKS; an empty file or ``{"keys": []}`` is no keys: it revokes."""
    import jwt

    if not data.strip():
        return []
    doc = json.loads(data)
    if isinstance(doc, dict) and doc.get("keys") == []:
        return []
    return list(jwt.PyJWKSet.from_dict(doc).keys)


class JwtVerifier:
    def __init__(self, *, public_key_file: Optional[Path], jwks_file: Optional[Path], issuer: str,
                 audience: list[str], algorithms: list[str], leeway: float, interval: float,
                 roles_claim: str = "roles", tenant_claim: Optional[str] = None):
        self.issuer, self.audience, self.algorithms, self.leeway = issuer, list(audience), list(algorithms), leeway
        self.roles_claim, self.tenant_claim = roles_claim, tenant_claim
        self._pem = WatchedFile(public_key_file, _pem_keys, interval, "JWT public keys") if public_key_file else None
        self._jwks = WatchedFile(jwks_file, _jwks, interval, "JWKS") if jwks_file else None

    def _candidate_keys(self, token: str) -> list:
        """Keys that may have signed the token. With a JWKS configured, a token naming a `kid` is
        checked only against the JWKS key of that kid (so removing a key from the JWKS revokes it,
        PEM keys besides or not); PEM keys check tokens without a kid, or any token when they are
        the only source."""
        import jwt

        kid = jwt.get_unverified_header(token).get("kid")
        keys: list = []
        if self._pem is not None and (kid is None or self._jwks is None):
            keys.extend(self._pem.get())
        if self._jwks is not None:
            jwks = self._jwks.get()
            keys.extend(k.key for k in jwks if kid is None or k.key_id == kid)
        return keys

    def verify(self, token: str) -> Mapping[str, Any]:
        """The token's claims, or Unauthenticated with the reason."""
        import jwt

        try:
            keys = self._candidate_keys(token)
        except (jwt.PyJWTError, ValueError):
            raise Unauthenticated("invalid_token", "invalid token: unreadable header") from None
        if not keys:
            raise Unauthenticated("invalid_token", "invalid token: no known key signs it (kid)")
        last: Exception | None = None
        for key in keys:
            try:
                return jwt.decode(token, key=key, algorithms=self.algorithms, audience=self.audience,
                                  issuer=self.issuer, leeway=self.leeway,
                                  options={"require": ["exp", "iss", "aud"]})
            except jwt.InvalidSignatureError as e:
                last = e
                continue
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("expired_token", "invalid token: expired") from None
            except jwt.InvalidIssuerError:
                raise Unauthenticated("wrong_issuer", "invalid token: wrong issuer") from None
            except jwt.InvalidAudienceError:
                raise Unauthenticated("wrong_audience", "invalid token: wrong audience") from None
            except jwt.MissingRequiredClaimError as e:
                raise Unauthenticated("invalid_token", f"invalid token: no '{e.claim}' claim") from None
            except jwt.InvalidAlgorithmError:
                raise Unauthenticated("invalid_token", "invalid token: algorithm not allowed "
                                                       f"(allowed: {', '.join(self.algorithms)})") from None
            except (jwt.PyJWTError, ValueError, TypeError) as e:
                last = e
                continue
        raise Unauthenticated("invalid_token", "invalid token: bad signature" if isinstance(last, jwt.InvalidSignatureError)
                              else "invalid token")


# ---- the authenticator ------------------------------------------------------------------------

@dataclass(frozen=True)
class Principal:
    """Who made a request. ``identity`` names the credential without revealing it (an API key's
    digest prefix, a JWT's issuer and subject): the rate-limit bucket. ``owner``: whose
    predictions these are (the tenant, else the identity) for matching outcomes."""

    method: str  # "api_key" or "jwt"
    subject: Optional[str] = None
    roles: frozenset = frozenset({INFERENCE})
    identity: str = ""
    tenant: Optional[str] = None
    rate: Optional[tuple[float, float]] = None

    @property
    def owner(self) -> str:
        return f"tenant:{self.tenant}" if self.tenant else self.identity


def _key_principal(found: tuple[bytes, KeyEntry]) -> Principal:
    d, entry = found
    return Principal("api_key", None, entry.roles, "key:" + d.hex()[:16], entry.tenant, entry.rate)


def _claim_roles(value: Any) -> frozenset:
    """This service's roles named by a JWT claim (a list, or a space/comma separated string as
    OAuth scopes); none of them named (or no claim): inference."""
    if isinstance(value, str):
        value = re.split(r"[\s,]+", value)
    named = {v for v in value if isinstance(v, str) and v in ROLES} if isinstance(value, (list, tuple)) else set()
    return frozenset(named) if named else frozenset({INFERENCE})


def header(headers: Optional[Mapping[str, Any]], name: str) -> Optional[str]:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:  # REST and gRPC give lower-case names; be lenient with other transports
        for k, v in headers.items():
            if isinstance(k, str) and k.lower() == name:
                value = v
                break
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return None if value is None else str(value)


class Authenticator:
    """Built once per loaded model from its RuntimeSettings; `enabled` is False when neither API
    keys nor a JWT key are configured (then every request passes)."""

    reasons = REASONS  # runtime/metrics.py creates ml_auth_failures_total at 0 for each

    def __init__(self, options: Any):
        interval = float(options.auth_reload_seconds)
        env_keys = options.api_keys.get_secret_value() if options.api_keys is not None else None
        self.keys = (ApiKeys(env_keys, options.api_keys_file, interval)
                     if env_keys is not None or options.api_keys_file is not None else None)
        self.jwt = None
        if options.jwt_public_key_file is not None or options.jwt_jwks_file is not None:
            self.jwt = JwtVerifier(public_key_file=options.jwt_public_key_file, jwks_file=options.jwt_jwks_file,
                                   issuer=options.jwt_issuer, audience=options.jwt_audience,
                                   algorithms=options.jwt_algorithms, leeway=options.jwt_leeway_seconds,
                                   interval=interval, roles_claim=options.jwt_roles_claim,
                                   tenant_claim=options.jwt_tenant_claim)
        logger.info("%s", self.describe())

    @property
    def enabled(self) -> bool:
        return self.keys is not None or self.jwt is not None

    def describe(self) -> str:
        if not self.enabled:
            return "authentication off (no API keys or JWT key configured)"
        parts = []
        if self.keys is not None:
            parts.append(f"{len(self.keys)} API key(s)")
        if self.jwt is not None:
            parts.append(f"JWT (issuer {self.jwt.issuer}, audience {', '.join(self.jwt.audience)})")
        return "authentication on: " + " + ".join(parts)

    def _jwt_principal(self, token: str) -> Principal:
        claims = self.jwt.verify(token)
        sub = claims.get("sub")
        sub = str(sub) if sub is not None else None
        tenant = claims.get(self.jwt.tenant_claim) if self.jwt.tenant_claim else None
        tenant = str(tenant) if isinstance(tenant, (str, int)) and _TENANT.match(str(tenant)) else None
        # no subject: one identity for every such token of the issuer (they share a rate bucket)
        identity = "jwt:" + hashlib.sha256(f"{claims.get('iss')}\0{sub}".encode()).hexdigest()[:16]
        return Principal("jwt", sub, _claim_roles(claims.get(self.jwt.roles_claim)), identity, tenant)

    def authenticate(self, headers: Optional[Mapping[str, Any]], role: str = INFERENCE) -> Optional[Principal]:
        """The principal, None when authentication is off; raises Unauthenticated (no valid
        credential) or Forbidden (valid ones, none holding `role`)."""
        if not self.enabled:
            return None
        api_key = header(headers, "x-api-key")
        authorization = header(headers, "authorization")
        if api_key is None and authorization is None:
            raise Unauthenticated("missing", f"no credential; {HINT}")
        failure: Optional[Unauthenticated] = None
        valid: list[Principal] = []
        if api_key is not None:
            found = self.keys.lookup(api_key.strip()) if self.keys is not None else None
            if found is not None:
                valid.append(_key_principal(found))
            else:
                failure = Unauthenticated("invalid_api_key", "invalid API key" if self.keys is not None
                                          else "API keys are not accepted here; send a JWT")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            token = token.strip()
            found = self.keys.lookup(token) if self.keys is not None and token else None
            if scheme.lower() != "bearer" or not token:
                failure = failure or Unauthenticated("malformed", f"the Authorization header is not 'Bearer <credential>'; {HINT}")
            elif found is not None:
                valid.append(_key_principal(found))
            elif self.jwt is not None and _JWT_SHAPE.match(token):
                try:
                    valid.append(self._jwt_principal(token))
                except Unauthenticated as e:
                    failure = failure or e
            else:
                failure = failure or (Unauthenticated("invalid_api_key", "invalid API key") if self.keys is not None
                                      else Unauthenticated("invalid_token", "invalid token: not a JWT"))
        for p in valid:
            if role in p.roles:
                return p
        if valid:
            raise Forbidden(role, _WHAT[role])
        assert failure is not None
        raise failure

    def check(self, payload: Any, model_name: str, role: str = INFERENCE) -> Optional[Principal]:
        """Authenticate an InferenceRequest; count and re-raise a failure."""
        if not self.enabled:
            return None
        params = getattr(payload, "parameters", None)
        return self.check_headers(getattr(params, "headers", None) if params is not None else None, model_name, role)

    def check_headers(self, headers: Optional[Mapping[str, Any]], model_name: str, role: str = INFERENCE
                      ) -> Optional[Principal]:
        """Authenticate a request by its HTTP headers / gRPC metadata; count and re-raise a failure."""
        if not self.enabled:
            return None
        try:
            return self.authenticate(headers, role)
        except (Unauthenticated, Forbidden) as e:
            count_failure(model_name, e.reason)
            raise


_WHAT = {INFERENCE: "inference", OUTCOMES: "posting outcomes", ADMIN: "the model repository API"}


# ---- the edge: repository API, API docs, duplicate credential headers (REST and gRPC) ---------
#
# MLServer 1.7.1 serves its repository API (REST /v2/repository/..., gRPC Repository*) and
# FastAPI's /openapi.json plus swagger pages (loaded from a CDN) on the inference ports with no
# authentication and no setting to turn them off; it reads a credential header sent twice as its
# first value on one path and its last on another. install() puts a guard in front of them, in
# the server process (parallel workers never serve HTTP or gRPC).

#: Authenticators of the loaded models ((name, version) -> Authenticator), and of the environment.
_model_auths: dict[tuple, "Authenticator"] = {}
_env_auth: list = []
_edge_lock = threading.Lock()
_CREDENTIAL_BYTES = (b"x-api-key", b"authorization")


def _edge_authenticators() -> list["Authenticator"]:
    return [a for a in (*_env_auth, *_model_auths.values()) if a.enabled]


_edge_on = False  # any authenticator enabled: kept current by install/register/unregister (read per request)


def _refresh_edge() -> None:
    global _edge_on
    _edge_on = bool(_edge_authenticators())


def server_options() -> Any:
    """RuntimeSettings from the environment only (INSURANCE_*): the server-wide view."""
    from .settings import RuntimeSettings

    return RuntimeSettings()


def authorize_repository(headers: Optional[Mapping[str, Any]], count: bool = True) -> Optional[Principal]:
    """The repository API needs an `admin` credential of the environment's or any loaded model's
    configuration; open only while authentication is configured nowhere (local development)."""
    auths = _edge_authenticators()
    if not auths:
        return None
    error: Optional[MLServerError] = None
    for a in auths:
        try:
            return a.authenticate(headers, ADMIN)
        except Forbidden as e:
            error = e
        except Unauthenticated as e:
            error = error if isinstance(error, Forbidden) else (error or e)
    if count:
        count_failure(REPOSITORY_LABEL, error.reason)
    raise error


def duplicated(names: Any) -> bool:
    """True when a credential header occurs more than once among (lower-case) header names."""
    seen = 0
    for name in names:
        if name in CREDENTIAL_HEADERS:
            if seen & (1 << CREDENTIAL_HEADERS.index(name)):
                return True
            seen |= 1 << CREDENTIAL_HEADERS.index(name)
    return False


def duplicate_error(count: bool = True) -> Unauthenticated:
    if count:
        count_failure(EDGE_LABEL, "duplicate_credential")
    return Unauthenticated("duplicate_credential", "a credential header (X-API-Key or Authorization) is sent "
                                                   "more than once; send exactly one")


def grpc_headers(context: Any) -> dict:
    """mlserver.grpc.utils.to_headers, refusing metadata that carries a credential key twice
    (only while authentication is on: with it off nothing changes)."""
    metadata = tuple(context.invocation_metadata() or ())
    if _edge_on and duplicated(m.key.lower() for m in metadata):
        raise duplicate_error()
    headers = {}
    for m in metadata:
        headers[m.key] = m.value
    return headers


#: FastAPI's generated OpenAPI document and the swagger pages (their HTML loads swagger-ui from a
#: CDN at a floating version); MLServer's packaged OIP documents (.../dataplane.json) stay.
_DOC_PATHS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/v2/docs")


def _is_docs(path: str) -> bool:
    if path in _DOC_PATHS:
        return path != "/openapi.json" or not _openapi_enabled()
    return path.startswith("/v2/models/") and path.endswith("/docs")


def _openapi_enabled() -> bool:
    return bool(_env_auth and getattr(_env_auth[0], "openapi", False))


class NotServed(MLServerError):
    def __init__(self, path: str):
        super().__init__(f"{path} is not served (API documentation is off; the Open Inference Protocol schema is "
                         "at /v2/docs/dataplane.json)", status_code=404)


class EdgeRoute:
    """A Starlette route first in MLServer's REST app. Its ``matches`` decides (synchronously, once
    per request, cached in the scope): requests it refuses match it and get their 4xx from
    ``handle``; everything else does not match and goes on to MLServer's routes unchanged."""

    endpoint = None  # read by MLServer's custom-handler bookkeeping (mlserver.rest.utils.matches)
    path = "/v2/repository"  # starlette_exporter's path label of a refused request
    name = "insurance-edge"

    def __init__(self):
        from starlette.routing import Match

        self._none, self._full = (Match.NONE, {}), Match.FULL

    def matches(self, scope: dict) -> tuple:
        if scope.get("type") != "http":
            return self._none
        error = scope.get("insurance_edge_error", False)
        if error is False:
            error = scope["insurance_edge_error"] = self._decide(scope)
        if error is None:
            return self._none
        return self._full, {"endpoint": self.handle}

    @staticmethod
    def _decide(scope: dict) -> Optional[MLServerError]:
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        try:
            if _edge_on:
                seen = 0
                for k, _ in scope.get("headers") or ():
                    if len(k) in (9, 13) and k.lower() in _CREDENTIAL_BYTES:
                        seen += 1
                if seen > 1 and duplicated(k.decode("latin-1").lower() for k, _ in scope["headers"]):
                    return duplicate_error(count=False)
            if _is_docs(path):
                return NotServed(path)
            if path.startswith("/v2/repository/") or path == "/v2/repository":
                authorize_repository({k.decode("latin-1").lower(): v.decode("latin-1")
                                      for k, v in scope.get("headers") or ()
                                      if k.lower() in (b"x-api-key", b"authorization")}, count=False)
        except MLServerError as e:
            return e
        return None

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        error = scope["insurance_edge_error"]
        reason = getattr(error, "reason", None)
        if reason is not None:  # counted here: matches() may run more than once per request
            count_failure(EDGE_LABEL if reason == "duplicate_credential" else REPOSITORY_LABEL, reason)
        body = json.dumps({"error": str(error)}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if isinstance(error, Unauthenticated):
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def url_path_for(self, name: str, /, **params: Any) -> Any:
        from starlette.routing import NoMatchFound

        raise NoMatchFound(name, params)


def _edge_first(app: Any) -> None:
    routes = app.router.routes
    for i, r in enumerate(routes):
        if isinstance(r, EdgeRoute):
            if i == 0:
                return
            del routes[i]
            break
    routes.insert(0, EdgeRoute())


def register_model(model: Any) -> None:
    """Keep the authenticator of a loaded InsuranceModel for the repository guard (built from its
    settings when it loaded in a parallel worker)."""
    auth = getattr(model, "auth", None)
    if auth is None:
        extra = (model.settings.parameters.extra if model.settings.parameters else None) or {}
        try:
            from .settings import RuntimeSettings

            auth = Authenticator(RuntimeSettings(**extra))
        except Exception as e:  # the model's own load reports its settings
            logger.error("model %s: no authenticator for the repository guard (%s)", model.name, type(e).__name__)
            return
    with _edge_lock:
        _model_auths[(model.name, model.version)] = auth
        _refresh_edge()


def unregister_model(model: Any) -> None:
    """Forget an unloaded model's authenticator, unless it is the last one configured: unloading
    never opens the repository API."""
    with _edge_lock:
        key = (model.name, model.version)
        auth = _model_auths.get(key)
        if auth is None:
            return
        others = [a for k, a in _model_auths.items() if k != key and a.enabled] + [a for a in _env_auth if a.enabled]
        if others or not auth.enabled:
            del _model_auths[key]
        _refresh_edge()


_edge_installed = False


def install() -> None:
    """The REST edge route (put first on every model load) and the gRPC guards (idempotent)."""
    global _edge_installed
    with _edge_lock:
        if _edge_installed:
            return
        _edge_installed = True
    try:
        options = server_options()
        env = Authenticator(options)
        env.openapi = bool(options.openapi)
        _env_auth.append(env)
        _refresh_edge()
    except Exception as e:
        logger.error("authentication settings of the environment are invalid (%s): the repository API takes the "
                     "loaded models' credentials only", type(e).__name__)
    _install_rest()
    _install_grpc()


def _install_rest() -> None:
    from mlserver.rest.server import RESTServer

    add, delete = RESTServer.add_custom_handlers, RESTServer.delete_custom_handlers

    async def add_custom_handlers(self, model):
        if getattr(model, "infer_plain", None) is not None:
            register_model(model)
        result = await add(self, model)
        _edge_first(self._app)
        return result

    async def delete_custom_handlers(self, model):
        if getattr(model, "infer_plain", None) is not None:
            unregister_model(model)
        return await delete(self, model)

    RESTServer.add_custom_handlers = add_custom_handlers
    RESTServer.delete_custom_handlers = delete_custom_handlers


async def _abort(context: Any, error: MLServerError) -> None:
    import grpc

    code = grpc.StatusCode.UNAUTHENTICATED if error.status_code == HTTP_UNAUTHORIZED else grpc.StatusCode.PERMISSION_DENIED
    await context.abort(code=code, details=str(error))


async def _authorize_admin(context: Any) -> None:
    """The admin check of a gRPC repository call: the call is aborted with its status when refused."""
    try:
        authorize_repository(grpc_headers(context))
    except (Unauthenticated, Forbidden) as e:
        await _abort(context, e)


def _guarded(original: Callable) -> Callable:
    async def guarded(self, request, context):
        await _authorize_admin(context)
        return await original(self, request, context)

    guarded.__qualname__ = getattr(original, "__qualname__", "guarded")
    guarded.__wrapped__ = original
    return guarded


async def guarded_repository_index(self, request, context):
    """InferenceServicer.RepositoryIndex (MLServer wraps it in nothing) with the admin check."""
    await _authorize_admin(context)
    return await _original_index(self, request, context)


_original_index: Any = None


async def _index_trampoline(self, request, context):  # runs with MLServer's module globals: builtins only
    return await __import__("runtime.auth", fromlist=["auth"]).guarded_repository_index(self, request, context)


def _install_grpc() -> None:
    """Point the closures of MLServer's gRPC repository methods at the guard (the servicer's
    methods were bound when the server started); RepositoryIndex, which has no wrapper, gets a
    trampoline body. Inference metadata goes through grpc_headers (duplicate check)."""
    global _original_index
    import types

    from mlserver.grpc import model_repository, servicers

    servicers.to_headers = grpc_headers  # InferenceServicer._InsertHeaders reads it at call time
    ok = True
    for cls in (servicers.InferenceServicer, model_repository.ModelRepositoryServicer):
        for method in ("RepositoryModelLoad", "RepositoryModelUnload", "RepositoryIndex"):
            fn = getattr(cls, method)
            names = getattr(getattr(fn, "__code__", None), "co_freevars", ())
            if "f" in names:
                cell = fn.__closure__[names.index("f")]
                if not getattr(cell.cell_contents, "__wrapped__", None):
                    cell.cell_contents = _guarded(cell.cell_contents)
            elif cls is servicers.InferenceServicer and method == "RepositoryIndex" and not names:
                _original_index = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__)
                fn.__code__ = _index_trampoline.__code__
            else:
                ok = False
    if not ok:
        logger.warning("MLServer's gRPC repository methods are not the 1.7.1 ones this guard expects: gRPC "
                       "repository calls are not checked for an admin credential")
