"""The verifier: signature, commitments, final weights, then replay of segments it alone chooses."""

from trainwitness.verifier.report import Report
from trainwitness.verifier.verify import VerifyOptions, verify_run

__all__ = ["Report", "VerifyOptions", "verify_run"]
