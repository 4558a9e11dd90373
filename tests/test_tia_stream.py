"""TiA client against the TiA simulator: captures, transports, control details, injected faults."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from hil.errors import (BusTimeout, ConnectionLost, InstrumentConnectError, InstrumentError,
                        ProtocolError, SimulatorError, ValidationError)
from hil.cli import capture_tia as tia_capture
from hil.instruments.tia import TiaClient
from hil.protocols import tia_control as ctl
from hil.sim.bench import VirtualBench
from hil.sim.tia_server import Fault, TiaServer, _fault_plan, parse_faults
from hil.sim.tia_signals import SINE_AMPLITUDE, SINE_HZ, parse_signals


@pytest.fixture
def serve():
    servers: list[TiaServer] = []

    def start(signals: str = "eeg:4x2@1000/ramp", **kw) -> TiaServer:
        kw.setdefault("speed", 4.0)
        servers.append(TiaServer(signals, **kw))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def connect(server: TiaServer, **kw) -> TiaClient:
    kw.setdefault("timeout", 3.0)
    return TiaClient(server.host, server.port, **kw)


def test_eeg_style_capture_is_complete_and_validates(serve):
    server = serve("eeg:8x4@500/sine,emg:2x4@500/ramp,sensors:3x1@125/const", speed=8)
    with connect(server) as client:
        cap = client.capture(packets=200)
    assert cap.n_packets == 200 and cap.lost_packets == 0
    assert cap["eeg"].samples.shape == (8, 800) and cap["sensors"].samples.shape == (3, 200)
    assert cap["eeg"].channels[:2] == ["eeg1", "eeg2"] and cap["eeg"].block_size == 4
    np.testing.assert_array_equal(np.diff(cap["emg"].samples[1]), 1)       # no sample lost
    np.testing.assert_array_equal(cap["sensors"].samples[:, 0], [1, 2, 3])
    (cap.validate().rate("eeg").rate("sensors").no_gaps().monotonic()
        .value_range("eeg", -SINE_AMPLITUDE * 1.01, SINE_AMPLITUDE * 1.01)
        .waveform("eeg", SINE_HZ, SINE_AMPLITUDE, freq_tolerance=0.02))


def test_capture_by_seconds_then_again_continues_numbering(serve):
    server = serve("eeg:2x1@1000", speed=5)
    with connect(server) as client:
        first = client.capture(seconds=0.05)
        second = client.capture(packets=20)
    assert first.n_packets > 0
    assert int(second.packet_numbers[0]) > int(first.packet_numbers[-1])
    np.testing.assert_array_equal(np.diff(second.packet_numbers.astype(np.int64)), 1)


def test_clients_have_their_own_packet_numbers(serve):
    server = serve()
    with connect(server) as a:
        a.capture(packets=30)
        with connect(server) as b:
            cap_b = b.capture(packets=10)
            cap_a = a.capture(packets=10)
    assert cap_b.packet_numbers[0] == 0
    assert cap_a.packet_numbers[0] >= 30


def test_fast_mode_and_blocks_iteration(serve):
    server = serve("eeg:16x4@4000/ramp", realtime=False)
    with connect(server) as client:
        blocks = list(client.blocks(packets=20_000))
        client.stop()
    numbers = np.concatenate([b.numbers for b in blocks])
    np.testing.assert_array_equal(numbers, np.arange(20_000))
    eeg = np.concatenate([b.samples["eeg"] for b in blocks], axis=1)
    assert eeg.shape == (16, 80_000)


def test_fast_mode_serves_two_clients_at_once(serve):
    server = serve("eeg:8x1@1000/ramp", realtime=False)
    with connect(server) as a, connect(server) as b:
        a.start()
        b.start()
        caps = [a.capture(packets=30_000), b.capture(packets=30_000), a.capture(packets=10)]
    for cap in caps[:2]:
        np.testing.assert_array_equal(cap.packet_numbers, np.arange(30_000))
        cap.validate().monotonic()
        eeg = cap["eeg"].samples          # fast mode repeats one run's samples; order holds
        np.testing.assert_array_equal(eeg[3] - eeg[0], 300_000)
    assert caps[2].timestamps[0] > caps[0].timestamps[-1]


@pytest.mark.parametrize("order", ["channel_major", "sample_major"])
def test_sample_order_option_both_ends(serve, order):
    server = serve("eeg:3x5@1000/ramp", sample_order=order)
    with connect(server, sample_order=order) as client:
        cap = client.capture(packets=10)
    ramp = cap["eeg"].samples
    np.testing.assert_array_equal(np.diff(ramp, axis=1), 1)
    np.testing.assert_array_equal(ramp[:, 0] - ramp[0, 0], [0, 100_000, 200_000])


def test_udp_data_connection(serve):
    server = serve("eeg:4x1@1000/ramp")
    with connect(server, transport="udp") as client:
        cap = client.capture(packets=50)
    assert cap.n_packets == 50
    cap.validate().no_gaps()        # loopback loses nothing at this rate


def test_aperiodic_type_sent_only_on_change(serve):
    server = serve("eeg:2x1@1000/ramp,button:1@100", speed=4)
    with connect(server) as client:
        cap = client.capture(packets=60)
    button = cap["button"]
    assert button.packet_index is not None and button.n_samples in (5, 6, 7)
    assert set(np.diff(button.packet_index)) == {10}
    assert set(np.abs(np.diff(button.samples[0]))) == {1.0}
    assert cap["eeg"].packet_index is None


def test_dut_sensors_as_source(serve):
    bench = VirtualBench()
    try:
        server = serve("sensors:5x1@100/dut", sensor=bench.dut.sensor)
        with connect(server) as client:
            cap = client.capture(packets=10)
        temp, humidity, *_ = cap["sensors"].samples
        assert cap["sensors"].channels[0] == "temperature"
        assert np.all((temp > 22) & (temp < 26)) and np.all(humidity > 30)
    finally:
        bench.close()


# -------------------------------------------------------------------- faults the client notices
def test_dropped_packets_are_counted_and_fail_validation(serve):
    server = serve(faults="drop@10x3")
    with connect(server) as client:
        cap = client.capture(packets=30)
    assert cap.lost_packets == 3
    assert cap.packet_stats().missing == 3
    with pytest.raises(ValidationError, match="missing"):
        cap.validate().no_gaps()


def test_duplicate_number_is_visible(serve):
    server = serve(faults="duplicate@5")
    with connect(server) as client:
        cap = client.capture(packets=20)
        assert client.duplicates == 1
    assert cap.packet_stats().duplicates == 1


@pytest.mark.parametrize("fault, field", [("size@7", "size"), ("version2@7", "version"),
                                          ("corrupt@7", "version")])
def test_malformed_packets_stop_the_capture_with_the_field(serve, fault, field):
    server = serve(faults=fault)
    with connect(server) as client, pytest.raises(ProtocolError) as info:
        client.capture(packets=30)
    assert info.value.field == field
    assert info.value.offset == 7 * 69 and info.value.where is not None   # eeg 4x2: 69 bytes
    assert f"{server.host}:{server.port} data connection" in str(info.value)
    assert f"stream offset {7 * 69}" in str(info.value)


def test_resync_skips_a_corrupt_packet_and_counts_it_lost(serve):
    server = serve(faults="corrupt@7")
    with connect(server, resync=True) as client:
        cap = client.capture(packets=30)
        assert client.decoder.errors and client.decoder.skipped_bytes > 0
    assert cap.lost_packets == 1 and 7 not in cap.packet_numbers


def test_master_first_server_is_flagged_and_accepted_on_request(serve):
    server = serve("eeg:1x1@1000,emg:3x1@1000*", master_first=True)
    with connect(server) as client, pytest.raises(ProtocolError, match="master-first"):
        client.capture(packets=5)
    with connect(server, master_first=True) as client:
        assert client.capture(packets=5)["emg"].n_channels == 3


def test_server_vanishing_mid_stream_is_connection_lost(serve):
    server = serve(faults="disconnect@12")
    with connect(server) as client, pytest.raises(ConnectionLost) as info:
        client.capture(packets=100)
    assert f"{server.host}:{server.port}" in str(info.value)
    assert "after 12 packets" in str(info.value)


def test_stall_longer_than_timeout(serve):
    server = serve(faults="stall@5:1.0")
    with connect(server, timeout=0.2) as client, pytest.raises(BusTimeout, match="no TiA data"):
        client.capture(packets=20)


def test_unreachable_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InstrumentConnectError, match=f"127.0.0.1:{port}"):
        TiaClient("127.0.0.1", port, timeout=1)


def test_silent_server_times_out_on_control():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with pytest.raises(BusTimeout, match="CheckProtocolVersion"):
            TiaClient("127.0.0.1", listener.getsockname()[1], timeout=0.2)


def test_bad_control_reply_is_protocol_error():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        import threading

        def reply() -> None:
            conn, _ = listener.accept()
            conn.recv(100)
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            conn.close()
        threading.Thread(target=reply, daemon=True).start()
        with pytest.raises(ProtocolError) as info:
            TiaClient("127.0.0.1", listener.getsockname()[1], timeout=1)
    assert info.value.field == "version line"


# -------------------------------------------------------------------- control details (raw)
def raw_session(server: TiaServer) -> tuple[socket.socket, ctl.ControlParser]:
    sock = socket.create_connection((server.host, server.port), timeout=2)
    return sock, ctl.ControlParser()


def ask(sock: socket.socket, parser: ctl.ControlParser, data: bytes, n: int = 1) -> list:
    sock.sendall(data)
    got: list[ctl.ControlMessage] = []
    while len(got) < n:
        got += parser.feed(sock.recv(65536))
    return got


def test_pipelined_requests_and_start_before_connect(serve):
    server = serve()
    sock, parser = raw_session(server)
    with sock:
        reqs = b"".join(ctl.encode(ctl.request(c, a)) for c, a in [
            (ctl.CHECK_PROTOCOL_VERSION, ""), (ctl.GET_METAINFO, ""),
            (ctl.GET_DATA_CONNECTION, "TCP"), (ctl.START_DATA_TRANSMISSION, "")])
        ok, meta, port, started = ask(sock, parser, reqs, 4)
        assert [ok.command, meta.command, started.command] == ["OK", "MetaInfo", "OK"]
        assert int(port.argument) > 0
        with socket.create_connection((server.host, int(port.argument)), timeout=2) as data:
            head = data.recv(33, socket.MSG_WAITALL)
            assert head[0] == 3 and int.from_bytes(head[17:25], "little") == 0


@pytest.mark.parametrize("space, expected", [(True, b"DataConnectionPort: "),
                                             (False, b"DataConnectionPort:")])
def test_reply_spacing_option(serve, space, expected):
    server = serve(colon_space=space)
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(b"TiA 1.0\nGetDataConnection:TCP\n\n")
        assert expected in sock.recv(200)


def test_control_errors(serve):
    server = serve()
    sock, parser = raw_session(server)
    with sock:
        [e1] = ask(sock, parser, b"TiA 1.0\nStartDataTransmission\n\n")
        [e2] = ask(sock, parser, b"TiA 1.0\nFlyToTheMoon\n\n")
        [e3] = ask(sock, parser, b"TiA 2.0\nCheckProtocolVersion\n\n")
        [e4] = ask(sock, parser, b"TiA 1.0\nGetDataConnection: SCTP\n\n")
    assert all(e.is_error for e in (e1, e2, e3, e4))
    assert "GetDataConnection first" in e1.error_description()
    assert "2.0" in e3.error_description()
    with connect(server) as client, pytest.raises(InstrumentError, match="already has a data"):
        client.command(ctl.GET_DATA_CONNECTION, "TCP", expect=ctl.DATA_CONNECTION_PORT)


def test_server_state_connection(serve):
    server = serve()
    with connect(server) as client:
        assert client.server_state() == [ctl.SERVER_STATE_RUNNING]
        port = int(client.command(ctl.GET_SERVER_STATE_CONNECTION,
                                  expect=ctl.SERVER_STATE_CONNECTION_PORT).argument)
        with socket.create_connection((server.host, port), timeout=2) as state:
            parser = ctl.ControlParser()
            assert parser.feed(state.recv(100))[0].command == ctl.SERVER_STATE_RUNNING
            server.close()
            msgs = parser.feed(state.recv(100))
    assert msgs[0].command == ctl.SERVER_STATE_SHUTDOWN


# -------------------------------------------------------------------- configuration, rig, CLI
def test_signal_and_fault_specs():
    sigs = parse_signals("eeg:8x4@500/sine, emg:2x4@500/noise*, button:1@5")
    assert [(s.type, s.channels, s.block, s.master) for s in sigs] == [
        ("eeg", 8, 4, False), ("emg", 2, 4, True), ("button", 1, 1, False)]
    assert parse_signals([{"type": "User1", "channels": 2, "rate": 10}])[0].type == "user_1"
    for bad in ("eeg:8x4", "eeg:8x4@500,emg:2x1@500", "brain:1@1", "eeg:1@1/magic",
                "eeg:1@1*,emg:1@1*", "button:1@1"):
        with pytest.raises(SimulatorError):
            parse_signals(bad)
    assert parse_faults("drop@10x3,stall@5:0.2,corrupt@9/100") == [
        Fault("drop", 10, 3, 0.5), Fault("stall", 5, 1, 0.2), Fault("corrupt", 9, 1, 0.5, 100)]
    with pytest.raises(SimulatorError):
        parse_faults("explode@3")


def test_fault_plan_splits_runs():
    plan = list(_fault_plan(parse_faults("drop@3x2,duplicate@7,size@8,stall@9:0.1"), 0, 12))
    assert plan == [("packets", (0, 3)), ("packets", (5, 7)),      # 3 and 4 dropped
                    ("packets", (7, 8)), ("packets", (7, 8)),      # 7 twice
                    ("size", 8), ("stall", 0.1), ("packets", (9, 12))]
    repeating = list(_fault_plan(parse_faults("drop@2/10"), 20, 10))
    assert repeating == [("packets", (0, 2)), ("packets", (3, 10))]


def test_capture_command_json(serve, capsys):
    server = serve("eeg:2x1@1000", speed=4)
    code = tia_capture.main([server.address, "--seconds", "0.05", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["gaps"] == 0 and out["signals"]["eeg"]["channels"] == 2


def test_capture_command_text_and_gaps(serve, capsys):
    server = serve("eeg:2x1@1000", speed=4, faults="drop@3")
    code = tia_capture.main([server.address, "--seconds", "0.05"])
    out = capsys.readouterr().out
    assert code == 1 and "gaps 1" in out and "eeg" in out


def test_capture_command_unreachable(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert tia_capture.main([f"127.0.0.1:{port}", "--timeout", "1"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_sim_command_prints_where_it_listens():
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "sim", "tia", "--port", "0",
                             "--signals", "eeg:2x1@1000", "--fast"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        host, port = re.search(r"listening on (\S+):(\d+)", line).groups()
        with TiaClient(host, int(port), timeout=3) as client:
            assert client.capture(packets=1000).n_packets == 1000
    finally:
        proc.terminate()
        proc.wait(5)
