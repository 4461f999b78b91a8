"""MLServer runtime for the insurance models (``implementation: runtime.InsuranceModel``)."""

from .model import InsuranceModel

__all__ = ["InsuranceModel"]
