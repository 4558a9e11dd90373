"""The layers of DESIGN.md hold: import-linter's contracts (pyproject.toml), and importing a
codec, a simulator or `hil` itself loads no driver."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVERS = ("serial", "otii_tcp_client", "hil.buses", "hil.instruments", "hil.rig",
           "hil.fixtures", "matplotlib", "zmq")


def test_import_linter_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("statement", [
    "import hil.protocols.tia_packets",
    "import hil.protocols.tia_control, hil.protocols.tia_metainfo, hil.protocols.otii_json",
    "import hil.sim.dut",
    "from hil import clock",
    "import hil; hil.HilError",
])
def test_importing_a_codec_loads_no_driver(statement: str) -> None:
    code = (f"import sys; {statement}; "
            f"print(sorted(m for m in sys.modules if m.startswith({DRIVERS!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_public_api_loads_on_first_use() -> None:
    import hil
    for name in hil.__all__:
        assert getattr(hil, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        hil.Nope  # noqa: B018
