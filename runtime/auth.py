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

A missing or wrong credential raises :class:`Unauthenticated` (HTTP 401, gRPC UNAUTHENTICATED
through runtime/hardening.py's status mapping)
and counts ``ml_auth_failures_total{model_name, reason}``; reasons are the fixed set
:data:`REASONS`, never anything taken from the request. Credentials are never logged or put
into an error message.
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

from runtime import metrics

logger = logging.getLogger("mlserver.insurance.auth")

HTTP_UNAUTHORIZED = 401
#: Label values of ml_auth_failures_total{reason}.
REASONS = ("missing", "malformed", "invalid_api_key", "invalid_token", "expired_token", "wrong_issuer",
           "wrong_audience")
#: Asymmetric JWT algorithms the runtime accepts (HS* would let a public key act as a shared secret).
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
HINT = "send 'Authorization: Bearer <API key or JWT>' or 'X-API-Key: <API key>'"
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class Unauthenticated(MLServerError):
    """401 (gRPC UNAUTHENTICATED): no valid credential. The message never holds the credential."""

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(f"unauthenticated: {message}", status_code=HTTP_UNAUTHORIZED)
        self.reason = reason


# ---- the failure counter ----------------------------------------------------------------------

def count_failure(model_name: str, reason: str) -> None:
    """ml_auth_failures_total{model_name, reason} (runtime/metrics.py, created on first use)."""
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


def parse_keys(text: str | bytes) -> frozenset[bytes]:
    """Keys separated by newlines or commas; blank entries and `#` comment lines are ignored.
    Returns their SHA-256 digests: the keys themselves are not kept."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    out = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split(","):
            part = part.strip()
            if part:
                out.add(digest(part))
    return frozenset(out)


class ApiKeys:
    def __init__(self, env_keys: Optional[str], path: Optional[Path], interval: float):
        self._static = parse_keys(env_keys) if env_keys is not None else frozenset()
        self._file = WatchedFile(path, parse_keys, interval, "API keys") if path is not None else None

    def digests(self) -> frozenset[bytes]:
        return self._static | self._file.get() if self._file is not None else self._static

    def __len__(self) -> int:
        return len(self.digests())

    def matches(self, key: str) -> bool:
        presented = digest(key)
        found = False
        for known in self.digests():  # no early exit: the time does not depend on which key matched
            found |= hmac.compare_digest(presented, known)
        return found


# ---- JWT --------------------------------------------------------------------------------------

def _pem_keys(data: bytes) -> list:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    blocks = re.findall(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", data, flags=re.S)
    if not blocks:
        raise ValueError("no '-----BEGIN PUBLIC KEY-----' block")
    return [load_pem_public_key(b) for b in blocks]


def _jwks(data: bytes):
    import jwt

    return jwt.PyJWKSet.from_dict(json.loads(data))


class JwtVerifier:
    def __init__(self, *, public_key_file: Optional[Path], jwks_file: Optional[Path], issuer: str,
                 audience: list[str], algorithms: list[str], leeway: float, interval: float):
        self.issuer, self.audience, self.algorithms, self.leeway = issuer, list(audience), list(algorithms), leeway
        self._pem = WatchedFile(public_key_file, _pem_keys, interval, "JWT public keys") if public_key_file else None
        self._jwks = WatchedFile(jwks_file, _jwks, interval, "JWKS") if jwks_file else None

    def _candidate_keys(self, token: str) -> list:
        import jwt

        keys: list = []
        if self._pem is not None:
            keys.extend(self._pem.get())
        if self._jwks is not None:
            kid = jwt.get_unverified_header(token).get("kid")
            jwks = self._jwks.get().keys
            chosen = [k for k in jwks if k.key_id == kid] if kid is not None else jwks
            keys.extend(k.key for k in chosen)
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
    method: str  # "api_key" or "jwt"
    subject: Optional[str] = None


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
                                   interval=interval)
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

    def authenticate(self, headers: Optional[Mapping[str, Any]]) -> Optional[Principal]:
        """The principal, None when authentication is off; raises Unauthenticated."""
        if not self.enabled:
            return None
        api_key = header(headers, "x-api-key")
        authorization = header(headers, "authorization")
        if api_key is None and authorization is None:
            raise Unauthenticated("missing", f"no credential; {HINT}")
        failure: Optional[Unauthenticated] = None
        if api_key is not None:
            if self.keys is not None and self.keys.matches(api_key.strip()):
                return Principal("api_key")
            failure = Unauthenticated("invalid_api_key", "invalid API key" if self.keys is not None
                                      else "API keys are not accepted here; send a JWT")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                failure = failure or Unauthenticated("malformed", f"the Authorization header is not 'Bearer <credential>'; {HINT}")
            elif self.keys is not None and self.keys.matches(token):
                return Principal("api_key")
            elif self.jwt is not None and _JWT_SHAPE.match(token):
                try:
                    claims = self.jwt.verify(token)
                    return Principal("jwt", str(claims.get("sub")) if claims.get("sub") is not None else None)
                except Unauthenticated as e:
                    failure = failure or e
            else:
                failure = failure or (Unauthenticated("invalid_api_key", "invalid API key") if self.keys is not None
                                      else Unauthenticated("invalid_token", "invalid token: not a JWT"))
        assert failure is not None
        raise failure

    def check(self, payload: Any, model_name: str) -> Optional[Principal]:
        """Authenticate an InferenceRequest; count and re-raise a failure."""
        if not self.enabled:
            return None
        params = getattr(payload, "parameters", None)
        return self.check_headers(getattr(params, "headers", None) if params is not None else None, model_name)

    def check_headers(self, headers: Optional[Mapping[str, Any]], model_name: str) -> Optional[Principal]:
        """Authenticate a request by its HTTP headers / gRPC metadata; count and re-raise a failure."""
        if not self.enabled:
            return None
        try:
            return self.authenticate(headers)
        except Unauthenticated as e:
            count_failure(model_name, e.reason)
            raise
