"""Interop with pytia 0.1.0, a TiA peer nobody here wrote, both ways (spec §6).

pytia's server crashes on Python 3 at GetDataConnection (`dict.has_key`); the one membership test
is patched here, inside the test only. Its server has a second bug: the manager thread iterates
the client dict while StopDataTransmission deletes from it, so that thread sometimes dies with
"dictionary changed size during iteration" after our client stopped. That is pytia's thread, not
ours, so the tests using its server ignore unhandled-thread warnings.
"""
from __future__ import annotations

import itertools
import logging
import time

import numpy as np
import pytest

from hil.errors import ConnectionLost, ProtocolError
from hil.instruments.tia import TiaClient
from hil.sim.tia_server import TiaServer

import pytia  # noqa: E402 - a test dependency (pyproject [test]): missing means a broken set-up
pytia.pytia_logger.setLevel(logging.ERROR)
pytia_server_race = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnhandledThreadExceptionWarning")


def pytia_packets(client, count: int, timeout: float = 5.0) -> list:
    """Read at least `count` packets with pytia's own API."""
    packets: list = []
    deadline = time.monotonic() + timeout
    while len(packets) < count and time.monotonic() < deadline:
        packets += client.get_data()
    return packets


def test_pytia_client_reads_our_server():
    # small meta-info, TCP, small packets: what pytia's client can take (spec §6.2)
    with TiaServer("eeg:4x2@1000/ramp,emg:2x2@1000/const", speed=2) as server:
        client = pytia.TiAClient(server.host, server.port)
        assert client.connect()
        assert client.cmd_check_protocol_version()
        client.cmd_get_metainfo()                  # always "fails": expects OK, gets MetaInfo
        ok, port = client.cmd_get_data_connection_tcp()
        assert ok and port > 0
        assert client.start_streaming_data_tcp(server.host, port)   # Start before connect
        try:
            packets = pytia_packets(client, 40)
        finally:
            assert client.stop_streaming_data()
            client.disconnect()
    assert len(packets) >= 40
    numbers = [p.packet_number for p in packets]
    assert numbers == list(range(len(packets)))
    first = packets[0]
    assert tuple(first.channels) == (4, 2) and tuple(first.blocksizes) == (2, 2)
    eeg = np.hstack([np.reshape(p.get_channel(0), (4, 2)) for p in packets])   # channel-major
    np.testing.assert_array_equal(np.diff(eeg, axis=1), 1)
    np.testing.assert_array_equal(eeg[:, 0] - eeg[0, 0], [0, 100_000, 200_000, 300_000])
    assert set(np.ravel([p.get_channel(1) for p in packets])) == {1.0, 2.0}
    stamps = [p.timestamp for p in packets]
    assert stamps == sorted(stamps)


@pytest.fixture
def pytia_server(monkeypatch):
    """pytia's server with a master (user_2, 3 ch × 2) listed before a lower flag (user_1)."""
    def add_client(self, id, client):           # pytia's own code, with `in` for has_key
        if id in self.clients:
            raise pytia.TiAException("Duplicate client ID")
        self.clients[id] = client
    monkeypatch.setattr(pytia.TiAClientManager, "add_client", add_client)
    polls = itertools.count()

    def master(_id):
        k = next(polls)
        return [float(k * 10 + j) for j in range(6)]
    server = pytia.TiAServer(("127.0.0.1", 0), pytia.TiAConnectionHandler)
    server.start([pytia.TiASignalConfig(2, 200, 2, lambda _id: [7.0] * 4, 1, False,
                                        pytia.TIA_SIG_USER_1),
                  pytia.TiASignalConfig(3, 200, 2, master, 0, True, pytia.TIA_SIG_USER_2)])
    yield server
    if server.manager is not None:
        server.manager.finished = True
        server.manager.join(2)                  # any death of its thread lands on this test
    server.shutdown()
    server.server_close()


@pytia_server_race
def test_our_client_reads_pytia_server(pytia_server):
    host, port = pytia_server.server_address
    with TiaClient(host, port, timeout=3, master_first=True, rate_per_block=True) as client:
        assert client.meta.master == "user_2"
        cap = client.capture(packets=30)
    assert cap.n_packets == 30
    cap.validate().no_gaps().monotonic()
    master = cap["user_2"]
    assert master.rate == 400.0                     # samplingRate × blockSize
    assert master.channels == ["channel1", "channel2", "channel3"]
    per_packet = master.samples.reshape(3, 30, 2)   # channel-major blocks
    np.testing.assert_array_equal(per_packet[:, :, 1] - per_packet[:, :, 0], 1)
    np.testing.assert_array_equal(per_packet[:, 0, 0] - per_packet[0, 0, 0], [0, 2, 4])
    np.testing.assert_array_equal(np.diff(per_packet[0, :, 0]), 10)
    assert np.all(cap["user_1"].samples == 7.0)


@pytia_server_race
def test_pytia_master_first_order_is_flagged_by_default(pytia_server):
    host, port = pytia_server.server_address
    with TiaClient(host, port, timeout=3) as client, \
            pytest.raises(ProtocolError, match="master-first"):
        client.capture(packets=5)


@pytia_server_race
def test_unpatched_pytia_server_crash_is_a_clear_error():
    server = pytia.TiAServer(("127.0.0.1", 0), pytia.TiAConnectionHandler)
    server.handle_error = lambda request, address: None     # its AttributeError, kept quiet
    server.start([pytia.TiASignalConfig(1, 100, 1, lambda _id: [0.0], 0)])
    try:
        with pytest.raises(ConnectionLost, match="GetDataConnection"):
            TiaClient(*server.server_address, timeout=3)
    finally:
        if server.manager is not None:
            server.manager.finished = True
            server.manager.join(2)
        server.shutdown()
        server.server_close()
