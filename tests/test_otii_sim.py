"""The Otii simulator's device model, seen through the vendor client: channels consistent with
each other, statistics, recordings, settings and their limits, battery emulator, user logs, CLI."""
from __future__ import annotations

import math
import subprocess
import sys
import time

import numpy as np
import pytest
from otii_tcp_client.otii_client import LicensingMode, OtiiClient
from otii_tcp_client.otii_exception import Otii_Exception

from hil.sim.dut import VirtualDut
from hil.sim.otii_server import OtiiServer
from waiting import wait_until


@pytest.fixture
def otii(sim: OtiiServer):
    with OtiiClient().connect(host=sim.host, port=sim.port, try_for_seconds=2,
                              licensing=LicensingMode.MANUAL) as client:
        yield client


@pytest.fixture
def arc(otii):
    return otii.get_devices(timeout=0)[0]


def record(otii, arc, seconds: float, channels=("mc", "mv", "mp", "me"), before=None):
    for ch in channels:
        arc.enable_channel(ch, True)
    project = otii.get_active_project()
    project.start_recording()
    arc.set_main(True)
    if before:
        before()
    time.sleep(seconds)
    project.stop_recording()
    arc.set_main(False)
    return project, project.get_last_recording()


def values(rec, arc, channel: str) -> np.ndarray:
    count = rec.get_channel_data_count(arc.id, channel)
    return np.array(rec.get_channel_data(arc.id, channel, 0, count)["values"])


def test_main_channels_are_consistent(otii, arc) -> None:
    _, rec = record(otii, arc, 0.5)
    mc, mv, mp, me = (values(rec, arc, ch) for ch in ("mc", "mv", "mp", "me"))
    assert len({mc.size, mv.size, mp.size, me.size}) == 1
    assert mv[0] == 0.0                                              # main still off
    assert np.all(mv <= 3.3) and np.all(mv[-1000:] > 3.29)          # a tiny IR drop
    assert np.allclose(mp, mc * mv, rtol=1e-4, atol=1e-12)
    assert np.allclose(me, np.cumsum(mc * mv) / 4000, rtol=1e-4, atol=1e-12)
    stats = rec.get_channel_statistics(arc.id, "mc", 0.1, 0.3)
    i0 = rec.get_channel_data_index(arc.id, "mc", 0.1)
    i1 = rec.get_channel_data_index(arc.id, "mc", 0.3)
    assert (i0, i1) == (400, 1200)
    assert math.isclose(stats["average"], mc[i0:i1].mean(), rel_tol=1e-4)   # 5 digits sent
    assert math.isclose(stats["charge"], mc[i0:i1].sum() / 4000, rel_tol=1e-4)
    assert math.isclose(stats["energy"], me[i1 - 1] - me[i0 - 1], rel_tol=1e-4)
    assert rec.get_channel_statistics(arc.id, "mc", 0.3, 0.1)["average"] == 0.0


def test_power_on_inrush_and_off_current(otii, arc, dut: VirtualDut) -> None:
    _, rec = record(otii, arc, 0.4, channels=("mc",))
    mc = values(rec, arc, "mc")
    assert 0.08 < mc.max() < 0.2                                    # inrush at power-on
    assert abs(mc[-400:]).max() < 0.02                             # ... and it boots to idle


def test_recording_grows_while_running_and_restarts(otii, arc) -> None:
    arc.enable_channel("mc", True)
    project = otii.get_active_project()
    project.start_recording()
    rec = project.get_last_recording()
    n1 = rec.get_channel_data_count(arc.id, "mc")
    time.sleep(0.1)
    n2 = rec.get_channel_data_count(arc.id, "mc")
    assert n2 > n1 and rec.is_running()
    project.start_recording()                       # closes the running one, starts the next
    assert not rec.is_running()
    recs = project.get_recordings()
    assert [r.name for r in recs] == ["Recording 1", "Recording 2"]
    project.stop_recording()
    recs[0].rename("first")
    assert project.get_recordings()[0].name == "first"
    recs[1].delete()
    assert len(project.get_recordings()) == 1


