"""The Otii simulator against peers nobody here wrote: plain sockets and the vendor's client.

Spec otii-tcp.md §14 steps 2-5: raw wire checks (splitting only on CRLF, like the vendor client),
a full measurement run through `otii-tcp-client` in AUTO licensing, the exact command sequences in
the simulator's request log, and negative tests proving these checks catch a broken server.
"""
from __future__ import annotations

import json
import math
import socket
import time

import pytest
from otii_tcp_client.otii_client import LicensingMode, OtiiClient, OtiiClientException
from otii_tcp_client.otii_exception import Otii_Exception

from hil.protocols import otii_json as oj
from hil.sim.dut import VirtualDut
from hil.sim.otii_server import OtiiServer


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTII_USERNAME", raising=False)
    monkeypatch.delenv("OTII_PASSWORD", raising=False)


@pytest.fixture
def creds(sim: OtiiServer, tmp_path) -> str:
    """A credentials file with the simulator's account (it starts logged out, like an Otii)."""
    return str(sim.write_credentials(tmp_path / "credentials.json"))


def connect(sim: OtiiServer, **kw):
    kw.setdefault("try_for_seconds", 2)
    kw.setdefault("credentials", "")
    return OtiiClient().connect(host=sim.host, port=sim.port, **kw)


class Raw:
    """A plain TCP client that splits replies only on CRLF, as the vendor client does."""

    def __init__(self, server: OtiiServer) -> None:
        self.sock = socket.create_connection(server.address, timeout=3)
        self.split = oj.CrlfSplitter()
        self.raw = bytearray()
        self.lines: list[bytes] = []

    def line(self) -> dict:
        while not self.lines:
            data = self.sock.recv(65536)
            assert data, "server closed the connection"
            self.raw += data
            self.lines += self.split.feed(data)
        return json.loads(self.lines.pop(0))

    def send(self, text: bytes) -> dict:
        self.sock.sendall(text)
        return self.line()

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------------------- §14.2 wire
def test_raw_wire(sim: OtiiServer) -> None:
    raw = Raw(sim)
    try:
        greeting = raw.line()
        assert greeting["type"] == "information" and greeting["info"] == "connected"
        assert {"otii_version", "protocol_version", "server"} <= set(greeting["data"])
        reply = raw.send(b'{"type":"request","cmd":"otii_is_logged_in","trans_id":"abc-1"}\n')
        assert reply == {"type": "response", "cmd": "otii_is_logged_in", "trans_id": "abc-1",
                         "data": {"logged_in": False}}
        reply = raw.send(b'{"type":"request","cmd":"otii_get_devices","trans_id":"x"}\r\n')
        assert reply["data"]["devices"][0]["type"] == "Arc"
        reply = raw.send(b'{"type":"request","cmd":"otii_frobnicate","trans_id":"q7"}\r\n')
        assert (reply["type"], reply["errorcode"], reply["trans_id"]) == \
               ("error", "Invalid command", "q7")
        reply = raw.send(b'{"type":"request","cmd":"arc_set_main","trans_id":"m",'
                         b'"data":{"device_id":"Arc12345678912345678912345678900001"}}\r\n')
        assert (reply["errorcode"], reply["data"]["key"]) == ("Missing key in request", "enable")
        reply = raw.send(b'this is not json\r\n')
        assert reply["errorcode"] == "Not able to parse request" and "trans_id" not in reply
        text = bytes(raw.raw)
        assert text.isascii() and text.endswith(b"\r\n")
        assert text.count(b"\n") == text.count(b"\r\n") == 6
    finally:
        raw.close()


def test_every_command_of_the_client_is_known(sim: OtiiServer) -> None:
    raw = Raw(sim)
    try:
        raw.line()
        from hil.sim.otii_commands import COMMANDS
        assert len(COMMANDS) == 99
        last = "otii_shutdown"                       # replies, then closes the connection
        for k, cmd in enumerate([c for c in COMMANDS if c != last] + [last]):
            reply = raw.send(oj.encode(oj.request(cmd, {}, trans_id=f"c{k}")))
            assert reply["trans_id"] == f"c{k}" and "data" in reply
            assert reply.get("errorcode") != "Invalid command", cmd
            if reply["type"] == "error":     # whatever the refusal, the client can build it
                assert Otii_Exception(reply).type == reply["errorcode"]
    finally:
        raw.close()


