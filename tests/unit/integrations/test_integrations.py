"""Framework integrations refuse a framework configuration their replay does not reproduce, before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainwitness.errors import NotReplayableError
from trainwitness.prover.session import record

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_lightning_refuses_gradient_accumulation_and_a_clip_value_it_does_not_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from lightning_trainer.train import build  # type: ignore[import-not-found]

    from trainwitness.integrations.lightning import RecordingCallback

    with pytest.raises(NotReplayableError, match=r"accumulate_grad_batches=2 .*; gradient_clip_val=0.5, the spec declares 1.0"):
        with record(build, tmp_path / "out", {"total_steps": 4, "checkpoint_interval": 2}, progress=False) as run:
            trainer = pl.Trainer(
                max_epochs=1, accelerator="cpu", devices=1, accumulate_grad_batches=2, gradient_clip_val=0.5,
                callbacks=[RecordingCallback(run)], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False,
            )
            trainer.fit(run.model, train_dataloaders=run.data_loader())
    assert not (tmp_path / "out" / "attestation.json").exists()


def test_a_script_directory_named_like_an_installed_package_is_refused_by_name(tmp_path: Path) -> None:
    import subprocess
    import sys

    program = tmp_path / "numpy"
    program.mkdir()
    (program / "train.py").write_text(
        "import trainwitness as tw\n"
        "from trainwitness.workloads.digits import DEFAULTS, digits\n"
        "@tw.training_spec(defaults=DEFAULTS)\n"
        "def build(hp):\n    return digits(hp)\n"
        "tw.record(build, 'out')\n"
    )
    done = subprocess.run([sys.executable, str(program / "train.py")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "'numpy' is already the name of another importable package" in done.stderr
