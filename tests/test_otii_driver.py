"""The `power` instrument (hil.instruments.otii) against the Otii simulator, over real sockets.

What a test bench sees: supply on/off, captures that become PowerTraces (the DUT's sleep current
in the µA range, its radio bursts in the tens of mA), and for every way the Otii can fail one
clear error from hil.errors, with the DUT left unpowered afterwards.
"""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hil.errors import (InstrumentConnectError, InstrumentError, ProtocolError, RigError)
from hil.instruments.otii import OtiiConfig, OtiiPower
from hil.instruments.power_trace import PowerTrace
from hil.rig import load_rig, open_resource
from hil.sim.bench import VirtualBench
from hil.sim.dut import VirtualDut
from hil.sim.otii_device import DeviceInfo
from hil.sim.otii_server import OtiiServer


def config(sim: OtiiServer, **kw) -> OtiiConfig:
    kw.setdefault("connect_timeout", 2.0)
    return OtiiConfig(host=sim.host, port=sim.port, **kw)


@pytest.fixture
def power(sim: OtiiServer) -> Iterator[OtiiPower]:
    p = OtiiPower(config(sim, channels=("mc", "mv", "rx", "i1")))
    yield p
    p.close()


def wait_for(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def boot(power: OtiiPower, dut: VirtualDut) -> None:
    power.on(3.3)
    wait_for(lambda: dut.state.name == "IDLE")


# ------------------------------------------------------------------------------- normal use
def test_connect_configures_the_device(power: OtiiPower, sim: OtiiServer) -> None:
    dev = sim.device
    assert (dev.main, dev.main_voltage, dev.max_current, dev.range) == (False, 3.3, 0.5, "low")
    assert dev.channels == {"mc", "mv", "rx", "i1"}
    assert dev.uart and dev.baudrate == 115_200
    assert sim.commands()[:3] == ["otii_is_logged_in", "otii_get_licenses",
                                  "otii_reserve_license"]


def test_on_and_off_power_the_dut(power: OtiiPower, dut: VirtualDut) -> None:
    power.on(voltage=2.5)
    assert power.is_on and dut.powered and dut.voltage == 2.5
    power.off()
    assert not power.is_on and not dut.powered


def test_capture_sleep_current_and_radio_bursts(power: OtiiPower, dut: VirtualDut) -> None:
    boot(power, dut)
    with power.capture("sleep-tx") as trace:
        power.uart_write("sleep 0.4\n")
        wait_for(lambda: any("awake" in ln.text for ln in dut.uart_lines()))
        power.uart_write("tx 3\n")
        wait_for(lambda: any("tx: done" in ln.text for ln in dut.uart_lines()))
        time.sleep(0.05)
    assert isinstance(trace.trace, PowerTrace) and trace.name == "sleep-tx"
    entering, awake = trace.line("sleep: entering"), trace.line("sleep: awake")
    sleep = trace.between(entering.time + 0.02, awake.time - 0.02)
    assert 2e-6 < sleep.mean() < 8e-6                    # µA while asleep
    bursts = trace.between(awake, trace.line("tx: done")).pulses(0.01)
    assert len(bursts) == 3
    assert all(0.03 < p.peak < 0.05 for p in bursts)
    assert np.all((trace.voltage > 3.2) & (trace.voltage <= 3.3))
    assert [e.level for e in trace.gpi[1]][:2] == [False, True]    # GPI1 = radio on


def test_console_marks_fall_on_the_trace(power: OtiiPower, dut: VirtualDut) -> None:
    boot(power, dut)
    with power.capture() as trace:
        power.uart_write("echo hi\n")
        wait_for(lambda: any(ln.text.endswith("hi") for ln in dut.uart_lines()))
        time.sleep(0.05)                                 # record a little past the line
    assert trace.start <= trace.marks["capture_start"] <= trace.marks["capture_end"]
    line = trace.line("hi$")
    assert trace.start < line.time < trace.end
    printed = [ln.time for ln in dut.uart_lines() if ln.text.endswith("hi")][0]
    assert line.time == pytest.approx(printed, abs=1e-6)      # server clock = our clock here


def test_local_clock_option_still_places_lines_on_the_trace(sim: OtiiServer, dut: VirtualDut) -> None:
    with OtiiPower(config(sim, channels=("mc", "rx"), clock="local")) as p:
        boot(p, dut)
        with p.capture() as trace:
            p.uart_write("echo local\n")
            wait_for(lambda: any(ln.text.endswith("local") for ln in dut.uart_lines()))
            time.sleep(0.05)
        line = trace.line("local$")               # t0 is now good to half a round trip
        assert trace.start < line.time < trace.end
        assert trace.between(line, trace.end).duration > 0
        assert isinstance(trace.voltage, np.ndarray) and trace.voltage[0] == 3.3    # no mv


def test_gpio_and_instant_readings(power: OtiiPower, dut: VirtualDut) -> None:
    boot(power, dut)
    assert power.get_gpi(2) is True                      # GPI2 = DUT awake
    assert 1e-3 < power.read("mc") < 10e-3
    power.uart_write("sleep 5\n")
    wait_for(lambda: dut.state.name == "SLEEP")
    assert power.get_gpi(2) is False
    power.set_gpo(1, True)                               # GPO1 wakes it early
    wait_for(lambda: dut.state.name == "IDLE")
    power.set_gpo(1, False)


def test_over_current_cuts_the_supply_like_hardware(sim: OtiiServer, dut: VirtualDut) -> None:
    with OtiiPower(config(sim, max_current=0.1)) as p:
        p.on()                                           # inrush peaks at 180 mA
        wait_for(lambda: not p.is_on)
        assert not dut.powered and sim.device.trips == 1


def test_close_returns_the_license_and_is_idempotent(sim: OtiiServer, dut: VirtualDut) -> None:
    p = OtiiPower(config(sim))
    p.on()
    p.close()
    p.close()
    assert not dut.powered
    assert sim.commands()[-2:] == ["arc_set_main", "otii_return_license"]
    assert sim.state.licenses[0]["reserved_to"] == ""


def test_vendor_fetch_gives_the_same_trace(sim: OtiiServer, dut: VirtualDut) -> None:
    with OtiiPower(config(sim, fetch="vendor")) as p:
        boot(p, dut)
        with p.capture() as trace:
            time.sleep(0.2)
        rec = p._project.get_last_recording()
        p.config = replace(p.config, fetch="direct")
        _, _, direct = p._analog(rec, "mc")
    assert np.array_equal(direct, trace.current)


# ------------------------------------------------------------------------------- failures
def test_unreachable_otii_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                        # bound, not listening: refused
        with pytest.raises(InstrumentConnectError, match="nothing listens"):
            OtiiPower(OtiiConfig(host="127.0.0.1", port=port))


def test_no_device_found(dut: VirtualDut) -> None:
    with OtiiServer(dut, devices=[]) as sim:
        with pytest.raises(InstrumentConnectError, match="no Arc or Ace connected"):
            OtiiPower(config(sim))
        assert sim.commands()[-1] == "otii_return_license"    # nothing left reserved


def test_named_device_not_found_lists_what_is_there(sim: OtiiServer) -> None:
    with pytest.raises(InstrumentConnectError, match=r"no device 'Arc-7'.*Arc-SIM \(Arc"):
        OtiiPower(config(sim, device="Arc-7"))


def test_device_chosen_by_name_among_several(dut: VirtualDut) -> None:
    infos = [DeviceInfo(), DeviceInfo(device_id="ACE-2", name="bench-ace", type="Ace")]
    with OtiiServer(dut, devices=infos) as sim, \
            OtiiPower(config(sim, device="bench-ace", sample_rate=1000)) as p:
        assert p.device.id == "ACE-2" and sim.state.devices[1].rates["mc"] == 1000


def test_license_unavailable(sim: OtiiServer) -> None:
    sim.state.licenses[0]["available"] = False
    with pytest.raises(InstrumentConnectError, match="no free Automation license"):
        OtiiPower(config(sim, connect_timeout=1.0))


def test_login_failure_never_shows_the_password(sim: OtiiServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sim.state.logged_in, sim.state.accounts = False, {"ada": "right"}
    monkeypatch.setenv("OTII_USERNAME", "ada")
    monkeypatch.setenv("OTII_PASSWORD", "wrong-pw-123")
    with pytest.raises(InstrumentConnectError) as err:
        OtiiPower(config(sim))
    assert "Could not login" in str(err.value) and "wrong-pw-123" not in str(err.value)
    assert "wrong-pw-123" not in repr(sim.requests)


def test_credentials_file(sim: OtiiServer, tmp_path: Path) -> None:
    sim.state.logged_in, sim.state.accounts = False, {"bob": "pw"}
    creds = tmp_path / "credentials.json"
    creds.write_text('{"username": "bob", "password": "pw"}')
    with OtiiPower(config(sim, credentials=str(creds))):
        assert sim.state.username == "bob"
    assert sim.commands()[-1] == "otii_logout"
    with pytest.raises(InstrumentConnectError, match="not found"):
        OtiiPower(config(sim, credentials=str(tmp_path / "missing.json")))


def test_value_out_of_range_names_the_value(power: OtiiPower, dut: VirtualDut) -> None:
    with pytest.raises(InstrumentError, match=r"arc_set_main_voltage\(9\.0\).*Invalid key value"
                                              r".*9\.0") as err:
        power.on(voltage=9.0)
    assert err.value.errorcode == "Invalid key value" and err.value.cmd == "arc_set_main_voltage"
    assert not dut.powered
    with pytest.raises(InstrumentError, match="Invalid key value"):
        power.configure(max_current=7.5)


def test_device_disconnected_mid_recording(power: OtiiPower, sim: OtiiServer,
                                           dut: VirtualDut) -> None:
    boot(power, dut)
    with pytest.raises(InstrumentConnectError, match="disconnected during capture"):
        with power.capture():
            time.sleep(0.1)
            sim.unplug()
    assert not dut.powered
    power.safe_state()                                   # an unplugged Otii powers nothing
    with pytest.raises(InstrumentConnectError, match="Device not connected"):
        power.on()


def test_reading_a_capture_while_it_records(power: OtiiPower) -> None:
    with power.capture() as trace:
        with pytest.raises(InstrumentError, match="still recording"):
            trace.mean()


def test_recording_still_running_after_stop(power: OtiiPower, sim: OtiiServer,
                                            dut: VirtualDut) -> None:
    boot(power, dut)
    sim.ignore("project_stop_recording")
    with pytest.raises(InstrumentError, match="still running after project_stop_recording"):
        with power.capture():
            time.sleep(0.05)
    power.safe_state()
    assert not dut.powered and not sim.state.running()


def test_reply_that_is_not_json(power: OtiiPower, sim: OtiiServer, dut: VirtualDut) -> None:
    sim.garble("arc_set_main")
    with pytest.raises(ProtocolError, match="not JSON"):
        power.on()
    assert dut.powered                                   # the command did run on the server
    power.safe_state()                                   # reconnects to switch it off
    assert not dut.powered


def test_connection_dropped(power: OtiiPower, sim: OtiiServer, dut: VirtualDut) -> None:
    boot(power, dut)
    sim.drop_connection("arc_get_main")
    with pytest.raises(InstrumentConnectError, match="connection lost"):
        power.is_on
    with pytest.raises(InstrumentConnectError, match="not connected"):
        power.off()
    power.safe_state()
    assert not dut.powered and power.connected


def test_error_inside_a_capture_stops_the_recording(power: OtiiPower, sim: OtiiServer) -> None:
    with pytest.raises(ZeroDivisionError):
        with power.capture():
            1 / 0
    assert not sim.state.running()


def test_server_error_reply_names_command_and_code(power: OtiiPower, sim: OtiiServer) -> None:
    sim.inject_error("Command failure", "arc_set_gpo", message="GPO driver fault")
    with pytest.raises(InstrumentError, match=r"arc_set_gpo\(1, True\).*Command failure.*GPO "
                                              r"driver fault"):
        power.set_gpo(1, True)


# ------------------------------------------------------------------------------- rig kind
def test_rig_table_with_host_sim_starts_the_simulator(tmp_path: Path) -> None:
    rig_file = tmp_path / "rig.toml"
    rig_file.write_text('[power]\nkind = "otii"\nhost = "sim"\nchannels = ["mc", "rx"]\n')
    rig = load_rig(rig_file)
    with VirtualBench(dut_on_otii=True) as bench:
        p = open_resource(rig["power"], bench)
        try:
            p.on()
            assert bench.dut.powered
            p.safe_state()
            assert not bench.dut.powered
        finally:
            p.close()


def test_rig_table_with_a_bad_channel(tmp_path: Path) -> None:
    rig_file = tmp_path / "rig.toml"
    rig_file.write_text('[power]\nkind = "otii"\nhost = "sim"\nchannels = ["mv", "zz"]\n')
    with VirtualBench(dut_on_otii=True) as bench, \
            pytest.raises(RigError, match=r"unknown channel.*'zz'.*key 'channels'"):
        open_resource(load_rig(rig_file)["power"], bench)
