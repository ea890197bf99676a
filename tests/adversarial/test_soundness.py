"""Issue 11: each kind of gap between what is signed or stored and what the verifier recomputes, closed.

Every test holds the right value: the verdict (and the check, and what it names) that the evidence
calls for, on every draw where the kind is caught on every draw.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainwitness.cli import main
from trainwitness.verifier.draw import choose_segments

from ..support.forgers import (
    Run,
    _set,
    copy_run,
    float64_momentum,
    resign_claim,
    sign,
    swap_published_weights,
    verdict,
)

SEEDS = range(6)


def _cli(run: Run, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    status = main(run.verify_args(*extra, "--sandbox", "off"))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# -- item 1: the published weights are bound to the trained state ------------------------------------

@pytest.mark.parametrize("older", [False, True], ids=["weights-plus-0.01", "an-older-checkpoint-s-weights"])
def test_swapped_weights_with_an_edited_leaf_are_rejected_on_every_draw(older: bool, honest: Run, tmp_path: Path) -> None:
    forgery = swap_published_weights(honest, tmp_path, older=older)
    for seed in SEEDS:
        assert verdict(forgery, 1, seed) == (False, "replay")
    assert verdict(forgery, None, None) == (False, "replay")


def test_swapped_weights_are_named_by_the_last_segment(honest: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    forgery = swap_published_weights(honest, tmp_path)
    m = forgery.segment_count()
    status, out, _ = _cli(forgery, capsys, "--segments", "1", "--seed", "0")
    assert status == 1 and "[ok] final-weights" in out
    assert f"[FAIL] replay: segment {m - 1} (steps" in out and f"replay does not land on checkpoint {m}" in out


def test_swapped_weights_are_rejected_by_sandboxed_workers_and_in_exact_mode(honest: Run, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from trainwitness.commit.hints import DEFAULT_EXACT

    from ..support.runs import DIGITS, record_and_sign

    forgery = swap_published_weights(honest, tmp_path / "plain")
    assert main(forgery.verify_args("--segments", "1", "--seed", "3", "--workers", "2")) == 1
    assert "[FAIL] replay" in capsys.readouterr().out
    exact = record_and_sign(tmp_path / "exact", DIGITS, {"total_steps": 16, "checkpoint_interval": 4, "hidden": 16}, exact=DEFAULT_EXACT)
    forgery = swap_published_weights(exact, tmp_path / "exact-forged")  # type: ignore[arg-type]
    assert main(forgery.verify_args("--segments", "1", "--seed", "3", "--sandbox", "off")) == 1
    out = capsys.readouterr().out
    assert "[FAIL] replay" in out and "exact mode" in out


# -- item 3: what is committed is what runs --------------------------------------------------------

def test_a_float64_momentum_start_is_rejected_on_every_draw(honest: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    forgery = float64_momentum(honest, tmp_path)
    for seed in SEEDS:
        assert verdict(forgery, 1, seed) == (False, "replay")
    status, out, _ = _cli(forgery, capsys, "--segments", "1", "--seed", "0")
    assert status == 1
    assert "restores to a state other than the one it commits" in out and "momentum_buffer" in out


def test_a_float64_momentum_checkpoint_is_caught_from_the_segment_it_starts(honest: Run, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # Checkpoint 4 restores to the honest float32 state: the segment starting there used to replay and pass.
    m, i = honest.segment_count(), 4
    forgery = float64_momentum(honest, tmp_path, index=i)
    seed = next(s for s in range(10_000) if i in choose_segments(m, 2, s) and i - 1 not in choose_segments(m, 2, s))
    status, out, _ = _cli(forgery, capsys, "--segments", "2", "--seed", str(seed))
    assert status == 1
    assert f"[FAIL] replay: segment {i}: checkpoint {i} restores to a state other than the one it commits" in out


# -- item 2: every signed field is checked, or shown as declared; unknown fields are refused ----------

@pytest.mark.parametrize(
    ("edit", "check", "cause"),
    [
        (_set("predicate", "code", "file_count", 99), "code", "the attestation claims 99"),
        (_set("predicate", "code", "source_root", "elsewhere"), "code", "the attestation names 'elsewhere'"),
        (_set("predicate", "data", "dataset", "imagenet"), "data", "the attestation names 'imagenet'"),
    ],
    ids=["file_count", "source_root", "dataset"],
)
def test_false_signed_claims_are_rejected(edit, check: str, cause: str, honest: Run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                          capsys: pytest.CaptureFixture[str]) -> None:
    forgery = resign_claim(honest, tmp_path, edit)
    status, out, _ = _cli(forgery, capsys, "--segments", "1", "--seed", "0")
    assert status == 1, out
    assert any(line.strip().startswith(f"[FAIL] {check}: ") and cause in line for line in out.splitlines()), out


@pytest.mark.parametrize(
    "path",
    [
        ("audited_by",),
        ("predicate", "audited_by"),
        ("predicate", "code", "reviewed"),
        ("predicate", "environment", "gpu_hours"),
        ("predicate", "data", "sampler", "shuffle"),
        ("predicate", "final", "loss"),
        ("predicate", "commitments", "batches", "algorithm"),
        ("subject", 0, "annotations"),
    ],
    ids=lambda p: ".".join(map(str, p)),
)
def test_unknown_signed_fields_are_refused(path: tuple, honest: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[type-arg]
    forgery = resign_claim(honest, tmp_path, _set(*path, "true"))
    status, out, err = _cli(forgery, capsys, "--segments", "1", "--seed", "0")
    assert status == 2 and "ACCEPT" not in out
    assert "fields this verifier does not know" in err and path[-1] in err
    assert main(["inspect", str(forgery.attestation)]) == 2  # nor shown as if attested


@pytest.mark.parametrize("commit", [12345, "main", "ab" * 19 + "a", "AB" * 20, ["ab" * 20]], ids=str)
def test_a_git_commit_of_the_wrong_form_is_refused(commit: object, honest: Run, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    forgery = resign_claim(honest, tmp_path, _set("predicate", "code", "git_commit", commit))
    status, _, err = _cli(forgery, capsys, "--segments", "1", "--seed", "0")
    assert status == 2 and "git_commit" in err


def test_claims_nothing_checks_are_shown_as_declared(honest: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edits = [
        _set("predicate", "code", "source_uri", "https://example.org/not-the-source.git"),
        _set("predicate", "code", "git_commit", "0" * 40),
        _set("predicate", "environment", "platform", "a machine that does not exist"),
    ]
    forgery = resign_claim(honest, tmp_path, lambda statement: [edit(statement) for edit in edits])
    report = tmp_path / "report.json"
    status, out, _ = _cli(forgery, capsys, "--segments", "1", "--seed", "0", "--json", str(report))
    assert status == 0, out  # true or not, nothing contradicts them: accepted, and said to be unchecked
    declared = out[out.index("declared, not verified") :]
    for shown in ('predicate.code.source_uri = "https://example.org/not-the-source.git"',
                  f'predicate.code.git_commit = "{"0" * 40}"', 'predicate.environment.platform = "a machine that does not exist"'):
        assert shown in declared
    assert json.loads(report.read_text())["declared_not_verified"]["predicate.code.source_uri"] == "https://example.org/not-the-source.git"
    assert main(["inspect", str(forgery.attestation)]) == 0
    assert '[declared] predicate.code.source_uri = "https://example.org/not-the-source.git"' in capsys.readouterr().out


def test_an_honest_copy_resigned_unchanged_is_accepted(honest: Run, tmp_path: Path) -> None:
    run = copy_run(honest, tmp_path)
    sign(run)
    assert verdict(run, 1, 0) == (True, "")


# -- item 4: everything the interpreter loads for build and step is in the code identity, or refused --

def test_planted_bytecode_never_runs_in_replay(honest: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ..support.code_forgers import planted_bytecode

    forgery = planted_bytecode(honest, tmp_path)
    status, out, _ = _cli(forgery, capsys, "--segments", "1", "--seed", "0")
    # The run trained with the .pyc (loss doubled); replay runs the attested source: the last segment lands elsewhere.
    assert status == 1 and "[ok] code" in out and "[FAIL] replay" in out and "ACCEPT" not in out


def test_bytecode_or_machine_code_in_an_attested_tree_is_refused(honest: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ..support.code_forgers import sibling_package_run

    run, _, sibling = sibling_package_run(honest, tmp_path / "run")
    for name in ("helper.pyc", "fast.cpython-311-x86_64-linux-gnu.so"):
        (sibling / name).write_bytes(b"\0")
        status, _, err = _cli(run, capsys, "--segments", "1", "--seed", "0")
        assert status == 2 and f"{name} is compiled code" in err
        (sibling / name).unlink()


def test_a_sibling_package_is_in_the_identity_and_checked(honest: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ..support.code_forgers import sibling_package_run

    run, models, sibling = sibling_package_run(honest, tmp_path / "run")
    assert main(["inspect", str(run.attestation)]) == 0
    assert f'[auditor] predicate.code.packages[{models}].name = "{models}"' in capsys.readouterr().out
    status, out, _ = _cli(run, capsys, "--segments", "1", "--seed", "0")
    assert status == 0 and "and 1 local packages" in out, out
    # The published sibling differs from the one the run imported: named, before any code runs.
    (sibling / "net.py").write_text((sibling / "net.py").read_text().replace("relu", "tanh"))
    status, out, _ = _cli(run, capsys, "--segments", "1", "--seed", "0")
    assert status == 1 and f"[FAIL] code: local package {models}:" in out and "changed: net.py" in out
    # Missing here: could not verify, naming it and the fix.
    sibling.rename(sibling.with_name("elsewhere"))
    status, out, err = _cli(run, capsys, "--segments", "1", "--seed", "0")
    assert status == 2 and f"local package {models}" in err and "PYTHONPATH" in err, out + err


def test_a_sibling_left_out_of_the_identity_is_refused_before_it_runs(honest: Run, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from ..support.code_forgers import sibling_package_run

    run, models, _ = sibling_package_run(honest, tmp_path / "run")
    hidden = resign_claim(run, tmp_path / "hidden", _set("predicate", "code", "packages", []))
    status, out, err = _cli(hidden, capsys, "--segments", "1", "--seed", "0")
    assert status == 2 and "ACCEPT" not in out
    assert f"module {models}" in err and "outside every attested source tree" in err


def test_installed_distributions_are_looked_up(honest: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def add(*distributions: dict[str, str]):  # type: ignore[no-untyped-def]
        def edit(statement: dict) -> None:  # type: ignore[type-arg]
            listed = statement["predicate"]["code"]["distributions"]
            names = {d["name"] for d in distributions}
            statement["predicate"]["code"]["distributions"] = sorted(
                [d for d in listed if d["name"] not in names] + list(distributions), key=lambda d: d["name"])
        return edit

    missing = resign_claim(honest, tmp_path / "missing", add({"name": "no-such-distribution-xyz", "version": "1.0"}))
    status, _, err = _cli(missing, capsys, "--segments", "1", "--seed", "0")
    assert status == 2 and "no-such-distribution-xyz 1.0" in err and "pip install" in err
    other = resign_claim(honest, tmp_path / "other", add({"name": "numpy", "version": "0.0.1"}))
    status, out, _ = _cli(other, capsys, "--segments", "1", "--seed", "0")
    assert status == 0 and "note: installed distribution differs: numpy recorded 0.0.1, here " in out
