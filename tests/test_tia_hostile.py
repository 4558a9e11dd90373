"""Hostile peers on real sockets (127.0.0.1): a TiA server that lies, a client that sends garbage.

The client must fail with a clear error naming host:port, connection and stream offset, never
hang past its timeout, never return wrong data. The simulator must answer a malformed request
with an Error reply and close that connection, without crashing or stalling its threads (an
exception in a thread fails the test: see filterwarnings in pyproject.toml).
"""
from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from hil.errors import BusTimeout, ConnectionLost, ProtocolError, SimulatorError
from hil.instruments.tia import TiaClient
from hil.protocols import tia_control as ctl
from hil.protocols.tia_metainfo import MetaInfo, SignalInfo, encode_metainfo
from hil.protocols.tia_packets import MAX_PACKET, encode_run, layout_for
from hil.sim.tia_server import TiaServer
from hil.timeout import Deadline

META = MetaInfo((SignalInfo("eeg", 1000.0, 2, ("a", "b", "c", "d")),), 1000.0, 2, {"id": "x"})
LAYOUT = layout_for(META)
SIZE = LAYOUT.size                       # 33 + 4 + 4·4·2 = 69


def packets(first: int, n: int) -> bytes:
    numbers = np.arange(first, first + n, dtype=np.uint64)
    data = [np.arange(4 * 2 * n, dtype=np.float32).reshape(4, 2 * n)]
    return encode_run(LAYOUT, numbers, numbers * 2000, data).tobytes()


@dataclass(frozen=True)
class Close:
    """A scripted reply: send these bytes, then close the control connection."""

    data: bytes = b""


class FakeServer:
    """A scripted TiA server: canned replies per command; on StartDataTransmission it sends
    `data` on the data connection, then closes it (or keeps it open, silent)."""

    def __init__(self, replies: dict[str, bytes | Close] | None = None, data: bytes = b"",
                 close_data: bool = True) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.data_listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.listener.getsockname()[:2]
        self.replies: dict[str, bytes | Close] = {
            ctl.CHECK_PROTOCOL_VERSION: ctl.encode(ctl.ok()),
            ctl.GET_METAINFO: ctl.encode(ctl.ControlMessage(ctl.METAINFO,
                                                            body=encode_metainfo(META))),
            ctl.GET_DATA_CONNECTION: ctl.encode(ctl.ControlMessage(
                ctl.DATA_CONNECTION_PORT, str(self.data_listener.getsockname()[1]))),
            ctl.START_DATA_TRANSMISSION: ctl.encode(ctl.ok()),
            ctl.STOP_DATA_TRANSMISSION: ctl.encode(ctl.ok()),
        } | (replies or {})
        self.data, self.close_data = data, close_data
        self.sent = b""                       # everything sent on the control connection
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def client(self, **kw) -> TiaClient:
        kw.setdefault("timeout", 2.0)
        return TiaClient(self.host, self.port, **kw)

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            self._socks.append(conn)
            parser = ctl.ControlParser()
            while chunk := conn.recv(4096):
                for msg in parser.feed(chunk):
                    reply = self.replies[msg.command]
                    data = reply.data if isinstance(reply, Close) else reply
                    self.sent += data           # first: the client may read it at once
                    conn.sendall(data)
                    if isinstance(reply, Close):
                        conn.close()
                        return
                    if msg.command == ctl.START_DATA_TRANSMISSION and not self._socks[1:]:
                        self._stream()
        except OSError:
            pass          # the test closed us

    def _stream(self) -> None:
        conn, _ = self.data_listener.accept()
        self._socks.append(conn)
        conn.sendall(self.data)
        if self.close_data:
            conn.close()

    def close(self) -> None:
        for s in [self.listener, self.data_listener, *self._socks]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._thread.join(timeout=5)


@pytest.fixture
def fake():
    servers: list[FakeServer] = []

    def start(**kw) -> FakeServer:
        servers.append(FakeServer(**kw))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def control_where(server: FakeServer | TiaServer) -> str:
    return f"{server.host}:{server.port} control connection"


# -------------------------------------------------------------------- lying servers: control
def test_unicode_digit_content_length_names_peer_field_and_offset(fake):
    ok = ctl.encode(ctl.ok())
    server = fake(replies={ctl.GET_METAINFO: b"TiA 1.0\nMetaInfo\nContent-Length: \xc2\xb2\n\n"})
    with pytest.raises(ProtocolError) as info:
        server.client()
    assert (info.value.field, info.value.offset) == ("Content-Length", len(ok) + 17)
    assert control_where(server) in str(info.value)
    assert f"stream offset {len(ok) + 17}" in str(info.value)


@pytest.mark.parametrize("port", ["\N{SUPERSCRIPT TWO}", "\N{ARABIC-INDIC DIGIT ONE}" * 3, "0",
                                  "65536", "99999999999999999999", "-1", ""])
