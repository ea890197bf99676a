"""The verifier: signature, commitments, final weights, then replay of segments it alone chooses.

``verify`` raises ``trainwitness.errors.Rejected`` on REJECT and returns the report on ACCEPT;
``verify_run`` returns the report either way, for callers that print it (the command line).
"""

from trainwitness.verifier.report import Report
from trainwitness.verifier.verify import VerifyOptions, verify, verify_run

__all__ = ["Report", "VerifyOptions", "verify", "verify_run"]
