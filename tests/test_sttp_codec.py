"""STTP codecs: round trips, and property tests of every decoder. Any input gives correct
values or a ProtocolError naming the field (and, where the bytes are on the wire, the offset);
never another exception. TSSC is checked against `sttpapi`'s own encoder and decoder."""
from __future__ import annotations

import gzip
import struct
import uuid
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.errors import ProtocolError
from hil.protocols import sttp_compact as cm
from hil.protocols import sttp_frames as fr
from hil.protocols import sttp_ticks as ticks
from hil.protocols.sttp_cache import SignalIndexCache, decode_cache, encode_cache
from hil.protocols.sttp_metadata import decode_metadata, encode_metadata, parse_datetime
from hil.protocols.sttp_tssc import TsscDecoder
from hil.sim.sttp_filter import select
from hil.sim.sttp_points import make_points

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def named(exc: ProtocolError) -> None:
    assert exc.field, f"ProtocolError without a field: {exc}"


# ------------------------------------------------------------------------ frames
def test_response_frames_parse_incrementally_with_offsets():
    stream = (fr.encode_response(fr.Response.SUCCEEDED, fr.Command.SUBSCRIBE, b"ok")
              + fr.encode_response(fr.Response.NOOP, fr.Command.SUBSCRIBE))
    reader = fr.FrameReader()
    frames = [f for b in stream for f in reader.feed(bytes([b]))]
    assert [(f.code, f.data, f.offset) for f in frames] == [(0x80, b"ok", 0), (0xFF, b"", 12)]


@pytest.mark.parametrize("frame, field, offset", [
    (struct.pack(">IBBI", 6, 0x70, 2, 0), "response code", 4),
    (struct.pack(">IBBI", 6, 0x80, 0x55, 0), "in-response-to", 5),
    (struct.pack(">IBBI", 8, 0x82, 2, 9) + b"xx", "data length", 6),
    (struct.pack(">I", 3) + b"abc", "frame length", 0),
])
def test_malformed_response_headers_name_field_and_offset(frame, field, offset):
    with pytest.raises(ProtocolError) as err:
        fr.FrameReader().feed(frame)
    assert err.value.field == field and err.value.offset == offset


@FUZZ
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=4))
def test_frame_reader_on_random_bytes(data, cuts):
    whole = fr.FrameReader()
    try:
        expected = whole.feed(data)
    except ProtocolError as exc:
        named(exc)
        return
    parts = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    split = fr.FrameReader()
    got = [f for a, b in zip(parts, parts[1:]) for f in split.feed(data[a:b])]
    assert got == expected


def test_status_text_strips_sttpapi_length_prefix_only_when_it_fits():
    assert fr.status_text(struct.pack(">I", 5) + b"hello") == "hello"
    assert fr.status_text(b"\x00\x00\x00\x09hello") == "\x00\x00\x00\thello"


def test_connection_string_is_brace_aware_and_case_insensitive():
    text = ("throttled=False;includeTime=True;assemblyInfo={source=x;version=1;updatedOn=now}"
            ";filterExpression={FILTER ActiveMeasurements WHERE PointTag IN ('A;B');X:1;Y}")
    pairs = fr.parse_connection_string(text)
    assert pairs["filterexpression"] == "FILTER ActiveMeasurements WHERE PointTag IN ('A;B');X:1;Y"
    assert pairs["assemblyinfo"] == "source=x;version=1;updatedOn=now"
    assert fr.parse_bool(pairs["includetime"]) and not fr.parse_bool(pairs["throttled"], True)
    with pytest.raises(ProtocolError, match="unclosed"):
        fr.parse_connection_string("filterExpression={abc")


@FEW
@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,8}", fullmatch=True),
                       st.from_regex(r"[a-z0-9 ;=:]{0,12}", fullmatch=True), max_size=5))
def test_connection_string_round_trip(pairs):
    parsed = fr.parse_connection_string(fr.format_connection_string(pairs))
    assert parsed == {k.lower(): v.strip() for k, v in
                      {k.lower(): v for k, v in pairs.items()}.items()}


