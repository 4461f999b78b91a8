"""Fixtures of the Kubernetes tests (helpers in kube.py; no API server is used)."""

from __future__ import annotations

import pytest

from .kube import VALUES_DIR, helm_template

# The three value sets every structural test runs over.
SCENARIOS = {
    "default": (),
    "knative-canary": (VALUES_DIR / "knative-canary.yaml",),
    "standard-canary": (VALUES_DIR / "standard-canary.yaml",),
}


@pytest.fixture(scope="session", params=sorted(SCENARIOS))
def scenario(request) -> tuple[str, list[dict]]:
    return request.param, helm_template(*SCENARIOS[request.param])


@pytest.fixture(scope="session")
def default_objs() -> list[dict]:
    return helm_template()


@pytest.fixture(scope="session")
def knative_objs() -> list[dict]:
    return helm_template(*SCENARIOS["knative-canary"])


@pytest.fixture(scope="session")
def standard_objs() -> list[dict]:
    return helm_template(*SCENARIOS["standard-canary"])
