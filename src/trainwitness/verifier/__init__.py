"""The verifier: signature, commitments, final weights, then replay of segments it alone chooses."""

from .report import Report
from .verify import VerifyOptions, verify_run

__all__ = ["Report", "VerifyOptions", "verify_run"]
