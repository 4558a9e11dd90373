"""Rig kinds in the rig layer: built-in kinds open drivers (starting simulators for "sim"),
values are range-checked at load, and a lab's own kind plugs in through an entry point."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hil.errors import RigError
from hil.rig import Simulators, check_table, kinds, load_rig, open_resource


@pytest.mark.parametrize("table, key, words", [
    ({"kind": "serial", "url": "x", "timeout": float("nan")}, "timeout", "finite"),
    ({"kind": "serial", "url": "x", "timeout": float("inf")}, "timeout", "finite"),
    ({"kind": "serial", "url": "x", "timeout": -1}, "timeout", "out of range"),
    ({"kind": "serial", "url": "x", "timeout": 0}, "timeout", "out of range"),
    ({"kind": "serial", "url": "x", "retention": 10}, "retention", "out of range"),
    ({"kind": "serial", "url": "x", "baudrate": 0}, "baudrate", "out of range"),
    ({"kind": "tcp", "host": "h", "port": 99999}, "port", "out of range"),
    ({"kind": "tcp", "host": "h", "port": -5}, "port", "out of range"),
    ({"kind": "tcp", "host": "h", "port": 5, "connect_timeout": float("-inf")},
     "connect_timeout", "finite"),
    ({"kind": "otii", "host": "h", "port": 70000}, "port", "out of range"),
    ({"kind": "otii", "host": "h", "voltage": -3.3}, "voltage", "out of range"),
    ({"kind": "otii", "host": "h", "max_current": float("nan")}, "max_current", "finite"),
    ({"kind": "tia", "host": "h", "timeout": 0.0}, "timeout", "out of range"),
    ({"kind": "tia", "host": "sim", "speed": float("inf")}, "speed", "finite"),
    ({"kind": "serial", "url": "sim:dutt"}, "url", 'names no simulator.*offers "sim:dut"'),
    ({"kind": "tcp", "host": "sim:dut"}, "host", 'names no simulator.*offers "sim"'),
    ({"kind": "otii", "host": "sim:arc"}, "host", 'names no simulator.*offers "sim"'),
    ({"kind": "events", "url": "sim:nothing"}, "url",
     'names no simulator.*offers "sim:replay" or "sim:mock" or "sim:dut"'),
])
def test_well_typed_nonsense_is_refused_at_load(table: dict, key: str, words: str) -> None:
    with pytest.raises(RigError, match=rf"{words}.*\(file rig.toml, table \[r\], key '{key}'\)"):
        check_table("r", table, "rig.toml")


def test_stream_kinds_take_a_simulator_per_name() -> None:
    for kind in ("tia", "sttp"):
        assert check_table("s", {"kind": kind, "host": "sim:grid2"}, "rig.toml")["host"] \
            == "sim:grid2"


def test_a_table_name_must_be_a_fixture_name() -> None:
    with pytest.raises(RigError, match=r"fixture name.*table \[my-console\]"):
        check_table("my-console", {"kind": "tcp", "host": "h", "port": 1}, "rig.toml")


def test_a_real_tcp_host_needs_its_port(tmp_path: Path) -> None:
    r = check_table("console", {"kind": "tcp", "host": "127.0.0.1"}, str(tmp_path / "r.toml"))
    with Simulators() as sims, pytest.raises(RigError, match=r"missing port.*key 'port'"):
        open_resource(r, sims)
    assert not sims.started                  # a real host starts no simulator


def test_an_unknown_encoding_is_a_rig_error(tmp_path: Path) -> None:
    r = check_table("console", {"kind": "serial", "url": "loop://", "encoding": "klingon"},
                    str(tmp_path / "r.toml"))
    with Simulators() as sims, pytest.raises(RigError, match=r"klingon.*key 'encoding'"):
        open_resource(r, sims)


def test_tia_kind_opens_the_simulator(tmp_path: Path) -> None:
    table = {"kind": "tia", "host": "sim", "signals": "eeg:4x4@1000/sine", "speed": 4.0}
    resource = check_table("eeg", table, str(tmp_path / "rig.toml"))
    assert resource["port"] == 38500 and resource["transport"] == "tcp"
    with Simulators() as sims:
        client = open_resource(resource, sims)
        try:
            assert sims.started
            cap = client.capture(packets=20)
            assert cap["eeg"].samples.shape == (4, 80)
            client.start()
            client.safe_state()
            assert not client.streaming
        finally:
            client.close()


def test_otii_kind_starts_the_simulator_powering_the_dut(tmp_path: Path) -> None:
    """The simulated Otii requires login like a real one: the table's credentials file (a path
    relative to the rig file) is the account it accepts, and the driver logs in with it."""
    (tmp_path / "creds.json").write_text('{"username": "ann", "password": "pw"}')
    rig_file = tmp_path / "rig.toml"
    rig_file.write_text('[power]\nkind = "otii"\nhost = "sim"\nchannels = ["mc", "rx"]\n'
                        'credentials = "creds.json"\n')
    rig = load_rig(rig_file)
    with Simulators(dut_on_otii=True) as sims:
        p = open_resource(rig["power"], sims)
        try:
            p.on()
            assert sims.bench.dut.powered
            p.safe_state()
            assert not sims.bench.dut.powered
        finally:
            p.close()


def test_a_simulated_otii_without_credentials_is_refused_clearly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTII_USERNAME", raising=False)
    monkeypatch.delenv("OTII_PASSWORD", raising=False)
    rig_file = tmp_path / "rig.toml"
    rig_file.write_text('[power]\nkind = "otii"\nhost = "sim"\n')
    with Simulators(dut_on_otii=True) as sims, \
            pytest.raises(RigError, match=r"requires login.*key 'credentials'"):
        open_resource(load_rig(rig_file)["power"], sims)


def test_otii_kind_with_a_bad_channel(tmp_path: Path) -> None:
    rig_file = tmp_path / "rig.toml"
    rig_file.write_text('[power]\nkind = "otii"\nhost = "sim"\nchannels = ["mv", "zz"]\n')
    with Simulators(dut_on_otii=True) as sims, \
            pytest.raises(RigError, match=r"unknown channel.*'zz'.*key 'channels'"):
        open_resource(load_rig(rig_file)["power"], sims)
    assert not sims.started                  # refused before any simulator started


def test_a_built_in_kind_cannot_be_replaced() -> None:
    with pytest.raises(ValueError, match="built in"):
        kinds.register("serial", "somewhere:KIND")


# ------------------------------------------------------------------ a lab's own kind
DEMO_KIND = '''
"""A lab's own instrument kind, installed as a package with a `hil.kinds` entry point."""
from pathlib import Path
from hil.rig import Key, RigKind

