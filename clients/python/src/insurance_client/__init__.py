"""Python client of insurance-serving for backends: score leads, triage claims.

    from insurance_client import InsuranceClient

    with InsuranceClient("http://127.0.0.1:8080", timeout=5) as client:
        lead = client.score("auto", {"age": 34, "vehicle_make": "toyota", "usage_type": "commute"})
        print(lead.score, lead.price, lead.decision)
        claim = client.triage({"claim_amount": 1200.0, "claim_type": "collision"})
        old_style = client.score_request({"vertical": "auto", "lead_data": {"age": 34}})

Over the Open Inference Protocol (V2): HTTP by default, ``protocol="grpc"`` (port 8081; ``pip install
'insurance-client[grpc]'``) optional; whether a model scores leads or triages claims is read from its
V2 metadata once per model;
``AsyncInsuranceClient`` has the same methods for asyncio. Timeouts per request; retries with
exponential backoff on connection errors, 503 and a model that is reloading; errors name the
problem (``InvalidRequest.input`` is the input the server refused).
"""

from ._core import (ClaimTriage, InsuranceError, InvalidRequest, LeadScore, ModelNotFound, Retry, ServerError,
                    Timeout, Unavailable)
from .client import AsyncInsuranceClient, InsuranceClient

__all__ = [
    "AsyncInsuranceClient", "ClaimTriage", "InsuranceClient", "InsuranceError", "InvalidRequest", "LeadScore",
    "ModelNotFound", "Retry", "ServerError", "Timeout", "Unavailable",
]