# ------------------------------------------------------------------------------- §14.3-4 run
def test_vendor_client_full_run_in_auto_licensing(sim: OtiiServer, dut: VirtualDut,
                                                  creds: str) -> None:
    with connect(sim, credentials=creds) as otii:
        devices = otii.get_devices(timeout=0)
        assert [d.type for d in devices] == ["Arc"]
        arc = devices[0]
        arc.set_main_voltage(3.3)
        arc.set_max_current(0.5)
        assert (arc.get_main_voltage(), arc.get_max_current()) == (3.3, 0.5)
        for ch in ("mc", "mv", "mp"):
            arc.enable_channel(ch, True)
        project = otii.get_active_project()
        project.start_recording()
        arc.set_main(True)
        assert arc.get_main() and dut.powered
        time.sleep(0.6)
        arc.set_main(False)
        assert not dut.powered
        project.stop_recording()
        rec = project.get_last_recording()
        assert rec is not None and rec.start_time is not None
        info = rec.get_channel_info(arc.id, "mc")
        assert info["sample_rate"] == 4000 and info["to"] > info["from"] == 0
        stats = rec.get_channel_statistics(arc.id, "mc", info["from"], info["to"])
        assert stats["min"] <= stats["average"] <= stats["max"]
        assert stats["energy"] > 0 and stats["charge"] > 0
        count = rec.get_channel_data_count(arc.id, "mc")
        data = rec.get_channel_data(arc.id, "mc", 0, count)
        assert data["data_type"] == "analog" and len(data["values"]) == count
        assert data["interval"] == 1 / 4000
        assert math.isclose(sum(data["values"]) / 4000, stats["charge"], rel_tol=1e-4)  # 5 digits
        with pytest.raises(Otii_Exception) as err:
            otii.open_project("no-such-project.otii3")
        assert err.value.type == "Command failure"
        project.close(force=True)
    cmds = sim.commands()
    assert cmds[:4] == ["otii_is_logged_in", "otii_login", "otii_get_licenses",
                        "otii_reserve_license"]
    assert cmds[-2:] == ["otii_return_license", "otii_logout"]
    assert sim.state.licenses[0]["reserved_to"] == "" and not sim.state.logged_in


def test_sequence_logged_in_already(dut: VirtualDut) -> None:
    with OtiiServer(dut, logged_in=True) as sim:
        with connect(sim):
            assert sim.state.licenses[0]["reserved_to"] == "sim-user"
        assert sim.commands() == ["otii_is_logged_in", "otii_get_licenses",
                                  "otii_reserve_license", "otii_return_license"]


def test_sequence_not_logged_in_without_credentials(sim: OtiiServer) -> None:
    with pytest.raises(Otii_Exception) as err:     # a real server lists no license logged out
        connect(sim)
    assert err.value.type == "Not logged in"
    assert sim.commands() == ["otii_is_logged_in", "otii_get_licenses"]


