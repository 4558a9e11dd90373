"""Allure results of a real test-bench run (pytester, the simulated console and Otii): the
measurements as parameters and a table, transcripts, plots with their CSV, the rig as
environment and labels, steps, and no secret anywhere in what was written."""
from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path

import pytest

from hil.fixtures.allure_results import measurement_table, redact, secrets
from hil.report.measurements import Measurement
from hil.report.summary import table

PASSWORD = "pw-Zq81-never-print"        # the Otii account's password for this run
FILE_PASSWORD = "file-pw-Kx77-secret"    # ... and the one in the rig's credentials file

BENCH = '''
import numpy as np, os
from hil.instruments.power_trace import PowerTrace

def test_sleep(console, power, measure, report):
    power.on()
    console.expect(r"boot: ok", timeout=5)
    with report.step("capture sleep"):
        with power.capture("sleep") as trace:
            console.writeline("sleep 1")
            entering = console.expect(r"sleep: entering", timeout=2)
            awake = console.expect(r"sleep: awake", timeout=3)
    report.power(trace, marks={"entering": entering, "awake": awake}, log=True)
    # the median: a console line delayed on a loaded machine must not pull idle current in
    measure("sleep_current", trace.between(entering.time + 0.1, awake.time - 0.1).percentile(50),
            unit="A", low=0.5e-6, high=10e-6)
    measure("boots", 1)

def test_leaks_the_password(console, power, measure):
    power.on()
    console.expect(r"boot: ok", timeout=5)
    console.writeline("echo " + os.environ["OTII_PASSWORD"] + " and " + FILE_SECRET)
    console.expect(r"and", timeout=2)
    measure("boot_time", 0.9, unit="s", high=0.5)

FILE_SECRET = open("creds.json").read().split('"')[-2]
'''