# ------------------------------------------------------------------------ ticks
@FEW
@given(st.integers(0, 4_000_000_000), st.integers(0, 9_999_999))
def test_ticks_round_trip(seconds, hundred_ns):
    t = ticks.UNIX_EPOCH + seconds * ticks.PER_SECOND + hundred_ns
    assert ticks.from_datetime(ticks.to_datetime(t)) == t - t % 10
    arr = np.array([t | ticks.LEAP_SECOND], dtype=np.uint64)
    assert ticks.to_unix(arr)[0] == pytest.approx(seconds + hundred_ns / 1e7, abs=1e-6)


# ------------------------------------------------------------------------ signal index cache
def sample_cache(n: int = 3) -> SignalIndexCache:
    return SignalIndexCache(list(range(n)), [uuid.UUID(int=i + 1) for i in range(n)],
                            ["SIM"] * n, list(range(1, n + 1)), uuid.UUID(int=99))


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("slot", [0, 1])
def test_cache_round_trip(compress, slot):
    got_slot, cache = decode_cache(encode_cache(sample_cache(), slot, compress))
    assert got_slot == slot and cache.signal_ids == sample_cache().signal_ids
    assert list(cache.positions(np.array([2, 0, 7, -1]))) == [2, 0, -1, -1]


def test_cache_slot_ff_means_both_slots_and_length_without_itself_is_accepted():
    body = bytearray(encode_cache(sample_cache(), None, False))
    body[0:4] = struct.pack(">I", len(body) - 4)          # sttpapi counts without the field
    slot, cache = decode_cache(b"\xff" + bytes(body))
    assert slot is None and len(cache) == 3


@pytest.mark.parametrize("damage, field", [
    (lambda b: b[:30], "binary length"), (lambda b: b[:10], "cache header"),
    (lambda b: b"\x00" + b"\x1f\x8b" + b"garbage", "signal index cache"),
    (lambda b: b[:21] + b"\xff\xff\xff" + b[24:], "entry count")])
def test_cache_damage_is_named(damage, field):
    data = encode_cache(sample_cache(), 0, False)
    with pytest.raises(ProtocolError) as err:
        decode_cache(damage(data))
    assert err.value.field == field


@FUZZ
@given(st.binary(max_size=120))
def test_cache_decoder_on_random_bytes(data):
    try:
        decode_cache(data)
    except ProtocolError as exc:
        named(exc)


# ------------------------------------------------------------------------ compact
records = st.integers(0, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 9), min_size=n, max_size=n),
    st.lists(st.floats(width=32, allow_nan=False), min_size=n, max_size=n),
    st.lists(st.integers(0, (1 << 62) - 1), min_size=n, max_size=n),
    st.lists(st.integers(0, 0xFFFFFFFF), min_size=n, max_size=n)))


@FUZZ
@given(records, st.booleans(), st.booleans())
def test_compact_round_trip(recs, with_count, include_time):
    index, value, t, flags = (np.array(x) for x in recs)
    data = cm.encode_packet(index.astype(np.int32), value.astype(np.float32),
                            t.astype(np.uint64) if include_time else None,
                            flags.astype(np.uint32), with_count=with_count)
    got = cm.decode_packet(data, cm.TimeMode(include_time), sample_cache(10))
    assert list(got.index) == list(index)
    assert np.array_equal(got.value, value.astype(np.float32).astype(np.float64))
    if include_time:
        assert list(got.ticks) == list(t)
    assert np.array_equal(cm.compact_flags(got.flags), cm.compact_flags(flags))


def test_unknown_signal_index_names_its_offset():
    data = cm.encode_packet(np.array([0, 1, 500]), np.zeros(3), np.zeros(3, np.uint64))
    with pytest.raises(ProtocolError) as err:
        cm.decode_packet(data, cache=sample_cache(), offset=1000)
    assert err.value.field == "signal index" and err.value.offset == 1000 + 5 + 2 * 17


