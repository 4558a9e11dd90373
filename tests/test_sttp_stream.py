"""STTP over real sockets: our subscriber and simulator, interop with `sttpapi` both ways,
hostile publishers and simulator faults. Every wait has a deadline."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hil.errors import BusTimeout, ConnectionLost, InstrumentError, ProtocolError
from hil.instruments.sttp import SttpSettings, SttpSubscriber
from hil.protocols import sttp_frames as fr
from hil.protocols.sttp_cache import SignalIndexCache, encode_cache
from hil.protocols.sttp_compact import encode_packet
from hil.protocols.sttp_metadata import encode_metadata
from hil.protocols.sttp_ticks import from_unix
from hil.sim.sttp_points import make_points
from hil.sim.sttp_server import SttpServer
from hil.timeout import Deadline
from waiting import wait_until

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
FREQS = "FILTER ActiveMeasurements WHERE SignalType = 'FREQ'"


# ------------------------------------------------------------------------ ours ↔ ours
def test_subscriber_captures_simulator_frames_by_point_tag():
    with SttpServer(24, rate=50) as srv, SttpSubscriber("127.0.0.1", srv.port) as sub:
        assert len(sub.metadata.select("FREQ")) == 3
        capture = sub.capture(frames=12, filter_expression=FREQS)
        assert sorted(capture.signals) == ["GRID_PMU001:FREQ", "GRID_PMU002:FREQ",
                                           "GRID_PMU003:FREQ"]
        assert capture.n_packets == 12 and capture["GRID_PMU001:FREQ"].n_samples == 12
        capture.validate().no_gaps().monotonic().value_range("GRID_PMU002:FREQ", 49.5, 50.5)
        record = sub.metadata.by_tag["GRID_PMU001:FREQ"]
        assert capture["GRID_PMU001:FREQ"].channels == [str(record.signal_id)]
        assert not sub.subscribed and sub.cache_updates == 1
        again = sub.capture(frames=3)          # re-subscription: the other cache slot
        assert again.n_packets == 3 and len(again.signals) == 24


def test_flat_out_values_follow_the_point_functions_after_resubscription():
    """The fast publisher's precomputed cycle (600 frames at 30/s) gives the values the point
    functions give at each frame's time, also past the cycle's end; and a second
    subscription's key table (not the identity) still files every value under its tag."""
    with SttpServer(16, rate=30, realtime=False) as srv, \
            SttpSubscriber("127.0.0.1", srv.port) as sub:
        sub.capture(frames=3, filter_expression=FREQS)
        capture = sub.capture(frames=700)
        tags = [m.point_tag for m in srv.points.metadata.measurements]
        assert sorted(capture.signals) == sorted(tags)
        for position, tag in enumerate(tags):
            times = capture.signal_times(tag)
            assert times.size == 700
            expected = srv.points.values(times - srv.origin)[:, position]
            np.testing.assert_allclose(capture[tag].samples[0], expected, rtol=1e-6, atol=1e-4,
                                       err_msg=tag)


def test_several_subscribers_and_tssc_request_answered_compact():
    with SttpServer(8, rate=100) as srv:
        subs = [SttpSubscriber("127.0.0.1", srv.port, SttpSettings(compression=c))
                for c in ("compact", "tssc")]
        try:
            wait_until(lambda: srv.clients == 2, "two sessions", timeout=10)
            for s in subs:
                s.subscribe(FREQS)
            captures = [s.capture(frames=5) for s in subs]
            assert [c.n_packets for c in captures] == [5, 5]
        finally:
            for s in subs:
                s.close()


def test_refused_subscription_names_the_reason():
    with SttpServer(8) as srv, SttpSubscriber("127.0.0.1", srv.port) as sub:
        with pytest.raises(InstrumentError, match="no measurements matched"):
            sub.subscribe("FILTER ActiveMeasurements WHERE SignalType = 'NONE'")
        with pytest.raises(InstrumentError, match="filterExpression"):
            sub.subscribe("FILTER ActiveMeasurements WHERE (")


@pytest.mark.parametrize("fault, error, field", [
    ("unknown@3", ProtocolError, "signal index"), ("length@3", ProtocolError, "data length"),
    ("corrupt@3", ProtocolError, "packet flags"), ("disconnect@3", ConnectionLost, None)])
