"""`hil.buses.compat.cmd_tcp` against raw sockets on 127.0.0.1 and against the virtual DUT."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from hil.buses.compat import deinit_all, link_bus
from hil.buses.compat.cmd_tcp import (config_tcp, deinit_tcp, expect_tcp, init_tcp, inval_tcp,
                                      read_bin_tcp, read_bin_until_tcp, read_tcp,
                                      read_until_tcp, write_bin_tcp, write_tcp, wrnrd_bin_tcp,
                                      wrnrd_bin_until_tcp, wrnrd_tcp, wrnrd_until_tcp)
from hil.errors import BusDataError, BusError, BusTimeout
from hil.sim.dut import FIRMWARE_VERSION, VirtualDut
from hil.sim.dut_server import TcpConsole, serve_tcp
from waiting import wait_until

WAIT = 5.0


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    conn.settimeout(WAIT)
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture(autouse=True)
def _no_links_left() -> Iterator[None]:
    yield
    assert deinit_all() == []


@pytest.fixture
def server() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(WAIT)
        yield listener


def open_raw(server: socket.socket, link_id: str = "raw", extra: str = "") -> socket.socket:
    """init + config a link to `server`; returns the server's side of the connection."""
    port = server.getsockname()[1]
    assert init_tcp(link_id, f"tcp(host=127.0.0.1,port={port},timeout={WAIT}{extra})") == link_id
    assert config_tcp(link_id) == f"127.0.0.1,{port}"
    conn, _ = server.accept()
    return conn


# ------------------------------------------------------------------ raw sockets
def test_write_unescapes_and_write_bin_decodes_hex(server: socket.socket) -> None:
    with open_raw(server) as conn:
        assert write_tcp("raw", r"ver\r\n\e\x00é") == "ok"
        assert recv_exactly(conn, 9) == b"ver\r\n\x1b\x00" + "é".encode()
        assert write_bin_tcp("raw", "0a1BfF") == "ok"
        assert recv_exactly(conn, 3) == b"\x0a\x1b\xff"


def test_low_first_nibble_order_applies_both_ways(server: socket.socket) -> None:
    with open_raw(server, extra=",nibbles=low_first") as conn:
        write_bin_tcp("raw", "a0b1")
        assert recv_exactly(conn, 2) == b"\x0a\x1b"
        conn.sendall(b"\x0a\xf0")
        assert read_bin_tcp("raw", 2) == "a00f"


def test_bad_hex_sends_nothing_and_names_the_problem(server: socket.socket) -> None:
    with open_raw(server) as conn:
        with pytest.raises(BusDataError, match=r"odd number of hex digits \(3\)") as info:
            write_bin_tcp("raw", "0a1")
        assert "write_bin_tcp('raw'" in "".join(info.value.__notes__)
        with pytest.raises(BusDataError, match="'z' at character 2 is not a hex digit"):
            wrnrd_bin_tcp("raw", "0az1", 1)
        write_bin_tcp("raw", "41")
        assert recv_exactly(conn, 1) == b"A"   # the first byte the peer sees: nothing leaked


def test_read_returns_text_without_nul_cr_lf_and_bin_returns_hex(server: socket.socket) -> None:
    with open_raw(server) as conn:
        conn.sendall(b"ab\r\n\x00cd\x0a\xff")
        assert read_tcp("raw", "7") == "abcd"          # a count may be a string, as it was
        assert read_bin_tcp("raw", 2, "undef") == "0aff"


def test_read_until_stops_at_the_first_of_several_end_characters(
        server: socket.socket) -> None:
    with open_raw(server) as conn:
        conn.sendall(b"alpha;beta\r\ngamma>delta|")
        assert read_until_tcp("raw", r">,\n,;") == "alpha"      # ';' comes first
        assert read_until_tcp("raw", r">,\n,;") == "beta"       # CR dropped, LF the end
        assert read_bin_until_tcp("raw", r"|,>") == "67616d6d61"
        assert read_until_tcp("raw", r"|", 1) == "delta"


def test_read_until_with_a_multi_character_end_marker(server: socket.socket) -> None:
    with open_raw(server) as conn:
        conn.sendall(b"x\r\ny\r\nEND\r\n")
        assert read_bin_until_tcp("raw", r"END\r\n") == "780d0a790d0a"