def test_base_time_offsets_mixed_with_full_times():
    base = ticks.UNIX_EPOCH + 10 * ticks.PER_SECOND
    rec = [struct.pack(">BifI", 0x40, 0, 1.0, 5), struct.pack(">BifQ", 0, 1, 2.0, base + 7),
           struct.pack(">BifI", 0xC0, 2, 3.0, 9)]
    data = b"\x02" + struct.pack(">I", 3) + b"".join(rec)
    got = cm.decode_packet(data, cm.TimeMode(True, False, (base, base + 100)))
    assert list(got.ticks) == [base + 5, base + 7, base + 109]
    with pytest.raises(ProtocolError, match="UpdateBaseTimes"):
        cm.decode_packet(data, cm.TimeMode())


@FUZZ
@given(st.binary(max_size=120))
def test_compact_decoder_on_random_bytes(data):
    try:
        got = cm.decode_packet(data, cache=sample_cache(4))
    except ProtocolError as exc:
        named(exc)
        return
    assert set(got.index.tolist()) <= {0, 1, 2, 3}


@FEW
@given(st.lists(st.integers(1, 5), min_size=1, max_size=6), st.integers(0, 2))
def test_split_stream_runs_equal_packet_by_packet(counts, noise_at):
    stream, expect = b"", []
    for i, n in enumerate(counts):
        if i == noise_at:
            stream += fr.encode_response(fr.Response.NOOP, fr.Command.SUBSCRIBE)
        idx = np.arange(n) % 3
        data = cm.encode_packet(idx, idx * 1.5, np.full(n, 7 + i, np.uint64))
        stream += fr.encode_response(fr.Response.DATA_PACKET, fr.Command.SUBSCRIBE, data)
        expect += list(idx)
    buf = bytearray(stream)
    items, used = cm.split_stream(buf, 0, len(buf), 0)
    got = [i for it in items if isinstance(it, cm.DataRun)
           for i in cm.decode_run(buf, it, cache=sample_cache())[0].index.tolist()]
    assert used == len(buf) and got == expect


@FEW
@given(st.integers(2, 6), st.integers(1, 5), st.sampled_from([0, 0x02, 0x21, None]),
       st.booleans(), st.integers(0, 40))
def test_run_decode_equals_packet_by_packet(packets, n, flags, unknown, where):
    """One strided pass over a run gives what decoding each packet gives: every column,
    uniform or mixed flags (None: random per record), and the same error for a runtime index
    the cache lacks (a cache with a hole at 3, so the fast min/max check must not pass it)."""
    rng = np.random.default_rng(n * 7 + packets)
    cache = SignalIndexCache([0, 1, 2, 4, 5], [uuid.UUID(int=i + 1) for i in range(5)])
    idx = np.array([0, 1, 2, 4, 5] * 2)[:n]
    stream = b""
    for p in range(packets):
        full = (rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32) if flags is None
                else np.full(n, cm.FULL_FLAGS[flags], np.uint32))
        bad = idx.copy()
        if unknown and p == where % packets:
            bad[where % n] = 3
        data = cm.encode_packet(bad, rng.normal(50, 1, n), np.full(n, 10**17 + p, np.uint64),
                                full)
        stream += fr.encode_response(fr.Response.DATA_PACKET, fr.Command.SUBSCRIBE, data)
    buf = bytearray(stream)
    (run,), _ = cm.split_stream(buf, 0, len(buf), 0)
    try:
        parts = [cm.decode_packet(bytes(buf[run.start + i * run.size + 10:
                                            run.start + (i + 1) * run.size]),
                                  cache=cache, offset=run.start + i * run.size + 10)
                 for i in range(run.count)]
    except ProtocolError as exc:
        with pytest.raises(ProtocolError) as err:
            cm.decode_run(buf, run, cache=cache)
        assert (err.value.field, err.value.offset) == (exc.field, exc.offset) == \
            ("signal index", exc.offset)
        return
    assert not unknown
    got, counts = cm.decode_run(buf, run, cache=cache)
    whole = cm.Measurements.concat(parts)
    for column in ("index", "value", "ticks", "flags"):
        assert np.array_equal(getattr(got, column), getattr(whole, column)), column
        assert getattr(got, column).dtype == getattr(whole, column).dtype
    assert counts.tolist() == [n] * packets


