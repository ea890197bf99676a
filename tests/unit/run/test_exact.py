"""Exact mode and bounded mode: replay on another thread count (docs/EXACT.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from trainwitness.cli import main
from trainwitness.commit.canonical import canonical_json
from trainwitness.commit.hints import (
    DEFAULT_EXACT,
    HINTS_FILE,
    Grid,
    StepHints,
    decode_hints,
    encode_hints,
    hints_leaf,
    hints_record,
    parse_hints_record,
)
from trainwitness.errors import MalformedInputError, ReplayMismatchError
from trainwitness.identity.signing import load_private_key
from trainwitness.prover import attest_store, record_run
from trainwitness.run.exact import RoundingTarget, check_gradient_scale, gradient_scale, round_step
from trainwitness.verifier import VerifyOptions, verify_run
from trainwitness.verifier.bounded import BOUND

from ...support.runs import DIGITS, RecordedRun, record_and_sign
from ...support.steering import steer_every_checkpoint

# 60 steps at interval 20: 3 segments, a few seconds to record and replay.
SHORT = {"total_steps": 60, "checkpoint_interval": 20}
# Digits whose first layer sums in as many chunks as there are threads: a run recorded with 2
# threads replays differently with 1 on every CPU (tests/support/specs/thread_noise_spec.py). The digits model
# alone differs on some CPUs (AMD EPYC, MKL) and not on others (Intel Xeon, MKL): no test may rely on that.
NOISY = "tests.support.specs.thread_noise_spec:noisy_digits"


@pytest.fixture(scope="module")
def _exact_2_threads(tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    return record_and_sign(tmp_path_factory.mktemp("exact") / "run", NOISY, SHORT, threads=2, exact=DEFAULT_EXACT)


@pytest.fixture(scope="module")
def _plain_2_threads(tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    return record_and_sign(tmp_path_factory.mktemp("plain") / "run", NOISY, SHORT, threads=2)


@pytest.fixture
def exact_run(_exact_2_threads: RecordedRun, tmp_path: Path) -> RecordedRun:
    return _exact_2_threads.copied_to(tmp_path / "run")


@pytest.fixture
def plain_run(_plain_2_threads: RecordedRun, tmp_path: Path) -> RecordedRun:
    return _plain_2_threads.copied_to(tmp_path / "run")


def _verify(run: RecordedRun, **options: object):
    return verify_run(run.attestation, run.store, run.weights, run.public_key, VerifyOptions(segments=None, **options))  # type: ignore[arg-type]


# -- the grid and the hint format --------------------------------------------------------------------


# Grid points near 1 are 1, 1.25, 1.5 (cell 1/4); margin 1/16 cell, tie zone 1/4 cell either side of
# each midpoint. Above 1 (an even grid point, 4 cells) the boundary sits at 1 + 0.75 cell = 1.1875;
# above 1.25 (odd, 5 cells) at 1.25 + 0.25 cell = 1.3125.
SMALL = Grid(mantissa_bits=2, margin_log2=4, floor_exponent=-4)


def test_round_step_rounds_to_nearest_ties_to_even_and_hints_values_near_the_boundary() -> None:
    t = torch.tensor([1.0, 1.13, 1.18, 1.2, 1.27, 1.38, -1.2, 0.005, float("nan")], dtype=torch.float32)
    hints = round_step(SMALL, [RoundingTarget("model/w", t)])
    assert t[:8].tolist() == [1.0, 1.0, 1.0, 1.25, 1.25, 1.5, -1.25, 0.0]
    assert torch.isnan(t[8])
    # 1.13 is next to the midpoint 1.125: it goes to the even point 1.0 with no hint. 1.18 and 1.2 lie
    # within 1/16 cell of the boundary 1.1875, so does -1.2; 0.005 is on the floor grid (cell 2^-6).
    assert decode_hints(hints, [9]) == [(0, 2, False), (0, 3, True), (0, 6, True)]


def test_values_computed_next_to_a_midpoint_need_no_hint() -> None:
    # Where a gradient is zero, momentum becomes 0.9 x a grid value: k cells give 0.9 k cells, and for
    # every k ending in 5 that is a midpoint less a float32 error of about 1e-4 cell. Every machine
    # computes such values next to the midpoint; rounding them to even spares them all a hint.
    grid = DEFAULT_EXACT.state
    cell = 2.0**-grid.mantissa_bits  # in the binade [1, 2)
    t = (torch.arange(2**grid.mantissa_bits, 2 ** (grid.mantissa_bits + 1), dtype=torch.float32) * cell) * 0.9
    in_binade = t[t >= 1.0]
    near_midpoint = ((in_binade / cell).remainder(1.0) - 0.5).abs() < grid.margin
    assert int(near_midpoint.sum()) > 300  # round-half-away would hint all of these
    assert round_step(grid, [RoundingTarget("optimizer/m", t)]) == b""


def test_hint_bytes_are_golden() -> None:
    assert encode_hints([(1, 5, True), (0, 3, False)]) == bytes.fromhex("0000000000000006" "000001000000000b")
    step = StepHints(gradient_scales=(-3, -7), gradient_hints=bytes.fromhex("0000000000000006"),
                     state_hints=bytes.fromhex("000001000000000b"))
    # Entries travel as base64 of a zstd frame; this line was written on 2026-11-23 and must keep parsing.
    stored = b'{"gradient_hints":"KLUv/SAIQQAAAAAAAAAAAAY=","gradient_scales":[-3,-7],"state_hints":"KLUv/SAIQQAAAAABAAAAAAs=","step":7}'
    assert parse_hints_record(stored, 7, "line") == step
    assert parse_hints_record(hints_record(7, step), 7, "line") == step
    assert parse_hints_record(hints_record(0, StepHints()), 0, "line") == StepHints()
    assert hints_leaf(7, step).startswith(b'{"gradient_hints_digest":"sha256:')
    assert canonical_json(DEFAULT_EXACT.to_json()) == (
        b'{"gradients":{"floor_exponent":-2,"mantissa_bits":7,"margin_log2":8},"mode":"grid-round-nearest/v2",'
        b'"state":{"floor_exponent":-100,"mantissa_bits":12,"margin_log2":10}}'
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


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ("KLUv/SAIQQAAAAAAAAAAAAY", "not base64"),  # padding missing
        ("KLUv/SAIQQAAAAAAAAAAAAZ=", "not canonical"),  # non-zero padding bits
        ("AAAAAAAAAAA=", "corrupt or truncated zstd"),
        ("KLUv/SAHOQAAAAAAAAAAAA==", "not a positive number of 8-byte entries"),  # 7 bytes
    ],
)
def test_hints_record_with_bad_packed_entries_is_refused_by_name(field: str, problem: str) -> None:
    line = canonical_json({"gradient_hints": "", "gradient_scales": [], "state_hints": field, "step": 0})
    with pytest.raises(MalformedInputError, match=problem):
        parse_hints_record(line, 0, "hints.jsonl line 1")


def test_hints_that_decompress_past_the_bound_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import trainwitness.commit.hints as hints

    monkeypatch.setattr(hints, "MAX_STEP_HINT_BYTES", 1 << 16)
    bomb = StepHints(state_hints=bytes(1 << 20))  # a megabyte of zeros packs into a few dozen bytes
    with pytest.raises(MalformedInputError, match="decompresses to more than"):
        parse_hints_record(hints_record(0, bomb), 0, "line")


def test_replay_refuses_a_hint_far_from_any_boundary() -> None:
    with pytest.raises(ReplayMismatchError, match="not near a rounding boundary"):
        round_step(SMALL, [RoundingTarget("model/w", torch.tensor([1.0, 1.2]))], encode_hints([(0, 0, True)]))


def test_replay_follows_hints_for_values_on_either_side_of_the_boundary() -> None:
    recorded = torch.tensor([1.18])  # just below the boundary 1.1875: rounds down, hinted
    hints = round_step(SMALL, [RoundingTarget("model/w", recorded)])
    replayed = torch.tensor([1.195])  # the verifier's noisy value is just above it
    round_step(SMALL, [RoundingTarget("model/w", replayed)], hints)
    assert recorded.item() == replayed.item() == 1.0


def test_large_and_strided_tensors_round_like_small_contiguous_ones() -> None:
    # Rounding runs in chunks of values; hints past the first chunk must name the right element.
    grid = Grid(mantissa_bits=12, margin_log2=6, floor_exponent=-8)
    torch.manual_seed(0)
    x = torch.randn(700, 1000) * 0.01
    whole = x.clone()
    hints = round_step(grid, [RoundingTarget("model/w", whole)])
    pieces = [x.reshape(-1)[i : i + 1000].clone() for i in range(0, x.numel(), 1000)]
    for piece in pieces:
        round_step(grid, [RoundingTarget("model/w", piece)])
    assert torch.equal(whole.reshape(-1), torch.cat(pieces))
    elements = [e for _, e, _ in decode_hints(hints, [x.numel()])]
    assert max(elements) > 600_000  # hints from the last chunk
    strided = x.clone().t().contiguous().t()  # same values, column-major storage
    assert round_step(grid, [RoundingTarget("model/w", strided)]) == hints and torch.equal(strided, whole)
    noisy = x * (1 + torch.randn_like(x) * 1e-7)  # the verifier's values
    round_step(grid, [RoundingTarget("model/w", noisy)], hints)
    assert torch.equal(noisy, whole)


def test_a_state_or_gradient_of_an_unsupported_dtype_is_refused_by_name() -> None:
    from trainwitness.run.exact import gradient_targets, rounding_targets

    with pytest.raises(MalformedInputError, match=r"model/w is torch.bfloat16"):
        rounding_targets({"model/w": torch.zeros(3, dtype=torch.bfloat16)})
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))
    p.grad = torch.zeros(3, dtype=torch.float16)
    with pytest.raises(MalformedInputError, match="gradient of optimizer parameter 0"):
        gradient_targets([p])


def test_gradient_floor_counts_from_the_tensors_own_largest_magnitude() -> None:
    grid = Grid(mantissa_bits=2, margin_log2=4, floor_exponent=-2)
    g = torch.tensor([0.75, 0.05, -0.1, 1e-30])
    scale = gradient_scale(grid, g)
    assert scale == -1  # 0.75 lies in [2^-1, 2^0)
    round_step(grid, [RoundingTarget("gradient", g, scale)])
    # Floor binade 2^-3: below it one uniform cell of 2^-5; 0.05 -> 2 cells, 0.1 -> 3 cells, 1e-30 -> 0.
    assert g.tolist() == [0.75, 0.0625, -0.09375, 0.0]


def test_verifier_accepts_a_recorded_gradient_scale_only_next_to_its_own() -> None:
    grid = DEFAULT_EXACT.gradients
    check_gradient_scale(grid, torch.tensor([0.3, -0.01]), -2, "g")  # its own binade
    check_gradient_scale(grid, torch.tensor([0.49999999]), -1, "g")  # within the window of 2^-1: the prover's may differ
    for claimed in (-1, -3, -4):
        with pytest.raises(ReplayMismatchError, match="gradient scale"):
            check_gradient_scale(grid, torch.tensor([0.3, -0.01]), claimed, "g")
    with pytest.raises(MalformedInputError, match="outside"):
        check_gradient_scale(grid, torch.tensor([0.3]), 500, "g")


def test_float32_step_and_float64_reference_land_on_the_same_grid_points_given_the_hints() -> None:
    from trainwitness.run.environment import apply_execution_settings
    from trainwitness.run.loop import ExactHooks, TrainingRun, snapshot
    from trainwitness.run.spec import load_entry_point, resolve_hyperparameters

    apply_execution_settings(1)
    function = load_entry_point(DIGITS)
    hp = resolve_hyperparameters(function.defaults, {"dropout": 0.0})
    run = TrainingRun.start(function, hp)
    run.run(0, 5, lambda *a: None, ExactHooks(DEFAULT_EXACT, lambda s: None))  # a state with momentum, on the grid
    batch = run.spec.dataset.batch(run.sampler.batch_ids(5))
    before = snapshot(run.capture())
    run.spec.step(batch)
    unrounded = {n: t.clone() for n, t in run.trainable().tensors.items() if t.is_floating_point()}
    run.restore(snapshot(before))
    _, hints = run.exact_step(5, batch, ExactHooks(DEFAULT_EXACT, lambda s: None))  # the prover, in float32
    f32 = {n: t.clone() for n, t in run.trainable().tensors.items() if t.is_floating_point()}
    # The verifier: the same step in float64 from the same state (parameters, momentum, learning rate).
    run.restore(snapshot(before))
    run.spec.model.double()
    for s in run.spec.optimizer.state.values():
        s["momentum_buffer"] = s["momentum_buffer"].double()
    double_batch = {"image": batch["image"].double(), "label": batch["label"]}
    run.spec.step(double_batch)
    differ_before = sum(int((t.to(torch.float32) != unrounded[n]).sum()) for n, t in run.trainable().tensors.items() if n in unrounded)
    assert differ_before > 100  # the float64 step really is different before rounding
    run.restore(snapshot(before))
    run.spec.model.double()
    for s in run.spec.optimizer.state.values():
        s["momentum_buffer"] = s["momentum_buffer"].double()
    run.exact_step(5, double_batch, ExactHooks(DEFAULT_EXACT, lambda s: hints))
    f64 = {n: t.clone() for n, t in run.trainable().tensors.items() if t.is_floating_point()}
    assert f64.keys() == f32.keys()
    for n in f32:
        assert torch.equal(f32[n], f64[n].to(torch.float32)), n


# -- the cross-thread noise the tests below need, built deliberately ------------------------------------


def test_the_noisy_spec_reduces_differently_with_1_and_2_threads_identically_on_every_cpu() -> None:
    from ...support.specs.thread_noise_spec import chunked_linear

    # Inputs made by exactly rounded float32 divisions (no RNG, no libm): the same bits everywhere.
    x = (torch.arange(32 * 64) % 17).reshape(32, 64).float() / 16
    w = ((torch.arange(128 * 64) * 7919) % 1000 - 500).reshape(128, 64).float() / 999
    one, two = chunked_linear(x, w, torch.zeros(128), 1), chunked_linear(x, w, torch.zeros(128), 2)
    assert int((one != two).sum()) == 3267  # of 4096: IEEE 754 float32, the same count on every CPU
    assert float((one.double() - x.double() @ w.double().t()).abs().max()) < 1e-6  # last-bit noise, nothing more


def test_a_plain_noisy_run_lands_elsewhere_with_1_thread_than_with_2(tmp_path: Path) -> None:
    finals = [
        record_run(NOISY, {"total_steps": 3, "checkpoint_interval": 3}, tmp_path / f"s{t}", tmp_path / f"w{t}", torch_threads=t).final
        for t in (1, 2)
    ]
    assert finals[0].state_digest != finals[1].state_digest


# -- exact mode through the product path ------------------------------------------------------------


def test_exact_run_recorded_with_2_threads_verifies_bitwise_with_1_thread(exact_run: RecordedRun, capsys) -> None:
    assert main(exact_run.verify_args("--all", "--threads", "1")) == 0
    out = capsys.readouterr().out
    assert "ACCEPT" in out and "exact mode" in out and "replayed 3 of 3 segments" in out


def test_exact_mode_is_signed_and_its_hints_are_committed(exact_run: RecordedRun) -> None:
    payload = json.loads(_payload(exact_run))
    assert payload["predicate"]["exact"] == DEFAULT_EXACT.to_json()
    assert payload["predicate"]["commitments"]["hints"]["size"] == SHORT["total_steps"]
    assert len((exact_run.store / HINTS_FILE).read_bytes().splitlines()) == SHORT["total_steps"]


def _payload(run: RecordedRun) -> str:
    import base64

    return base64.b64decode(json.loads(run.attestation.read_bytes())["payload"]).decode()


def test_exact_mode_off_changes_nothing(plain_run: RecordedRun) -> None:
    assert "exact" not in json.loads(_payload(plain_run))["predicate"]
    assert "exact" not in json.loads((plain_run.store / "run.json").read_bytes())
    assert not (plain_run.store / HINTS_FILE).exists()


def _forge_hints_and_re_sign(run: RecordedRun, forge: Callable[[int, StepHints], StepHints]) -> None:
    """Rewrite every step's hints record through ``forge`` and re-sign with the prover's key."""
    path = run.store / HINTS_FILE
    lines = path.read_bytes().splitlines()
    forged = [hints_record(step, forge(step, parse_hints_record(line, step, "line"))) for step, line in enumerate(lines)]
    path.write_bytes(b"".join(line + b"\n" for line in forged))
    run.attestation.write_bytes(attest_store(run.store, run.weights, load_private_key(run.private_key), replay_check=False))


def test_verify_rejects_a_tampered_hint_even_when_re_signed(exact_run: RecordedRun) -> None:
    # Claim a value far from any boundary was hinted: flip in a hint for element 0 of tensor 0
    # at every step that has none there (at least one such step exists).
    def with_hint_at_0(step: int, hints: StepHints) -> StepHints:
        entries = decode_hints(hints.state_hints, [1 << 30] * 64)
        if not any((o, e) == (0, 0) for o, e, _ in entries):
            entries = sorted([*entries, (0, 0, True)])
        return replace(hints, state_hints=encode_hints(entries))

    _forge_hints_and_re_sign(exact_run, with_hint_at_0)
    report = _verify(exact_run, threads=1)
    assert not report.accepted
    assert "not near a rounding boundary" in report.checks[-1].detail


def test_verify_rejects_a_gradient_scale_moved_by_one_binade_even_when_re_signed(exact_run: RecordedRun) -> None:
    def coarser_at_step_0(step: int, hints: StepHints) -> StepHints:  # a grid twice as coarse for tensor 0
        scales = hints.gradient_scales
        return replace(hints, gradient_scales=(scales[0] + 1, *scales[1:])) if step == 0 else hints

    _forge_hints_and_re_sign(exact_run, coarser_at_step_0)
    report = _verify(exact_run, threads=1)
    assert not report.accepted
    assert "gradient scale" in report.checks[-1].detail


def test_verify_rejects_an_exact_attestation_stripped_of_its_mode(exact_run: RecordedRun) -> None:
    from trainwitness.identity.signing import seal_envelope

    statement = json.loads(_payload(exact_run))
    del statement["predicate"]["exact"]
    exact_run.attestation.write_bytes(seal_envelope(canonical_json(statement), load_private_key(exact_run.private_key)))
    assert main(exact_run.verify_args("--all")) == 2  # the commitments name a hints tree: malformed


# -- without exact mode: bitwise replay needs the recorded thread count, bounded accepts ---------------


def test_plain_run_recorded_with_2_threads_is_refused_before_replay_with_1_thread(plain_run: RecordedRun, capsys) -> None:
    # The auditor's thread count cannot make the claim false: exit 2 naming the fix, before any replay.
    assert main(plain_run.verify_args("--all", "--threads", "1", "--sandbox", "off")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "trainwitness: error: --threads 1: bitwise replay needs the recorded 2 threads: "
        "use --threads 2, --bounded, or a run recorded with --exact"
    )


def test_plain_run_is_accepted_by_bounded_mode_with_the_distance_shown(plain_run: RecordedRun, capsys) -> None:
    assert main(plain_run.verify_args("--all", "--threads", "1", "--bounded")) == 0
    out = capsys.readouterr().out
    assert "ACCEPT" in out and "WEAKER THAN EXACT" in out and "segment 0: distance" in out
    report = _verify(plain_run, threads=1, bounded=True)
    distances = [s.distance.overall for s in report.segments if s.distance is not None]
    assert len(distances) == 3 and all(0 < d < BOUND for d in distances)  # it really differs, within the bound
    assert report.bounded_summary()["steering_room"] == pytest.approx(3 * BOUND)


# -- the text model: AdamW, whose normalisation turns last-bit gradient noise into whole cells ------------

LM_FAST = "trainwitness.workloads.lm:lm_fast"
SHORT_LM = {"total_steps": 8, "checkpoint_interval": 4, "warmup_steps": 2}


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RecordedRun]:
    root = tmp_path_factory.mktemp("lm")
    return {
        # Signed without the pre-signing replay (two more segments of the slowest model in the suite);
        # the digits fixtures above run it, in exact mode and plain.
        "exact": record_and_sign(root / "exact", LM_FAST, SHORT_LM, threads=2, exact=DEFAULT_EXACT, replay_check=False),
        "plain": record_and_sign(root / "plain", LM_FAST, SHORT_LM, threads=2, replay_check=False),
    }


def test_exact_text_model_recorded_with_2_threads_verifies_bitwise_with_1_thread(lm_runs: dict[str, RecordedRun]) -> None:
    report = _verify(lm_runs["exact"], threads=1)
    assert report.accepted, report.to_text()
    assert len(report.segments) == 2 and report.exact == DEFAULT_EXACT.to_json()


def test_plain_text_model_recorded_with_2_threads_is_accepted_by_bounded_mode_with_1(lm_runs: dict[str, RecordedRun]) -> None:
    # Whether its bits differ with 1 thread depends on the CPU's BLAS; within the bound they are everywhere.
    bounded = _verify(lm_runs["plain"], threads=1, bounded=True)
    assert bounded.accepted, bounded.to_text()
    distances = [s.distance.overall for s in bounded.segments if s.distance is not None]
    assert len(distances) == 2 and all(0 <= d < BOUND for d in distances)


# -- the forger's view --------------------------------------------------------------------------------


def test_steering_forger_just_under_the_bound_is_accepted_by_bounded_mode(plain_run: RecordedRun) -> None:
    steer_every_checkpoint(plain_run, fraction_of_bound=0.5, exact=None)
    report = _verify(plain_run, threads=1, bounded=True)
    assert report.accepted, report.to_text()  # the slack is real: the forged checkpoints pass
    assert max(s.distance.overall for s in report.segments if s.distance is not None) > 0.3 * BOUND
    assert not _verify(plain_run).accepted  # bitwise, with the recorded thread count: the steering shows


def test_steering_forger_is_rejected_in_exact_mode(exact_run: RecordedRun) -> None:
    steer_every_checkpoint(exact_run, fraction_of_bound=0.5, exact=DEFAULT_EXACT)
    report = _verify(exact_run, threads=1)
    assert not report.accepted
    assert report.checks[-1].name == "replay"


@pytest.mark.parametrize("calls", [0, 2])
def test_exact_mode_needs_exactly_one_optimizer_step_per_training_step(calls: int) -> None:
    from trainwitness.data.datasets import TensorDataset
    from trainwitness.run.loop import ExactHooks, TrainingRun
    from trainwitness.run.spec import TrainingSpec

    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = model(batch["x"]).pow(2).mean()
        loss.backward()
        for _ in range(calls):
            optimizer.step()
        return loss

    x = torch.ones(2, 3)
    run = TrainingRun(spec=TrainingSpec(model, optimizer, None, TensorDataset("x", {"x": x}), step), hyperparameters={}, sampler=None)  # type: ignore[arg-type]
    with pytest.raises(MalformedInputError, match="did not call optimizer.step" if calls == 0 else "called optimizer.step\\(\\) twice"):
        run.exact_step(0, {"x": x}, ExactHooks(DEFAULT_EXACT, lambda s: None))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: GPU-recorded, CPU-verified")
def test_gpu_step_and_cpu_replay_land_on_the_same_grid_points_given_the_hints() -> None:
    import copy

    from trainwitness.data.datasets import TensorDataset
    from trainwitness.run.loop import ExactHooks, TrainingRun
    from trainwitness.run.spec import TrainingSpec

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    torch.backends.cuda.matmul.allow_tf32 = False

    def one_step(device: str, committed: StepHints | None) -> tuple[dict[str, torch.Tensor], StepHints]:
        m = copy.deepcopy(model).to(device)
        optimizer = torch.optim.AdamW(m.parameters(), lr=1e-3)

        def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            loss = torch.nn.functional.cross_entropy(m(batch["x"].to(device)), batch["y"].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss

        spec = TrainingSpec(m, optimizer, None, TensorDataset("xy", {"x": x, "y": y}), step)
        run = TrainingRun(spec=spec, hyperparameters={}, sampler=None)  # type: ignore[arg-type]
        _, hints = run.exact_step(0, {"x": x, "y": y}, ExactHooks(DEFAULT_EXACT, lambda s: committed))
        return {n: t.detach().to("cpu", copy=True) for n, t in run.trainable().tensors.items()}, hints

    gpu, hints = one_step("cuda", None)
    cpu, _ = one_step("cpu", hints)
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
    record_run(NOISY, SHORT, exact_run.store, exact_run.weights, torch_threads=2, exact=DEFAULT_EXACT)
    exact_run.attestation.write_bytes(attest_store(exact_run.store, exact_run.weights, load_private_key(exact_run.private_key)))
    assert len(hints.read_bytes().splitlines()) == SHORT["total_steps"]
    assert _verify(exact_run, threads=1).accepted
