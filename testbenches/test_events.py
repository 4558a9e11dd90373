"""Event test benches: a control system's events next to the console and the power analyzer.

`tcs` replays a telescope control session recorded in the lab (tcs_lib's SQLite form) as a
ZeroMQ publisher; `dut_events` publishes the DUT's power-state changes, so a power trace can be
cut at events; `lab_console` is a console session recorded on a lab rig, replayed as the DUT.
On a real rig the same tables point at the control system's and the DUT host's publishers and
at the board's UART.
"""
from __future__ import annotations

import re

MOUNT = "tcs.mount.state"
PROMPT = "dut> "


def test_mount_slews_tracks_and_parks(tcs, measure):
    slewing, tracking, parking, idle = tcs.expect_sequence(
        MOUNT, "state", ["slewing", "tracking", "parking", "idle"], timeout=15)
    # field values, typed by the replay's conversions (tcs_lib stores text)
    assert slewing["target"] == tracking["target"] == "HD 209458"
    assert tracking["on_target"] is True and slewing["on_target"] is False
    measure("tracking_elevation", tracking["el"], unit="deg", low=20.0, high=89.0)
    # ordering: data times and sequence numbers rise along the sequence
    events = [slewing, tracking, parking, idle]
    assert [e.data_time for e in events] == sorted(e.data_time for e in events)
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    # the dome follows the mount: a dome report within 1 degree of the tracked azimuth
    dome = tcs.history(topic="tcs.dome.")
    assert any(abs(d["az"] - tracking["az"]) < 1.0 and d.data_time >= slewing.data_time
               for d in dome), [d.fields for d in dome]
    tcs.check_sequence("tcs.")                      # nothing lost on the way (__seq)
    measure("tcs_latency_p95", tcs.latency("tcs.").p95, unit="s", high=0.5)


def test_weather_capture_as_stream(tcs, measure):
    capture = tcs.capture(2.0, topic="tcs.weather")  # more than one loop at 4x
    assert {"temperature", "humidity", "wind"} <= set(capture.signals)
    measure("weather_reports", capture.n_packets, low=3)
    measure("outside_temperature", float(capture["temperature"][0].mean()), unit="C",
            low=-20.0, high=30.0)
    assert capture.lost_packets == 0


def test_energy_between_dut_events(booted, console, power, dut_events, measure):
    dut_events.drain()
    with power.capture("sleep-by-events") as trace:
        console.writeline("sleep 1")
        asleep = dut_events.expect_event("dut.power.state", {"state": "sleep"}, timeout=3)
        awake = dut_events.expect_event("dut.power.state", {"state": "idle"}, timeout=3)
        console.expect(r"sleep: awake", timeout=3)
    assert awake["previous"] == "sleep"
    asleep_window = trace.between(asleep, awake)
    measure("sleep_duration_by_events", awake.time - asleep.time, unit="s", low=0.95, high=1.2)
    measure("sleep_energy_between_events", asleep_window.energy(), unit="J",
            low=5e-6, high=30e-6)    # ~4.2 uA x 3.3 V x 1 s


def test_recorded_console_session_replays_as_dut(lab_console, measure):
    banner = lab_console.expect(r"boot: ok v(\d+\.\d+\.\d+)", timeout=5)
    lab_console.expect_exact(PROMPT, timeout=5)
    version = lab_console.query("version\n", expect=r"version: (\S+)\r\n", timeout=5)
    assert version.group(1) == banner.group(1)
    start = lab_console.mark("tx")
    done = lab_console.query("tx 2\n", expect=r"tx: done 2", timeout=5)
    measure("replayed_tx_time", done.time - start.time, unit="s", high=1.0)
    lab_console.expect_exact(PROMPT, timeout=5)
    error = lab_console.query("reboot now\n", expect=r"error: command 'reboot now' was never "
                              r"recorded[^\r\n]*", timeout=5)
    assert re.search(r"'version'", error.group(0))
