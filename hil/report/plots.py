"""PNG plots of what instruments capture: `plot_power` for a power trace, `plot_stream` for a
stream capture.

Headless: figures are drawn on matplotlib's Agg canvas directly (no pyplot, no display), and
matplotlib is imported only when something is plotted (it takes a while to load). Long traces
are drawn as a min/max envelope of PLOT_COLUMNS columns, so a one-sample spike stays visible.
Each plot is attached to the running test's Allure result (`attach=False` to skip).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hil.instruments.power_trace import PowerTrace, TimeLike, format_si, si_scale
from hil.instruments.stream_capture import StreamCapture
from hil.report.attach import attach_file
from hil.report.measurements import Measurement

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PLOT_COLUMNS", "plot_power", "plot_stream"]

#: Columns of the min/max envelope a plot draws (a 10M-sample trace is decimated to this).
PLOT_COLUMNS = 2000
#: Channels per signal `plot_stream` draws by default.
PLOT_CHANNELS = 4


def plot_power(trace: PowerTrace, path: str | Path, marks: Mapping[str, TimeLike] | None = None,
               *, log: bool = False, title: str | None = None, attach: bool = True,
               limits: Iterable[Measurement] = (), events: Iterable[Any] = ()) -> Path:
    """PNG of current vs time, with the trace's marks and `marks` as labelled vertical lines.

    `marks` values are clock times, objects with `.time` (console marks, expect matches) or
    names of the trace's marks. `log=True` for a log current axis (sleep µA and radio mA on
    one plot). `limits`: measurements in amperes whose low/high are drawn as horizontal lines.
    `events`: things with a clock `.time` and a `.text`/`.value`/`.level` (Otii UART lines, GPI
    edges, event records), ticked along the bottom with their text.
    """
    from matplotlib.ticker import FuncFormatter

    extra = {label: trace.clock_time(when) for label, when in (marks or {}).items()}
    t, low, high = envelope(trace.time, trace.current, PLOT_COLUMNS)
    t_scale, t_prefix = si_scale(min(trace.duration or 1.0, 1.0))      # s, ms or µs
    x = np.repeat(t * t_scale, 2)                  # one vertical stroke min..max per column
    y = np.column_stack((low, high)).ravel()
    fig = _figure(figsize=(10, 4))
    ax = fig.add_subplot()
    if log:
        ax.plot(x, y, linewidth=0.8)
        ax.set_yscale("log", nonpositive="mask")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_si(v, "A", 3)))
        ax.set_ylabel("current")
        c_scale = 1.0
    else:
        c_scale, c_prefix = si_scale(float(np.max(np.abs(y))) or 1.0)
        ax.plot(x, y * c_scale, linewidth=0.8)
        ax.set_ylabel(f"current [{c_prefix}A]")
    ax.set_xlabel(f"time [{t_prefix}s] after t0")
    _draw_limits(ax, [m for m in limits if m.unit == "A"], c_scale)
    _draw_events(ax, [(e, trace.clock_time(e) - trace.t0) for e in events
                      if hasattr(e, "time")], t_scale, t[0], t[-1])
    for label, at in marks_within({**trace.marks, **extra}.items(), trace.t0, t[0], t[-1]):
        ax.axvline(at * t_scale, color="tab:red", linewidth=1, linestyle="--")
        ax.text(at * t_scale, 0.98, f" {label}", transform=ax.get_xaxis_transform(),
                rotation=90, va="top", ha="right", fontsize=8, color="tab:red",
                bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or f"{trace.name or 'power trace'}: {format_si(trace.duration, 's')}, "
                          f"mean {format_si(trace.mean(), 'A')}, {len(trace)} samples")
    return _save(fig, path, attach)


def plot_stream(capture: StreamCapture, path: str | Path, channels: int = PLOT_CHANNELS, *,
                attach: bool = True, marks: Mapping[str, TimeLike] | None = None,
                limits: Iterable[Measurement] = ()) -> Path:
    """PNG with one subplot per signal: its first `channels` channels over sender time.

    `marks` (clock times or objects with `.time`, e.g. console marks) are placed through the
    capture's median arrival offset, so they sit within the network latency of where they
    happened. `limits`: the `{source}.{signal}.min`/`.max` measurements of a `value_range`
    check, whose bounds are drawn on that signal's subplot.
    """
    rows = max(1, len(capture.signals))
    fig = _figure(figsize=(10, 2.6 * rows))
    axes = fig.subplots(rows, 1, squeeze=False, sharex=True)[:, 0]
    t0 = float(capture.timestamps.min()) if capture.n_packets else 0.0
    offset = float(np.median(capture.arrival - capture.timestamps)) if capture.n_packets else 0.0
    at = {label: float(getattr(when, "time", when)) - offset - t0
          for label, when in (marks or {}).items()}
    limits = list(limits)
    for ax, (key, s) in zip(axes, capture.signals.items()):
        prefix = f"{capture.source}.{key}."
        _draw_limits(ax, [m for m in limits if m.name in (prefix + "min", prefix + "max")], 1.0)
        for label, x in at.items():
            ax.axvline(x, color="tab:red", linewidth=1, linestyle="--")
            ax.text(x, 0.98, f" {label}", transform=ax.get_xaxis_transform(), rotation=90,
                    va="top", ha="right", fontsize=8, color="tab:red")
        times = capture.signal_times(key) - t0
        for row in range(min(channels, s.n_channels)):
            t, low, high = envelope(times, s.samples[row].astype(np.float64), PLOT_COLUMNS)
            ax.plot(np.repeat(t, 2), np.column_stack((low, high)).ravel(), linewidth=0.8,
                    label=s.channels[row])
        shown = f" (first {channels} of {s.n_channels} channels)" if s.n_channels > channels else ""
        ax.set_title(f"{key} @ {s.rate:g} samples/s{shown}", fontsize=9)
        ax.set_ylabel(f"{key} [{s.unit}]" if s.unit else key)
        if s.n_channels:
            ax.legend(loc="upper right", fontsize=7)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("time since first packet (s, sender clock)")
    stats = capture.packet_stats()
    fig.suptitle(f"{capture.source}: {capture.n_packets} packets, {capture.duration:.3f} s, "
                 f"missing {stats.missing}, lost {capture.lost_packets}", fontsize=10)
    return _save(fig, path, attach)


def _draw_limits(ax: Axes, limits: list[Measurement], scale: float) -> None:
    """Each measurement's low/high as a dotted horizontal line, red when it failed."""
    for m in limits:
        color = "tab:green" if m.passed else "tab:red"
        for side, value in (("low", m.low), ("high", m.high)):
            if value is None:
                continue
            ax.axhline(value * scale, color=color, linewidth=1, linestyle=":")
            ax.text(1.0, value * scale, f"{m.name} {side} ", transform=ax.get_yaxis_transform(),
                    va="bottom", ha="right", fontsize=7, color=color)


