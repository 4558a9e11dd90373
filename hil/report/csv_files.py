"""CSV files of what instruments capture: `write_csv` for a power trace or a stream capture, and
`read_stream_csv` to load a stream capture back exactly.

Each writer attaches the file to the running test's Allure result (`attach=False` to skip, e.g.
for a very large file), so a test's data travels with its report.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hil.instruments.power_trace import PowerTrace
from hil.instruments.stream_capture import SignalData, StreamCapture
from hil.report.attach import attach_file

__all__ = ["POWER_HEADER", "STREAM_MAGIC", "read_stream_csv", "write_csv"]

#: First line of a power trace CSV.
POWER_HEADER = "time_s,current_a,voltage_v"
#: Start of the metadata line that opens a stream capture CSV.
STREAM_MAGIC = "# hil-stream-capture "
#: Rows of a power trace formatted per write. One `%` over a block of rows is ~3x faster than
#: np.savetxt's row loop (0.6 s instead of 2 s per million samples, see
#: benchmarks/bench_power_stats.py): a minute at 50 kHz is a 2 s wait instead of 6.
POWER_ROWS = 1 << 16


def write_csv(data: PowerTrace | StreamCapture, path: str | Path, *, attach: bool = True) -> Path:
    """Write a power trace or a stream capture as CSV (parent folders created) and attach it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, PowerTrace):
        _write_power(data, path)
    elif isinstance(data, StreamCapture):
        _write_stream(data, path)
    else:
        raise TypeError(f"write_csv takes a PowerTrace or a StreamCapture, "
                        f"got {type(data).__name__}")
    if attach:
        attach_file(path)
    return path


def _write_power(trace: PowerTrace, path: Path) -> None:
    """`time_s,current_a,voltage_v` rows (time on the trace's axis, s after t0)."""
    row = "%.12g,%.9g,%.9g\n"
    time, current, volts = trace.time, trace.current, trace.voltage
    with path.open("w", encoding="ascii", newline="") as fh:
        fh.write(POWER_HEADER + "\n")
        for i in range(0, len(trace), POWER_ROWS):
            j = min(i + POWER_ROWS, len(trace))
            block = np.column_stack((time[i:j], current[i:j], volts[i:j]))
            fh.write((row * (j - i)) % tuple(block.ravel().tolist()))


def _write_stream(capture: StreamCapture, path: Path) -> None:
    """Every sample column as a row; `read_stream_csv` reads it back exactly.

    Line 1 is a `#` comment holding the metadata as JSON (pandas: `comment="#"`). Columns:
    packet (index), packet_number, timestamp, arrival, signal, time, then one column per
    `signal.channel` (empty on rows of other signals). Packets without any sample get one
    row with an empty signal, so the packet table survives the round trip.
    """
    columns = [f"{key}.{label}" for key, s in capture.signals.items() for label in s.channels]
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise ValueError(f"capture {capture.source!r}: signal.channel column names repeat "
                         f"({', '.join(twice)}), so the CSV could not be read back")
    meta = {"source": capture.source, "lost_packets": capture.lost_packets, "signals": [
        {"key": key, "name": s.name, "rate": s.rate, "channels": s.channels,
         "block_size": s.block_size, "unit": s.unit, "dtype": str(s.samples.dtype),
         "explicit_index": s.packet_index is not None}
        for key, s in capture.signals.items()]}
    numbers = capture.packet_numbers.tolist()
    stamps = capture.timestamps.tolist()
    arrival = capture.arrival.tolist()
    with path.open("w", newline="", encoding="utf-8") as f:
        f.write(STREAM_MAGIC + json.dumps(meta) + "\n")
        writer = csv.writer(f)
        writer.writerow(["packet", "packet_number", "timestamp", "arrival", "signal", "time",
                         *columns])
        offset = 0
        for key, s in capture.signals.items():
            before, after = [None] * offset, [None] * (len(columns) - offset - s.n_channels)
            offset += s.n_channels
            index = s.packet_indices().tolist()
            times = capture.signal_times(key).tolist()
            for j, values in enumerate(s.samples.T.tolist()):
                p = index[j]
                writer.writerow([p, numbers[p], stamps[p], arrival[p], key, times[j],
                                 *before, *values, *after])
        carried = np.zeros(capture.n_packets, dtype=bool)
        for s in capture.signals.values():
            carried[s.packet_indices()] = True
        for p in np.flatnonzero(~carried).tolist():
            writer.writerow([p, numbers[p], stamps[p], arrival[p], "", "",
                             *([None] * len(columns))])


def read_stream_csv(path: str | Path) -> StreamCapture:
    """Read a stream capture written by `write_csv`; ValueError names the file and line at fault."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        first = f.readline()
        if not first.startswith(STREAM_MAGIC):
            raise ValueError(f"{path}: not a hil stream capture CSV (no metadata line)")
        try:
            meta = json.loads(first[len(STREAM_MAGIC):])
            return _capture_from_rows(meta, csv.reader(f))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"{path}: broken hil stream capture CSV: {exc}") from exc


def _capture_from_rows(meta: dict, reader: Iterator[list[str]]) -> StreamCapture:
    """Rebuild packets and signals from the rows `_write_stream` wrote (after the metadata)."""
    header = next(reader, [])
    infos = {info["key"]: info for info in meta["signals"]}
    try:
        columns = {key: [header.index(f"{key}.{label}") for label in info["channels"]]
                   for key, info in infos.items()}
    except ValueError as exc:
        raise ValueError(f"line 2, the header: a signal column is missing ({exc})") from None
    packets: dict[int, tuple[int, float, float]] = {}
    values: dict[str, list[list[float]]] = {key: [] for key in infos}
    index: dict[str, list[int]] = {key: [] for key in infos}
    for line, row in enumerate(reader, start=3):
        try:
            p = int(row[0])
            packets.setdefault(p, (int(row[1]), float(row[2]), float(row[3])))
            if row[4]:
                values[row[4]].append([float(row[c]) for c in columns[row[4]]])
                index[row[4]].append(p)
        except (ValueError, IndexError, KeyError) as exc:
            raise ValueError(f"line {line}: {type(exc).__name__} {exc} in row {row}") from None
    order = sorted(packets)
    if order != list(range(len(order))):
        raise ValueError("packet indices are not 0..n-1")
    signals = {}
    for key, info in infos.items():
        samples = np.array(values[key], dtype=np.float64).reshape(len(values[key]),
                                                                  len(columns[key]))
        explicit = np.array(index[key], dtype=np.int64)
        signals[key] = SignalData(name=info["name"], rate=info["rate"], channels=info["channels"],
                                  samples=samples.T.astype(info.get("dtype", "float64")),
                                  block_size=info["block_size"],
                                  packet_index=explicit if info["explicit_index"] else None,
                                  unit=info.get("unit", ""))
    return StreamCapture(
        source=meta["source"], signals=signals,
        packet_numbers=np.array([packets[p][0] for p in order], dtype=np.uint64),
        timestamps=np.array([packets[p][1] for p in order], dtype=np.float64),
        arrival=np.array([packets[p][2] for p in order], dtype=np.float64),
        lost_packets=int(meta["lost_packets"]))