def test_wrnrd_until_timeout_on_a_reply_that_never_ends_loses_nothing(
        server: socket.socket) -> None:
    with open_raw(server) as conn:
        def answer() -> None:
            assert recv_exactly(conn, 6) == b"query\n"
            conn.sendall(b"partial reply, no end")
        with ThreadPoolExecutor(1) as pool:
            replied = pool.submit(answer)
            with pytest.raises(BusTimeout) as info:
                wrnrd_until_tcp("raw", r"query\n", r"\n", "0.3")
            replied.result(WAIT)
        message = str(info.value)
        assert "timed out after 0.3 s waiting for literal b'\\n'" in message
        assert "tcp link 'raw'" in message and "partial reply, no end" in message
        assert "wrnrd_until_tcp('raw'" in "".join(info.value.__notes__)
        assert read_tcp("raw", 21) == "partial reply, no end"   # still there to read


def test_read_times_out_on_tcp_when_fewer_bytes_came(server: socket.socket) -> None:
    with open_raw(server) as conn:
        conn.sendall(b"abc")
        with pytest.raises(BusTimeout, match="5 bytes"):
            read_tcp("raw", 5, 0.2)
        conn.sendall(b"de")
        assert read_tcp("raw", 5) == "abcde"


@pytest.mark.parametrize("first, second, pattern, extra", [
    (b"boot: o", b"k v1\r\n", "boot: ok", ""),
    (b"noise\r\nboot:\x00 o", b"\x00k\r\n", "boot: ok", ",skip_nul=1"),
])
def test_expect_finds_a_pattern_split_across_reads(server: socket.socket, first: bytes,
                                                   second: bytes, pattern: str,
                                                   extra: str) -> None:
    with open_raw(server, extra=extra) as conn:
        bus = link_bus("raw")
        with ThreadPoolExecutor(1) as pool:
            found = pool.submit(expect_tcp, "raw", pattern, 3)
            conn.sendall(first)
            wait_until(lambda: bus.received >= len(first), "the first half to be received")
            assert not found.done()
            conn.sendall(second)
            result = found.result(WAIT)
        assert result == "Pattern found"
        assert result.match.end == len(first) + second.index(b"k") + 1


def test_expect_timeout_names_the_pattern(server: socket.socket) -> None:
    with open_raw(server) as conn:
        conn.sendall(b"boot: failed\r\n")
        with pytest.raises(BusTimeout, match="boot: ok") as info:
            expect_tcp("raw", "boot: ok", 0.2)
        assert "boot: failed" in str(info.value)
        with pytest.raises(BusDataError, match="empty"):
            expect_tcp("raw", "")


def test_two_links_at_once_keep_their_data_apart(server: socket.socket) -> None:
    with socket.create_server(("127.0.0.1", 0)) as other_server:
        other_server.settimeout(WAIT)
        with open_raw(server, "a") as conn_a, open_raw(other_server, "b") as conn_b:
            write_tcp("a", "to a\n")
            write_tcp("b", "to b\n")
            assert recv_exactly(conn_a, 5) == b"to a\n"
            assert recv_exactly(conn_b, 5) == b"to b\n"
            conn_b.sendall(b"from b\n")
            conn_a.sendall(b"from a\n")
            assert read_until_tcp("a", r"\n") == "from a"
            assert read_until_tcp("b", r"\n") == "from b"


def test_links_to_one_address_share_one_connection(server: socket.socket) -> None:
    port = server.getsockname()[1]
    with open_raw(server, "first") as conn:
        init_tcp("second", f"tcp(host=localhost,port={port},timeout={WAIT})")
        assert config_tcp("second") == f"127.0.0.1,{port}"
        assert link_bus("second") is link_bus("first")
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()                   # no second connection was made
        inval_tcp("first")                    # "second" still uses it: stays open
        write_tcp("second", "still\n")
        assert recv_exactly(conn, 6) == b"still\n"
        init_tcp("third", f"tcp(host=127.0.0.1,port={port},timeout=1)")
        with pytest.raises(BusError, match="with timeout 5 s, this link asks 1 s"):
            config_tcp("third")