def test_bad_data_port_names_peer_and_offset(fake, port):
    reply = ctl.encode(ctl.ControlMessage(ctl.DATA_CONNECTION_PORT, port))
    server = fake(replies={ctl.GET_DATA_CONNECTION: reply})
    with pytest.raises(ProtocolError) as info:
        server.client()
    before = len(server.sent) - len(reply)
    assert (info.value.field, info.value.offset) == (ctl.DATA_CONNECTION_PORT, before)
    assert control_where(server) in str(info.value) and f"stream offset {before}" in str(info.value)


@pytest.mark.parametrize("attr, value", [("numChannels", "1e9"), ("numChannels", "1e400"),
                                         ("blockSize", "inf"), ("samplingRate", "inf")])
def test_hostile_metainfo_names_attribute_peer_and_offset(fake, attr, value):
    body = encode_metainfo(META)
    at = body.index(b"<signal ")
    end = body.index(b">", at)
    element = re.sub(f'{attr}="[^"]*"'.encode(), f'{attr}="{value}"'.encode(), body[at:end])
    body = body[:at] + element + body[end:]
    reply = ctl.encode(ctl.ControlMessage(ctl.METAINFO, body=body))
    server = fake(replies={ctl.GET_METAINFO: reply})
    with pytest.raises(ProtocolError) as info:          # 1e9 channels: used to hang here
        server.client()
    offset = len(ctl.encode(ctl.ok())) + len(reply) - len(body) + at
    assert (info.value.field, info.value.offset) == (attr, offset)
    assert f"{attr}={value!r}" in str(info.value) and control_where(server) in str(info.value)
    assert f"stream offset {offset}" in str(info.value)


def test_content_length_longer_than_what_is_sent_times_out_not_hangs(fake):
    server = fake(replies={ctl.GET_METAINFO: b"TiA 1.0\nMetaInfo\nContent-Length: 100\n\n<tia"})
    with pytest.raises(BusTimeout, match=f"{server.host}:{server.port} did not answer GetMetaInfo"):
        server.client(timeout=0.3)


def test_content_length_beyond_the_limit_fails_at_once_not_after_the_timeout(fake):
    big = f"TiA 1.0\nMetaInfo\nContent-Length: {ctl.MAX_BODY + 1}\n\n".encode()
    server = fake(replies={ctl.GET_METAINFO: big})
    with pytest.raises(ProtocolError, match="Content-Length") as info:
        server.client(timeout=30)          # a wait for the body would end in BusTimeout
    assert control_where(server) in str(info.value)


def test_server_closing_mid_reply_is_connection_lost(fake):
    server = fake(replies={ctl.GET_METAINFO: Close(b"TiA 1.0\nMetaInfo\nContent-Le")})
    with pytest.raises(ConnectionLost, match=f"{server.host}:{server.port} closed the control"):
        server.client()


def test_reply_of_the_wrong_kind_names_peer_and_offset(fake):
    reply = ctl.encode(ctl.ControlMessage(ctl.SERVER_STATE_RUNNING))
    server = fake(replies={ctl.GET_METAINFO: reply})
    with pytest.raises(ProtocolError, match="GetMetaInfo with 'ServerStateRunning'") as info:
        server.client()
    assert info.value.offset == len(ctl.encode(ctl.ok()))
    assert f"stream offset {info.value.offset}" in str(info.value)


# -------------------------------------------------------------------- lying servers: data
def test_server_vanishing_mid_packet_says_where_the_packet_began(fake):
    server = fake(data=packets(0, 2) + packets(2, 1)[:40])
    with server.client() as client, pytest.raises(ConnectionLost) as info:
        client.capture(packets=10)
    text = str(info.value)
    assert f"{server.host}:{server.port} closed the data connection after 2 packets" in text
    assert f"40 bytes of an unfinished packet from data stream offset {2 * SIZE}" in text


def test_garbage_after_good_packets_names_data_connection_and_offset(fake):
    server = fake(data=packets(0, 3) + b"\xa5" * 100, close_data=False)
    with server.client() as client:
        with pytest.raises(ProtocolError) as info:
            client.capture(packets=10)
        assert (info.value.field, info.value.offset) == ("version", 3 * SIZE)
        assert f"{server.host}:{server.port} data connection" in str(info.value)
        assert f"stream offset {3 * SIZE}" in str(info.value)
        with pytest.raises(ProtocolError) as again:       # the stream has no framing left
            client.capture(packets=1)
        assert again.value.offset == 3 * SIZE


def test_error_offset_is_stable_when_stop_reads_the_rest_of_the_stream(fake):
    """capture() stops the stream in a finally: its drain must not raise again (with the offset
    counted twice) over the error the capture raised. More garbage than one read takes."""
    server = fake(data=packets(0, 7) + b"\xa5" * (4 << 20), close_data=False)
    with server.client() as client, pytest.raises(ProtocolError) as info:
        client.capture(packets=30)
    assert info.value.offset == 7 * SIZE and info.value.__context__ is None


@pytest.mark.parametrize("size", [MAX_PACKET + 1, 0xFFFFFFFF])
def test_size_field_beyond_the_limit_fails_at_once(fake, size):
    lying = bytearray(packets(1, 1))
    lying[1:5] = size.to_bytes(4, "little")
    server = fake(data=packets(0, 1) + bytes(lying), close_data=False)
    with server.client(timeout=30) as client, pytest.raises(ProtocolError) as info:
        client.capture(packets=5)           # a wait for the body would end in BusTimeout
    assert (info.value.field, info.value.offset) == ("size", SIZE)


