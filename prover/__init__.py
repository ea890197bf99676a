"""Recording beside training: commitments per step, checkpoints every k steps, the signed attestation."""

from trainwitness.prover.attest import attest_store
from trainwitness.prover.recorder import Recorder
from trainwitness.prover.train import Declarations, RecordedRun, record_run

__all__ = ["Declarations", "Recorder", "RecordedRun", "record_run", "attest_store"]
