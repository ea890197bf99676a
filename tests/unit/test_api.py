"""The public API at the package root: every advertised name resolves, and verify() cannot be ignored."""

from __future__ import annotations

import subprocess
import sys

import pytest

import trainwitness as tw

from ..support.runs import RecordedRun


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in tw.__all__:
        assert getattr(tw, name) is not None
    assert set(dir(tw)) == set(tw.__all__) == {"__version__", *tw._EXPORTS}
    with pytest.raises(AttributeError):
        tw.no_such_name  # noqa: B018


def test_importing_the_package_root_imports_no_torch() -> None:
    code = "import sys, trainwitness; sys.exit('torch' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_verify_returns_the_report_on_accept(digits_run: RecordedRun) -> None:
    report = tw.verify(digits_run.attestation, digits_run.store, digits_run.weights, digits_run.public_key,
                       tw.VerifyOptions(segments=1, sandbox="off"))
    assert report.accepted


def test_verify_raises_rejected_naming_the_failed_check(digits_run: RecordedRun) -> None:
    digits_run.weights.write_bytes(digits_run.weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(tw.Rejected) as caught:
        tw.verify(digits_run.attestation, digits_run.store, digits_run.weights, digits_run.public_key,
                  tw.VerifyOptions(segments=1, sandbox="off"))
    assert isinstance(caught.value, tw.VerificationError)
    assert caught.value.check == "final-weights"
    assert not caught.value.report.accepted


def test_the_verify_function_does_not_shadow_the_verify_module() -> None:
    import inspect

    import trainwitness.verifier

    assert callable(tw.verify) and inspect.isfunction(tw.verify)
    assert inspect.ismodule(trainwitness.verifier.verify)
