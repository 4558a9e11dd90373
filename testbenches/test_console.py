"""Console test benches: what a lab checks on a sensor node's UART shell."""
from __future__ import annotations

import re

import pytest

from hil import WatcherTriggered

PROMPT = "dut> "


def test_boot_banner_matches_version_command(booted, console):
    console.writeline("version")
    answer = console.expect(r"version: (\d+\.\d+\.\d+)", timeout=2)
    assert answer.group(1) == booted.group(1)


def test_help_lists_the_shell_commands(booted, console):
    reply = console.query("help\n", expect=PROMPT, timeout=2)
    listed = set(re.findall(r"^\s+(\w+)", reply.before, flags=re.MULTILINE))
    assert {"help", "version", "status", "reset", "sleep", "tx", "sensor", "echo", "log",
            "panic"} <= listed


def test_echo_round_trip(booted, console):
    console.writeline("echo hello bench 123")
    console.expect_exact("hello bench 123\r\n", timeout=2)


def test_sensor_readings_in_range(booted, console, measure):
    m = console.query("sensor\n", expect=r"temp=(-?[\d.]+) C hum=([\d.]+) % "
                                         r"accel=(-?[\d.]+),(-?[\d.]+),(-?[\d.]+) g", timeout=2)
    temp, hum, ax, ay, az = map(float, m.groups())
    measure("temperature", temp, unit="C", low=-20, high=60)
    measure("humidity", hum, unit="%", low=5, high=95)
    measure("gravity", (ax * ax + ay * ay + az * az) ** 0.5, unit="g", low=0.9, high=1.1)


def test_sleep_and_wake(booted, console, measure):
    console.writeline("sleep 0.5")
    entering = console.expect(r"sleep: entering for ([\d.]+) s", timeout=2)
    awake = console.expect(r"sleep: awake after ([\d.]+) s", timeout=3)
    measure("reported_sleep", float(awake.group(1)), unit="s", low=0.45, high=0.6)
    measure("observed_sleep", awake.time - entering.time, unit="s", low=0.4, high=0.8)
    console.expect_exact(PROMPT, timeout=2)


def test_unknown_command_is_answered_with_an_error(booted, console):
    m = console.query("frobnicate 3\n", expect=r"error: (.*)\r?$", timeout=2)
    assert "unknown command 'frobnicate'" in m.group(1)
    m = console.query("sleep soon\n", expect=r"error: sleep: (.*)\r?$", timeout=2)
    assert "expected a number" in m.group(1)


def test_status_reports_idle_after_boot(booted, console):
    m = console.query("status\n", expect=r"state: (\w+) voltage: ([\d.]+) V", timeout=2)
    assert m.group(1) == "idle"
    assert 1.8 <= float(m.group(2)) <= 5.5


def test_reset_reboots_with_banner(booted, console):
    console.writeline("reset")
    console.expect_exact("reset: rebooting", timeout=2)
    console.expect(r"boot: ok v\d+\.\d+\.\d+", timeout=5)
    console.expect_exact(PROMPT, timeout=5)


def test_watcher_catches_a_panic(booted, console):
    watch = console.fail_on(r"PANIC: .*")
    console.writeline("panic")
    with pytest.raises(WatcherTriggered, match="PANIC"):
        console.expect(r"boot: ok", timeout=5)
    watch.remove()


def test_long_log_stream_arrives_complete(booted, console, measure):
    size = 2 * 1024 * 1024
    start = console.mark("log-start")
    console.writeline(f"log {size}")
    done = console.expect(rf"log: done {size} bytes", timeout=20)
    received = done.start - start.offset
    measure("log_bytes_received", received, unit="B", low=size, high=size + 64)
    measure("log_throughput", received / max(done.time - start.time, 1e-9) / 1e6, unit="MB/s",
            low=0.5)
