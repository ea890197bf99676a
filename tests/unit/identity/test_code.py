"""Code identity: verify --code DIR refuses code whose tree differs and names the files; the source URI is signed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from trainwitness.cli import main
from trainwitness.identity.code import SourceFile, diff_files, locate_source_root, source_files

from ...support.runs import RecordedRun, record_and_sign


def _copy_workloads(tmp_path: Path) -> Path:
    copy = tmp_path / "workloads"
    shutil.copytree(locate_source_root("trainwitness.workloads.digits:digits"), copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_diff_names_added_removed_and_changed_files() -> None:
    a = [SourceFile("a.py", "sha256:" + "1" * 64, False), SourceFile("b.py", "sha256:" + "2" * 64, False), SourceFile("c.py", "sha256:" + "3" * 64, False)]
    b = [SourceFile("a.py", "sha256:" + "1" * 64, True), SourceFile("c.py", "sha256:" + "3" * 64, False), SourceFile("d.py", "sha256:" + "4" * 64, False)]
    diff = diff_files(a, b)
    assert (diff.added, diff.removed, diff.changed) == (("d.py",), ("b.py",), ("a.py",))
    assert diff.describe() == "added: d.py; removed: b.py; changed: a.py"
    assert not diff_files(a, a)


def test_verify_accepts_an_identical_code_copy(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    assert main(digits_run.verify_args("--segments", "1", "--code", str(_copy_workloads(tmp_path)))) == 0
    assert "[ok] code" in capsys.readouterr().out


def test_verify_refuses_a_code_copy_that_differs_and_lists_the_files(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    copy = _copy_workloads(tmp_path)
    with open(copy / "digits.py", "a") as f:
        f.write("\n# a harmless-looking edit\n")
    (copy / "extra.py").write_text("x = 1\n")
    (copy / "__init__.py").unlink()
    assert main(digits_run.verify_args("--segments", "1", "--code", str(copy))) == 1
    out = capsys.readouterr().out
    assert "[FAIL] code:" in out
    assert "added: extra.py; removed: __init__.py; changed: digits.py" in out


def test_an_executable_bit_counts_as_a_change(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    copy = _copy_workloads(tmp_path)
    (copy / "digits.py").chmod(0o755)
    assert main(digits_run.verify_args("--segments", "1", "--code", str(copy))) == 1
    assert "changed: digits.py" in capsys.readouterr().out


def test_a_file_list_that_does_not_hash_to_the_signed_digest_is_rejected(digits_run: RecordedRun, capsys) -> None:
    declared = json.loads((digits_run.store / "run.json").read_text())
    declared["code_files"][0]["sha256"] = "sha256:" + "0" * 64
    (digits_run.store / "run.json").write_text(json.dumps(declared))
    assert main(digits_run.verify_args("--segments", "1")) == 1
    assert "code file list does not hash to the signed tree digest" in capsys.readouterr().out


def test_code_from_an_auditor_copy_of_a_package_is_imported_and_checked(tmp_path: Path, monkeypatch, capsys) -> None:
    """A third-party spec package: --code points at the auditor's copy, which is what replay imports."""
    package = tmp_path / "prover" / "twspec_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "spec.py").write_text("from trainwitness.workloads.digits import digits as spec  # noqa: F401\n")
    with monkeypatch.context() as m:
        m.syspath_prepend(str(package.parent))
        run = record_and_sign(tmp_path / "run", "twspec_pkg.spec:spec", {"total_steps": 4, "checkpoint_interval": 2},
                              source_uri="https://example.org/twspec.git")
    for name in [n for n in sys.modules if n.startswith("twspec_pkg")]:
        monkeypatch.delitem(sys.modules, name)
    auditor = tmp_path / "auditor" / "twspec_pkg"
    shutil.copytree(package, auditor, ignore=shutil.ignore_patterns("__pycache__"))
    (auditor / "spec.py").write_text((auditor / "spec.py").read_text() + "# changed\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # --code prepends the auditor's copy; undone after the test
    assert main(run.verify_args("--all", "--code", str(auditor))) == 1
    assert "changed: spec.py" in capsys.readouterr().out
    shutil.copy(package / "spec.py", auditor / "spec.py")
    # In-process replay, so that what was imported can be inspected here.
    assert main(run.verify_args("--all", "--code", str(auditor), "--sandbox", "off")) == 0
    out = capsys.readouterr().out
    assert 'declared, not verified' in out and 'predicate.code.source_uri = "https://example.org/twspec.git"' in out
    assert Path(sys.modules["twspec_pkg"].__file__).parent == auditor


@pytest.mark.parametrize("name", [".hidden.py", "__pycache__/x.pyc"])
def test_ignored_files_do_not_count(tmp_path: Path, name: str) -> None:
    (tmp_path / "a.py").write_text("a\n")
    before = source_files(tmp_path)
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("ignored\n")
    assert source_files(tmp_path) == before

