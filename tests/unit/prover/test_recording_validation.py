"""What `train` refuses before the store exists, and state it must store: ranges, tied weights, every dtype."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch

from trainwitness.cli import main
from trainwitness.commit.store import read_index
from trainwitness.prover import record_run
from trainwitness.tensors.checkpoint_reader import read_checkpoint
from trainwitness.tensors.state import DTYPE_NAMES, flatten

from ...support.runs import DIGITS, record_and_sign
from ...support.specs.storage_specs import TiedHeads, WithBuffers


def _train(tmp_path: Path, spec: str, *sets: str) -> list[str]:
    return ["train", spec, "--store", str(tmp_path / "store"), "--weights", str(tmp_path / "w.safetensors"), *sets]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("seed=4294967296", "hyperparameter 'seed' is 4294967296, outside [0, 2**32)"),
        ("seed=-1", "hyperparameter 'seed' is -1, outside [0, 2**32)"),
        ("data_seed=9223372036854775808", "hyperparameter 'data_seed' is 9223372036854775808, outside [0, 2**63)"),
        ("data_seed=-5", "hyperparameter 'data_seed' is -5, outside [0, 2**63)"),
        ("batch_size=0", "hyperparameter 'batch_size' is 0, outside [1, 2**20]"),
        ("batch_size=1798", "hyperparameter 'batch_size' is 1798, larger than the dataset (1797 samples)"),
        ("total_steps=0", "hyperparameter 'total_steps' is 0, outside [1, 1000000000]"),
        ("checkpoint_interval=1000000001", "hyperparameter 'checkpoint_interval' is 1000000001, outside [1, 1000000000]"),
    ],
)
def test_out_of_range_hyperparameter_is_one_line_exit_2_and_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, message: str
) -> None:
    assert main(_train(tmp_path, DIGITS, f"--set={setting}")) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainwitness: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "store").exists() and not (tmp_path / "w.safetensors").exists()


def test_the_largest_seeds_in_range_record_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hp = {"seed": 2**32 - 1, "data_seed": 2**63 - 1, "total_steps": 4, "checkpoint_interval": 2}
    run = record_and_sign(tmp_path / "run", DIGITS, hp)
    assert main(run.verify_args("--all", "--sandbox", "off")) == 0, capsys.readouterr()


def test_tied_weights_and_views_are_recorded_verified_and_published_loadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = record_and_sign(tmp_path / "run", "tests.support.specs.storage_specs:tied", {})
    assert main(run.verify_args("--all", "--sandbox", "off")) == 0, capsys.readouterr()

    published = safetensors.torch.load_file(str(run.weights))
    assert set(published) == {"fc1.weight", "fc1.bias", "head.weight", "head.bias", "aux.weight", "head_row0"}
    assert torch.equal(published["aux.weight"], published["head.weight"])
    assert torch.equal(published["head_row0"], published["head.weight"][0])
    model = TiedHeads(16)
    model.load_state_dict(published, strict=True)  # the published file loads back into the model
    assert model.aux.weight is model.head.weight and torch.equal(model.head.weight, published["head.weight"])
    assert not torch.equal(published["head.weight"], TiedHeads(16).head.weight)  # and it was trained

    # Writing the final weights once failed for tied weights, so every resume failed again: resume now.
    honest = run.weights.read_bytes()
    run.weights.unlink()
    again = record_run("tests.support.specs.storage_specs:tied", {}, run.store, run.weights)
    assert again.resumed_from_step == 40 and run.weights.read_bytes() == honest


@pytest.mark.parametrize("delta_every", [None, 2])
def test_every_safetensors_dtype_round_trips_through_checkpoints_and_the_weights_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], delta_every: int | None
) -> None:
    run = record_and_sign(tmp_path / "run", "tests.support.specs.storage_specs:every_dtype", {}, delta_every=delta_every)
    assert main(run.verify_args("--all", "--sandbox", "off")) == 0, capsys.readouterr()  # every checkpoint's digest

    published = safetensors.torch.load_file(str(run.weights))
    assert {t.dtype for t in published.values()} == set(DTYPE_NAMES)
    WithBuffers().load_state_dict(published, strict=True)
    index = read_index(run.store)
    final, _ = read_checkpoint(run.store, [c.step for c in index.checkpoints], len(index.checkpoints) - 1)
    for name, tensor in published.items():  # bitwise, NaN payloads included: compare the bytes
        stored = final.tensors[f"model/{name}"]
        assert tensor.dtype == stored.dtype and torch.equal(tensor.view(torch.uint8), stored.view(torch.uint8)), name
    assert any(bool(published[f"b_{n}"].view(torch.uint8).any()) for n in DTYPE_NAMES.values())


def test_state_of_a_dtype_safetensors_cannot_store_is_refused_by_name_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_train(tmp_path, "tests.support.specs.storage_specs:unstorable")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model/phase: dtype torch.complex128 cannot be stored" in err, err
    assert not (tmp_path / "store").exists()


def test_the_stored_dtypes_are_exactly_those_safetensors_reads_back() -> None:
    for dtype, name in DTYPE_NAMES.items():
        data = safetensors.torch.save({"t": torch.zeros(2, dtype=dtype)})
        assert safetensors.torch.load(data)["t"].dtype == dtype, name
    refused = {
        torch.complex128: torch.zeros(2, dtype=torch.complex128),
        # byte-sized formats with few kernels: made as views of bytes
        torch.float8_e8m0fnu: torch.zeros(2, dtype=torch.uint8).view(torch.float8_e8m0fnu),
        torch.float4_e2m1fn_x2: torch.zeros(2, dtype=torch.uint8).view(torch.float4_e2m1fn_x2),
    }
    for dtype, tensor in refused.items():
        try:
            readable = safetensors.torch.load(safetensors.torch.save({"t": tensor}))["t"].dtype == dtype
        except Exception:  # noqa: BLE001 - any refusal by safetensors, on save or on load
            readable = False
        assert not readable, dtype
        with pytest.raises(ValueError, match=f"model/t: dtype {dtype} cannot be stored"):
            flatten({"model": {"t": tensor}})