@pytest.mark.parametrize("dtype", [np.int32, np.int64, ">i4"])
@pytest.mark.parametrize("indices", [[0, 1, 2, 3], [0, 2, 5], [7, 10**9, -4]])
def test_cache_covers_agrees_with_positions(indices, dtype):
    cache = SignalIndexCache(indices, [uuid.UUID(int=i + 1) for i in range(len(indices))])
    probe = sorted(set(indices) | {-1, -2**31, 1, 3, 4, 6, 10**9 + 1})
    for value in probe:
        one = np.array([value, indices[0]], dtype=dtype)
        assert cache.covers(one) == bool((cache.positions(one) >= 0).all()) == \
            (int(value) in indices)
    assert cache.covers(np.array(indices)) and cache.covers(np.zeros(0, np.int32))


# ------------------------------------------------------------------------ metadata
def test_metadata_round_trip_gzip_and_tolerant_datetimes():
    points = make_points(12, rate=60)
    meta = decode_metadata(encode_metadata(points.metadata, compress=True))
    assert [m.point_tag for m in meta.measurements] == \
        [m.point_tag for m in points.metadata.measurements]
    assert meta.frame_rate(meta.measurements[0].signal_id) == 60
    for text in ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00.123456789"):
        assert parse_datetime(text).replace(microsecond=0) == \
            datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("data, field", [
    (b"\x1f\x8b\x08\x00broken", "metadata"), (b"<DataSet><Measure", "metadata XML"),
    (gzip.compress(b"<a><MeasurementDetail><SignalID>nope</SignalID></MeasurementDetail></a>",
                   mtime=0), "MeasurementDetail.SignalID")])   # mtime=0: same test id everywhere
def test_bad_metadata_is_named(data, field):
    with pytest.raises(ProtocolError) as err:
        decode_metadata(data)
    assert err.value.field == field


# ------------------------------------------------------------------------ TSSC
def sttpapi_tssc(measurements, packets=1):
    """Encode with sttpapi's TSSC encoder: list of packet data (flags, count, 85, seq, bits)."""
    from sttp.transport.tssc.encoder import Encoder
    enc, out, seq = Encoder(), [], 0
    for chunk in np.array_split(np.arange(len(measurements)), packets):
        buf = bytearray(1 << 16)
        enc.set_buffer(buf, np.uint32(0), np.uint32(len(buf)))
        for i in chunk:
            pid, ts, fl, v = measurements[i]
            assert enc.try_add_measurement(np.int32(pid), np.int64(ts), np.uint32(fl),
                                           np.float32(v))
        n = int(enc.finish_block())
        out.append(b"\x08" + struct.pack(">IBH", len(chunk), 85, seq) + bytes(buf[:n]))
        seq += 1
    return out


tssc_points = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 1 << 40),
                                 st.sampled_from([0, 0, 4, 0x10000, 0xFFFFFFFF]),
                                 st.floats(width=32, allow_nan=False)), min_size=1, max_size=60)


@FEW
@given(tssc_points, st.integers(1, 3))
def test_tssc_decodes_what_sttpapi_encodes(measurements, packets):
    ours = TsscDecoder()
    got = cm.Measurements.concat([ours.decode_packet(p) for p in
                                  sttpapi_tssc(measurements, min(packets, len(measurements)))])
    assert got.index.tolist() == [m[0] for m in measurements]
    assert got.ticks.tolist() == [m[1] for m in measurements]
    assert got.flags.tolist() == [m[2] for m in measurements]
    assert np.array_equal(got.value, np.array([m[3] for m in measurements], np.float32))


