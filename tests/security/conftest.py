"""Shared helpers of the security and reliability tests: credentials, HTTP/gRPC callers,
resident memory of a server process, and the figures they report.

Every server here is a real `mlserver start` on free loopback ports serving a copy of the
shipped bundles in a temporary folder (tests/conftest.py); nothing is written into the
repository (hypothesis keeps no example database).

Run lengths: the fuzz and soak runs are sized to stay short in `make test`;
SECURITY_FUZZ_EXAMPLES (a multiplier, default 1) and SOAK_SECONDS / SOAK_RATE lengthen them
(`make fuzz`, `make soak`).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: tests/security/inproc import runtime/ (and so MLServer's generated gRPC protos), which cannot
#: share a process with tritonclient.grpc: test_inproc.py runs them in a fresh interpreter.
INPROC_ENV = "INSURANCE_SECURITY_INPROC"
collect_ignore = [] if os.environ.get(INPROC_ENV) == "1" else ["inproc"]

# Hypothesis keeps caches in ./.hypothesis even without an example database: never in the repository.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY",
                      str(Path(tempfile.gettempdir()) / f"insurance-serving-hypothesis-{os.getuid()}"))

#: Figures the tests collect; printed at the end of the run (pytest_terminal_summary).
REPORT: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("security and reliability figures")
        for key in sorted(REPORT):
            terminalreporter.write_line(f"{key}: {REPORT[key]}")


def fuzz_multiplier() -> float:
    return float(os.environ.get("SECURITY_FUZZ_EXAMPLES", "1"))


# ---- memory -----------------------------------------------------------------------------------

def rss_mib(pid: int) -> float:
    """Resident set size of a process (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and its children (parallel workers)."""
    total = rss_mib(pid)
    for c in children(pid):
        try:
            total += rss_mib(c)
        except (OSError, RuntimeError):
            pass
    return total


# ---- HTTP -------------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict = field(default_factory=dict)

    def json(self):
        return json.loads(self.body)


class Http:
    """A keep-alive HTTP/1.1 client for one server (reconnects when the server closed)."""

    def __init__(self, port: int, timeout: float = 60.0):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None) -> Answer:
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                r = self.conn.getresponse()
                return Answer(r.status, r.read(), dict(r.getheaders()))
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str, body, headers: dict | None = None) -> Answer:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        return self.request("POST", path, body, headers)

    def get(self, path: str, headers: dict | None = None) -> Answer:
        return self.request("GET", path, None, headers)

    def close(self):
        self.conn.close()


# ---- credentials ------------------------------------------------------------------------------

ISSUER = "https://issuer.insurance.test"
AUDIENCE = "insurance-serving"


@dataclass
class Credentials:
    keys_file: Path
    keys: list[str]
    jwks_file: Path
    private_key: object  # RSA private key signing the tokens (kid "k1")
    other_key: object  # an RSA key nobody trusts

    def token(self, *, key=None, kid: str = "k1", iss: str = ISSUER, aud: str = AUDIENCE, exp_in: float = 300,
              algorithm: str = "RS256", **claims) -> str:
        import jwt

        now = int(time.time())
        payload = {"iss": iss, "aud": aud, "sub": "client-1", "iat": now, "exp": now + int(exp_in), **claims}
        return jwt.encode(payload, key or self.private_key, algorithm=algorithm, headers={"kid": kid})

    def env(self, reload_seconds: float = 0) -> dict:
        return {"INSURANCE_API_KEYS_FILE": str(self.keys_file), "INSURANCE_JWT_JWKS_FILE": str(self.jwks_file),
                "INSURANCE_JWT_ISSUER": ISSUER, "INSURANCE_JWT_AUDIENCE": AUDIENCE,
                "INSURANCE_AUTH_RELOAD_SECONDS": str(reload_seconds)}


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwks_of(public_key, kid: str) -> dict:
    nums = public_key.public_numbers()
    return {"keys": [{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": _b64(nums.n), "e": _b64(nums.e)}]}


@pytest.fixture(scope="session")
def credentials(tmp_path_factory) -> Credentials:
    from cryptography.hazmat.primitives.asymmetric import rsa

    folder = tmp_path_factory.mktemp("credentials")
    # Sentinel-looking keys: the tests grep logs, metrics and answers for them.
    keys = ["sk-live-SENTINEL-0123456789abcdef", "sk-live-SENTINEL-fedcba9876543210"]
    keys_file = folder / "api-keys"
    keys_file.write_text("# rotated by the tests\n" + "\n".join(keys) + "\n")
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks_file = folder / "jwks.json"
    jwks_file.write_text(json.dumps(jwks_of(private_key.public_key(), "k1")))
    return Credentials(keys_file, keys, jwks_file, private_key, other)
