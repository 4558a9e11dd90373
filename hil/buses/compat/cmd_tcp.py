"""The `cmd_tcp` command set of older bench scripts, over hil's `TcpBus`.

An old script changes one line (`from cmd_tcp import *` -> `from hil.buses.compat.cmd_tcp
import *`) and runs on hil: same functions, same arguments (numbers may be strings, a timeout
"undef" means the link's default), text results for the plain functions and hex text for the
`_bin_` ones. Errors are raised (`hil.errors`) instead of returned; `hil.buses.compat.execcmd`
gives the old `(retcode, result)` pair. See docs/compat.md.

Conf string: `tcp(host=HOST,port=PORT[,timeout=S][,nibbles=high_first|low_first]
[,encoding=utf-8][,skip_nul=0|1])`.
"""
from __future__ import annotations

import socket
from typing import Any

from hil.buses.compat.conf import COMMON_KEYS, Key, integer, text
from hil.buses.compat.family import Found, LinkFamily
from hil.buses.tcp import TcpBus
from hil.errors import BusConnectError

KEYS: dict[str, Key] = {
    "host": Key(text, required=True, help="host name or IP address of the device"),
    "port": Key(integer(1, 65535), required=True, help="TCP port of the device (1-65535)"),
    **COMMON_KEYS,
}


def _address(link_id: str, values: dict[str, Any]) -> str:
    """"ip,port", as the legacy config_tcp returned it; links with the same one share."""
    host = values["host"]
    try:
        return f"{socket.gethostbyname(host)},{values['port']}"
    except OSError as exc:
        raise BusConnectError(f"tcp link {link_id!r}: cannot resolve host {host!r}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from exc


def _open(link_id: str, values: dict[str, Any]) -> tuple[TcpBus, str]:
    """Connect (waiting at most the link's timeout, as the legacy socket did)."""
    host, port, timeout = values["host"], values["port"], values["timeout"]
    bus = TcpBus(host, port, connect_timeout=timeout, timeout=timeout,
                 name=f"tcp link {link_id!r} ({host}:{port})", encoding=values["encoding"])
    return bus, _address(link_id, values)


TCP = LinkFamily("tcp", KEYS, _open, address_of=_address)


def init_tcp(tcp_id: str | int, conf_string: str | None = None) -> str:
    """Register TCP link `tcp_id` from `conf_string` (host and port required; timeout: the
    link's default, s). Nothing is opened yet. `init_tcp(conf_string)` picks a free id.
    Returns the id."""
    if conf_string is None:
        tcp_id, conf_string = TCP.new_id(), str(tcp_id)
    return TCP.init(tcp_id, conf_string)


def deinit_tcp(tcp_id: str | int) -> str:
    """Invalidate (if configured) and forget link `tcp_id`."""
    return TCP.deinit(tcp_id)


def config_tcp(tcp_id: str | int) -> str:
    """Connect link `tcp_id`; returns "ip,port". Links to the same host and port share one
    connection, as in the legacy module."""
    return TCP.config(tcp_id)


def inval_tcp(tcp_id: str | int) -> str:
    """Close link `tcp_id` (its settings stay: config_tcp opens it again)."""
    return TCP.inval(tcp_id)


def write_tcp(tcp_id: str | int, data: str | bytes) -> str:
    r"""Send `data`; escapes (\n \r \t \e \xHH ...) are the bytes they name."""
    return TCP.write(tcp_id, data)


def write_bin_tcp(tcp_id: str | int, data: str) -> str:
    """Send bytes written as hex, two digits a byte ("0d0a")."""
    return TCP.write(tcp_id, data, binary=True)


def read_tcp(tcp_id: str | int, bytes_to_read: int | str, timeout: object = "undef") -> str:
    """Read exactly `bytes_to_read` bytes; as text, without NUL, CR and LF."""
    return TCP.read(tcp_id, bytes_to_read, timeout)


def read_bin_tcp(tcp_id: str | int, bytes_to_read: int | str, timeout: object = "undef") -> str:
    """Read exactly `bytes_to_read` bytes; as hex."""
    return TCP.read(tcp_id, bytes_to_read, timeout, binary=True)


def read_until_tcp(tcp_id: str | int, eot: str, timeout: object = "undef") -> str:
    """Read up to the first of the comma-separated end markers `eot` (not returned); as text,
    without NUL, CR and LF."""
    return TCP.read_until(tcp_id, eot, timeout)


def read_bin_until_tcp(tcp_id: str | int, eot: str, timeout: object = "undef") -> str:
    """Read up to the first of the end markers `eot` (not returned); as hex."""
    return TCP.read_until(tcp_id, eot, timeout, binary=True)


def wrnrd_tcp(tcp_id: str | int, data: str | bytes, bytes_to_read: int | str,
              timeout: object = "undef") -> str:
    """write_tcp, then read_tcp."""
    return TCP.wrnrd(tcp_id, data, bytes_to_read, timeout)


def wrnrd_bin_tcp(tcp_id: str | int, data: str, bytes_to_read: int | str,
                  timeout: object = "undef") -> str:
    """write_bin_tcp, then read_bin_tcp."""
    return TCP.wrnrd(tcp_id, data, bytes_to_read, timeout, binary=True)


def wrnrd_until_tcp(tcp_id: str | int, data: str | bytes, eot: str,
                    timeout: object = "undef") -> str:
    """write_tcp, then read_until_tcp."""
    return TCP.wrnrd_until(tcp_id, data, eot, timeout)


def wrnrd_bin_until_tcp(tcp_id: str | int, data: str, eot: str,
                        timeout: object = "undef") -> str:
    """write_bin_tcp, then read_bin_until_tcp."""
    return TCP.wrnrd_until(tcp_id, data, eot, timeout, binary=True)


def expect_tcp(tcp_id: str | int, pattern: str | bytes, timeout: object = "undef") -> Found:
    """Wait for the (escaped) literal `pattern`; returns "Pattern found" (its `.match` is
    hil's Match). What came before it is consumed."""
    return TCP.expect(tcp_id, pattern, timeout)


__all__ = ["config_tcp", "deinit_tcp", "expect_tcp", "init_tcp", "inval_tcp", "read_bin_tcp",
           "read_bin_until_tcp", "read_tcp", "read_until_tcp", "write_bin_tcp", "write_tcp",
           "wrnrd_bin_tcp", "wrnrd_bin_until_tcp", "wrnrd_tcp", "wrnrd_until_tcp"]
