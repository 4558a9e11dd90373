"""A legacy-style script (sensor_node_script.py) driving the DUT over TCP and serial, run by
pytest beside the new benches: links by rig table name, and a link the script opens itself."""
from __future__ import annotations

import pytest

import sensor_node_script as script  # beside this file: pytest puts its folder on sys.path


def test_script_reads_the_version_over_the_rig_tcp_link(booted):  # the link: by name only
    assert script.firmware_version_tcp("console_tcp") == booted.group(1)


def test_script_reads_the_sensors_over_the_rig_serial_link(booted, console, measure):
    values = script.sensor_readings_serial("console")
    measure("legacy.temperature", values["temp"], unit="C", low=-20, high=60)
    measure("legacy.humidity", values["hum"], unit="%", low=5, high=95)


def test_script_opens_its_own_link_from_a_conf_string(booted, console_tcp):
    address = script.open_link("direct", console_tcp.host, console_tcp.port)
    assert address.endswith(f",{console_tcp.port}")
    assert script.echo_bytes_tcp("direct", "4849") == "4849"      # "HI" there and back
    assert script.firmware_version_tcp("direct") == booted.group(1)


def test_script_errors_are_hil_errors_naming_the_link(booted):
    from hil.errors import BusError
    with pytest.raises(BusError, match="unknown tcp link 'dut'"):
        script.firmware_version_tcp("dut")
