"""Power test benches: what a lab measures on a battery-powered sensor node with an Otii.

Each bench drives the DUT from its console and cuts the power trace at console events (marks and
expect matches carry `hil.clock` times, the trace's t0 is on the same clock). Edges are trimmed
where a window must not include the state before or after: a console line arrives a little
after the state change it reports. A window ending at the last console event of a capture is
clipped to the trace (`clip=True`): the recording stops just after that event.
"""
from __future__ import annotations

import numpy as np

BOOT_BANNER = r"boot: ok v(\d+\.\d+\.\d+)"
PROMPT = "dut> "
EDGE_S = 0.1              # trimmed off both ends of a window cut at console lines
CR2032_MAH = 225.0
DERATING = 0.8            # usable share of a coin cell's nominal capacity
REPORT_PERIOD_S = 60.0    # the duty cycle: one radio report a minute, asleep in between


def test_sleep_current(booted, console, power, measure, report):
    with power.capture("sleep") as trace:
        console.writeline("sleep 1")
        entering = console.expect(r"sleep: entering", timeout=2)
        awake = console.expect(r"sleep: awake after ([\d.]+) s", timeout=3)
    report.power(trace, marks={"entering": entering, "awake": awake}, log=True)
    asleep = trace.between(entering.time + EDGE_S, awake.time - EDGE_S)
    measure("sleep_current", asleep.mean(), unit="A", low=0.5e-6, high=10e-6)
    measure("sleep_current_p99", asleep.percentile(99), unit="A", high=15e-6)


def test_energy_per_radio_burst(booted, console, power, measure, report):
    with power.capture("tx") as trace:
        start = console.mark("tx")
        done = console.query("tx 5\n", expect=r"tx: done 5", timeout=3)
    report.power(trace, marks={"tx": start, "done": done})
    bursts = trace.between(start, done, clip=True).pulses(threshold=10e-3, min_width=1e-3)
    measure("radio_bursts", len(bursts), low=5, high=5)
    # medians: one burst stretched by a late firmware timer must not decide the verdict
    measure("burst_energy", float(np.median([b.energy for b in bursts])), unit="J",
            low=0.2e-3, high=1.0e-3)
    measure("burst_duration", float(np.median([b.duration for b in bursts])), unit="s",
            low=2e-3, high=6e-3)
    measure("burst_peak_current", max(b.peak for b in bursts), unit="A", high=60e-3)


def test_boot_time_and_inrush(console, power, measure):
    power.off()
    console.drain()
    with power.capture("boot") as trace:
        on = console.mark("power-on")
        power.on()
        banner = console.expect(BOOT_BANNER, timeout=5)
        prompt = console.expect_exact(PROMPT, timeout=5)
    measure("boot_time", prompt.time - on.time, unit="s", high=1.0)
    assert banner.group(1)
    inrush = trace.between(on, on.time + 0.05, clip=True)
    measure("inrush_peak", inrush.max(), unit="A", low=20e-3, high=0.3)
    booting = trace.between(on.time + 0.01, banner.time)
    measure("boot_current", booting.mean(), unit="A", high=20e-3)


def test_coin_cell_battery_life(booted, console, power, measure):
    """One report (two radio bursts) a minute, asleep in between: how long a CR2032 lasts.

    The report costs what the DUT draws from the start of its first burst to the end of its
    last; the console round trips around it are the bench's doing, not the firmware's.
    """
    with power.capture("duty-cycle") as trace:
        start = console.mark("report")
        done = console.query("tx 2\n", expect=r"tx: done 2", timeout=3)
        console.expect_exact(PROMPT, timeout=2)
        console.writeline("sleep 1")
        entering = console.expect(r"sleep: entering", timeout=2)
        awake = console.expect(r"sleep: awake", timeout=3)
    bursts = trace.between(start, done).pulses(threshold=10e-3, min_width=1e-3)
    measure("report_bursts", len(bursts), low=2, high=2)
    report = trace.window(bursts[0].start, bursts[-1].end)
    sleep_current = trace.between(entering.time + EDGE_S, awake.time - EDGE_S).mean()
    average = (report.charge() + sleep_current * (REPORT_PERIOD_S - report.duration)) \
        / REPORT_PERIOD_S
    days = CR2032_MAH * 3.6 * DERATING / average / 86_400
    measure("report_charge", report.charge(), unit="C", high=1e-3)
    measure("duty_cycle_average_current", average, unit="A", high=30e-6)
    measure("cr2032_life", days, unit="days", low=365)
