"""The generated reference pages are current: docs/rig-files.md from the kinds registered now
(whatever kinds exist when the test runs) and docs/simulator-reference.md from the DUT's command
table and the `hil sim` commands' options. Stale: run `hil rig-docs`."""
from __future__ import annotations

from pathlib import Path

from hil.cli import rig_docs
from hil.rig import kinds
from hil.sim.dut import COMMANDS, VirtualDut


def test_generated_pages_are_current() -> None:
    assert rig_docs.stale() == [], "docs are stale: run `./run hil rig-docs` and commit them"


def test_rig_reference_names_every_kind_and_key() -> None:
    page = rig_docs.rig_reference()
    for name in kinds.registered():
        assert f'## kind = "{name}"' in page
        for key in kinds.find(name).keys:
            assert f"| `{key}` |" in page, f"{name}.{key} missing"


def test_every_dut_command_is_in_the_table() -> None:
    implemented = {name[5:] for name in dir(VirtualDut) if name.startswith("_cmd_")}
    documented = {usage.split()[0] for usage, _ in COMMANDS}
    assert implemented == documented
    page = rig_docs.simulator_reference()
    assert all(f"| `{usage}` |" in page for usage, _ in COMMANDS)


def test_check_mode_fails_on_a_stale_page(tmp_path: Path, capsys) -> None:
    assert rig_docs.main(["--docs", str(tmp_path)]) == 0
    assert rig_docs.main(["--docs", str(tmp_path), "--check"]) == 0
    page = tmp_path / "rig-files.md"
    page.write_text(page.read_text().replace('## kind = "tcp"', "## kind = tcp"))
    assert rig_docs.main(["--docs", str(tmp_path), "--check"]) == 1
    assert "rig-files.md is out of date" in capsys.readouterr().err


def test_results_page_names_every_json_field_and_junit_property() -> None:
    import re
    from hil.report.measurements import Measurement, junit_properties
    page = (rig_docs.DOCS / "results.md").read_text(encoding="utf-8")
    fields = set(re.findall(r"^\| `(\w+)` \| (?:string|number|boolean)", page, re.MULTILINE))
    m = Measurement("x", 1.0, "A", low=0.0, high=2.0, test="t", rig="r")
    assert fields == set(m.to_dict())
    for name, _ in junit_properties(m):
        assert f"`{name.replace('measure.x', 'measure.NAME')}`" in page
