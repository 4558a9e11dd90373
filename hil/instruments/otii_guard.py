"""Emergency switch-off of an Otii's main output, for a guardian process (a dead-man's switch).

When a test process dies without its teardown, its connection to the Otii is gone but the DUT
may still be powered. `switch_off` opens a connection of its own through the vendor client,
logs in and reserves a license if needed (licensing "auto", like the driver), switches the main
output off, stops a running recording, and reads both back. It changes no other setting.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from otii_tcp_client import otii_client, otii_exception

from hil.errors import HilError, InstrumentConnectError, InstrumentError
from hil.instruments.otii import pick_device, probe

if TYPE_CHECKING:
    from otii_tcp_client.recording import Recording

T = TypeVar("T")


@dataclass(frozen=True)
class SwitchedOff:
    """What `switch_off` found and did."""

    where: str                   # host:port of the Otii server
    device: str | None           # "name (id)" switched off; None: not connected (powers nothing)
    was_on: bool = False         # main output was on
    stopped_recording: bool = False


def switch_off(host: str, port: int = 1905, device: str = "", credentials: str = "",
               timeout: float = 10.0, licensing: str = "auto") -> SwitchedOff:
    """Main output of `device` (name or id; "" = the first Arc/Ace) off and no recording
    running, both read back, over a new connection. `credentials`: JSON file with username and
    password ("" = OTII_USERNAME/OTII_PASSWORD); `timeout`: s to connect and get a license.
    A second connection is tried if the first breaks. Raises a HilError naming host:port."""
    where = f"{host}:{port}"
    for attempt in (1, 2):
        try:
            return _switch_off_once(host, port, device, credentials, timeout, licensing)
        except InstrumentConnectError:
            raise
        except HilError:
            if attempt == 2:
                raise
    raise AssertionError(f"unreachable ({where})")


def _switch_off_once(host: str, port: int, device: str, credentials: str, timeout: float,
                     licensing: str) -> SwitchedOff:
    where = f"{host}:{port}"
    probe(host, port, timeout, "Otii guard")
    mode = (otii_client.LicensingMode.AUTO if licensing == "auto"
            else otii_client.LicensingMode.MANUAL)
    try:
        otii = otii_client.OtiiClient().connect(host=host, port=port, try_for_seconds=timeout,  # type: ignore[arg-type]
                                                licensing=mode, credentials=credentials)
    except Exception as exc:
        raise InstrumentConnectError(f"Otii guard: cannot connect to the Otii at {where} to "
                                     f"switch it off: {type(exc).__name__}: {exc}") from None
    step = _Steps(where)
    try:
        arc = pick_device(step("otii_get_devices", otii.get_devices, 0), device)
        if arc is None:
            return SwitchedOff(where, None)
        was_on = bool(step("arc_get_main", arc.get_main))
        for _ in range(2):
            step("arc_set_main", arc.set_main, False)
            if not step("arc_get_main", arc.get_main):
                break
        else:
            raise InstrumentError(f"Otii guard: main output of {arc.name} at {where} still on "
                                  f"after arc_set_main(False), twice")
        project = step("otii_get_active_project", otii.get_active_project)
        rec = step("project_get_last_recording", project.get_last_recording)
        stopped = False
        if rec is not None and _running(step, rec) is not False:
            step("project_stop_recording", project.stop_recording)
            stopped = True
            if _running(step, rec):
                raise InstrumentError(f"Otii guard: recording {rec.name!r} at {where} still "
                                      f"runs after project_stop_recording")
        return SwitchedOff(where, f"{arc.name} ({arc.id})", was_on, stopped)
    finally:
        try:
            otii.disconnect()                # returns what it reserved, logs out if it logged in
        except Exception:
            otii.connection.close_connection()


def _running(step: _Steps, rec: Recording) -> bool | None:
    """Whether `rec` runs; None when the server cannot say (Otii < 3.3)."""
    try:
        return bool(rec.is_running())
    except otii_exception.Otii_Exception as exc:
        if exc.type == "Invalid command":
            return None
        raise step.error("recording_is_running", exc) from None
    except Exception as exc:
        raise step.error("recording_is_running", exc) from None


class _Steps:
    """Runs vendor-client calls; any failure becomes a hil error naming the server and call."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __call__(self, cmd: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except Exception as exc:
            raise self.error(cmd, exc) from None

    def error(self, cmd: str, exc: Exception) -> InstrumentError:
        return InstrumentError(f"Otii guard: {cmd} at {self.where} failed: "
                               f"{type(exc).__name__}: {exc}")
