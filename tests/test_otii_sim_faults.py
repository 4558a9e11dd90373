"""The Otii simulator's login and fault API: it starts logged out like a real Otii, every
injected fault can be switched off again, an unplugged device can be plugged back, and a request
line that is too long gets exactly one answer."""
from __future__ import annotations

import json
import socket
import time

import pytest
from otii_tcp_client.otii_client import LicensingMode, OtiiClient
from otii_tcp_client.otii_exception import Otii_Exception

from hil.protocols import otii_json as oj
from hil.sim.dut import VirtualDut
from hil.sim.otii_server import MAX_REQUEST_BYTES, OtiiServer


class Raw:
    """A plain client reading raw reply bytes (to see line ends and ids as sent)."""

    def __init__(self, sim: OtiiServer) -> None:
        self.sock = socket.create_connection(sim.address, timeout=5)
        self.buf = b""
        self.reply()                                   # the greeting

    def reply(self) -> bytes:
        """The next reply line with its line end, whatever that is."""
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            assert data, "server closed the connection"
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def ask(self, cmd: str, trans_id: str = "7") -> bytes:
        self.sock.sendall(oj.encode(oj.request(cmd, trans_id=trans_id)))
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def manual(sim: OtiiServer):
    return OtiiClient().connect(host=sim.host, port=sim.port, try_for_seconds=2,
                                licensing=LicensingMode.MANUAL)


# ------------------------------------------------------------------------------- login
def test_starts_logged_out_and_logs_in_only_with_an_account(dut: VirtualDut) -> None:
    with OtiiServer(dut, accounts={"ada": "pw"}) as sim, manual(sim) as otii:
        assert otii.is_logged_in() is False
        with pytest.raises(Otii_Exception) as err:
            otii.get_licenses()
        assert err.value.type == "Not logged in"
        with pytest.raises(Otii_Exception) as err:
            otii.login("ada", "wrong")
        assert err.value.type == "Could not login" and otii.is_logged_in() is False
        otii.login("ada", "pw")
        assert otii.is_logged_in() is True and otii.get_licenses()[0]["id"] == 1
        otii.logout()
        assert otii.is_logged_in() is False


def test_default_account_and_its_credentials_file(sim: OtiiServer, tmp_path) -> None:
    path = sim.write_credentials(tmp_path / "c.json")
    with OtiiClient().connect(host=sim.host, port=sim.port, try_for_seconds=2,
                              credentials=str(path)) as otii:
        assert otii.is_logged_in() and sim.state.licenses[0]["reserved_to"] == "hil"
    assert not sim.state.logged_in and sim.state.licenses[0]["reserved_to"] == ""


def test_logged_in_at_start_on_request(dut: VirtualDut) -> None:
    with OtiiServer(dut, logged_in=True) as sim, manual(sim) as otii:
        assert otii.is_logged_in() is True and otii.get_licenses()


# ------------------------------------------------------------------------------- faults
def test_flag_faults_and_delays_switch_off(sim: OtiiServer) -> None:
    raw = Raw(sim)
    try:
        sim.faults.lf_only = True
        sim.faults.numeric_trans_id = True
        reply = raw.ask("otii_is_logged_in")
        assert not reply.endswith(b"\r\n") and json.loads(reply)["trans_id"] == 7
        sim.delay("otii_get_devices", 60.0)
        sim.clear_faults()
        reply = raw.ask("otii_is_logged_in")
        assert reply.endswith(b"\r\n") and json.loads(reply)["trans_id"] == "7"
        raw.sock.settimeout(10)                        # far below the 60 s delay cleared
        assert json.loads(raw.ask("otii_get_devices"))["data"]["devices"]
    finally:
        raw.close()


def test_a_delay_ends_when_set_to_zero(sim: OtiiServer) -> None:
    sim.delay("otii_get_devices", 60.0)
    assert sim.faults.delays == {"otii_get_devices": 60.0}
    sim.delay("otii_get_devices", 0)
    assert sim.faults.delays == {}


def test_clear_faults_drops_queued_faults_and_refusal(sim: OtiiServer) -> None:
    sim.inject_error("Command failure", "arc_get_main", message="x")
    sim.garble()
    sim.ignore("arc_set_main")
    sim.deny = "busy"
    sim.clear_faults()
    with manual(sim) as otii:
        arc = otii.get_devices(timeout=0)[0]
        arc.set_main(True)
        assert arc.get_main() is True
        arc.set_main(False)


def test_an_unplugged_device_can_be_plugged_back(sim: OtiiServer, dut: VirtualDut) -> None:
    with manual(sim) as otii:
        arc = otii.get_devices(timeout=0)[0]
        arc.enable_channel("mc", True)
        project = otii.get_active_project()
        arc.set_main(True)
        project.start_recording()
        first = project.get_last_recording()
        sim.unplug()
        assert otii.get_devices(timeout=0) == [] and not dut.powered
        with pytest.raises(Otii_Exception) as err:
            arc.get_main()
        assert err.value.type == "Device not connected"
        ended = first.get_channel_data_count(arc.id, "mc")
        project.stop_recording()
        sim.plug()
        assert [d.id for d in otii.get_devices(timeout=0)] == [arc.id]
        assert arc.get_main() is False and not dut.powered      # back with its output off
        arc.set_main(True)
        assert dut.powered
        project.start_recording()
        second = project.get_last_recording()
        deadline = time.monotonic() + 5
        while second.get_channel_data_count(arc.id, "mc") < 100:    # a new recording grows
            assert time.monotonic() < deadline, "no data after plugging back"
            time.sleep(0.01)
        project.stop_recording()
        arc.set_main(False)
        assert first.get_channel_data_count(arc.id, "mc") == ended   # the old one stays cut
        sim.plug()                                                   # nothing unplugged: no-op


def test_a_request_line_too_long_gets_one_reply(sim: OtiiServer) -> None:
    raw = Raw(sim)
    try:
        big = b'{"type":"request","cmd":"x","data":{"pad":"' + b"p" * MAX_REQUEST_BYTES + b'"}}'
        raw.sock.sendall(big + b"\r\n" + oj.encode(oj.request("otii_is_logged_in",
                                                              trans_id="after")))
        first = json.loads(raw.reply())
        assert first["errorcode"] == "Request too large"
        assert first["data"]["read_size"] == str(len(big))
        assert json.loads(raw.reply())["trans_id"] == "after"      # the next reply is its own
        raw.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):                         # and nothing else came
            raw.sock.recv(100)
    finally:
        raw.close()

