"""TiA v3 data packets: sizes, order, round trips (hypothesis), vector decoding, malformed input."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.errors import ProtocolError
from hil.protocols.tia_metainfo import FLAGS, MetaInfo, SignalInfo
from hil.protocols.tia_packets import (HEADER_SIZE, Packet, StreamDecoder, count_gaps,
                                       decode_packet, encode_packet, encode_run, layout_for)

EEG, EMG, BUTTON = FLAGS["eeg"], FLAGS["emg"], FLAGS["button"]


def meta_of(*signals: tuple[str, int, int], rate: float = 500.0) -> MetaInfo:
    infos = tuple(SignalInfo(t, rate * b, b, tuple(f"{t}{i}" for i in range(ch)))
                  for t, ch, b in signals)
    return MetaInfo(infos, infos[0].sampling_rate, infos[0].block_size, master=infos[0].type)


def ramp(ch: int, n: int, base: float = 0.0) -> np.ndarray:
    return (base + np.arange(ch)[:, None] * 1000 + np.arange(n)[None, :]).astype(np.float32)


def run_bytes(meta: MetaInfo, n: int, first: int = 0, order: str = "channel_major",
              master_first: bool = False) -> bytes:
    layout = layout_for(meta, sample_order=order, master_first=master_first)
    nums = np.arange(first, first + n, dtype=np.uint64)
    data = [ramp(c, n * b, 10 * i) for i, (c, b) in enumerate(zip(layout.channels, layout.blocks))]
    return encode_run(layout, nums, nums * 1000, data).tobytes()


def decode_all(meta: MetaInfo, raw: bytes, chunks: list[int] | None = None, **kw) -> dict:
    """Feed `raw` to a StreamDecoder in chunks like a reader would; collect everything."""
    dec = StreamDecoder(meta, **kw)
    buf, pos, runs = b"", 0, []
    for size in (chunks or [len(raw)]) + [len(raw)]:
        buf += raw[pos:pos + size]
        pos += size
        got, used = dec.decode(buf)
        runs += got
        buf = buf[used:]
    assert buf == b"", "bytes left over"
    out = {"numbers": np.concatenate([r.numbers for r in runs]) if runs else np.zeros(0)}
    for s in meta.signals:
        parts = [r.samples[s.type] for r in runs if s.type in r.samples]
        out[s.type] = np.concatenate(parts, axis=1) if parts else None
    return out


@pytest.mark.parametrize("ch, blk, size", [(8, 1, 69), (64, 1, 293), (64, 4, 1061), (16, 32, 2085)])
def test_packet_sizes_from_the_spec(ch, blk, size):
    assert layout_for(meta_of(("eeg", ch, blk))).size == size
    assert len(run_bytes(meta_of(("eeg", ch, blk)), 3)) == 3 * size


def test_header_fields_little_endian_and_ascending_flag_order():
    pkt = Packet(7, 123456, {EMG: np.full((1, 2), 2.0), EEG: np.full((2, 2), 1.0)}, packet_id=9)
    raw = encode_packet(pkt)
    version, size, flags, pid, number, ts = struct.unpack_from("<BIIQQQ", raw)
    assert (version, size, flags, pid, number, ts) == (3, len(raw), 3, 9, 7, 123456)
    assert struct.unpack_from("<4H", raw, HEADER_SIZE) == (2, 1, 2, 2)   # channels, then blocks
    floats = np.frombuffer(raw, "<f4", offset=HEADER_SIZE + 8)
    assert list(floats) == [1.0] * 4 + [2.0] * 2                          # eeg block before emg


@pytest.mark.parametrize("order, expected", [("channel_major", [0, 1, 2, 1000, 1001, 1002]),
                                             ("sample_major", [0, 1000, 1, 1001, 2, 1002])])
def test_sample_order_on_the_wire(order, expected):
    raw = encode_packet(Packet(0, 0, {EEG: ramp(2, 3)}), sample_order=order)
    assert list(np.frombuffer(raw, "<f4", offset=HEADER_SIZE + 4)) == expected
    meta = meta_of(("eeg", 2, 3))
    back = decode_packet(raw, meta, sample_order=order)
    np.testing.assert_array_equal(back.blocks[EEG], ramp(2, 3))


signal_configs = st.lists(
    st.tuples(st.sampled_from(["eeg", "emg", "eog", "ecg", "hr", "sensors", "user_1", "event"]),
              st.integers(1, 12), st.integers(1, 9)),
    min_size=1, max_size=4, unique_by=lambda t: t[0])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=signal_configs, n=st.integers(1, 40), first=st.integers(0, 2**40),
       order=st.sampled_from(["channel_major", "sample_major"]), data=st.data())
def test_round_trip_any_configuration_any_chunking(config, n, first, order, data):
    meta = meta_of(*config)
    raw = run_bytes(meta, n, first, order)
    chunks = data.draw(st.lists(st.integers(1, max(1, len(raw) // 3)), max_size=8))
    out = decode_all(meta, raw, chunks, sample_order=order)
    np.testing.assert_array_equal(out["numbers"], np.arange(first, first + n))
    layout = layout_for(meta)
    for i, flag in enumerate(layout.order):
        sig = next(s for s in meta.signals if s.flag == flag)
        np.testing.assert_array_equal(out[sig.type], ramp(sig.num_channels, n * sig.block_size,
                                                          10 * i))


@settings(max_examples=40, deadline=None)
@given(config=signal_configs, order=st.sampled_from(["channel_major", "sample_major"]),
       seed=st.integers(0, 2**32 - 1))
def test_single_packet_encode_decode_random_values(config, order, seed):
    rng = np.random.default_rng(seed)
    meta = meta_of(*config)
    blocks = {s.flag: rng.standard_normal((s.num_channels, s.block_size)).astype(np.float32)
              for s in meta.signals}
    pkt = Packet(int(rng.integers(2**63)), int(rng.integers(2**63)), blocks, int(rng.integers(9)))
    back = decode_packet(encode_packet(pkt, sample_order=order), meta, sample_order=order)
    assert (back.number, back.timestamp_us, back.packet_id) == (pkt.number, pkt.timestamp_us,
                                                                pkt.packet_id)
    for flag, block in blocks.items():
        np.testing.assert_array_equal(back.blocks[flag], block)


def test_aperiodic_packets_of_other_sizes_between_vector_runs():
    meta = meta_of(("eeg", 4, 2), ("button", 1, 1))
    pkts = []
    for k in range(30):
        blocks = {EEG: ramp(4, 2, k * 2)}
        if k % 7 == 3:
            blocks[BUTTON] = np.array([[k]], dtype=np.float32)
        pkts.append(encode_packet(Packet(k, k, blocks)))
    raw = b"".join(pkts)
    assert len({len(p) for p in pkts}) == 2
    out = decode_all(meta, raw, [50, 200, 7])
    np.testing.assert_array_equal(out["numbers"], np.arange(30))
    np.testing.assert_array_equal(out["button"][0], [3, 10, 17, 24])
    np.testing.assert_array_equal(out["eeg"], np.hstack([ramp(4, 2, k * 2) for k in range(30)]))


def test_master_first_is_flagged_unless_accepted():
    meta = MetaInfo((SignalInfo("eeg", 500, 1, ("a",)), SignalInfo("emg", 500, 1, ("b", "c"))),
                    500, 1, master="emg")
    raw = run_bytes(meta, 5, master_first=True)
    with pytest.raises(ProtocolError, match="master-first") as info:
        decode_all(meta, raw)
    assert info.value.field == "channels[eeg]"
    out = decode_all(meta, raw, master_first=True)
    np.testing.assert_array_equal(out["emg"], ramp(2, 5, 0))    # master block came first
    np.testing.assert_array_equal(out["eeg"], ramp(1, 5, 10))


META = meta_of(("eeg", 8, 1))


def corrupt(raw: bytes, index: int, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, index * 69 + offset, value)
    return bytes(out)


@pytest.mark.parametrize("offset, fmt, value, field", [
    (0, "<B", 2, "version"),
    (1, "<I", 73, "size"),
    (1, "<I", 20, "size"),
    (5, "<I", 0x400, "flags"),
    (5, "<I", 0x3, "flags"),
    (33, "<H", 7, "channels[eeg]"),
    (35, "<H", 2, "blockSize[eeg]"),
])
@pytest.mark.parametrize("index", [0, 5, 19])
def test_malformed_packet_in_a_run_names_field_and_offset(offset, fmt, value, field, index):
    raw = corrupt(run_bytes(META, 20), index, offset, fmt, value)
    with pytest.raises(ProtocolError) as info:
        decode_all(META, raw)
    assert (info.value.field, info.value.offset) == (field, index * 69)
    assert f"stream offset {index * 69}" in str(info.value)
    assert f"packet number {index}" in str(info.value) or field == "version"


def test_truncated_packet():
    raw = run_bytes(META, 1)
    with pytest.raises(ProtocolError, match="truncated"):
        decode_packet(raw[:50], META)
    dec = StreamDecoder(META)
    assert dec.decode(raw[:50]) == ([], 0)       # a stream waits for the rest


def test_version_2_packet_is_rejected_not_misread():
    v2 = struct.pack("<IQQQ", 0x1 | 2 << 24, 0, 0, 0) + bytes(32)
    with pytest.raises(ProtocolError) as info:
        decode_all(META, run_bytes(META, 3) + v2)
    assert info.value.field == "version"


def test_resync_skips_garbage_and_reports_it():
    good = run_bytes(META, 30)
    bad = bytearray(good)
    bad[10 * 69:11 * 69] = np.random.default_rng(1).integers(0, 256, 69, dtype=np.uint8).tobytes()
    bad[10 * 69] = 0xA5
    dec = StreamDecoder(META, resync=True)
    runs, used = dec.decode(bytes(bad))
    numbers = np.concatenate([r.numbers for r in runs])
    assert used == len(bad)
    np.testing.assert_array_equal(numbers, np.r_[0:10, 11:30])
    assert dec.skipped_bytes == 69 and dec.errors[0].field == "version"


def test_count_gaps():
    assert count_gaps(np.array([5, 6, 9, 9, 10], dtype=np.uint64), 3) == (3, 1)
    assert count_gaps(np.array([], dtype=np.uint64), 3) == (0, 0)