def test_simulator_faults_are_errors_from_our_tree(fault, error, field):
    with SttpServer(8, rate=200, faults=fault) as srv, \
            SttpSubscriber("127.0.0.1", srv.port, SttpSettings(timeout=2)) as sub:
        with pytest.raises(error) as err:
            sub.capture(frames=20)
        if field:
            assert err.value.field == field and err.value.offset and srv.address in str(err.value)


def test_dropped_and_duplicated_frames_show_in_packet_stats():
    with SttpServer(4, rate=200, faults="drop@5x3,duplicate@12") as srv, \
            SttpSubscriber("127.0.0.1", srv.port) as sub:
        stats = sub.capture(frames=20).packet_stats()
        assert (stats.missing, stats.gaps, stats.duplicates) == (3, 1, 1)


def test_stalled_publisher_times_out():
    with SttpServer(4, rate=100, faults="stall@3:3") as srv, \
            SttpSubscriber("127.0.0.1", srv.port, SttpSettings(timeout=0.3)) as sub:
        with pytest.raises(BusTimeout, match="no STTP data"):
            sub.capture(frames=10)


# ------------------------------------------------------------------------ hostile publisher
class Scripted:
    """A one-connection publisher that answers with the frames a test scripts."""

    def __init__(self, script):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.script, self.error = script, None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        self.listener.settimeout(5)
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        self._conn = conn
        reader = fr.FrameReader(responses=False)
        queue = []
        try:
            for reply in self.script:
                while not queue:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    queue += reader.feed(chunk)
                frame = queue.pop(0)
                if reply is None:
                    conn.close()
                    return
                conn.sendall(reply(frame) if callable(reply) else reply)
            time.sleep(0.5)
        except OSError:
            pass
        finally:
            conn.close()
            self.listener.close()


def ok(code, data=b""):
    return fr.encode_response(fr.Response.SUCCEEDED, code, data)


META = encode_metadata(make_points(2).metadata)


def test_publisher_vanishing_mid_handshake_is_connection_lost():
    pub = Scripted([ok(6), None])
    with pytest.raises(ConnectionLost, match="closed the connection while awaiting"):
        SttpSubscriber("127.0.0.1", pub.port, SttpSettings(timeout=2))


def test_garbage_response_code_is_a_protocol_error_at_its_offset():
    pub = Scripted([ok(6) + struct_frame(0x42)])
    with pytest.raises(ProtocolError) as err:
        SttpSubscriber("127.0.0.1", pub.port, SttpSettings(timeout=2))
    assert err.value.field == "response code" and err.value.offset == len(ok(6)) + 4


def struct_frame(code):
    import struct
    return struct.pack(">IBBI", 6, code, 1, 0)


def test_sttpapi_quirks_cache_slot_ff_countless_packets_and_base_times():
    points = make_points(3)
    ids = [m.signal_id for m in points.metadata.measurements]
    cache = SignalIndexCache([0, 1, 2], ids, [""] * 3, [0, 1, 2])
    t0 = int(from_unix(1_700_000_000.0))
    data = [encode_packet(np.arange(3), np.array([1.0, 2.0, 3.0]), np.full(3, t0 + i * 333_333,
                                                                              np.uint64),
                          with_count=False) for i in range(4)]
    frames = b"".join(fr.encode_response(fr.Response.DATA_PACKET, 2, d) for d in data)
    message = b"\x00\x00\x00\x02ok"
    pub = Scripted([ok(6, message), ok(1, META),
                    ok(2) + fr.encode_response(fr.Response.UPDATE_SIGNAL_INDEX_CACHE, 2,
                                               b"\xff" + encode_cache(cache, None, False))
                    + fr.encode_response(fr.Response.NOOP, 2) + frames,
                    b"", ok(3)])
    with SttpSubscriber("127.0.0.1", pub.port, SttpSettings(timeout=2, rate=30)) as sub:
        assert sub.messages[0] == "ok"
        capture = sub.capture(frames=4)
    assert capture.n_packets == 4 and capture["GRID_PMU001:FREQ"].samples.tolist() == [[1.0] * 4]
    assert any("both slots" in m for m in sub.messages)


