"""Measurement records: verdicts, readable numbers, JSON, JUnit properties, Allure parameters."""
from __future__ import annotations

import json
import math
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hil.report.measurements import (Measurement, Unquoted, allure_parameter, format_number,
                                     junit_properties, read_json, write_json)

SIZE = 2 * 1024 * 1024


# --------------------------------------------------------------------------- verdicts
def test_limits_decide_pass_and_fail_and_edges_pass() -> None:
    assert Measurement("i", 4.2e-6, "A", high=1e-5).outcome == "pass"
    assert Measurement("i", 1e-5, "A", high=1e-5).outcome == "pass"
    assert Measurement("i", 2e-5, "A", high=1e-5).outcome == "fail"
    assert Measurement("n", 3.0, low=3.0).outcome == "pass"
    assert Measurement("n", 2.9, low=3.0).outcome == "fail"


def test_a_figure_without_limits_is_info_and_counts_as_passing() -> None:
    m = Measurement("throughput", 4.03561, "MB/s")
    assert m.outcome == "info" and m.passed
    assert m.describe() == "throughput = 4.03561 MB/s: info"
    assert "[-inf" not in m.describe()


def test_nan_fails_with_or_without_limits() -> None:
    assert Measurement("x", math.nan).outcome == "fail"
    assert Measurement("x", math.nan, low=0).outcome == "fail"


# --------------------------------------------------------------------------- numbers
def test_a_near_miss_shows_enough_digits_to_see_why() -> None:
    m = Measurement("log_bytes_received", SIZE + 66.0, "B", low=SIZE, high=SIZE + 64)
    assert m.describe() == "log_bytes_received = 2097218 B in [2097152, 2097216]: fail"


def test_a_fractional_near_miss_grows_digits_until_value_and_limit_differ() -> None:
    m = Measurement("v", 3.3000001, "V", high=3.3)
    value, limits = m.describe().split(" V in ")
    assert value == "v = 3.3000001" and limits == "[-inf, 3.3]: fail"
    m = Measurement("v", 0.1 + 0.2, high=0.3)          # 0.30000000000000004
    assert float(m.reading().split(" ")[0]) != 0.3 and m.outcome == "fail"


def test_plain_figures_keep_six_digits() -> None:
    assert Measurement("g", 0.97897312, "g", low=0.9, high=1.1).describe() == \
        "g = 0.978973 g in [0.9, 1.1]: pass"
    assert Measurement("i", 4.2e-6, "A", high=1e-5).describe() == \
        "i = 4.2e-06 A in [-inf, 1e-05]: pass"


def test_format_number() -> None:
    assert format_number(2097152.0) == "2097152"
    assert format_number(-3.0) == "-3"
    assert format_number(1e20) == "1e+20"
    assert format_number(math.inf) == "inf" and format_number(math.nan) == "nan"
    assert format_number(1 / 3, 9) == "0.333333333"


# --------------------------------------------------------------------------- JSON
def test_json_keeps_the_old_fields_and_adds_passed(tmp_path: Path) -> None:
    ms = [Measurement("a", 1.5, "V", 1.0, 2.0, "t::a"), Measurement("b", 7.0, test="t::b"),
          Measurement("c", 9.0, high=8.0)]
    path = write_json(ms, tmp_path / "m.json")
    records = json.loads(path.read_text())
    assert records[0] == {"name": "a", "value": 1.5, "unit": "V", "low": 1.0, "high": 2.0,
                          "test": "t::a", "rig": "", "outcome": "pass", "passed": True}
    assert [(r["outcome"], r["passed"]) for r in records] == [
        ("pass", True), ("info", True), ("fail", False)]
    assert read_json(path) == ms


def test_json_from_an_older_or_newer_writer_reads(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps([
        {"name": "a", "value": 1.0, "unit": "", "low": None, "high": 2.0, "test": "",
         "outcome": "pass"},                                         # older: no "passed"
        {"name": "b", "value": 2.0, "outcome": "info", "passed": True, "plot": "b.png"}]))
    assert read_json(path) == [Measurement("a", 1.0, high=2.0), Measurement("b", 2.0)]


# --------------------------------------------------------------------------- JUnit
def test_junit_properties_carry_the_number_unit_limits_and_outcome() -> None:
    m = Measurement("log_bytes_received", SIZE + 66.0, "B", low=SIZE, high=SIZE + 64)
    assert junit_properties(m) == [
        ("measure.log_bytes_received", SIZE + 66.0),
        ("measure.log_bytes_received.unit", "B"),
        ("measure.log_bytes_received.low", SIZE),
        ("measure.log_bytes_received.high", SIZE + 64),
        ("measure.log_bytes_received.outcome", "fail")]
    assert junit_properties(Measurement("t", 24.2)) == [("measure.t", 24.2),
                                                         ("measure.t.outcome", "info")]


def test_junit_xml_holds_the_value_as_a_number(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(textwrap.dedent('''
        from hil.report.measurements import Measurement, junit_properties

        def test_one(record_property):
            m = Measurement("sleep_current", 4.2123456789e-6, "A", high=1e-5)
            for name, value in junit_properties(m):
                record_property(name, value)
    '''))
    pytester.runpytest_subprocess("--rig", "none", "-p", "no:cacheprovider",
                                  "--junitxml=out.xml").assert_outcomes(passed=1)
    props = {p.get("name"): p.get("value")
             for p in ET.parse(pytester.path / "out.xml").iter("property")}
    assert float(props["measure.sleep_current"]) == 4.2123456789e-6
    assert props["measure.sleep_current.unit"] == "A"
    assert float(props["measure.sleep_current.high"]) == 1e-5
    assert props["measure.sleep_current.outcome"] == "pass"
    assert "measure.sleep_current.low" not in props


# --------------------------------------------------------------------------- Allure
def test_allure_parameter_is_plain_text() -> None:
    assert allure_parameter(Measurement("i", 4.2e-6, "A", high=1e-5)) == \
        "4.2e-06 A in [-inf, 1e-05]: pass"
    assert allure_parameter(Measurement("n", 12.0)) == "12: info"


def test_allure_shows_the_parameter_without_quotes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(textwrap.dedent('''
        import allure
        from hil.report.measurements import Measurement, Unquoted, allure_parameter

        def test_one():
            m = Measurement("sleep_current", 4.2e-6, "A", high=1e-5)
            allure.dynamic.parameter("quoted", allure_parameter(m))
            allure.dynamic.parameter("sleep_current", Unquoted(allure_parameter(m)))
    '''))
    pytester.runpytest_subprocess("--rig", "none", "-p", "no:cacheprovider",
                                  "--alluredir=allure").assert_outcomes(passed=1)
    [result] = (pytester.path / "allure").glob("*-result.json")
    params = {p["name"]: p["value"] for p in json.loads(result.read_text())["parameters"]}
    assert params["quoted"] == "'4.2e-06 A in [-inf, 1e-05]: pass'"     # what str gets
    assert params["sleep_current"] == "4.2e-06 A in [-inf, 1e-05]: pass"
    assert str(Unquoted("x")) == "x"