def test_link_states_init_config_inval_deinit(server: socket.socket) -> None:
    port = server.getsockname()[1]
    init_tcp("dev", f"tcp(host=127.0.0.1,port={port})")
    with pytest.raises(BusError, match="'dev' is not configured .*config_tcp"):
        write_tcp("dev", "x")
    config_tcp("dev")
    conn, _ = server.accept()
    with conn:
        with pytest.raises(BusError, match="already configured"):
            config_tcp("dev")
        with pytest.raises(BusError, match="already initialised"):
            init_tcp("dev", f"tcp(host=127.0.0.1,port={port})")
        assert inval_tcp("dev") == "ok"
        conn.settimeout(WAIT)
        assert conn.recv(10) == b""              # inval closed the connection
        assert inval_tcp("dev") == "not configured"
        with pytest.raises(BusError, match="invalidated by inval_tcp"):
            read_tcp("dev", 1)
    config_tcp("dev")                            # the settings were kept
    server.accept()[0].close()
    assert deinit_tcp("dev") == "ok"
    with pytest.raises(BusError, match="was deinitialised by deinit_tcp"):
        write_tcp("dev", "x")
    assert deinit_tcp("dev") == "not initialised"   # idempotent, as it was


def test_unknown_links_say_how_to_make_them_known() -> None:
    with pytest.raises(BusError, match=r"unknown tcp link 'nope': call init_tcp\('nope', "
                                       r"conf_string\)"):
        expect_tcp("nope", "x")
    with pytest.raises(BusDataError, match="link id"):
        write_tcp(None, "x")  # type: ignore[arg-type]


def test_connect_refused_is_a_connect_error_at_config() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    init_tcp("gone", f"tcp(host=127.0.0.1,port={port})")
    with pytest.raises(BusError, match=f"cannot connect to 127.0.0.1:{port}"):
        config_tcp("gone")
    with pytest.raises(BusError, match="not configured"):
        write_tcp("gone", "x")


def test_older_init_form_picks_an_id(server: socket.socket) -> None:
    port = server.getsockname()[1]
    first = init_tcp(f"tcp(host=127.0.0.1,port={port})")
    second = init_tcp(f"tcp(host=127.0.0.1,port={port})")
    assert (first, second) == ("0", "1")
    deinit_tcp(0)                                # ints are ids too
    assert init_tcp(f"tcp(host=127.0.0.1,port={port})") == "0"


# ------------------------------------------------------------------ the virtual DUT
@pytest.fixture
def console() -> Iterator[TcpConsole]:
    dut = VirtualDut(speed=20.0, powered=True)
    with serve_tcp(dut) as server:
        yield server
    dut.close()


def test_each_function_against_the_virtual_dut(console: TcpConsole) -> None:
    init_tcp("dut", f"tcp(host={console.host},port={console.port},timeout={WAIT})")
    config_tcp("dut")
    assert expect_tcp("dut", "dut> ") == "Pattern found"          # greeted at connect
    assert wrnrd_until_tcp("dut", r"version\n", r"\n") == f"version: {FIRMWARE_VERSION}"
    expect_tcp("dut", "dut> ")
    assert wrnrd_tcp("dut", r"echo abc\n", 5) == "abc"              # "abc\r\n"
    assert read_tcp("dut", 5) == "dut> "
    assert wrnrd_bin_tcp("dut", "6563686f2041420a", 4) == "41420d0a"   # "echo AB\n"
    expect_tcp("dut", "dut> ")
    assert wrnrd_bin_until_tcp("dut", "6563686f2068690d", r"\n") == "68690d"  # "echo hi\r"
    expect_tcp("dut", "dut> ")
    write_tcp("dut", r"echo x;y\n")
    assert read_until_tcp("dut", r";,\n") == "x"
    assert read_bin_until_tcp("dut", r"\n") == "790d"
    write_bin_tcp("dut", "73746174757320")                          # "status "
    write_tcp("dut", "\\n")
    expect_tcp("dut", r"state: idle")
    assert read_until_tcp("dut", r"\n", 2).startswith(" voltage: 3.30 V")