def test_channel_not_enabled_is_empty(otii, arc) -> None:
    _, rec = record(otii, arc, 0.05, channels=("mc",))
    assert rec.get_channel_data_count(arc.id, "mv") == 0
    assert rec.get_channel_data(arc.id, "mv", 0, 0) is None        # the client sends nothing


def test_reading_past_the_end_is_refused_not_short(otii, arc) -> None:
    _, rec = record(otii, arc, 0.05, channels=("mc",))
    n = rec.get_channel_data_count(arc.id, "mc")
    with pytest.raises(Otii_Exception) as err:
        rec.get_channel_data(arc.id, "mc", n - 5, 10)
    assert err.value.type == "Invalid key value"


def test_uart_rx_tx_and_baud_rate(otii, arc, dut: VirtualDut) -> None:
    arc.enable_uart(True)
    arc.set_uart_baudrate(115200)
    assert arc.get_uart_baudrate() == 115200

    def say() -> None:
        wait_until(lambda: dut.state.name == "IDLE")   # booted: the console takes commands
        arc.write_tx("echo over-the-arc\n")
        wait_until(lambda: any(ln.text.endswith("over-the-arc") for ln in dut.uart_lines()))
    _, rec = record(otii, arc, 0.3, channels=("mc", "rx"), before=say)
    log = rec.get_channel_data(arc.id, "rx", 0, 100)
    assert log["data_type"] == "log"
    assert any(v["value"].endswith("over-the-arc") for v in log["values"])
    times = [v["timestamp"] for v in log["values"]]
    assert times == sorted(times) and 0 <= times[0] < 1.0
    arc.set_uart_baudrate(9600)                     # wrong rate: the log is garbage
    _, rec = record(otii, arc, 0.5, channels=("rx",))
    assert not any("boot" in v["value"] for v in rec.get_channel_data(arc.id, "rx", 0, 100)["values"])
    arc.enable_uart(False)
    with pytest.raises(Otii_Exception) as err:
        arc.write_tx("x")
    assert err.value.type == "Command failure"


def test_device_settings_and_their_limits(otii, arc) -> None:
    arc.set_range("high")
    assert arc.get_range() == "high"
    arc.set_exp_voltage(1.8)
    assert arc.get_exp_voltage() == 1.8
    arc.set_src_cur_limit_enabled(True)
    assert arc.get_src_cur_limit_enabled() is True
    arc.set_4wire(True)
    assert arc.get_4wire() == "active"
    arc.set_property("x", {"a": 1})
    assert arc.get_property("x") == {"a": 1} and arc.get_property("nope") is None
    assert arc.get_supply_mode() == "power-box"
    assert arc.get_channel_samplerate("mc") == 4000
    assert set(arc.get_version()) == {"hw_version", "fw_version"}
    assert arc.is_connected() is True
    bad = [(arc.set_main_voltage, 5.5, "Invalid key value"),
           (arc.set_max_current, 0.0, "Invalid key value"),
           (arc.set_exp_voltage, 6.0, "Invalid key value"),
           (arc.set_range, "medium", "Invalid key value"),
           (arc.set_main_voltage, "3.3", "Invalid key type"),
           (arc.set_channel_samplerate, None, "Invalid key value"),
           (arc.set_0_to_15_voltage, 5.0, "Command not valid for device type"),
           (arc.set_gpo, None, "Invalid key value")]
    for method, value, code in bad:
        args = {arc.set_channel_samplerate: ("mc", 1000), arc.set_gpo: (3, True)}.get(
            method, (value,))
        with pytest.raises(Otii_Exception) as err:
            method(*args)
        assert err.value.type == code, method.__name__
    with pytest.raises(Otii_Exception) as err:
        arc.enable_channel("zz", True)
    assert (err.value.type, "zz" in err.value.message) == ("Invalid key value", True)


