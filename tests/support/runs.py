"""A recorded, signed run and its file layout: the helpers every test that needs a real run imports."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from trainwitness.commit.hints import ExactMode
from trainwitness.identity.signing import generate_keypair, load_private_key
from trainwitness.prover import Declarations, attest_store, record_run

DIGITS = "trainwitness.workloads.digits:digits"
# 120 steps at interval 20: 6 segments, a few seconds to record and to replay in full.
SHORT_DIGITS = {"total_steps": 120, "checkpoint_interval": 20}


@dataclass(frozen=True)
class RecordedRun:
    root: Path
    store: Path
    weights: Path
    attestation: Path
    private_key: Path
    public_key: Path

    @classmethod
    def at(cls, root: Path, keys: Path | None = None, **extra: object) -> Self:
        """The layout of a run under ``root``; the key pair lives under ``keys`` (default: ``root``)."""
        keys = keys if keys is not None else root
        return cls(
            root=root, store=root / "store", weights=root / "model.safetensors", attestation=root / "attestation.json",
            private_key=keys / "k.key", public_key=keys / "k.pub", **extra,  # type: ignore[arg-type]
        )

    def copied_to(self, root: Path) -> Self:
        """A private copy of this run (keys included) under ``root``, free to tamper with."""
        shutil.copytree(self.root, root)
        return self.at(root)

    def verify_args(self, *extra: str) -> list[str]:
        return [
            "verify", str(self.attestation), "--store", str(self.store), "--weights", str(self.weights),
            "--key", str(self.public_key), *extra,
        ]


def record_and_sign(
    root: Path, entry_point: str = DIGITS, overrides: dict | None = None, threads: int = 1, *,
    weights_license: str | None = None, source_uri: str | None = None, delta_every: int | None = None,
    exact: ExactMode | None = None, replay_check: bool = True, allow_local_uri: bool = True,
) -> RecordedRun:
    root.mkdir(parents=True, exist_ok=True)
    run = RecordedRun.at(root)
    generate_keypair(run.private_key, run.public_key)
    record_run(
        entry_point, overrides if overrides is not None else SHORT_DIGITS, run.store, run.weights, torch_threads=threads,
        declarations=Declarations(weights_license=weights_license, source_uri=source_uri), delta_every=delta_every,
        exact=exact,
    )
    # Test specs read data from tmp paths: signing their local uris is what these tests want (the refusal is tested on its own).
    run.attestation.write_bytes(attest_store(
        run.store, run.weights, load_private_key(run.private_key), replay_check=replay_check, allow_local_uri=allow_local_uri,
    ))
    return run