def test_sequence_with_credentials_logs_in_and_redacts_the_password(
        sim: OtiiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sim.state.accounts = {"ada": "s3cret-pw"}
    monkeypatch.setenv("OTII_USERNAME", "ada")
    monkeypatch.setenv("OTII_PASSWORD", "s3cret-pw")
    with connect(sim):
        assert sim.state.licenses[0]["reserved_to"] == "ada"
    assert sim.commands() == ["otii_is_logged_in", "otii_login", "otii_get_licenses",
                              "otii_reserve_license", "otii_return_license", "otii_logout"]
    assert "s3cret-pw" not in repr(sim.requests)


def test_sequence_with_a_license_already_reserved(sim: OtiiServer) -> None:
    sim.state.logged_in = True
    sim.state.licenses[0]["reserved_to"] = "someone"
    with connect(sim):
        pass
    assert sim.commands() == ["otii_is_logged_in", "otii_get_licenses"]


# ------------------------------------------------------------------------------- §14.5 negatives
def test_lf_only_output_times_out_in_the_vendor_client(sim: OtiiServer) -> None:
    otii = connect(sim, licensing=LicensingMode.MANUAL)
    try:
        sim.faults.lf_only = True
        with pytest.raises(TimeoutError):
            otii.is_logged_in()
    finally:
        otii.connection.close_connection()


def test_numeric_trans_id_is_a_mismatch(sim: OtiiServer) -> None:
    otii = connect(sim, licensing=LicensingMode.MANUAL)
    try:
        sim.faults.numeric_trans_id = True
        with pytest.raises(Exception, match="Transaction id mismatch"):
            otii.is_logged_in()
    finally:
        otii.connection.close_connection()


def test_unavailable_license_fails_after_polling(sim: OtiiServer, creds: str) -> None:
    sim.state.licenses[0]["available"] = False
    with pytest.raises(OtiiClientException, match="Cannot reserve licenses"):
        connect(sim, try_for_seconds=1, credentials=creds)
    cmds = sim.commands()
    assert cmds[:2] == ["otii_is_logged_in", "otii_login"]
    assert set(cmds[2:]) == {"otii_get_licenses"} and len(cmds) >= 4      # it polled


def test_more_than_40000_samples_come_in_exact_chunks(dut: VirtualDut) -> None:
    with OtiiServer(dut, speed=25) as sim, connect(sim, licensing=LicensingMode.MANUAL) as otii:
        arc = otii.get_devices(timeout=0)[0]
        arc.enable_channel("mc", True)
        project = otii.get_active_project()
        project.start_recording()
        rec = project.get_last_recording()
        deadline = time.monotonic() + 10           # 20 s of recording time: 0.8 s at speed 25
        while rec.get_channel_data_count(arc.id, "mc") <= 2 * 40_000:
            assert time.monotonic() < deadline, "the recording did not grow"
            time.sleep(0.05)
        project.stop_recording()
        count = rec.get_channel_data_count(arc.id, "mc")
        assert count > 2 * 40_000
        sim.clear_log()
        data = rec.get_channel_data(arc.id, "mc", 0, count)
        assert len(data["values"]) == count
        chunks = [r.data for r in sim.requests if r.cmd == "recording_get_channel_data"]
        assert len(chunks) == math.ceil(count / 40_000)
        assert [c["index"] for c in chunks] == list(range(0, count, 40_000))
        assert sum(c["count"] for c in chunks) == count


@pytest.mark.parametrize("code", oj.ERROR_CODES)
def test_each_error_code_surfaces_as_otii_exception(sim: OtiiServer, code: str) -> None:
    with connect(sim, licensing=LicensingMode.MANUAL) as otii:
        arc = otii.get_devices(timeout=0)[0]
        sim.inject_error(code, "arc_get_main")
        with pytest.raises(Otii_Exception) as err:
            arc.get_main()
        assert err.value.type == code
        assert arc.get_main() is False             # one injection, one error


def test_no_information_message_while_a_recording_runs(sim: OtiiServer, creds: str) -> None:
    watcher = Raw(sim)
    try:
        watcher.line()                             # the greeting, then silence
        with connect(sim, credentials=creds) as otii:
            arc = otii.get_devices(timeout=0)[0]
            arc.enable_channel("mc", True)
            project = otii.get_active_project()
            project.start_recording()
            arc.set_main(True)
            for _ in range(5):                     # the client takes any information as a reply
                rec = project.get_last_recording()
                assert rec.get_channel_data_count(arc.id, "mc") >= 0
                time.sleep(0.05)
            arc.set_main(False)
            project.stop_recording()
        watcher.sock.settimeout(0.2)
        with pytest.raises(socket.timeout):
            watcher.sock.recv(100)
    finally:
        watcher.close()


def test_an_unsolicited_information_message_would_be_caught(sim: OtiiServer) -> None:
    otii = connect(sim, licensing=LicensingMode.MANUAL)
    try:
        sim.push_information()                           # sent before push_information returns
        sim.delay("otii_is_logged_in", 0.3)              # so it is read on its own
        with pytest.raises(KeyError):
            otii.is_logged_in()
    finally:
        otii.connection.close_connection()


def test_connection_denied(sim: OtiiServer) -> None:
    sim.deny = "licensed to another host"
    with pytest.raises(Otii_Exception) as err:
        connect(sim, licensing=LicensingMode.MANUAL)
    assert err.value.type == "Connection denied"


def test_old_server_rejects_is_logged_in_so_auto_licensing_fails(dut: VirtualDut) -> None:
    with OtiiServer(dut, otii_version="3.5.0", logged_in=True) as sim:
        with pytest.raises(Otii_Exception) as err:
            connect(sim)
        assert err.value.type == "Invalid command"
        with connect(sim, licensing=LicensingMode.MANUAL) as otii:    # the documented workaround
            assert otii.get_devices(timeout=0)


def test_strict_licensing_refuses_device_commands_without_a_license(sim: OtiiServer) -> None:
    sim.state.strict_license = True
    with connect(sim, licensing=LicensingMode.MANUAL) as otii:
        arc = otii.get_devices(timeout=0)[0]
        with pytest.raises(Otii_Exception) as err:
            arc.get_main()
        assert err.value.type == "No license"
        otii.login("hil", "hil-sim")
        otii.reserve_license(1)
        assert arc.get_main() is False
        otii.return_license(1)
