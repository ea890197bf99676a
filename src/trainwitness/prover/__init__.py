"""Recording beside training: commitments per step, checkpoints every k steps, the signed attestation."""

from .attest import attest_store
from .recorder import Recorder
from .train import Declarations, RecordedRun, record_run

__all__ = ["Declarations", "Recorder", "RecordedRun", "record_run", "attest_store"]
