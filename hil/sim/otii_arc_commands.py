"""Device commands of the simulated Otii (`arc_*`, and `battery_emulator_*` for its battery
emulator): settings with the Arc/Ace limits, supply, channels, GPIO and UART. Importing this module
registers them in hil.sim.otii_state.COMMANDS.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hil.protocols.otii_json import RequestError
from hil.sim.otii_device import ACE_MAX_RATE, ARC_RATE, CHANNELS
from hil.sim.otii_state import (BAUD_RANGE, COMMANDS, EXP_VOLTAGE_RANGE, MAX_CURRENT_RANGE,
                                VOLTAGE_RANGE, Args, Handler, OtiiState, battery_profile,
                                command)


# =============================================================================== arc_*
@command("arc_set_main")
def _set_main(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    dev.set_main(a.flag("enable"), st.now())
    return {}


@command("arc_get_main")
def _get_main(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"value": st.device(a).main}


@command("arc_set_main_voltage")
def _set_main_voltage(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    lo, hi = VOLTAGE_RANGE.get(dev.info.type, VOLTAGE_RANGE["Arc"])
    dev.set_voltage(a.number("value", lo, hi), st.now())
    return {}


@command("arc_get_main_voltage")
def _get_main_voltage(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"value": st.device(a).main_voltage}


@command("arc_set_max_current")
def _set_max_current(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    value = a.number("value", *MAX_CURRENT_RANGE)
    dev.check_overcurrent(st.now())
    dev.max_current = value
    return {}


@command("arc_get_max_current")
def _get_max_current(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"value": st.device(a).max_current}


@command("arc_set_range")
def _set_range(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    dev.range = a.choice("range", ("low", "high"))
    return {}


@command("arc_get_range")
def _get_range(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"range": st.device(a).range}


@command("arc_enable_channel")
def _enable_channel(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    channel, enable = a.channel(), a.flag("enable")
    (dev.channels.add if enable else dev.channels.discard)(channel)
    return {}


@command("arc_set_channel_samplerate")
def _set_samplerate(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    channel = a.channel()
    if CHANNELS[channel][0] != "analog":
        raise RequestError("Invalid key value", key="channel", value=channel)
    lo, hi = (1, ACE_MAX_RATE) if dev.is_ace else (ARC_RATE, ARC_RATE)
    dev.rates[channel] = a.integer("value", lo, hi)
    return {}


@command("arc_get_channel_samplerate")
def _get_samplerate(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    return {"value": dev.rate(a.channel())}


@command("arc_get_value")
def _get_value(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    channel = a.channel()
    now = st.now()
    if channel == "rx":
        raise RequestError("Invalid key value", key="channel", value=channel)
    if channel in ("i1", "i2"):
        return {"value": dev.wiring.gpi(int(channel[1]), now)}
    i = float(dev.current([now])[0])
    v = dev.supply.value
    values = {"mc": i, "mv": v, "mp": i * v, "sp": v, "vb": 5.0, "tp": 25.0}
    return {"value": values.get(channel, 0.0)}


@command("arc_set_gpo")
def _set_gpo(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    pin, value = a.integer("pin", 1, 2), a.flag("value")
    dev.settings[f"gpo{pin}"] = value
    dev.wiring.gpo(pin, value)
    return {}


@command("arc_get_gpi")
def _get_gpi(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    return {"value": dev.wiring.gpi(a.integer("pin", 1, 2), st.now())}


@command("arc_enable_uart")
def _enable_uart(st: OtiiState, a: Args) -> dict[str, Any]:
    st.device(a).uart = a.flag("enable")
    return {}


@command("arc_set_uart_baudrate")
def _set_baudrate(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    dev.baudrate = a.integer("value", *BAUD_RANGE)
    return {}


@command("arc_get_uart_baudrate")
def _get_baudrate(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"value": st.device(a).baudrate}


@command("arc_write_tx")
def _write_tx(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    text = a.text("value")
    if not dev.uart:
        raise RequestError("Command failure", message="UART is not enabled (arc_enable_uart)")
    dev.wiring.uart_write(text.encode("utf-8"))
    return {}


@command("arc_get_rx")
def _get_rx(st: OtiiState, a: Args) -> dict[str, Any]:
    st.device(a)
    return {"value": True}            # an idle UART line is high


@command("arc_get_version")
def _get_version(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    return {"hw_version": dev.info.hw_version, "fw_version": dev.info.fw_version}


@command("arc_is_connected")
def _is_connected(st: OtiiState, a: Args) -> dict[str, Any]:
    device_id = a.text("device_id")
    known = [d for d in st.devices if d.info.device_id == device_id]
    if not known:
        raise RequestError("Device not connected", device_id=device_id)
    return {"connected": known[0].connected}


@command("arc_get_supply_mode")
def _get_supply_mode(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"supply_mode": st.device(a).settings.get("supply_mode", "power-box")}


@command("arc_set_supply_power_box")
def _set_power_box(st: OtiiState, a: Args) -> dict[str, Any]:
    st.device(a).settings["supply_mode"] = "power-box"
    return {}


@command("arc_set_supply_battery_emulator")
def _set_battery_emulator(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    profile = battery_profile(a)
    series, parallel = a.integer("series", 1, 100, 1), a.integer("parallel", 1, 100, 1)
    used = a.number("used_capacity", 0, None, None)
    soc = a.number("soc", 0, 100, None)
    if used is not None and soc is not None:
        raise RequestError("Invalid key value", key="soc", value=soc)
    emu_id = f"{dev.info.device_id}-emulator-{st.next_id('emulator')}"
    capacity_c = profile["capacity"] * 3.6 * parallel
    st.emulators[emu_id] = {
        "profile": profile["battery_profile_id"], "series": series, "parallel": parallel,
        "used": used if used is not None else capacity_c * (1 - (100 if soc is None else soc) / 100),
        "capacity": capacity_c, "tracking": a.flag("soc_tracking", default=True)}
    dev.settings["supply_mode"] = "battery-emulator"
    return {"battery_emulator_id": emu_id}


@command("arc_set_0-15_voltage")
def _set_0_15(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    if not dev.is_ace:
        raise RequestError("Command not valid for device type")
    dev.settings["0-15_voltage"] = a.number("value", 0, 15)
    return {}


def _setting(name: str, read: Callable[[Args], Any]) -> Handler:
    def handler(st: OtiiState, a: Args) -> dict[str, Any]:
        dev = st.device(a)
        dev.settings[name] = read(a)
        return {}
    return handler


def _getting(name: str, default: Any, key: str = "value",
             show: Callable[[Any], Any] = lambda v: v) -> Handler:
    def handler(st: OtiiState, a: Args) -> dict[str, Any]:
        return {key: show(st.device(a).settings.get(name, default))}
    return handler


# validate-and-store settings: setter validates and keeps, getter returns what was kept
COMMANDS.update({
    "arc_enable_5v": _setting("5v", lambda a: a.flag("enable", ints=True)),
    "arc_enable_exp_port": _setting("exp_port", lambda a: a.flag("enable")),
    "arc_enable_legacy_sink": _setting("legacy_sink", lambda a: a.flag("enable")),
    "arc_enable_battery_profiling": _setting("battery_profiling", lambda a: a.flag("enable")),
    "arc_set_exp_voltage": _setting("exp_voltage", lambda a: a.number("value", *EXP_VOLTAGE_RANGE)),
    "arc_get_exp_voltage": _getting("exp_voltage", 3.3),
    "arc_set_adc_resistor": _setting("adc_resistor", lambda a: a.number("value", 0.001, 22)),
    "arc_get_adc_resistor": _getting("adc_resistor", 0.1),
    "arc_set_4wire": _setting("4wire", lambda a: a.flag("enable")),
    "arc_get_4wire": _getting("4wire", False, show=lambda on: "active" if on else "disabled"),
    "arc_set_src_cur_limit_enabled": _setting("src_cur_limit", lambda a: a.flag("enable")),
    "arc_get_src_cur_limit_enabled": _getting("src_cur_limit", False, key="enabled"),
    "arc_set_power_regulation": _setting("power_regulation", lambda a: a.choice(
        "mode", ("voltage", "current", "inline", "off"))),
    "arc_set_main_current": _setting("main_current", lambda a: a.number("value", -5.0, 5.0)),
    "arc_set_battery_profile": _setting("battery_profile", lambda a: a.text("value")),
    "arc_set_tx": _setting("tx", lambda a: a.flag("value")),
})


@command("arc_set_property")
def _set_property(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    name = a.text("name")
    if "value" not in a.data:
        raise RequestError("Missing key in request", key="value")
    dev.settings[f"property:{name}"] = a.data["value"]
    return {}


@command("arc_get_property")
def _get_property(st: OtiiState, a: Args) -> dict[str, Any]:
    dev = st.device(a)
    key = f"property:{a.text('name')}"
    return {"value": dev.settings[key]} if key in dev.settings else {}


@command("arc_add_to_project", "arc_calibrate", "arc_commit")
def _accept(st: OtiiState, a: Args) -> dict[str, Any]:
    st.device(a)
    return {}


@command("arc_firmware_upgrade", "arc_wait_for_battery_data")
def _unsupported_device(st: OtiiState, a: Args) -> dict[str, Any]:
    st.device(a)
    raise RequestError("Operation not supported")


# =============================================================================== battery_emulator_*
def _emulator(st: OtiiState, a: Args) -> dict[str, Any]:
    emu_id = a.text("battery_emulator_id")
    if emu_id not in st.emulators:
        raise RequestError("Invalid key value", key="battery_emulator_id", value=emu_id)
    return st.emulators[emu_id]


def _emu_get(read: Callable[[dict[str, Any]], Any], key: str = "value") -> Handler:
    return lambda st, a: {key: read(_emulator(st, a))}


def _emu_set(write: Callable[[dict[str, Any], Args], None]) -> Handler:
    def handler(st: OtiiState, a: Args) -> dict[str, Any]:
        write(_emulator(st, a), a)
        return {}
    return handler


COMMANDS.update({
    "battery_emulator_get_parallel": _emu_get(lambda e: e["parallel"]),
    "battery_emulator_get_series": _emu_get(lambda e: e["series"]),
    "battery_emulator_get_soc": _emu_get(lambda e: 100.0 * (1 - e["used"] / e["capacity"])),
    "battery_emulator_get_soc_tracking": _emu_get(lambda e: e["tracking"], key="enabled"),
    "battery_emulator_get_used_capacity": _emu_get(lambda e: e["used"]),
    "battery_emulator_set_soc": _emu_set(lambda e, a: e.update(
        used=e["capacity"] * (1 - a.number("value", 0, 100) / 100))),
    "battery_emulator_set_soc_tracking": _emu_set(lambda e, a: e.update(tracking=a.flag("enable"))),
    "battery_emulator_set_used_capacity": _emu_set(lambda e, a: e.update(
        used=a.number("value", 0, e["capacity"]))),
    "battery_emulator_update_profile": _emu_set(lambda e, a: e.update(
        profile=battery_profile(a)["battery_profile_id"],
        used=0.0 if a.choice("mode", ("keep_soc", "reset")) == "reset" else e["used"])),
})
