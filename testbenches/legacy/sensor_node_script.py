"""A bench script of the older kind, as labs kept them for years: module-level functions that
talk to links by id through the `cmd_tcp` / `cmd_serial` command set, with escaped strings and
hex strings. Only the two imports changed to run it on hil (see docs/compat.md).
"""
from hil.buses.compat.cmd_serial import *  # noqa: F403  (was: from cmd_serial import *)
from hil.buses.compat.cmd_tcp import *  # noqa: F403  (was: from cmd_tcp import *)

PROMPT = "dut> "


def open_link(tcp_id, host, port):
    """The old way in: register a link from a conf string, then connect it."""
    init_tcp(tcp_id, "tcp(host=%s,port=%s,timeout=5)" % (host, port))
    return config_tcp(tcp_id)


def sync_tcp(tcp_id, token):
    """Skip whatever the console said before: echo a token and wait for it and the prompt."""
    write_tcp(tcp_id, "echo %s\\n" % token)
    expect_tcp(tcp_id, "%s\\r\\n%s" % (token, PROMPT), 5)


def sync_serial(serial_id, token):
    write_serial(serial_id, "echo %s\\n" % token)
    expect_serial(serial_id, "%s\\r\\n%s" % (token, PROMPT), 5)


def firmware_version_tcp(tcp_id):
    sync_tcp(tcp_id, "sync-version")
    answer = wrnrd_until_tcp(tcp_id, "version\\n", "\\n", 2)
    return answer.split("version: ")[1]


def sensor_readings_serial(serial_id):
    """{'temp': .., 'hum': ..} from the sensor command, read field by field."""
    sync_serial(serial_id, "sync-sensor")
    write_serial(serial_id, "sensor\\n")
    expect_serial(serial_id, "sensor: temp=", 2)
    temp = float(read_until_serial(serial_id, " ", 2))
    expect_serial(serial_id, "hum=", 2)
    hum = float(read_until_serial(serial_id, " ", 2))
    return {"temp": temp, "hum": hum}


def echo_bytes_tcp(tcp_id, hex_text):
    """Send 'echo <ascii of hex_text>' as hex; return the reply line as hex (CR LF cut)."""
    sync_tcp(tcp_id, "sync-bin")
    command = "6563686f20" + hex_text + "0a"          # "echo " + text + "\n"
    return wrnrd_bin_until_tcp(tcp_id, command, "\\r\\n", 2)
