"""The thin bulk reader (hil.instruments.otii_bulk): pipelined chunked fetches from the simulator,
and against a scripted server every way a bulk reply can be wrong."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from hil.errors import ProtocolError
from hil.instruments import otii_bulk
from hil.instruments.otii import OtiiConfig, OtiiPower
from hil.instruments.otii_bulk import BulkReader
from hil.protocols import otii_json as oj
from hil.sim.dut import VirtualDut
from hil.sim.otii_server import OtiiServer


@pytest.fixture(scope="module")
def recorded() -> Iterator[tuple[OtiiServer, OtiiPower, object, int]]:
    """A simulator with a finished ~1 s recording (speed 20: 0.05 s of wall time)."""
    dut = VirtualDut(speed=20.0)
    server = OtiiServer(dut, speed=20.0)
    power = OtiiPower(OtiiConfig(host=server.host, port=server.port, channels=("mc",),
                                 connect_timeout=2.0))
    power.on()
    with power.capture() as trace:
        power.uart_write("tx 20\n")
        time.sleep(0.06)
    rec = power._project.get_last_recording()            # type: ignore[union-attr]
    try:
        yield server, power, rec, len(trace)
    finally:
        power.close()
        server.close()
        dut.close()


def _vendor(power: OtiiPower, rec: object, n: int) -> np.ndarray:
    get = rec.get_channel_data                                   # type: ignore[attr-defined]
    data = power._call("recording_get_channel_data", get, power.device.id, "mc", 0, n)
    return np.asarray(data["values"], dtype=np.float64)


@pytest.mark.parametrize("pipeline", [1, 3, 8])
@pytest.mark.parametrize("chunk", [997, 40_000])
def test_chunked_pipelined_fetch_equals_the_vendor_fetch(
        recorded: tuple, monkeypatch: pytest.MonkeyPatch, pipeline: int, chunk: int) -> None:
    server, power, rec, n = recorded
    assert n > 3000
    monkeypatch.setattr(otii_bulk, "PIPELINE", pipeline)
    reader = BulkReader(server.host, server.port, chunk=chunk)
    reader.replies = []
    try:
        first, interval, values = reader.analog(rec.id, power.device.id, "mc", n)
        assert np.array_equal(values, _vendor(power, rec, n))
        assert (first, interval) == (0.0, 1 / 4000)
        assert len(reader.replies) == -(-n // chunk)            # one reply line per chunk
        loaded = [json.loads(line) for line in reader.replies]
        assert np.array_equal(np.concatenate([m["data"]["values"] for m in loaded]), values)
        _, _, tail = reader.analog(rec.id, power.device.id, "mc", 1500, index=n - 1500)
        assert np.array_equal(tail, values[-1500:])              # same connection, reused
    finally:
        reader.close()


def test_error_reply_mid_fetch_closes_and_the_next_fetch_works(recorded: tuple) -> None:
    server, power, rec, n = recorded
    reader = BulkReader(server.host, server.port, chunk=1000)
    try:
        with server.lock:
            server.faults.errors.append(("recording_get_channel_data", "Command failure",
                                         {"message": "flash read error"}))
        with pytest.raises(oj.ErrorReply, match="Command failure"):
            reader.analog(rec.id, power.device.id, "mc", n)
        assert reader._sock is None                               # replies were in flight
        assert np.array_equal(reader.analog(rec.id, power.device.id, "mc", n)[2],
                              _vendor(power, rec, n))
    finally:
        reader.close()


def test_garbage_reply_mid_fetch_is_a_protocol_error(recorded: tuple) -> None:
    server, power, rec, n = recorded
    reader = BulkReader(server.host, server.port, chunk=1000)
    try:
        with server.lock:
            server.faults.garbage.append("recording_get_channel_data")
        with pytest.raises(ProtocolError):
            reader.analog(rec.id, power.device.id, "mc", n)
        assert reader.analog(rec.id, power.device.id, "mc", 10)[2].size == 10
    finally:
        reader.close()


# ------------------------------------------------------------------ a scripted server

Reply = Callable[[dict], "bytes | list[bytes]"]


class Scripted:
    """Greets, then answers each request line with reply(request): one line, or pieces to
    send one by one (to split lines across packets)."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[dict] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with sock:
                try:
                    self._talk(sock)
                except OSError:           # the reader hung up (as it should on a bad reply)
                    pass

    def _talk(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(oj.encode(oj.greeting()))
        split = oj.LineSplitter()
        while data := sock.recv(1 << 16):
            for line in split.feed(data):
                req = json.loads(line)
                self.requests.append(req)
                out = self.reply(req)
                for piece in out if isinstance(out, list) else [out]:
                    sock.sendall(piece)
                    if isinstance(out, list):
                        time.sleep(0.002)

    def close(self) -> None:
        self.listener.close()


def analog(req: dict, numbers: bytes, timestamp: object = 0.0, interval: object = 0.00025,
           trans_id: object = None) -> bytes:
    head = {"type": "response", "cmd": req["cmd"],
            "trans_id": req["trans_id"] if trans_id is None else trans_id,
            "data": {"data_type": "analog", "timestamp": timestamp, "interval": interval,
                     "values": []}}
    text = json.dumps(head, separators=(",", ":")).encode()
    return text.replace(b'"values":[]', b'"values":[' + numbers + b"]") + oj.CRLF


def values_of(req: dict) -> np.ndarray:
    i, c = req["data"]["index"], req["data"]["count"]
    return np.arange(i, i + c) * 1e-6 - 1e-3


def fetch(reply: Reply, count: int = 25, chunk: int = 10) -> np.ndarray:
    server = Scripted(reply)
    reader = BulkReader("127.0.0.1", server.port, timeout=5.0, chunk=chunk)
    try:
        return reader.analog(1, "dev", "mc", count)[2]
    finally:
        reader.close()
        server.close()


def test_scripted_server_fixed_width_and_any_json_numbers() -> None:
    want = np.arange(25) * 1e-6 - 1e-3
    fixed = fetch(lambda r: analog(r, oj.format_numbers(values_of(r), 6)))
    reprs = fetch(lambda r: analog(r, ",".join(map(repr, values_of(r).tolist())).encode()))
    spaced = fetch(lambda r: analog(r, ", ".join(map(repr, values_of(r).tolist())).encode()))
    assert np.array_equal(reprs, want) and np.array_equal(spaced, want)
    assert np.allclose(fixed, want, rtol=1e-5, atol=0)


def test_scripted_server_replies_split_into_pieces_and_run_together() -> None:
    def pieces(r: dict) -> list[bytes]:
        line = analog(r, oj.format_numbers(values_of(r), 6))
        return [line[:1], line[1:7], line[7:-1], line[-1:]]      # CR and LF apart, too
    want = np.arange(25) * 1e-6 - 1e-3
    assert np.allclose(fetch(pieces), want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("reply, field", [
    (lambda r: analog(r, oj.format_numbers(values_of(r)[:-1], 6)), "values"),   # one short
    (lambda r: analog(r, oj.format_numbers(np.append(values_of(r), 1.0), 6)), "values"),
    (lambda r: analog(r, b"1,2,NaN,4,5,6,7,8,9,10"), "values"),
    (lambda r: analog(r, b'1,2,"3",4,5,6,7,8,9,10'), "values"),
    (lambda r: analog(r, b"1,2,null,4,5,6,7,8,9,10"), "values"),
    (lambda r: analog(r, b"1,2,3e999,4,5,6,7,8,9,10"), "values"),
    (lambda r: analog(r, b"01,2,3,4,5,6,7,8,9,10"), "values"),
    (lambda r: analog(r, b"1,2,3,4,5,6,7,8,9,10", timestamp="soon"), "timestamp"),
    (lambda r: analog(r, b"1,2,3,4,5,6,7,8,9,10", interval=None), "interval"),
    (lambda r: analog(r, b"1,2,3,4,5,6,7,8,9,10", trans_id="someone-else"), "trans_id"),
    (lambda r: oj.encode({"type": "response", "cmd": r["cmd"], "trans_id": r["trans_id"],
                          "data": {"values": {"1": 2}}}), "values"),
    (lambda r: oj.encode({"type": "response", "cmd": r["cmd"], "trans_id": r["trans_id"]}),
     "data"),
])
def test_scripted_server_bad_replies_are_protocol_errors(reply: Reply, field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        fetch(reply)
    assert info.value.field == field


def test_scripted_server_error_reply_is_an_error_reply() -> None:
    def refuse(r: dict) -> bytes:
        return oj.encode(oj.error("Invalid key value", r["cmd"], r["trans_id"], key="count",
                                  value=r["data"]["count"]))
    with pytest.raises(oj.ErrorReply, match="Invalid key value"):
        fetch(refuse)


def test_requests_stay_in_order_and_in_flight_up_to_the_pipeline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otii_bulk, "PIPELINE", 3)
    seen: list[tuple[int, int]] = []

    def reply(r: dict) -> bytes:
        seen.append((r["data"]["index"], r["data"]["count"]))
        return analog(r, oj.format_numbers(values_of(r), 6))
    got = fetch(reply, count=95, chunk=10)
    assert seen == [(i, min(10, 95 - i)) for i in range(0, 95, 10)]
    assert np.allclose(got, np.arange(95) * 1e-6 - 1e-3, rtol=1e-5, atol=0)
