"""The verifier: signature, commitments, final weights, then replay of segments it alone chooses.

``verify_run`` returns the report whatever the verdict, for callers that print it (the command
line); ``trainwitness.verify`` (defined in ``trainwitness.verifier.verify``, not re-exported here so
that it does not shadow that module) raises ``Rejected`` on REJECT.
"""

from trainwitness.verifier.report import Report
from trainwitness.verifier.verify import VerifyOptions, verify_run

__all__ = ["Report", "VerifyOptions", "verify_run"]
