"""MLServer runtime for the insurance models (``implementation: runtime.InsuranceModel``).

``InsuranceModel`` is imported on first access (PEP 562), so that ``runtime.metrics``,
``runtime.settings`` and the other helpers can be imported without MLServer: mlserver's gRPC
protos and tritonclient's define the same ``inference.*`` symbols and cannot both be imported
into one process (a test process that uses tritonclient.grpc).
"""

__all__ = ["InsuranceModel"]


def __getattr__(name: str):
    if name == "InsuranceModel":
        from .model import InsuranceModel

        return InsuranceModel
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
