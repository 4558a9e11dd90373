"""The `cmd_serial` command set of older bench scripts, over hil's `SerialBus`.

Same functions and conventions as `cmd_tcp` (see there and docs/compat.md), for serial links.
One difference kept from the legacy module: a read that times out after some bytes came
returns those bytes (a TCP read raises), as pyserial's read did.

Conf string: `serial(device=/dev/ttyUSB0[,baudrate=9600][,bytesize=8][,parity=N]
[,stopbits=1][,flow=xonxoff|rtscts|dsrdtr|none][,timeout=S][,nibbles=...][,encoding=...]
[,skip_nul=0|1])`. Instead of `device`: `port` (the same), `url` (any pyserial URL: rfc2217://,
socket://, loop://), or `vendor`+`product` (USB ids, 4 hex digits each) with an optional
`serialnum`, looked up among the connected ports when the link is configured.
"""
from __future__ import annotations

from typing import Any

from hil.buses.compat.conf import COMMON_KEYS, Key, choice, integer, text
from hil.buses.compat.family import Found, LinkFamily
from hil.buses.serial import SerialBus
from hil.errors import BusConnectError, RigError

DEFAULT_BAUDRATE = 9600         # the legacy module's default


def _usb_id(value: str) -> str:
    if len(value) != 4 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError("expected a USB id of 4 hex digits, like 0403")
    return value.lower()


def _stopbits(value: str) -> float:
    if value not in ("1", "1.5", "2"):
        raise ValueError("expected 1, 1.5 or 2")
    return float(value)


KEYS: dict[str, Key] = {
    "device": Key(text, help="device path, like /dev/ttyUSB0"),
    "port": Key(text, help="the same as device"),
    "url": Key(text, help="a pyserial URL (rfc2217://host:port, socket://host:port ...)"),
    "vendor": Key(_usb_id, help="USB vendor id (with product)"),
    "product": Key(_usb_id, help="USB product id (with vendor)"),
    "serialnum": Key(text, help="USB serial number (with vendor and product)"),
    "baudrate": Key(integer(1, 100_000_000), DEFAULT_BAUDRATE, help="bits per second (9600)"),
    "bytesize": Key(integer(5, 8), 8, help="data bits, 5 to 8"),
    "parity": Key(choice("N", "E", "O", "M", "S"), "N", help="N, E, O, M or S"),
    "stopbits": Key(_stopbits, 1.0, help="1, 1.5 or 2"),
    "flow": Key(choice("xonxoff", "rtscts", "dsrdtr", "none"), "none",
                help="flow control: xonxoff, rtscts, dsrdtr or none"),
    **COMMON_KEYS,
}


def _check(values: dict[str, Any], where: str) -> None:
    """Exactly one way to name the port: device, port, url, or vendor+product."""
    given = [k for k in ("device", "port", "url") if values[k] is not None]
    usb = [k for k in ("vendor", "product") if values[k] is not None]
    if len(given) > 1 or (given and usb):
        keys = given + usb
        raise RigError(f"{where}conf string names the port twice ({', '.join(keys)}); give "
                       "one of device, port, url, or vendor and product", key=keys[-1])
    if len(usb) == 1:
        missing = "product" if usb == ["vendor"] else "vendor"
        raise RigError(f"{where}conf string: {usb[0]} needs {missing} too", key=missing)
    if not given and not usb:
        raise RigError(f"{where}conf string names no port: give device (or port, url), or "
                       "vendor and product", key="device")
    if values["serialnum"] is not None and not usb:
        raise RigError(f"{where}conf string: serialnum selects among USB devices; it needs "
                       "vendor and product", key="serialnum")


def _find_usb(link_id: str, values: dict[str, Any]) -> str:
    """The device of the connected USB serial port with this vendor, product (and serial)."""
    from serial.tools import list_ports
    vendor, product, serial = values["vendor"], values["product"], values["serialnum"]
    found = [p for p in list_ports.comports()
             if p.vid == int(vendor, 16) and p.pid == int(product, 16)
             and (serial is None or p.serial_number == serial)]
    wanted = f"USB {vendor}:{product}" + (f" serial {serial}" if serial else "")
    if not found:
        raise BusConnectError(f"serial link {link_id!r}: no connected port is {wanted}")
    if len(found) > 1:
        devices = ", ".join(f"{p.device} (serial {p.serial_number})" for p in found)
        raise BusConnectError(f"serial link {link_id!r}: {len(found)} ports are {wanted}: "
                              f"{devices}; add serialnum to choose")
    return found[0].device