def test_tssc_long_stream_matches_sttpapi_decoder():
    from sttp.transport.tssc.decoder import Decoder
    rng = np.random.default_rng(3)
    meas = [(i % 50, 1_000_000 + (i // 50) * 333_333, 0, float(np.float32(rng.normal(50, 1))))
            for i in range(3000)]
    packets = sttpapi_tssc(meas, 6)
    theirs, got = Decoder(), []
    for p in packets:
        theirs.set_buffer(p[8:])
        while True:
            pid, ts, fl, v, ok, err = theirs.try_get_measurement()
            assert err is None
            if not ok:
                break
            got.append((int(pid), int(ts), int(fl), float(v)))
    ours = TsscDecoder()
    mine = cm.Measurements.concat([ours.decode_packet(p) for p in packets])
    assert list(zip(mine.index.tolist(), mine.ticks.tolist(), mine.flags.tolist(),
                    mine.value.tolist())) == got


def test_tssc_sequence_and_count_are_checked():
    packets = sttpapi_tssc([(1, 10, 0, 1.0), (2, 20, 0, 2.0)], 2)
    dec = TsscDecoder()
    with pytest.raises(ProtocolError) as err:
        dec.decode_packet(packets[1], offset=50)          # starts without sequence 0
    assert err.value.field == "TSSC sequence" and err.value.offset == 56
    lying = packets[0][:1] + struct.pack(">I", 7) + packets[0][5:]
    with pytest.raises(ProtocolError, match="counted 7"):
        TsscDecoder().decode_packet(lying)


@FUZZ
@given(st.binary(max_size=100))
def test_tssc_decoder_on_random_bytes(data):
    try:
        TsscDecoder().decode_packet(b"\x08" + struct.pack(">IBH", len(data), 85, 0) + data)
    except ProtocolError as exc:
        named(exc)
        assert exc.offset is not None


@FEW
@given(tssc_points, st.data())
def test_tssc_truncated_is_an_error_never_a_wrong_value(measurements, data):
    packet = sttpapi_tssc(measurements)[0]
    cut = data.draw(st.integers(8, len(packet) - 1)) if len(packet) > 9 else 8
    try:
        got = TsscDecoder().decode_packet(packet[:cut])
    except ProtocolError as exc:
        named(exc)
        return
    assert got.index.tolist() == [m[0] for m in measurements]


# ------------------------------------------------------------------------ filter subset
def test_filter_expressions_of_the_simulator():
    rows = make_points(24).rows()
    tags = lambda found: [r["pointtag"] for r in found]  # noqa: E731
    assert len(select("FILTER ActiveMeasurements WHERE SignalType = 'FREQ'", rows)) == 3
    assert tags(select("FILTER TOP 2 ActiveMeasurements WHERE SignalType IN ('VPHM','IPHM') "
                       "ORDER BY PointTag DESC", rows)) == ["GRID_PMU003:VPHM",
                                                           "GRID_PMU003:IPHM"]
    assert tags(select("GRID_PMU001:FREQ; SIM:2; " + rows[2]["signalid"], rows)) == \
        ["GRID_PMU001:FREQ", "GRID_PMU001:DFDT", "GRID_PMU001:VPHM"]
    assert len(select("FILTER ActiveMeasurements WHERE PointTag LIKE '%PMU002%' AND NOT "
                      "(SignalType = 'DIGI' OR SignalType = 'ALOG')", rows)) == 6
    assert select("FILTER ActiveMeasurements WHERE Description IS NULL", rows) == []
    with pytest.raises(ProtocolError) as err:
        select("FILTER ActiveMeasurements WHERE SignalType = ", rows)
    assert err.value.field == "filterExpression"


# -------------------------------------------------------------- hostile publishers (a trial)
def test_tssc_points_outside_the_cache_and_lying_counts_are_refused_at_once():
    bomb = bytes([0x0A]) + struct.pack(">IBH", 8 * 1000, 85, 0) + b"\xff" * 1000
    with pytest.raises(ProtocolError, match="point 1 is not in the signal index cache") as err:
        TsscDecoder(known=frozenset({0})).decode_packet(bomb)
    assert err.value.field == "TSSC point id"
    huge = bytes([0x0A]) + struct.pack(">IBH", 8 << 20, 85, 0) + b"\xff" * (1 << 20)
    with pytest.raises(ProtocolError, match="more than 1048576 a packet may hold"):
        TsscDecoder().decode_packet(huge)


def test_a_metadata_gzip_bomb_of_empty_elements_is_refused_before_parsing():
    from hil.protocols import sttp_metadata
    xml = b"<DataSet>" + b"<x/>" * (sttp_metadata.MAX_TAGS + 1) + b"</DataSet>"
    with pytest.raises(ProtocolError, match="more than 8000000 XML tags") as err:
        decode_metadata(gzip.compress(xml, 1))
    assert err.value.field == "metadata XML"
