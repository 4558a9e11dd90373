"""The `power` instrument (hil.instruments.otii) against the Otii simulator, over real sockets.

What a test bench sees: supply on/off, captures that become PowerTraces (the DUT's sleep current
in the µA range, its radio bursts in the tens of mA), and for every way the Otii can fail one
clear error from hil.errors, with the DUT left unpowered afterwards.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from otii_tcp_client.otii_client import LicensingMode, OtiiClient

from hil.errors import InstrumentConnectError, InstrumentError, ProtocolError
from hil.instruments import otii as otii_driver
from hil.instruments.otii import OtiiConfig, OtiiPower
from hil.instruments.power_trace import PowerTrace
from hil.sim.dut import VirtualDut
from hil.sim.otii_device import DeviceInfo
from hil.sim.otii_server import SIM_ACCOUNTS, OtiiServer
from waiting import wait_until


@pytest.fixture(autouse=True)
def _otii_account(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator starts logged out like an Otii: the driver logs in with these."""
    username, password = next(iter(SIM_ACCOUNTS.items()))
    monkeypatch.setenv("OTII_USERNAME", username)
    monkeypatch.setenv("OTII_PASSWORD", password)


def config(sim: OtiiServer, **kw) -> OtiiConfig:
    kw.setdefault("connect_timeout", 2.0)
    return OtiiConfig(host=sim.host, port=sim.port, **kw)


@pytest.fixture
def power(sim: OtiiServer) -> Iterator[OtiiPower]:
    p = OtiiPower(config(sim, channels=("mc", "mv", "rx", "i1")))
    yield p
    p.close()


def boot(power: OtiiPower, dut: VirtualDut) -> None:
    power.on(3.3)
    wait_until(lambda: dut.state.name == "IDLE")


# ------------------------------------------------------------------------------- normal use
def test_connect_configures_the_device(power: OtiiPower, sim: OtiiServer) -> None:
    dev = sim.device
    assert (dev.main, dev.main_voltage, dev.max_current, dev.range) == (False, 3.3, 0.5, "low")
    assert dev.channels == {"mc", "mv", "rx", "i1"}
    assert dev.uart and dev.baudrate == 115_200
    assert sim.commands()[:4] == ["otii_is_logged_in", "otii_login", "otii_get_licenses",
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
        wait_until(lambda: any("awake" in ln.text for ln in dut.uart_lines()))
        power.uart_write("tx 3\n")
        wait_until(lambda: any("tx: done" in ln.text for ln in dut.uart_lines()))
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
        wait_until(lambda: any(ln.text.endswith("hi") for ln in dut.uart_lines()))
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
            wait_until(lambda: any(ln.text.endswith("local") for ln in dut.uart_lines()))
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
    wait_until(lambda: dut.state.name == "SLEEP")
    assert power.get_gpi(2) is False
    power.set_gpo(1, True)                               # GPO1 wakes it early
    wait_until(lambda: dut.state.name == "IDLE")
    power.set_gpo(1, False)


def test_over_current_cuts_the_supply_like_hardware(sim: OtiiServer, dut: VirtualDut) -> None:
    with OtiiPower(config(sim, max_current=0.1)) as p:
        p.on()                                           # inrush peaks at 180 mA
        wait_until(lambda: not p.is_on)
        assert not dut.powered and sim.device.trips == 1


def test_close_returns_the_license_and_is_idempotent(sim: OtiiServer, dut: VirtualDut) -> None:
    p = OtiiPower(config(sim))
    p.on()
    sim.clear_log()
    p.close()
    p.close()
    assert not dut.powered
    assert sim.commands() == ["arc_set_main", "arc_get_main", "project_get_last_recording",
                              "otii_return_license", "otii_logout"]    # off, read back, release
    assert sim.state.licenses[0]["reserved_to"] == "" and not sim.state.logged_in


class Proxy:
    """Relays TCP clients to the simulator, counting request lines up and reply lines down per
    connection: `overlaps` counts requests sent before the previous reply came back."""

    def __init__(self, sim: OtiiServer) -> None:
        self.sim = sim
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[int] = []             # request lines per connection
        self.overlaps = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.sim.address)
            k = len(self.requests)
            self.requests.append(0)
            replies = [-1]                            # the greeting is no reply
            threading.Thread(target=self._up, args=(client, server, k, replies),
                             daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, replies),
                             daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, k: int,
            replies: list[int]) -> None:
        with client, server:
            while data := _recv(client):
                for _ in range(data.count(b"\n")):
                    if self.requests[k] > replies[0]:
                        self.overlaps += 1
                    self.requests[k] += 1
                server.sendall(data)

    def _down(self, server: socket.socket, client: socket.socket, replies: list[int]) -> None:
        while data := _recv(server):
            replies[0] += data.count(b"\r\n")      # counted before the client can see them
            try:
                client.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""


def test_recorded_data_comes_like_the_vendor_client_fetches_it() -> None:
    """One connection, one request in flight, the vendor client's very requests."""
    dut = VirtualDut(speed=25.0)
    with OtiiServer(dut, speed=25.0) as sim:
        proxy = Proxy(sim)
        try:
            with OtiiPower(OtiiConfig(host="127.0.0.1", port=proxy.port, channels=("mc",),
                                      connect_timeout=2.0)) as p:
                p.on()
                with p.capture() as trace:
                    wait_until(lambda: p.device.connection is not None and _samples(sim) > 50_000)
                ours = [r for r in sim.requests if r.cmd == "recording_get_channel_data"]
                rec = p._project.get_last_recording()          # type: ignore[union-attr]
                sim.clear_log()
                vendor = rec.get_channel_data(p.device.id, "mc", 0, len(trace))
                theirs = [r for r in sim.requests if r.cmd == "recording_get_channel_data"]
            assert len(trace) > 40_000 and len(ours) == 2     # two chunks
            assert [r.data for r in ours] == [r.data for r in theirs]
            assert len({r.connection for r in ours + theirs}) == 1
            assert np.array_equal(trace.current, np.asarray(vendor["values"]))
            assert proxy.overlaps == 0
            assert sum(1 for n in proxy.requests if n) == 1    # one connection talked
        finally:
            proxy.close()
            dut.close()


