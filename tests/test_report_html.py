"""`hil report`: the single-file HTML report of a small run, opened from disk in a real headless
browser (Debian's chromium driven by Playwright for Python; never a downloaded browser).

The browser must show the measurements and the attached plot, and the page must ask no other
host for anything. Its screenshot is kept as results/report-screenshot.png (a CI artifact).
On a machine without chromium, Playwright or the project's npm packages the browser test is
skipped, except in CI (the CI variable set), where that is a failure: CI installs them.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from hil.cli import report as report_cli
from hil.cli.report import ReportError, build, outside_references, strip_outside_calls

PROJECT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = PROJECT / "results" / "report-screenshot.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 15_000

BENCH = '''
import numpy as np
from hil.instruments.power_trace import PowerTrace

def test_sleep_current(measure, report):
    t = np.arange(4000) / 4000.0
    current = np.where((t > 0.2) & (t < 0.8), 4.2e-6, 3.1e-3)
    trace = PowerTrace(t, current, 3.3, t0=1000.0, name="sleep")
    report.power(trace, marks={"entering": 1000.2, "awake": 1000.8}, log=True)
    measure("sleep_current", trace.window(0.3, 0.7).mean(), unit="A", high=10e-6)
    measure("wake_count", 1)

def test_boot_time(measure):
    measure("boot_time", 0.9, unit="s", high=0.5)
'''


def missing(what: str) -> None:
    """Skip on a developer's machine without `what`; fail in CI, which installs it."""
    message = f"{what} is not installed (CI installs it: .ci/run and ./run)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def report_page(pytester: pytest.Pytester) -> Path:
    """The HTML report of a two-test run (a plot, three measurements, one failure)."""
    if not (PROJECT / "node_modules" / ".bin" / "allure").exists() or shutil.which("node") is None:
        missing("the allure npm package (npm ci)")
    pytester.makepyfile(test_bench=BENCH)
    pytester.runpytest_subprocess("--rig", "none", "-p", "no:cacheprovider", "--hil-results",
                                  "out", "--alluredir", "allure-results"
                                  ).assert_outcomes(passed=1, failed=1)
    return build(pytester.path / "allure-results", pytester.path / "report", cwd=PROJECT)


def test_report_shows_measurements_and_plot_in_a_real_browser(report_page: Path) -> None:
    if not Path(CHROMIUM).exists():
        missing(CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright (pip install -e .[test])")
    html = report_page.read_text(encoding="utf-8")
    assert outside_references(html) == [] and "googletagmanager" not in html
    outside: list[str] = []
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="hil-chromium-") as profile:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1300, "height": 1500})
        try:
            page = browser.new_page()
            page.on("request", lambda r: outside.append(r.url)
                    if not r.url.startswith(("file:", "data:", "blob:", "about:")) else None)
            page.goto(report_page.as_uri())
            page.get_by_text("test_sleep_current").first.click(timeout=WAIT_MS)
            page.get_by_text("sleep_current", exact=True).first.wait_for(timeout=WAIT_MS)
            for attachment in ("measurements", "sleep.png"):
                page.get_by_text(attachment, exact=True).first.click(timeout=WAIT_MS)
            page.wait_for_function("() => [...document.images].some(i => i.naturalWidth >= 800)",
                                   timeout=WAIT_MS)
            text = page.inner_text("body")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    # the parameter and the measurement table, with the value, unit, limit and verdict
    assert "4.2e-06 A in [-inf, 1e-05]: pass" in text
    assert "wake_count" in text and "1: info" in text
    assert "name\tvalue\tunit\tlow\thigh\toutcome\nsleep_current\t4.2e-06\tA\t\t1e-05\tpass\n" \
        "wake_count\t1\t\t\t\tinfo" in text
    assert outside == [], f"the report asked other hosts: {outside[:5]}"
    assert SCREENSHOT.stat().st_size > 20_000


def test_analytics_and_outside_scripts_are_removed() -> None:
    page = ('<html><head><script async src="https://www.googletagmanager.com/gtag/js?id=G-1">'
            '</script>\n<script>window.dataLayer = []; function gtag(){} gtag("js");</script>'
            '<script>const big = "keep me";</script><link href="//fonts.example.com/x.css">'
            '</head></html>')
    assert outside_references(page) == ["https://www.googletagmanager.com/gtag/js?id=G-1",
                                        "//fonts.example.com/x.css"]
    cleaned, removed = strip_outside_calls(page)
    assert removed == 2 and "keep me" in cleaned and "gtag" not in cleaned
    assert outside_references(cleaned) == ["//fonts.example.com/x.css"]   # build refuses this
    assert outside_references('<a href="https://allurereport.org">docs</a>') == []


def test_report_without_results_says_what_to_run(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ReportError, match="no Allure results in .*--alluredir"):
        build(tmp_path / "nothing", tmp_path / "report", cwd=PROJECT)
    assert report_cli.main([str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err.startswith("hil report: error: no Allure results")


def test_report_outside_the_project_says_where_allure_comes_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x-result.json").write_text("{}")
    monkeypatch.delenv("HIL_ALLURE", raising=False)
    with pytest.raises(ReportError, match="no package.json depending on the allure npm package"):
        build(tmp_path / "r", tmp_path / "report", cwd=tmp_path)