def _draw_events(ax: Axes, events: list[tuple[Any, float]], t_scale: float, lo: float,
                 hi: float) -> None:
    """Events as ticks along the bottom of the plot, each labelled with its text."""
    for event, at in events:
        if not lo <= at <= hi:
            continue
        text = next((str(getattr(event, a)) for a in ("text", "value", "level", "name")
                     if hasattr(event, a)), "")
        ax.axvline(at * t_scale, ymax=0.06, color="tab:purple", linewidth=1.2)
        ax.text(at * t_scale, 0.07, f" {text[:40]}", transform=ax.get_xaxis_transform(),
                rotation=90, va="bottom", ha="center", fontsize=7, color="tab:purple")


def envelope(time: np.ndarray, y: np.ndarray,
             columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(column start time, min, max) over `columns` equal runs of samples: short spikes survive
    decimation. Series with few samples come back as they are (min = max = y)."""
    n = y.size
    if n <= 2 * columns:
        return time, y, y
    k = -(-n // columns)
    full = (n // k) * k
    rows = y[:full].reshape(-1, k)
    low, high = rows.min(axis=1), rows.max(axis=1)
    starts = time[0:full:k]
    if full < n:
        low = np.append(low, y[full:].min())
        high = np.append(high, y[full:].max())
        starts = np.append(starts, time[full])
    return starts, low, high


def marks_within(marks: Iterable[tuple[str, float]], t0: float, lo: float,
                 hi: float) -> list[tuple[str, float]]:
    """(label, time on the trace axis) for the clock-time marks that fall within [lo, hi]."""
    return [(label, t - t0) for label, t in marks if lo <= t - t0 <= hi]


def _figure(figsize: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas: works without a display, whatever MPLBACKEND says."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path, attach: bool) -> Path:
    """Write the PNG (parent folders created) and attach it to the test's report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    if attach:
        attach_file(path)
    return path