def test_unknown_device_and_project(otii, arc) -> None:
    arc.id = "nope"
    with pytest.raises(Otii_Exception) as err:
        arc.get_main()
    assert err.value.type == "Device not connected" and "nope" in err.value.message
    project = otii.get_active_project()
    project.id = 999
    with pytest.raises(Otii_Exception) as err:
        project.start_recording()
    assert err.value.type == "Project does not exist"


def test_projects_save_open_close(otii) -> None:
    project = otii.create_project()
    assert otii.get_active_project().id == project.id
    assert project.save_as("bench.otii3") == "bench.otii3"
    saved_id = project.id
    project.close()
    reopened = otii.open_project("bench.otii3")
    assert reopened.id == saved_id
    reopened.start_recording()
    reopened.stop_recording()
    with pytest.raises(Otii_Exception):
        reopened.close()                             # unsaved recording
    reopened.close(force=True)
    assert otii.get_active_project().id not in (-1, saved_id)


def test_battery_emulator(otii, arc) -> None:
    profiles = otii.get_battery_profiles()
    cr2032 = next(p for p in profiles if p["model"] == "CR2032")
    info = otii.get_battery_profile_info(cr2032["battery_profile_id"])
    assert info["battery"]["capacity"] == 225.0
    emu = arc.set_supply_battery_emulator(cr2032["battery_profile_id"], soc=80)
    assert arc.get_supply_mode() == "battery-emulator"
    assert math.isclose(emu.get_soc(), 80.0)
    emu.set_used_capacity(225 * 3.6 / 2)
    assert math.isclose(emu.get_soc(), 50.0)
    emu.set_soc_tracking(False)
    assert emu.get_soc_tracking() is False
    assert (emu.get_series(), emu.get_parallel()) == (1, 1)
    emu.update_profile(cr2032["battery_profile_id"], "reset")
    assert math.isclose(emu.get_used_capacity(), 0.0)
    arc.set_supply_power_box()
    assert arc.get_supply_mode() == "power-box"


def test_user_logs_page_through(otii, arc) -> None:
    project, rec = record(otii, arc, 0.05, channels=("mc",))
    project.create_user_log("notes")
    for k in range(5):
        rec.append_user_log("notes", k * 0.1, f"note {k}")
    entries = list(rec.iter_user_log_data("notes", 0.0, 10.0))
    assert [e.message for e in entries] == [f"note {k}" for k in range(5)]
    page = rec.get_user_log_data("notes", 0.0, 10.0, "note", page=2, page_size=2)
    assert (page["page"], page["pages_total"], len(page["values"])) == (2, 3, 2)


def test_speed_factor_compresses_recording_time(dut: VirtualDut) -> None:
    with OtiiServer(dut, speed=50) as sim, OtiiClient().connect(
            host=sim.host, port=sim.port, licensing=LicensingMode.MANUAL) as otii:
        arc = otii.get_devices(timeout=0)[0]
        project, rec = record(otii, arc, 0.2, channels=("mc",))
        info = rec.get_channel_info(arc.id, "mc")
        assert info["to"] > 5.0                      # >= 10 s of recording in 0.2 s
        assert rec.get_channel_data_count(arc.id, "mc") == round(info["to"] * 4000)


def test_hil_sim_otii_command_serves_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTII_USERNAME", "ada")       # the vendor client logs in with these
    monkeypatch.setenv("OTII_PASSWORD", "pw")
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "sim", "otii", "--port", "0",
                             "--account", "ada:pw"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().split()
        assert first[0] == "otii:"
        host, port = first[1].rsplit(":", 1)
        with OtiiClient().connect(host=host, port=int(port), try_for_seconds=5) as otii:
            assert otii.get_devices(timeout=0)[0].name == "Arc-SIM"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