def _open(link_id: str, values: dict[str, Any]) -> tuple[SerialBus, str]:
    """Open the port; returns the bus and the device, as the legacy config_serial did."""
    url = values["device"] or values["port"] or values["url"] or _find_usb(link_id, values)
    flow = values["flow"]
    bus = SerialBus(url, baudrate=values["baudrate"], bytesize=values["bytesize"],
                    parity=values["parity"], stopbits=values["stopbits"],
                    xonxoff=flow == "xonxoff", rtscts=flow == "rtscts",
                    dsrdtr=flow == "dsrdtr", timeout=values["timeout"],
                    name=f"serial link {link_id!r} ({url})", encoding=values["encoding"])
    try:
        if flow == "rtscts":
            bus.set_rts(True)
        if flow == "dsrdtr":
            bus.set_dtr(True)
        bus.drain()                 # the legacy config flushed the input
    except BaseException:
        bus.close()
        raise
    return bus, url


SERIAL = LinkFamily("serial", KEYS, _open, check=_check, partial_reads=True)


def init_serial(serial_id: str | int, conf_string: str | None = None) -> str:
    """Register serial link `serial_id` from `conf_string` (a port, and its settings). Nothing
    is opened yet. `init_serial(conf_string)` picks a free id. Returns the id."""
    if conf_string is None:
        serial_id, conf_string = SERIAL.new_id(), str(serial_id)
    return SERIAL.init(serial_id, conf_string)


def deinit_serial(serial_id: str | int) -> str:
    """Invalidate (if configured) and forget link `serial_id`."""
    return SERIAL.deinit(serial_id)


def config_serial(serial_id: str | int) -> str:
    """Open link `serial_id` (input received before is discarded); returns the device."""
    return SERIAL.config(serial_id)


def inval_serial(serial_id: str | int) -> str:
    """Close link `serial_id` (its settings stay: config_serial opens it again)."""
    return SERIAL.inval(serial_id)


def write_serial(serial_id: str | int, data: str | bytes) -> str:
    r"""Send `data`; escapes (\n \r \t \e \xHH ...) are the bytes they name."""
    return SERIAL.write(serial_id, data)


def write_bin_serial(serial_id: str | int, data: str) -> str:
    """Send bytes written as hex, two digits a byte ("0d0a")."""
    return SERIAL.write(serial_id, data, binary=True)


def read_serial(serial_id: str | int, bytes_to_read: int | str,
                timeout: object = "undef") -> str:
    """Read `bytes_to_read` bytes (fewer if only those came by the timeout); as text, without
    NUL, CR and LF."""
    return SERIAL.read(serial_id, bytes_to_read, timeout)


def read_bin_serial(serial_id: str | int, bytes_to_read: int | str,
                    timeout: object = "undef") -> str:
    """Read like read_serial; as hex."""
    return SERIAL.read(serial_id, bytes_to_read, timeout, binary=True)


def read_until_serial(serial_id: str | int, eot: str, timeout: object = "undef") -> str:
    """Read up to the first of the comma-separated end markers `eot` (not returned); as text,
    without NUL, CR and LF."""
    return SERIAL.read_until(serial_id, eot, timeout)


def read_bin_until_serial(serial_id: str | int, eot: str, timeout: object = "undef") -> str:
    """Read up to the first of the end markers `eot` (not returned); as hex."""
    return SERIAL.read_until(serial_id, eot, timeout, binary=True)


def wrnrd_serial(serial_id: str | int, data: str | bytes, bytes_to_read: int | str,
                 timeout: object = "undef") -> str:
    """write_serial, then read_serial."""
    return SERIAL.wrnrd(serial_id, data, bytes_to_read, timeout)


def wrnrd_bin_serial(serial_id: str | int, data: str, bytes_to_read: int | str,
                     timeout: object = "undef") -> str:
    """write_bin_serial, then read_bin_serial."""
    return SERIAL.wrnrd(serial_id, data, bytes_to_read, timeout, binary=True)


def wrnrd_until_serial(serial_id: str | int, data: str | bytes, eot: str,
                       timeout: object = "undef") -> str:
    """write_serial, then read_until_serial."""
    return SERIAL.wrnrd_until(serial_id, data, eot, timeout)


def wrnrd_bin_until_serial(serial_id: str | int, data: str, eot: str,
                           timeout: object = "undef") -> str:
    """write_bin_serial, then read_bin_until_serial."""
    return SERIAL.wrnrd_until(serial_id, data, eot, timeout, binary=True)


def expect_serial(serial_id: str | int, pattern: str | bytes,
                  timeout: object = "undef") -> Found:
    """Wait for the (escaped) literal `pattern`; returns "Pattern found" (its `.match` is
    hil's Match). What came before it is consumed."""
    return SERIAL.expect(serial_id, pattern, timeout)


__all__ = ["config_serial", "deinit_serial", "expect_serial", "init_serial", "inval_serial",
           "read_bin_serial", "read_bin_until_serial", "read_serial", "read_until_serial",
           "write_bin_serial", "write_serial", "wrnrd_bin_serial", "wrnrd_bin_until_serial",
           "wrnrd_serial", "wrnrd_until_serial"]