class Lamp:
    def __init__(self, watts):
        self.watts, self.lit = watts, False
    def on(self):
        self.lit = True
    def safe_state(self):
        self.lit = False
        Path("lamp.log").open("a").write("safe\\n")
    def close(self):
        Path("lamp.log").open("a").write("closed\\n")

KIND = RigKind(keys={"watts": Key(float, 40.0, min=0.0, max=500.0)},
               open=lambda resource, sims: Lamp(resource["watts"]), help="a lamp")
'''


@pytest.fixture
def lab_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package on sys.path with dist-info metadata declaring a `hil.kinds` entry point,
    as `pip install` would leave it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "demo_lamp.py").write_text(DEMO_KIND)
    info = site / "demo_lamp-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-lamp\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[hil.kinds]\nlamp = demo_lamp:KIND\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    return site


def test_a_kind_from_an_entry_point_is_a_fixture(pytester: pytest.Pytester,
                                                 lab_package: Path) -> None:
    pytester.path.joinpath("rig.toml").write_text('[lamp]\nkind = "lamp"\nwatts = 60\n')
    pytester.makepyfile(textwrap.dedent('''
        def test_light(lamp):
            lamp.on()
            assert lamp.lit and lamp.watts == 60.0
    '''))
    result = pytester.runpytest_subprocess("--rig", "rig.toml", "-p", "no:cacheprovider",
                                           "--hil-results", "out")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "lamp.log").read_text().split() == ["safe", "safe", "closed"]


def test_an_entry_point_kind_is_checked_like_a_built_in(pytester: pytest.Pytester,
                                                        lab_package: Path) -> None:
    pytester.path.joinpath("rig.toml").write_text('[lamp]\nkind = "lamp"\nwatts = 9000\n')
    pytester.makepyfile("def test_light(lamp): pass\n")
    result = pytester.runpytest_subprocess("--rig", "rig.toml", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("9000.0 is out of range (0 to 500) (file " in result.stderr.str()
            and "rig.toml, table [lamp], key 'watts')" in result.stderr.str())


def test_the_rig_table_names_and_labels_the_rig(tmp_path: Path) -> None:
    path = tmp_path / "bench-7.toml"
    path.write_text('[rig]\nlabels = ["nrf52", "rev-b"]\n[console]\nkind = "tcp"\nhost = "sim"\n')
    rig = load_rig(path)
    assert rig.name == "bench-7" and rig.labels == {"nrf52", "rev-b"}
    assert list(rig.resources) == ["console"]          # [rig] is not a resource
    path.write_text('[rig]\nname = "b7"\nlabel = "x"\n[console]\nkind = "tcp"\nhost = "sim"\n')
    with pytest.raises(RigError, match=r"unknown key.*table \[rig\], key 'label'"):
        load_rig(path)