class Chatty(Scripted):
    """Scripted, then `tail()` frames sent every `every` s until the test ends (5 s at most)."""

    def __init__(self, script, tail, every):
        self.tail, self.every = tail, every
        super().__init__(script)

    def run(self):
        self.script = [*self.script, lambda frame: self._chatter() or b""]
        super().run()

    def _chatter(self):
        conn = self._conn
        end = time.monotonic() + 5
        while time.monotonic() < end:
            conn.sendall(self.tail())
            time.sleep(self.every)


def _handshake(cache_ids):
    cache = SignalIndexCache(list(range(len(cache_ids))), cache_ids, [""] * len(cache_ids),
                             list(range(len(cache_ids))))
    return [ok(6), ok(1, META),
            ok(2) + fr.encode_response(fr.Response.UPDATE_SIGNAL_INDEX_CACHE, 2,
                                       b"\x00" + encode_cache(cache, None, False))]


def test_keep_alives_alone_do_not_keep_a_frame_capture_waiting():
    """Bytes that carry no data (keep-alives every 0.2 s) do not reset the data timeout."""
    ids = [m.signal_id for m in make_points(2).metadata.measurements]
    pub = Chatty(_handshake(ids), lambda: fr.encode_response(fr.Response.NOOP, 2), 0.2)
    with SttpSubscriber("127.0.0.1", pub.port, SttpSettings(timeout=1)) as sub:
        sub.subscribe()
        with pytest.raises(BusTimeout, match=r"no STTP data from .* for 1 s \(0 frames"):
            list(sub.chunks(frames=10))


def test_unasked_replies_and_notes_are_not_kept_without_bound():
    ids = [m.signal_id for m in make_points(2).metadata.measurements]
    flood = (fr.encode_response(fr.Response.SUCCEEDED, 0x0C, b"x" * 10_000)
             + fr.encode_response(fr.Response.PROCESSING_COMPLETE, 2, b"y" * 10_000))
    pub = Chatty(_handshake(ids), lambda: flood * 50, 0.01)
    with SttpSubscriber("127.0.0.1", pub.port, SttpSettings(timeout=1)) as sub:
        sub.subscribe()
        wait_until(lambda: sub._pump(Deadline(1), "data") or sub.unexpected_replies > 500,
                   "the flood to arrive")
        assert len(sub.messages) <= 100 and all(len(m) <= 501 for m in sub.messages)
        assert sub.dropped_notes > 0 and not sub._replies


def test_a_bad_frame_loses_none_of_the_frames_read_with_it():
    ids = [m.signal_id for m in make_points(2).metadata.measurements]
    *handshake, cache = _handshake(ids)
    cache = cache[len(ok(2)):]
    bad = fr.encode_response(fr.Response.UPDATE_BASE_TIMES, 2, b"\x00")
    pub = Scripted([*handshake, ok(2) + bad + cache])
    with SttpSubscriber("127.0.0.1", pub.port, SttpSettings(timeout=2)) as sub:
        with pytest.raises(ProtocolError, match="base time"):
            sub.subscribe()
        assert sub.cache_updates == 0
        sub._pump(Deadline(2), "the frames after the bad one")
        assert sub.cache_updates == 1 and len(sub.signals) == len(ids)


# ------------------------------------------------------------------------ TLS
def test_tls_command_channel(tmp_path: Path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                           "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                           "-keyout", str(key), "-out", str(cert)], capture_output=True,
                          timeout=60)
    if made.returncode:
        pytest.skip(f"openssl cannot make a test certificate: {made.stderr[-200:]!r}")
    with SttpServer(8, rate=100, tls_cert=str(cert), tls_key=str(key)) as srv:
        with SttpSubscriber("127.0.0.1", srv.port, SttpSettings(tls=True, tls_ca=str(cert))) as s:
            assert s.capture(frames=3).n_packets == 3
        with pytest.raises(Exception, match="TLS handshake"):
            SttpSubscriber("127.0.0.1", srv.port, SttpSettings(tls=True, timeout=2))


