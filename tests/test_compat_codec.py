"""The legacy data conventions: escapes, hex (both nibble orders), end markers, arguments, conf
strings. Pure functions: no bus."""
from __future__ import annotations

import pytest

from hil.buses.compat import codec
from hil.buses.compat.cmd_serial import KEYS as SERIAL_KEYS
from hil.buses.compat.cmd_serial import SERIAL
from hil.buses.compat.cmd_tcp import KEYS as TCP_KEYS
from hil.buses.compat.conf import parse, settings
from hil.errors import BusDataError, RigError


@pytest.mark.parametrize("text, raw", [
    (r"ver\n", b"ver\n"),
    (r"a\r\n\t\e", b"a\r\n\t\x1b"),
    (r"\x00\xff\x7F", b"\x00\xff\x7f"),
    (r"\101\0\377", b"A\x00\xff"),
    (r"back\\slash \q", b"back\\slash \\q"),      # unknown escape kept, as string_escape did
    ("é", "é".encode()),
    (b"\\n\xff", b"\n\xff"),
])
def test_unescape_gives_the_bytes_the_escapes_name(text: str | bytes, raw: bytes) -> None:
    assert codec.unescape(text) == raw


@pytest.mark.parametrize("text, problem", [
    ("abc\\", "trailing backslash"),
    (r"\x4", r"invalid escape \x4 at character 0"),
    (r"ok\xzz", r"invalid escape \xzz at character 2"),
    (r"\777", "above"),
])
def test_bad_escapes_are_clear_errors(text: str, problem: str) -> None:
    with pytest.raises(BusDataError, match=problem.replace("\\", "\\\\")):
        codec.unescape(text)


def test_hex_high_nibble_first_is_the_legacy_default() -> None:
    assert codec.hex_to_bytes("0a1BfF00") == b"\x0a\x1b\xff\x00"
    assert codec.bytes_to_hex(b"\x0a\x1b\xff\x00") == "0a1bff00"


def test_hex_low_nibble_first_swaps_within_each_byte() -> None:
    assert codec.hex_to_bytes("a0b1ff", "low_first") == b"\x0a\x1b\xff"
    assert codec.bytes_to_hex(b"\x0a\x1b\xff", "low_first") == "a0b1ff"


@pytest.mark.parametrize("order", ["high_first", "low_first"])
def test_hex_round_trips_every_byte(order: str) -> None:
    every = bytes(range(256))
    assert codec.hex_to_bytes(codec.bytes_to_hex(every, order), order) == every  # type: ignore[arg-type]


@pytest.mark.parametrize("digits, problem", [
    ("0a1", "odd number of hex digits (3)"),
    ("0a1g", "'g' at character 3 is not a hex digit"),
    ("0a 1b", "' ' at character 2 is not a hex digit"),
    ("0x1b", "'x' at character 1 is not a hex digit"),
])
def test_bad_hex_is_a_clear_error(digits: str, problem: str) -> None:
    with pytest.raises(BusDataError) as info:
        codec.hex_to_bytes(digits, what="data")
    assert problem in str(info.value) and repr(digits) in str(info.value)


def test_end_markers_split_on_commas_and_unescape() -> None:
    assert codec.end_markers(r"\n,\r,>,END") == [b"\n", b"\r", b">", b"END"]


@pytest.mark.parametrize("eot, problem", [("", "needed"), ("undef", "needed"),
                                          (r"\n,", "item 2 is empty")])
def test_bad_end_markers_are_clear_errors(eot: str, problem: str) -> None:
    with pytest.raises(BusDataError, match=problem):
        codec.end_markers(eot)


def test_plain_reads_drop_nul_cr_and_lf_only() -> None:
    assert codec.drop_ignored("a\r\nb\x00c\td") == "abc\td"


def test_timeout_and_count_arguments_accept_the_legacy_strings() -> None:
    assert codec.timeout_arg("undef", 7.0) == 7.0
    assert codec.timeout_arg("", 7.0) == 7.0
    assert codec.timeout_arg(None, 7.0) == 7.0
    assert codec.timeout_arg("2.5", 7.0) == 2.5
    assert codec.count_arg("12") == 12 and codec.count_arg(0) == 0
    for bad in ("soon", -1, float("nan"), True):
        with pytest.raises(BusDataError, match="timeout"):
            codec.timeout_arg(bad, 1.0)
    for bad in ("ten", -3, 2.5):
        with pytest.raises(BusDataError, match="bytes_to_read"):
            codec.count_arg(bad)