def test_silent_data_connection_times_out_with_what_arrived(fake):
    server = fake(data=packets(0, 1)[:10], close_data=False)
    with server.client(timeout=0.3) as client, pytest.raises(BusTimeout) as info:
        client.capture(packets=5)
    assert f"no TiA data from {server.host}:{server.port}" in str(info.value)
    assert info.value.tail == packets(0, 1)[:10]


# -------------------------------------------------------------------- hostile clients
def raw_client(server: TiaServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=3)


def read_replies(sock: socket.socket) -> tuple[list[ctl.ControlMessage], bool]:
    """The replies that come within 1 s, and whether the server closed the connection."""
    parser, got = ctl.ControlParser(), []
    deadline = Deadline(1.0)
    while not deadline.expired:
        sock.settimeout(max(deadline.remaining, 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return got, True
        got += parser.feed(chunk)
    return got, False


@pytest.fixture
def sim():
    server = TiaServer("eeg:2x1@1000", speed=4.0)
    yield server
    server.close()


@pytest.mark.parametrize("request_bytes, field", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "version line"),
    (b"TiA 1.0\nGetMetaInfo\nContent-Length: \xc2\xb2\n\n", "Content-Length"),
    (b"TiA 1.0\nGetMetaInfo\nContent-Length: 99999999999999\n\n", "Content-Length"),
    (b"TiA 1.0\nGetMetaInfo\nno colon\n\n", "header"),
    (b"TiA 1.0\n" + b"X: y\n" * (ctl.MAX_HEADER // 5 + 1), "header"),
])
def test_malformed_request_gets_an_error_reply_then_the_connection_is_closed(sim, request_bytes,
                                                                            field):
    with raw_client(sim) as sock:
        sock.sendall(request_bytes)
        replies, closed = read_replies(sock)
    assert [r.command for r in replies] == [ctl.ERROR] and closed
    assert f"field {field!r}" in replies[0].error_description()


def test_good_requests_before_a_bad_one_are_answered_first(sim):
    with raw_client(sim) as sock:
        sock.sendall(ctl.encode(ctl.request(ctl.CHECK_PROTOCOL_VERSION)) + b"junk\n\n")
        replies, closed = read_replies(sock)
    assert [r.command for r in replies] == [ctl.OK, ctl.ERROR] and closed
    assert "stream offset 30" in replies[1].error_description()


@pytest.mark.parametrize("wrong", [ctl.request(ctl.GET_DATA_CONNECTION, "SCTP"),
                                   ctl.request("Frobnicate", "\x00\x01"),
                                   ctl.ControlMessage(ctl.GET_METAINFO, version="9.9"),
                                   ctl.request(ctl.START_DATA_TRANSMISSION)])
def test_wrong_but_well_formed_requests_get_an_error_and_the_session_goes_on(sim, wrong):
    with raw_client(sim) as sock:
        sock.sendall(ctl.encode(wrong) + ctl.encode(ctl.request(ctl.CHECK_PROTOCOL_VERSION)))
        replies, closed = read_replies(sock)
    assert [r.command for r in replies] == [ctl.ERROR, ctl.OK] and not closed


def test_server_survives_hostile_clients_and_still_serves(sim):
    for junk in (b"\x00" * 1000, b"TiA 1.0\nGetMetaInfo\nContent-Length: 5\n\nab", b"TiA 1.0\n"):
        with raw_client(sim) as sock:
            sock.sendall(junk)                              # then vanish mid-message
    deadline = Deadline(3.0)
    while sim.clients:                  # each session ends when its client has gone
        assert not deadline.expired, f"{sim.clients} sessions still open"
        time.sleep(0.01)
    with TiaClient(sim.host, sim.port, timeout=3) as client:
        assert client.capture(packets=5).n_packets == 5


# -------------------------------------------------------------------- bad simulator settings
@pytest.mark.parametrize("signals", [
    "eeg:1x1@1.2.3", "eeg:1x1@.", "eeg:" + "9" * 5000 + "x1@100",
    [{"type": "eeg", "channels": "abc", "rate": 100}],
    [{"type": "eeg", "channels": 2, "rate": float("inf")}],
    [{"type": "eeg", "channels": 2, "rate": 1e300}],
    [{"type": "eeg", "channels": 2, "rate": 100, "labels": ["only one"]}],
    [{"type": "eeg", "channels": 1, "rate": 100, "labels": ["\x01"]}],
    ["eeg"], [None],
])
def test_bad_simulator_signals_are_a_simulator_error(signals):
    with pytest.raises(SimulatorError, match="TiA"):
        TiaServer(signals).close()


@pytest.mark.parametrize("faults", ["drop@-5", [{"kind": "drop"}], [{"kind": "stall", "at": "x"}],
                                    "drop@1x0"])
def test_bad_simulator_faults_are_a_simulator_error(faults):
    with pytest.raises(SimulatorError, match="TiA fault"):
        TiaServer("eeg:1x1@100", faults=faults).close()