# ------------------------------------------------------------------------ sttpapi interop
def test_sttpapi_subscriber_defaults_receive_our_simulator():
    from sttp.config import Config
    from sttp.subscriber import Subscriber
    got, errors = [], []
    with SttpServer(16, rate=100) as srv:
        sub = Subscriber()
        sub.statusmessage_logger = lambda m: None
        sub.errormessage_logger = errors.append
        sub.set_newmeasurements_receiver(got.extend)
        sub.subscribe(FREQS)
        try:
            assert sub.connect(f"127.0.0.1:{srv.port}", Config()) is None
            wait_until(lambda: len(got) >= 40, "40 measurements at sttpapi's subscriber",
                       timeout=10)
            expected = {m.signal_id: m.point_tag for m in srv.points.metadata.measurements
                        if m.signal_type == "FREQ"}
            for m in got[:40]:
                assert m.signalid in expected
                assert sub.measurement_metadata(m).pointtag == expected[m.signalid]
                assert 49.5 < m.value < 50.5
                assert abs(m.timestamp / 1e7 - 62135596800 - time.time()) < 60
            assert errors == []
        finally:
            sub.disconnect()


def sttpapi_publisher(tmp_path: Path, n: int):
    from sttp.publisher import Publisher
    pub = Publisher()
    pub.statusmessage_logger = lambda m: None
    pub.errormessage_logger = lambda m: None
    pub.clientconnected_receiver = lambda c: None
    pub.clientdisconnected_receiver = lambda c: None
    pub.metadata_path = str(tmp_path / "meta.xml")
    dev = pub.define_output_source("DEV1")
    ids = [pub.define_output_measurement(dev, f"FREQ{i}", f"freq {i}", "FREQ") for i in range(n)]
    assert pub.load_metadata() is None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pub.start(port)
    return pub, ids, port


@pytest.mark.parametrize("compression", ["compact", "tssc"])
def test_our_subscriber_receives_sttpapi_publisher_completely(tmp_path, compression):
    from sttp.transport.measurement import Measurement
    pub, ids, port = sttpapi_publisher(tmp_path, 5)
    stop = threading.Event()
    t0 = int(from_unix(1_800_000_000.0))

    def publish():
        k = 0
        while not stop.is_set():
            pub.publish_measurements([Measurement(sid, np.float64(50 + i / 10 + k / 1000),
                                                  np.uint64(t0 + k * 333_333))
                                      for i, sid in enumerate(ids)])
            k += 1
            time.sleep(0.002)
    try:
        settings = SttpSettings(compression=compression, rate=30, timeout=3,
                                filter="FILTER ActiveMeasurements WHERE SignalType = 'FREQ'")
        with SttpSubscriber("127.0.0.1", port, settings) as sub:
            sub.subscribe()
            thread = threading.Thread(target=publish, daemon=True)
            thread.start()
            capture = sub.capture(frames=60)
    finally:
        stop.set()
        pub.stop()
    names = sorted(capture.signals)
    assert names == [f"FREQ{i}" for i in range(5)]
    first = int(np.rint((capture.timestamps[0] - 1_800_000_000.0) * 30))
    capture.validate().no_gaps().monotonic()
    for i, name in enumerate(names):
        values = capture[name].samples[0]
        assert values.size == 60
        expected = (50 + i / 10 + (first + np.arange(60)) / 1000).astype(np.float32)
        assert np.array_equal(values.astype(np.float32), expected)


# ------------------------------------------------------------------------ command line
def test_capture_command_json_and_sim_command_prints_where_it_listens():
    with SttpServer(8, rate=60) as srv:
        out = subprocess.run([sys.executable, "-m", "hil.cli", "capture", "sttp", srv.address,
                              "--filter", FREQS, "--seconds", "1", "--json"],
                             capture_output=True, text=True, timeout=60)
    summary = json.loads(out.stdout)
    assert out.returncode == 0, out.stderr
    assert summary["measurements"] >= 10 and summary["errors"] == []
    assert 50 < summary["rate_hz"] < 70
    assert summary["signals"]["GRID_PMU001:FREQ"]["min"] > 49.5
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "sim", "sttp", "--port", "0",
                             "--points", "16", "--rate", "10"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "STTP simulator listening on 127.0.0.1:" in line and "16 points" in line
    finally:
        proc.terminate()
        proc.wait(timeout=10)
