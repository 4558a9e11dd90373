"""The Otii guard (hil.instruments.otii_guard): a guardian process switches an Otii off over a
connection of its own after the test process's connection was abandoned."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
from otii_tcp_client.otii_client import LicensingMode, OtiiClient

from hil.errors import InstrumentConnectError, InstrumentError
from hil.instruments.otii_guard import SwitchedOff, switch_off
from hil.sim.dut import VirtualDut
from hil.sim.otii_device import DeviceInfo
from hil.sim.otii_server import OtiiServer


@pytest.fixture(autouse=True)
def _no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTII_USERNAME", raising=False)
    monkeypatch.delenv("OTII_PASSWORD", raising=False)


@pytest.fixture
def creds(sim: OtiiServer, tmp_path: Path) -> str:
    return str(sim.write_credentials(tmp_path / "credentials.json"))


def abandoned(sim: OtiiServer, creds: str) -> None:
    """A test process that logged in, reserved the license, switched main on, started a
    recording, and died: its socket closed, nothing returned, nobody logged out."""
    otii = OtiiClient().connect(host=sim.host, port=sim.port, try_for_seconds=2,
                                credentials=creds)
    arc = otii.get_devices(timeout=0)[0]
    arc.enable_channel("mc", True)
    arc.set_main(True)
    otii.get_active_project().start_recording()
    otii.connection.close_connection()


def test_switch_off_after_the_test_connection_was_abandoned(sim: OtiiServer, dut: VirtualDut,
                                                            creds: str) -> None:
    abandoned(sim, creds)
    assert sim.device.main and dut.powered and sim.state.running()
    sim.clear_log()
    done = switch_off(sim.host, sim.port, credentials=creds, timeout=2)
    assert done == SwitchedOff(f"{sim.host}:{sim.port}", f"Arc-SIM ({sim.device.info.device_id})",
                               was_on=True, stopped_recording=True)
    assert not sim.device.main and not dut.powered and not sim.state.running()
    guard = {r.connection for r in sim.requests}
    assert len(guard) == 1                                  # its own connection, one
    cmds = sim.commands()
    assert cmds[cmds.index("arc_set_main") + 1] == "arc_get_main"        # read back
    assert "otii_reserve_license" not in cmds and "otii_logout" not in cmds
    assert sim.state.licenses[0]["reserved_to"] == "hil"    # the dead process's, left as it was


def test_switch_off_logs_in_and_leaves_nothing_reserved(sim: OtiiServer, dut: VirtualDut,
                                                        creds: str) -> None:
    with OtiiClient().connect(host=sim.host, port=sim.port, try_for_seconds=2,
                              licensing=LicensingMode.MANUAL) as otii:
        otii.get_devices(timeout=0)[0].set_main(True)
    assert dut.powered and not sim.state.logged_in
    done = switch_off(sim.host, sim.port, credentials=creds, timeout=2)
    assert done.was_on and not done.stopped_recording and not dut.powered
    assert sim.commands()[-2:] == ["otii_return_license", "otii_logout"]
    assert sim.state.licenses[0]["reserved_to"] == "" and not sim.state.logged_in


def test_a_named_device_among_several(dut: VirtualDut, tmp_path: Path) -> None:
    infos = [DeviceInfo(), DeviceInfo(device_id="ACE-2", name="bench-ace", type="Ace")]
    with OtiiServer(dut, devices=infos, logged_in=True) as sim:
        with OtiiClient().connect(host=sim.host, port=sim.port, try_for_seconds=2,
                                  licensing=LicensingMode.MANUAL) as otii:
            for arc in otii.get_devices(timeout=0):
                arc.set_main(True)
        done = switch_off(sim.host, sim.port, device="bench-ace", timeout=2)
        assert done.device == "bench-ace (ACE-2)"
        assert [d.main for d in sim.state.devices] == [True, False]


def test_an_unplugged_device_powers_nothing(sim: OtiiServer, creds: str) -> None:
    sim.unplug()
    assert switch_off(sim.host, sim.port, credentials=creds, timeout=2).device is None


def test_a_lost_switch_off_is_repeated_and_then_reported(sim: OtiiServer, dut: VirtualDut,
                                                         creds: str) -> None:
    abandoned(sim, creds)
    sim.ignore("arc_set_main")                       # acknowledged, never done: read back
    switch_off(sim.host, sim.port, credentials=creds, timeout=2)
    assert not dut.powered
    abandoned(sim, creds)
    for _ in range(4):                               # twice on each of two connections
        sim.ignore("arc_set_main")
    with pytest.raises(InstrumentError, match=rf"{sim.host}:{sim.port}.*still on"):
        switch_off(sim.host, sim.port, credentials=creds, timeout=2)


def test_nothing_listening_is_a_connect_error_naming_the_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(InstrumentConnectError, match=rf"127\.0\.0\.1:{port}"):
            switch_off("127.0.0.1", port, timeout=1)


def test_no_login_possible_is_a_connect_error(sim: OtiiServer) -> None:
    with pytest.raises(InstrumentConnectError, match=rf"{sim.host}:{sim.port}.*Not logged in"):
        switch_off(sim.host, sim.port, timeout=1)
