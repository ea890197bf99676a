"""The report people read: self-contained HTML (rendered in headless Chromium) and Markdown, hostile strings escaped."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from trainwitness.cli import main
from trainwitness.verifier.render import render_html, render_markdown, shown
from trainwitness.verifier.report import Report

from ...support.runs import RecordedRun

SECTIONS = ("checks", "timeline", "loss", "segments", "detection", "data", "licences", "lineage", "cost")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def audit_html(tmp_path_factory: pytest.TempPathFactory, _recorded_digits: RecordedRun) -> Path:
    """The digits audit's HTML report, with a policy so the licence section is filled."""
    pytest.importorskip("matplotlib")
    run = _recorded_digits.copied_to(tmp_path_factory.mktemp("report") / "run")
    out = run.root / "report.html"
    status = main(run.verify_args("--segments", "3", "--seed", "2", "--sandbox", "off", "--policy", "debian-dfsg", "--report", str(out)))
    assert status in (0, 1)  # the digits run signs no weights licence: debian-dfsg may reject; the report is written either way
    return out


def test_the_html_report_has_every_section_and_loads_nothing_from_outside(audit_html: Path) -> None:
    text = audit_html.read_text()
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in text, anchor
    assert text.count("<svg") >= 4  # timeline, loss curve, detection, data: matplotlib plots inlined
    assert not re.search(r"<(script|link|img|iframe)\b", text)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "not verified" in text  # the declared training time is marked as declared


def test_the_html_report_renders_in_headless_chromium(audit_html: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium); the HTML report is not rendered")
    shot = tmp_path / "report.png"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    subprocess.run([*common, "--window-size=1100,4000", f"--screenshot={shot}", audit_html.as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    dom = subprocess.run([*common, "--dump-dom", audit_html.as_uri()], check=True, capture_output=True, timeout=120, text=True).stdout
    for anchor in SECTIONS:
        assert f'id="{anchor}"' in dom, anchor


def test_hostile_strings_are_escaped_and_bidi_controls_shown_as_code_points() -> None:
    report = Report(attestation="a.json", subject="<script>alert(1)</script>\u202eevil", entry_point="x\x1b[31m")
    report.failed("code", 'detail with <b>markup</b> & "quotes"\u2066')
    report.notes.append("<img src=//x>")
    page = render_html(report)
    assert "<script>alert" not in page and "<img src" not in page and "<b>markup" not in page
    assert "\u202e" not in page and "\u2066" not in page and "\x1b" not in page
    assert "\\u202e" in page and "\\x1b" in page  # display.escape's code points, as in the text report
    md = render_markdown(report)
    assert "\\u202e" in md  # a backslash before a letter is literal in Markdown
    assert "<script>" not in md and "\u202e" not in md


def test_shown_leaves_ascii_text_readable_and_names_every_other_code_point() -> None:
    # Non-ASCII letters are shown as code points too: a Cyrillic e looks exactly like a Latin one.
    assert shown("CC-BY-4.0 & (c) 2026") == "CC-BY-4.0 &amp; (c) 2026"
    assert shown("donn\u00e9es h\u0435ad") == "donn\\xe9es h\\u0435ad"


def test_declared_fields_are_listed_as_declared_not_verified_in_html_and_markdown() -> None:
    report = Report(attestation="a.json", subject="m.safetensors sha256:00", entry_point="pkg:spec")
    report.passed("signature", "DSSE envelope signed by the given Ed25519 key")
    report.declared = [("predicate.code.source_uri", "https://example.org/src\u202e"), ("predicate.weights_license", "MIT")]
    page = render_html(report)
    assert "Declared, not verified" in page and "predicate.code.source_uri" in page and "\\u202e" in page and "\u202e" not in page
    md = render_markdown(report)
    assert "## Declared, not verified" in md and "predicate.weights\\_license = \"MIT\"" in md
    if __import__("importlib.util").util.find_spec("rich") is not None:  # the terminal summary lists them too
        from trainwitness.verifier.terminal import print_report

        terminal = _Terminal()
        print_report(report, terminal)
        assert "declared, not verified" in terminal.getvalue() and "predicate.code.source_uri" in terminal.getvalue()


def test_the_markdown_report_has_every_section(audit_html: Path, tmp_path: Path, _recorded_digits: RecordedRun) -> None:
    run = _recorded_digits.copied_to(tmp_path / "run")
    out = tmp_path / "report.md"
    assert main(run.verify_args("--segments", "1", "--seed", "1", "--sandbox", "off", "--report", str(out))) == 0
    text = out.read_text()
    for title in ("Checks", "Timeline of the run", "Loss curve", "Replayed segments", "Detection probability", "Data read",
                  "Licences against the policy", "Lineage", "Cost to reproduce"):
        assert f"## {title}" in text, title
    assert "recorded: 120 steps, last " in text  # the committed per-step losses of the 120-step run


def test_a_report_name_that_is_neither_html_nor_markdown_is_a_usage_error(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(digits_run.verify_args("--segments", "1", "--sandbox", "off", "--report", str(digits_run.root / "r.pdf"))) == 2
    assert "must end in .html or .md" in capsys.readouterr().err


class _Terminal(__import__("io").StringIO):
    def isatty(self) -> bool:
        return True


def test_the_terminal_summary_uses_rich_on_a_terminal_and_plain_text_otherwise() -> None:
    pytest.importorskip("rich")
    import io

    from trainwitness.verifier.terminal import print_report

    report = Report(attestation="a.json", subject="model.safetensors sha256:00\u202e", entry_point="pkg:spec")
    report.passed("signature", "DSSE envelope signed by the given Ed25519 key")
    report.failed("replay", "segment 3 does not land\u2066 on checkpoint 4")
    plain = io.StringIO()
    print_report(report, plain)
    assert plain.getvalue() == report.to_text() + "\n"
    terminal = _Terminal()
    print_report(report, terminal)
    shown_text = terminal.getvalue()
    assert "REJECT" in shown_text and "FAIL" in shown_text and "segment 3 does not land" in shown_text
    assert "\u202e" not in shown_text and "\u2066" not in shown_text and "\\u202e" in shown_text


def test_the_data_section_says_proven_only_when_the_data_check_passed() -> None:
    report = Report(attestation="a.json", subject="m sha256:00", entry_point="pkg:spec")
    report.data_bytes_read, report.data_total_bytes, report.data_samples_read = 10, 100, 2
    report.failed("data", "sample 3 does not match its manifest entry")
    assert "not all proven against the signed manifest root" in render_html(report)
    assert "not all proven" in render_markdown(report)
    report.checks.clear()
    report.passed("data", "2 samples proven")
    assert "each proven against the signed manifest root" in render_html(report) and "not all proven" not in render_html(report)
    assert "each proven" in render_markdown(report)