def _samples(sim: OtiiServer) -> int:
    """mc samples of the simulator's running recording so far."""
    with sim.lock:
        rec = sim.state.running()[0]
        return rec.count(rec.track(sim.device, "mc"), time.time())


def test_a_bad_data_reply_names_the_server_and_the_command(power: OtiiPower,
                                                          sim: OtiiServer) -> None:
    power.on()
    sim.garble("recording_get_channel_data")
    with pytest.raises(ProtocolError, match=rf"127\.0\.0\.1:{sim.port}.*"
                                            r"recording_get_channel_data.*not JSON") as err:
        with power.capture():
            pass
    assert err.value.where == f"127.0.0.1:{sim.port}"
    power.safe_state()
    assert not sim.device.main and not sim.state.running()


def test_a_data_request_left_unanswered_times_out(power: OtiiPower, sim: OtiiServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otii_driver, "FETCH_TIMEOUT_S", 0.3)  # the vendor client: forever
    sim.delay("recording_get_channel_data", 1.0)
    with pytest.raises(InstrumentError, match=r"no reply to recording_get_channel_data"):
        with power.capture():
            pass
    sim.clear_faults()
    with power.capture() as trace:                        # the next one, on a fresh connection
        power.uart_write("echo again\n")
    assert len(trace) > 0


# ------------------------------------------------------------------------------- failures
def test_unreachable_otii_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                        # bound, not listening: refused
        with pytest.raises(InstrumentConnectError, match="nothing listens"):
            OtiiPower(OtiiConfig(host="127.0.0.1", port=port))


def test_an_account_is_needed_when_the_otii_is_logged_out(
        sim: OtiiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTII_USERNAME")
    monkeypatch.delenv("OTII_PASSWORD")
    with pytest.raises(InstrumentConnectError, match=rf"127\.0\.0\.1:{sim.port}.*Not logged in"
                                                     r".*credentials"):
        OtiiPower(config(sim))


def test_no_device_found(dut: VirtualDut) -> None:
    with OtiiServer(dut, devices=[]) as sim:
        with pytest.raises(InstrumentConnectError, match="no Arc or Ace connected"):
            OtiiPower(config(sim))
        assert sim.commands()[-2:] == ["otii_return_license", "otii_logout"]   # nothing kept


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
    sim.plug()
    power.on()                                           # back, and usable again
    assert dut.powered


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
    with pytest.raises(InstrumentConnectError, match=rf"127\.0\.0\.1:{sim.port}.*connection "
                                                     r"lost"):
        power.is_on
    power.off()                                          # on a fresh connection
    assert not dut.powered and power.connected
    assert [r.connection for r in sim.requests if r.cmd == "arc_set_main"][-1] > \
        [r.connection for r in sim.requests if r.cmd == "arc_get_main"][-1]


def test_a_command_that_timed_out_and_runs_late_is_undone(sim: OtiiServer,
                                                          dut: VirtualDut) -> None:
    with OtiiPower(config(sim, settle=2.0)) as p:
        sim.delay("arc_set_main", 3.5)                   # past the vendor client's 3 s
        with pytest.raises(InstrumentError, match=rf"127\.0\.0\.1:{sim.port}.*no reply to "
                                                  r"arc_set_main\(True\)"):
            p.on()
        sim.clear_faults()                               # the late one is already under way
        p.is_on                                          # answered on a fresh connection
        p.safe_state()

        def ran_late() -> bool:
            return any(r.cmd == "arc_set_main" and r.data["enable"] for r in sim.requests)
        wait_until(ran_late, timeout=10)
        assert not dut.powered and not sim.device.main
        conns = {r.connection for r in sim.requests if r.cmd in ("arc_set_main", "arc_get_main")}
        assert len(conns) >= 2


def test_safe_state_reads_back_and_repeats_a_lost_switch_off(power: OtiiPower, sim: OtiiServer,
                                                              dut: VirtualDut) -> None:
    power.on()
    sim.ignore("arc_set_main")                           # acknowledged, never done
    power.safe_state()
    assert not dut.powered
    power.on()
    for _ in range(4):                                   # twice on each of two connections
        sim.ignore("arc_set_main")
    with pytest.raises(InstrumentError, match=rf"127\.0\.0\.1:{sim.port}.*still on"):
        power.safe_state()


def test_safe_state_gets_past_a_garbled_reply(power: OtiiPower, sim: OtiiServer,
                                              dut: VirtualDut) -> None:
    power.on()
    sim.garble("arc_get_main")                           # the read-back is unreadable
    power.safe_state()                                   # so it is done again, reconnected
    assert not dut.powered and power.connected


def test_a_reply_without_its_value_is_a_protocol_error(power: OtiiPower,
                                                      sim: OtiiServer) -> None:
    sim.ignore("arc_get_main")                           # answers {}: no value at all
    with pytest.raises(ProtocolError, match=rf"127\.0\.0\.1:{sim.port}.*arc_get_main"):
        power.is_on


def test_safe_state_stops_a_recording_it_did_not_start(power: OtiiPower, sim: OtiiServer) -> None:
    with OtiiClient().connect(host=sim.host, port=sim.port, try_for_seconds=2,
                              licensing=LicensingMode.MANUAL) as other:
        other.get_active_project().start_recording()
    assert sim.state.running()
    power.safe_state()
    assert not sim.state.running()


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
