"""Exact mode and bounded mode: replay on another thread count (docs/EXACT.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainwitness.canonical import canonical_json
from trainwitness.cli import main
from trainwitness.errors import MalformedInputError, ReplayMismatchError
from trainwitness.exact import (
    DEFAULT_GRID,
    HINTS_FILE,
    Grid,
    RoundingTarget,
    decode_hints,
    encode_hints,
    hints_record,
    round_step,
)
from trainwitness.prover import attest_store, record_run
from trainwitness.signing import load_private_key
from trainwitness.verifier import VerifyOptions, verify_run
from trainwitness.verifier.bounded import BOUND

from .conftest import DIGITS, RecordedRun, record_and_sign
from .steering import steer_every_checkpoint

# 60 steps at interval 20: 3 segments, a few seconds to record and replay.
SHORT = {"total_steps": 60, "checkpoint_interval": 20}


@pytest.fixture(scope="module")
def _exact_2_threads(tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    return record_and_sign(tmp_path_factory.mktemp("exact") / "run", DIGITS, SHORT, threads=2, exact=DEFAULT_GRID)


@pytest.fixture(scope="module")
def _plain_2_threads(tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    return record_and_sign(tmp_path_factory.mktemp("plain") / "run", DIGITS, SHORT, threads=2)


@pytest.fixture
def exact_run(_exact_2_threads: RecordedRun, tmp_path: Path) -> RecordedRun:
    return _exact_2_threads.copied_to(tmp_path / "run")


@pytest.fixture
def plain_run(_plain_2_threads: RecordedRun, tmp_path: Path) -> RecordedRun:
    return _plain_2_threads.copied_to(tmp_path / "run")


def _verify(run: RecordedRun, **options: object):
    return verify_run(run.attestation, run.store, run.weights, run.public_key, VerifyOptions(segments=None, **options))  # type: ignore[arg-type]


# -- the grid and the hint format --------------------------------------------------------------------


def test_round_step_rounds_to_nearest_and_hints_values_near_the_boundary() -> None:
    grid = Grid(mantissa_bits=2, margin_log2=3, floor_exponent=-4)
    # grid points near 1: 1, 1.25, 1.5, ...; boundary between 1 and 1.25 at 1.125; margin 1/8 cell = 1/32.
    t = torch.tensor([1.0, 1.1, 1.13, 1.2, -1.13, 0.005, float("nan")], dtype=torch.float32)
    hints = round_step(grid, [RoundingTarget("model/w", t)])
    assert t[:6].tolist() == [1.0, 1.0, 1.25, 1.25, -1.25, 0.0]
    assert torch.isnan(t[6])
    # 1.1 and 1.13 are within 1/32 of a cell of 1.125; so is -1.13; 0.005 is on the floor grid (cell 2^-6) and rounds to 0.
    assert decode_hints(hints, [7]) == [(0, 1, False), (0, 2, True), (0, 4, True)]


def test_hint_bytes_are_golden() -> None:
    assert encode_hints([(1, 5, True), (0, 3, False)]) == bytes.fromhex("0000000000000006" "000001000000000b")
    assert hints_record(7, bytes.fromhex("000001000000000b")) == b'{"hints":"000001000000000b","step":7}'
    assert canonical_json(DEFAULT_GRID.to_json()) == (
        b'{"floor_exponent":-8,"mantissa_bits":12,"margin_log2":6,"mode":"grid-round-nearest/v1"}'
    )


def test_decode_hints_refuses_unsorted_duplicate_and_out_of_range_entries() -> None:
    for bad in ([(0, 2, True), (0, 2, False)], [(0, 9, True)], [(3, 0, True)]):
        data = b"".join((o << 40 | e << 1 | int(u)).to_bytes(8, "big") for o, e, u in bad)
        with pytest.raises(MalformedInputError):
            decode_hints(data, [4, 4])
    with pytest.raises(MalformedInputError):
        decode_hints(encode_hints([(0, 2, True), (0, 1, True)])[8:] + encode_hints([(0, 1, True)]), [4])
    with pytest.raises(MalformedInputError):
        decode_hints(b"\x00" * 7, [4])


def test_replay_refuses_a_hint_far_from_any_boundary() -> None:
    grid = Grid(mantissa_bits=2, margin_log2=3, floor_exponent=-4)
    with pytest.raises(ReplayMismatchError, match="not near a rounding boundary"):
        round_step(grid, [RoundingTarget("model/w", torch.tensor([1.0, 1.2]))], encode_hints([(0, 1, False)]))


def test_replay_follows_hints_for_values_on_either_side_of_the_boundary() -> None:
    grid = Grid(mantissa_bits=2, margin_log2=3, floor_exponent=-4)
    recorded = torch.tensor([1.124])  # just below the boundary 1.125: rounds down, hinted
    hints = round_step(grid, [RoundingTarget("model/w", recorded)])
    replayed = torch.tensor([1.126])  # the verifier's noisy value is just above it
    round_step(grid, [RoundingTarget("model/w", replayed)], hints)
    assert recorded.item() == replayed.item() == 1.0


def test_float32_step_and_float64_reference_land_on_the_same_grid_points_given_the_hints() -> None:
    from trainwitness.environment import apply_execution_settings
    from trainwitness.exact import rounding_targets
    from trainwitness.executor import TrainingRun, snapshot
    from trainwitness.spec import load_entry_point, resolve_hyperparameters

    apply_execution_settings(1)
    function = load_entry_point(DIGITS)
    hp = resolve_hyperparameters(function.defaults, {"dropout": 0.0})
    run = TrainingRun.start(function, hp)
    run.run(0, 5, lambda *a: None)  # a state with momentum
    batch = run.spec.dataset.batch(run.sampler.batch_ids(5))
    before = snapshot(run.capture())
    run.spec.step(batch)
    f32 = {n: t.clone() for n, t in run.trainable().tensors.items() if t.is_floating_point()}
    # The same step in float64 from the same state (parameters, momentum, learning rate).
    run.restore(snapshot(before))
    run.spec.model.double()
    for s in run.spec.optimizer.state.values():
        s["momentum_buffer"] = s["momentum_buffer"].double()
    run.spec.step({"image": batch["image"].double(), "label": batch["label"]})
    f64 = {n: t.clone() for n, t in run.trainable().tensors.items() if t.is_floating_point()}
    assert f64.keys() == f32.keys()
    differ_before = sum(int((f64[n].to(torch.float32) != f32[n]).sum()) for n in f32)

    prover = rounding_targets(f32)
    hints = round_step(DEFAULT_GRID, prover)
    reference = rounding_targets(f64)
    round_step(DEFAULT_GRID, reference, hints)  # the verifier's side: its own values, the prover's hints
    for p, r in zip(prover, reference, strict=True):
        assert torch.equal(p.tensor, r.tensor.to(torch.float32)), p.name
    assert differ_before > 100  # the float64 step really is different before rounding


# -- exact mode through the product path ------------------------------------------------------------


def test_exact_run_recorded_with_2_threads_verifies_bitwise_with_1_thread(exact_run: RecordedRun, capsys) -> None:
    assert main(exact_run.verify_args("--all", "--threads", "1")) == 0
    out = capsys.readouterr().out
    assert "ACCEPT" in out and "exact mode" in out and "replayed 3 of 3 segments" in out


def test_exact_mode_is_signed_and_its_hints_are_committed(exact_run: RecordedRun) -> None:
    payload = json.loads(_payload(exact_run))
    assert payload["predicate"]["exact"] == DEFAULT_GRID.to_json()
    assert payload["predicate"]["commitments"]["hints"]["size"] == SHORT["total_steps"]
    assert len((exact_run.store / HINTS_FILE).read_bytes().splitlines()) == SHORT["total_steps"]


def _payload(run: RecordedRun) -> str:
    import base64

    return base64.b64decode(json.loads(run.attestation.read_bytes())["payload"]).decode()


def test_exact_mode_off_changes_nothing(plain_run: RecordedRun) -> None:
    assert "exact" not in json.loads(_payload(plain_run))["predicate"]
    assert "exact" not in json.loads((plain_run.store / "run.json").read_bytes())
    assert not (plain_run.store / HINTS_FILE).exists()


def test_verify_rejects_a_tampered_hint_even_when_re_signed(exact_run: RecordedRun) -> None:
    path = exact_run.store / HINTS_FILE
    lines = path.read_bytes().splitlines()
    # Claim a value far from any boundary was hinted: flip in a hint for element 0 of tensor 0
    # at every step that has none there (at least one such step exists).
    forged = []
    for step, line in enumerate(lines):
        data = bytes.fromhex(json.loads(line)["hints"])
        entries = decode_hints(data, [1 << 30] * 64)
        if not any((o, e) == (0, 0) for o, e, _ in entries):
            entries = sorted([*entries, (0, 0, True)])
        forged.append(hints_record(step, encode_hints(entries)))
    path.write_bytes(b"".join(line + b"\n" for line in forged))
    exact_run.attestation.write_bytes(attest_store(exact_run.store, exact_run.weights, load_private_key(exact_run.private_key)))
    report = _verify(exact_run, threads=1)
    assert not report.accepted
    assert "not near a rounding boundary" in report.checks[-1].detail


def test_verify_rejects_an_exact_attestation_stripped_of_its_mode(exact_run: RecordedRun) -> None:
    from trainwitness.signing import seal_envelope

    statement = json.loads(_payload(exact_run))
    del statement["predicate"]["exact"]
    exact_run.attestation.write_bytes(seal_envelope(canonical_json(statement), load_private_key(exact_run.private_key)))
    assert main(exact_run.verify_args("--all")) == 2  # the commitments name a hints tree: malformed


# -- without exact mode: bitwise rejects, bounded accepts ----------------------------------------------


def test_plain_run_recorded_with_2_threads_is_rejected_bitwise_with_1_thread(plain_run: RecordedRun) -> None:
    report = _verify(plain_run, threads=1)
    assert not report.accepted
    assert report.checks[-1].name == "replay" and "does not land on checkpoint" in report.checks[-1].detail


def test_plain_run_is_accepted_by_bounded_mode_with_the_distance_shown(plain_run: RecordedRun, capsys) -> None:
    assert main(plain_run.verify_args("--all", "--threads", "1", "--bounded")) == 0
    out = capsys.readouterr().out
    assert "ACCEPT" in out and "WEAKER THAN EXACT" in out and "segment 0: distance" in out
    report = _verify(plain_run, threads=1, bounded=True)
    distances = [s.distance.overall for s in report.segments if s.distance is not None]
    assert len(distances) == 3 and all(0 < d < BOUND for d in distances)  # it really differs, within the bound
    assert report.bounded_summary()["steering_room"] == pytest.approx(3 * BOUND)


# -- the forger's view --------------------------------------------------------------------------------


def test_steering_forger_just_under_the_bound_is_accepted_by_bounded_mode(plain_run: RecordedRun) -> None:
    steer_every_checkpoint(plain_run, fraction_of_bound=0.5, grid=None)
    report = _verify(plain_run, threads=1, bounded=True)
    assert report.accepted, report.to_text()  # the slack is real: the forged checkpoints pass
    assert max(s.distance.overall for s in report.segments if s.distance is not None) > 0.3 * BOUND
    assert not _verify(plain_run, threads=1).accepted


def test_steering_forger_is_rejected_in_exact_mode(exact_run: RecordedRun) -> None:
    steer_every_checkpoint(exact_run, fraction_of_bound=0.5, grid=DEFAULT_GRID)
    report = _verify(exact_run, threads=1)
    assert not report.accepted
    assert report.checks[-1].name == "replay"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: GPU-recorded, CPU-verified")
def test_gpu_step_and_cpu_replay_land_on_the_same_grid_points_given_the_hints() -> None:
    from trainwitness.exact import rounding_targets

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    round_step(DEFAULT_GRID, rounding_targets({f"model/{n}": p.data for n, p in model.named_parameters()}))

    def one_step(device: str) -> dict[str, torch.Tensor]:
        m = __import__("copy").deepcopy(model).to(device)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        torch.nn.functional.cross_entropy(m(x.to(device)), y.to(device)).backward()
        opt.step()
        return {f"model/{n}": p.data.detach().to("cpu", copy=True) for n, p in m.named_parameters()}

    torch.backends.cuda.matmul.allow_tf32 = False
    gpu, cpu = one_step("cuda"), one_step("cpu")
    hints = round_step(DEFAULT_GRID, rounding_targets(gpu))
    round_step(DEFAULT_GRID, rounding_targets(cpu), hints)
    for n in gpu:
        assert torch.equal(gpu[n], cpu[n]), n


def test_exact_run_resumed_after_a_crash_rewrites_its_hints_and_verifies(exact_run: RecordedRun) -> None:
    # A crash after checkpoint 1 (step 20) and a few more steps: the index and hints.jsonl run past it.
    index = exact_run.store / "index.jsonl"
    lines = index.read_bytes().splitlines(keepends=True)
    cut = next(n for n, line in enumerate(lines) if b'"kind":"checkpoint"' in line and b'"index":1' in line)
    index.write_bytes(b"".join(lines[: cut + 4]))
    hints = exact_run.store / HINTS_FILE
    hints.write_bytes(b"".join(hints.read_bytes().splitlines(keepends=True)[:23]))
    (exact_run.store / "checkpoints" / f"{40:010d}.safetensors.zst").unlink()
    record_run(DIGITS, SHORT, exact_run.store, exact_run.weights, torch_threads=2, exact=DEFAULT_GRID)
    exact_run.attestation.write_bytes(attest_store(exact_run.store, exact_run.weights, load_private_key(exact_run.private_key)))
    assert len(hints.read_bytes().splitlines()) == SHORT["total_steps"]
    assert _verify(exact_run, threads=1).accepted
