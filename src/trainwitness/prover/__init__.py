"""Recording beside training: commitments per step, checkpoints every k steps, the signed attestation."""

from .attest import attest_store
from .recorder import Recorder
from .train import RecordedRun, record_run

__all__ = ["Recorder", "RecordedRun", "record_run", "attest_store"]