# ------------------------------------------------------------------ conf strings
def test_conf_string_with_and_without_the_module_name() -> None:
    assert settings("tcp(host=10.0.0.3, port=2300,timeout=2.5)", "tcp", TCP_KEYS) == {
        "host": "10.0.0.3", "port": 2300, "timeout": 2.5, "nibbles": "high_first",
        "encoding": "utf-8", "skip_nul": False}
    assert settings("host=h,port=1,timeout=undef", "tcp", TCP_KEYS)["timeout"] == 60.0


def test_nested_conf_string_values_keep_their_commas() -> None:
    conf = parse("gpib(dst_addr=3,bus=tcp(host=10.0.0.3,port=2300),adapter_addr=0)")
    assert conf.name == "gpib"
    assert dict(conf.params) == {"dst_addr": "3", "bus": "tcp(host=10.0.0.3,port=2300)",
                                 "adapter_addr": "0"}


@pytest.mark.parametrize("conf, key, problem", [
    ("tcp(port=23)", "host", "is missing"),
    ("tcp(host=h)", "port", "is missing"),
    ("tcp(host=h,port=telnet)", "port", "expected a whole number from 1 to 65535"),
    ("tcp(host=h,port=70000)", "port", "from 1 to 65535"),
    ("tcp(host=h,port=23,timeout=-1)", "timeout", "expected seconds"),
    ("tcp(host=h,port=23,timout=1)", "timout", "unknown key"),
    ("tcp(host=h,port=23,port=24)", "port", "given twice"),
    ("tcp(host=h,port=23,nibbles=lsb)", "nibbles", "high_first, low_first"),
    ("tcp(host=h,port=23,encoding=klingon)", "encoding", "unknown text encoding"),
])
def test_bad_tcp_conf_strings_name_the_key(conf: str, key: str, problem: str) -> None:
    with pytest.raises(RigError) as info:
        settings(conf, "tcp", TCP_KEYS, "init_tcp('x'): ")
    assert info.value.key == key
    assert f"key '{key}'" in str(info.value) and problem in str(info.value)
    assert conf in str(info.value) and "init_tcp('x')" in str(info.value)


@pytest.mark.parametrize("conf, problem", [
    ("tcp(host=h,port=1,device=/dev/x)", "unknown key; tcp takes host, port"),
    ("tcp(host=h,port=1", "must end with ')'"),
    ("tcp(host=h,bus=x(a=1,port=1)", "unbalanced"),
    ("tcp(host=h,port)", "is not key=value"),
])
def test_malformed_conf_strings_say_what_is_wrong(conf: str, problem: str) -> None:
    with pytest.raises(RigError) as info:
        settings(conf, "tcp", TCP_KEYS)
    assert problem in str(info.value)


def test_a_conf_string_for_another_module_is_refused() -> None:
    with pytest.raises(RigError, match="is for module 'serial'; this is 'tcp'"):
        settings("serial(device=/dev/ttyS0)", "tcp", TCP_KEYS)


@pytest.mark.parametrize("conf, key, problem", [
    ("serial(baudrate=9600)", "device", "names no port"),
    ("serial(device=/dev/x,url=loop://)", "url", "names the port twice"),
    ("serial(vendor=0403)", "product", "needs product too"),
    ("serial(vendor=403,product=6001)", "vendor", "4 hex digits"),
    ("serial(device=/dev/x,serialnum=A1)", "serialnum", "needs vendor and product"),
    ("serial(device=/dev/x,parity=X)", "parity", "N, E, O, M, S"),
    ("serial(device=/dev/x,stopbits=3)", "stopbits", "1, 1.5 or 2"),
    ("serial(device=/dev/x,bytesize=9)", "bytesize", "from 5 to 8"),
    ("serial(device=/dev/x,flow=hardware)", "flow", "xonxoff, rtscts, dsrdtr, none"),
])
def test_bad_serial_conf_strings_name_the_key(conf: str, key: str, problem: str) -> None:
    with pytest.raises(RigError) as info:
        values = settings(conf, "serial", SERIAL_KEYS)
        SERIAL.check(values, "")
    assert info.value.key == key and problem in str(info.value)


def test_serial_defaults_are_the_legacy_ones() -> None:
    values = settings("serial(device=/dev/ttyUSB0)", "serial", SERIAL_KEYS)
    assert (values["baudrate"], values["bytesize"], values["parity"], values["stopbits"],
            values["flow"], values["timeout"]) == (9600, 8, "N", 1.0, "none", 60.0)