@pytest.fixture
def bench(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A scratch project: a rig with the simulated console and Otii, credentials in a file for
    one table and in OTII_PASSWORD for the other run."""
    monkeypatch.setenv("OTII_USERNAME", "ada")
    monkeypatch.setenv("OTII_PASSWORD", PASSWORD)
    (pytester.path / "creds.json").write_text(json.dumps({"username": "bench-user",
                                                          "password": FILE_PASSWORD}))
    (pytester.path / "rig.toml").write_text(textwrap.dedent('''
        [console]
        kind = "serial"
        url = "sim:dut"
        [power]
        kind = "otii"
        host = "sim"
        credentials = "creds.json"
    '''))
    pytester.makepyfile(test_bench=BENCH)
    return pytester


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess("--rig", "rig.toml", "-p", "no:cacheprovider",
                                  "--hil-results", "out", "--alluredir", "allure-results",
                                  *args)


def results(p: pytest.Pytester) -> dict[str, dict]:
    found = [json.loads(f.read_text()) for f in (p.path / "allure-results").glob("*-result.json")]
    return {r["name"]: r for r in found}


def attachments(p: pytest.Pytester, result: dict) -> dict[str, Path]:
    return {a["name"]: p.path / "allure-results" / a["source"] for a in result["attachments"]}


def test_measurements_plots_transcripts_rig_steps_and_no_secrets(bench: pytest.Pytester) -> None:
    outcome = run(bench)
    outcome.assert_outcomes(passed=1, failed=1)
    got = results(bench)
    sleep, leak = got["test_sleep"], got["test_leaks_the_password"]

    params = {p["name"]: p["value"] for p in sleep["parameters"]}
    assert params["sleep_current"].startswith("4.") and \
        params["sleep_current"].endswith(" A in [5e-07, 1e-05]: pass")
    assert params["boots"] == "1: info"
    table_rows = list(csv.DictReader(io.StringIO(
        attachments(bench, sleep)["measurements"].read_text())))
    assert [(r["name"], r["unit"], r["low"], r["high"], r["outcome"]) for r in table_rows] == \
        [("sleep_current", "A", "5e-07", "1e-05", "pass"), ("boots", "", "", "", "info")]

    files = attachments(bench, sleep)
    assert files["sleep.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files["sleep.csv"].read_text().startswith("time_s,current_a,voltage_v\n")
    assert (bench.path / "out" / "plots" / "test_bench.py_test_sleep" / "sleep.png").is_file()
    assert [s["name"] for s in sleep["steps"]] == ["capture sleep"]
    # a passing test gets no transcript unless asked; a failing one does
    assert not any(name.startswith("transcript") for name in files)
    assert "transcript console" in attachments(bench, leak)

    labels = {(label["name"], label["value"]) for label in sleep["labels"]}
    assert ("rig", "rig") in labels and ("rig_mode", "simulated") in labels
    assert ("resource", "power: otii sim (simulated); device Arc-SIM (Arc), hardware Arc 1.4, "
                        "firmware 1.3.2") in labels
    env = (bench.path / "allure-results" / "environment.properties").read_text()
    assert "rig.mode=simulated\n" in env and "resource.console=serial sim\\:dut (simulated)" in env
    assert "firmware 1.3.2" in env

    # the terminal: the table and where the files are
    outcome.stdout.fnmatch_lines(["*outcome*name*value*unit*limits*test*",
                                  "PASS*sleep_current*A*[5e-07, 1e-05]*test_bench.py::test_sleep",
                                  "FAIL*boot_time*0.9*s*[-inf, 0.5]*",
                                  "allure:*allure-results*hil report*"])

    # secrets: the failing test printed both passwords on the console
    transcript = attachments(bench, leak)["transcript console"].read_text()
    assert "echo [redacted] and [redacted]" in transcript
    written = [p for p in [*(bench.path / "allure-results").iterdir(),
                            *(bench.path / "out").rglob("*")] if p.is_file()]
    assert len(written) > 10
    for path in written:
        data = path.read_bytes()
        for secret in (PASSWORD, FILE_PASSWORD, "bench-user"):
            assert secret.encode() not in data, f"{secret} in {path}"
    assert PASSWORD not in outcome.stdout.str() and FILE_PASSWORD not in outcome.stdout.str()


def test_transcripts_of_passing_tests_when_asked(pytester: pytest.Pytester) -> None:
    """(Without the option a passing test has none: the test above checks that.)"""
    (pytester.path / "rig.toml").write_text('[console]\nkind = "serial"\nurl = "loop://"\n')
    pytester.makepyfile(test_loop="""
        def test_echo(console):
            console.writeline("hello loop")
            console.expect("hello loop", timeout=2)
    """)
    run(pytester, "--hil-transcripts=always").assert_outcomes(passed=1)
    attached = attachments(pytester, results(pytester)["test_echo"])
    assert list(attached) == ["transcript console"]
    assert "tx hello loop" in attached["transcript console"].read_text()


def test_redact_replaces_longer_secrets_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_API_TOKEN", "abcd")
    monkeypatch.setenv("OTII_PASSWORD", "abcdef")
    monkeypatch.setenv("HOME_DIR_NAME", "not-a-secret")
    assert secrets(None)[:2] == ["abcdef", "abcd"]
    assert redact("x abcdef abcd not-a-secret", None) == "x [redacted] [redacted] not-a-secret"


def test_measurement_table_and_terminal_summary_show_the_verdict_digits() -> None:
    close = Measurement("v", 1.0000002, "V", high=1.0000001, test="t.py::t")
    assert measurement_table([close]).splitlines()[1] == "v,1.0000002,V,,1.0000001,fail"
    lines = table([close, Measurement("count", 12.0, test="t.py::u")])
    assert lines[0].split() == ["outcome", "name", "value", "unit", "limits", "test"]
    assert lines[1].split() == ["FAIL", "v", "1.0000002", "V", "[-inf,", "1.0000001]", "t.py::t"]
    assert lines[2].split() == ["INFO", "count", "12", "-", "t.py::u"]
    assert len({line.index("t.py") for line in lines[1:]}) == 1          # columns line up
