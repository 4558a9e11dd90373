"""The commands of the simulated Otii TCP server: the application (`otii_*`: licensing, devices,
projects), projects (`project_*`: recordings) and recordings (`recording_*`: data, statistics,
logs). Device commands live in hil.sim.otii_arc_commands; importing this module registers all 99
commands of otii-tcp-client 1.0.13 in `COMMANDS`.
"""
from __future__ import annotations

from typing import Any

from hil.protocols.otii_json import CHUNK_SIZE, RequestError
from hil.sim import otii_arc_commands  # noqa: F401  (registers arc_* and battery_emulator_*)
from hil.sim.otii_device import Recording
from hil.sim.otii_state import (BATTERY_PROFILES, COMMANDS, Args, Bulk, OtiiState,
                                battery_profile, command)

__all__ = ["COMMANDS", "Args", "Bulk", "OtiiState"]


# =============================================================================== otii_*
@command("otii_is_logged_in")
def _is_logged_in(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"logged_in": st.logged_in}


@command("otii_login")
def _login(st: OtiiState, a: Args) -> dict[str, Any]:
    user, password = a.text("username"), a.text("password")
    if st.accounts is not None and st.accounts.get(user) != password:
        raise RequestError("Could not login")
    st.logged_in, st.username = True, user
    return {}


@command("otii_logout")
def _logout(st: OtiiState, a: Args) -> dict[str, Any]:
    st.logged_in = False
    return {}


@command("otii_get_licenses")
def _get_licenses(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"licenses": [dict(lic, reservedTo=lic["reserved_to"]) for lic in st.licenses]}


def _license(st: OtiiState, a: Args) -> dict[str, Any] | None:
    lid = a.integer("license_id")
    return next((lic for lic in st.licenses if lic["id"] == lid), None)


@command("otii_reserve_license")
def _reserve_license(st: OtiiState, a: Args) -> dict[str, Any]:
    lic = _license(st, a)
    if lic is None or not lic["available"] or lic["reserved_to"]:
        raise RequestError("License could not be reserved")
    lic["reserved_to"], lic["hostname"] = st.username, "hil-sim"
    return {}


@command("otii_return_license")
def _return_license(st: OtiiState, a: Args) -> dict[str, Any]:
    lic = _license(st, a)
    if lic is None or not lic["reserved_to"]:
        raise RequestError("License could not be returned")
    lic["reserved_to"], lic["hostname"] = "", ""
    return {}


@command("otii_has_license")
def _has_license(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"has_license": st.has_license(a.text("license_type"))}


@command("otii_get_devices")
def _get_devices(st: OtiiState, a: Args) -> dict[str, Any]:
    a.integer("timeout", lo=0, default=0)
    return {"devices": [d.info.as_json() for d in st.devices if d.connected]}


@command("otii_get_device_id")
def _get_device_id(st: OtiiState, a: Args) -> dict[str, Any]:
    name = a.text("device_name")
    for dev in st.devices:
        if dev.info.name == name and dev.connected:
            return {"device_id": dev.info.device_id}
    raise RequestError("Invalid key value", key="device_name", value=name)


@command("otii_create_project")
def _create_project(st: OtiiState, a: Args) -> dict[str, Any]:
    st.active = st.new_project().id
    return {"project_id": st.active}


@command("otii_get_active_project")
def _get_active_project(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"project_id": st.active_project().id}


@command("otii_open_project")
def _open_project(st: OtiiState, a: Args) -> dict[str, Any]:
    filename = a.text("filename")
    a.flag("force", default=False)
    a.flag("progress", default=False)
    proj = st.saved.get(filename)
    if proj is None:
        raise RequestError("Command failure", message=f"cannot open '{filename}': no such file")
    st.projects[proj.id] = proj
    st.active = proj.id
    return {"project_id": proj.id, "filename": filename}


@command("otii_set_all_main")
def _set_all_main(st: OtiiState, a: Args) -> dict[str, Any]:
    enable = a.flag("enable")
    for dev in st.devices:
        if dev.connected:
            dev.set_main(enable, st.now())
    return {}


@command("otii_shutdown")
def _shutdown(st: OtiiState, a: Args) -> dict[str, Any]:
    for dev in st.devices:
        if dev.connected:
            dev.set_main(False, st.now())
    return {}


@command("otii_get_battery_profiles")
def _battery_profiles(st: OtiiState, a: Args) -> dict[str, Any]:
    keys = ("battery_profile_id", "name", "manufacturer", "model")
    return {"battery_profiles": [{k: p[k] for k in keys} for p in BATTERY_PROFILES]}


@command("otii_get_battery_profile_info")
def _battery_profile_info(st: OtiiState, a: Args) -> dict[str, Any]:
    p = battery_profile(a)
    return {"battery_profile_id": p["battery_profile_id"], "name": p["name"],
            "battery": {"capacity": p["capacity"], "capacityunit": "mAh",
                        "manufacturer": p["manufacturer"], "model": p["model"],
                        "voltage": p["voltage"], "voltageunit": "V", "cutoffvoltage": 2.0},
            "discharge_tables": [{"dischargetable_id": p["battery_profile_id"][:8] + "-dt"}]}


# =============================================================================== project_*
@command("project_start_recording")
def _start_recording(st: OtiiState, a: Args) -> dict[str, Any]:
    proj = st.project(a)
    now = st.now()
    st.tick(now)
    if proj.running is not None:
        proj.running.stop = now
    rid = st.next_id("recording")
    devices = [d for d in st.devices if d.connected]
    proj.recordings.append(Recording(rid, f"Recording {len(proj.recordings) + 1}", devices,
                                     now, st.speed, st.seed, st.cache))
    proj.saved = False
    return {}


@command("project_stop_recording")
def _stop_recording(st: OtiiState, a: Args) -> dict[str, Any]:
    proj = st.project(a)
    if proj.running is not None:
        now = st.now()
        st.tick(now)
        proj.running.stop = now
    return {}


@command("project_get_last_recording")
def _last_recording(st: OtiiState, a: Args) -> dict[str, Any]:
    proj = st.project(a)
    return proj.recordings[-1].as_json() if proj.recordings else {"recording_id": -1, "name": ""}


@command("project_get_recordings")
def _recordings(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"recordings": [r.as_json() for r in st.project(a).recordings]}


@command("project_close")
def _close_project(st: OtiiState, a: Args) -> dict[str, Any]:
    proj = st.project(a)
    if not a.flag("force", default=False) and not proj.saved:
        raise RequestError("Command failure",
                           message="project has unsaved recordings; close with force=true")
    if proj.running is not None:
        proj.running.stop = st.now()
    del st.projects[proj.id]
    if st.active == proj.id:
        st.active = None
    return {}


@command("project_save")
def _save(st: OtiiState, a: Args) -> dict[str, Any]:
    proj = st.project(a)
    filename = a.text("filename")
    force = a.flag("force", default=False)
    a.flag("progress", default=False)
    if filename in st.saved and st.saved[filename] is not proj and not force:
        raise RequestError("Command failure", message=f"'{filename}' exists; save with force=true")
    proj.filename, proj.saved = filename, True
    st.saved[filename] = proj
    return {"filename": filename}


@command("project_crop_data")
def _crop(st: OtiiState, a: Args) -> dict[str, Any]:
    st.project(a)
    a.number("start", 0), a.number("end", 0)
    raise RequestError("Operation not supported")


@command("project_create_user_log")
def _create_user_log(st: OtiiState, a: Args) -> dict[str, Any]:
    proj = st.project(a)
    log_id = a.text("id")
    proj.user_logs.setdefault(log_id, [])
    return {"id": log_id}


# =============================================================================== recording_*
@command("recording_get_channel_info")
def _channel_info(st: OtiiState, a: Args) -> dict[str, Any]:
    rec, track = st.track(a)
    return rec.info(track, st.now())


@command("recording_get_channel_data_count")
def _data_count(st: OtiiState, a: Args) -> dict[str, Any]:
    rec, track = st.track(a)
    return {"count": rec.count(track, st.now())}


@command("recording_get_channel_data_index")
def _data_index(st: OtiiState, a: Args) -> dict[str, Any]:
    rec, track = st.track(a)
    return {"index": rec.index_at(track, a.number("timestamp"), st.now())}


@command("recording_get_channel_data")
def _data(st: OtiiState, a: Args) -> dict[str, Any] | Bulk:
    rec, track = st.track(a)
    now = st.now()
    index = a.integer("index", lo=0)
    count = a.integer("count", lo=0)
    if track.kind != "analog":
        values = rec.events(track, now)[index:index + count]
        return {"data_type": track.kind, "values": values}
    if count > CHUNK_SIZE * 25:
        raise RequestError("Invalid key value", key="count", value=count)
    available = rec.count(track, now)
    if index + count > available:
        raise RequestError("Invalid key value", key="count", value=count)
    return Bulk(index / track.rate, 1.0 / track.rate,
                rec.analog_text(track, index, index + count, now))


@command("recording_get_channel_statistics")
def _statistics(st: OtiiState, a: Args) -> dict[str, Any]:
    rec, track = st.track(a)
    return rec.statistics(track, a.number("from"), a.number("to"), st.now())


@command("recording_is_running")
def _is_running(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"running": st.recording(a)[1].running}


@command("recording_rename")
def _rename(st: OtiiState, a: Args) -> dict[str, Any]:
    st.recording(a)[1].name = a.text("name")
    return {}


@command("recording_delete")
def _delete(st: OtiiState, a: Args) -> dict[str, Any]:
    proj, rec = st.recording(a)
    if rec.running:
        raise RequestError("Command failure", message="cannot delete a running recording")
    proj.recordings.remove(rec)
    return {}


@command("recording_get_offset")
def _get_offset(st: OtiiState, a: Args) -> dict[str, Any]:
    return {"offset": st.recording(a)[1].offset}


@command("recording_set_offset")
def _set_offset(st: OtiiState, a: Args) -> dict[str, Any]:
    rec = st.recording(a)[1]
    rec.offset = a.number("offset")
    return {}


@command("recording_get_log_offset")
def _get_log_offset(st: OtiiState, a: Args) -> dict[str, Any]:
    rec = st.recording(a)[1]
    return {"offset": rec.log_offsets.get((a.text("device_id", ""), a.channel()), 0.0)}


@command("recording_set_log_offset")
def _set_log_offset(st: OtiiState, a: Args) -> dict[str, Any]:
    rec = st.recording(a)[1]
    rec.log_offsets[(a.text("device_id", ""), a.channel())] = a.number("offset")
    return {}


@command("recording_log")
def _log(st: OtiiState, a: Args) -> dict[str, Any]:
    rec = st.recording(a)[1]
    rec.logs.append({"timestamp": a.number("timestamp", default=0), "value": a.text("text")})
    return {}


def _user_log(st: OtiiState, a: Args, key: str) -> list[dict[str, Any]]:
    proj, _ = st.recording(a)
    log_id = a.text(key)
    if log_id not in proj.user_logs:
        raise RequestError("Invalid key value", key=key, value=log_id)
    return proj.user_logs[log_id]


@command("recording_append_user_log")
def _append_user_log(st: OtiiState, a: Args) -> dict[str, Any]:
    log = _user_log(st, a, "measurement_id")
    log.append({"timestamp": a.number("time"), "value": a.text("message")})
    return {}


@command("recording_offset_user_log")
def _offset_user_log(st: OtiiState, a: Args) -> dict[str, Any]:
    log = _user_log(st, a, "measurement_id")
    offset = a.number("offset")
    for entry in log:
        entry["timestamp"] += offset
    return {}


@command("recording_get_user_log_data")
def _user_log_data(st: OtiiState, a: Args) -> dict[str, Any]:
    log = _user_log(st, a, "user_log_id")
    t0, t1, text = a.number("from"), a.number("to"), a.text("filter", "")
    page, size = a.integer("page", lo=1, default=1), a.integer("page_size", lo=1, default=1000)
    hits = [e for e in sorted(log, key=lambda e: e["timestamp"])
            if t0 <= e["timestamp"] <= t1 and text in e["value"]]
    total = max(1, -(-len(hits) // size))
    return {"data_type": "log_data", "page": page, "pages_total": total,
            "values": hits[(page - 1) * size: page * size]}


@command("recording_downsample_channel")
def _downsample(st: OtiiState, a: Args) -> dict[str, Any]:
    st.track(a)
    a.integer("factor", lo=1)
    raise RequestError("Operation not supported")


@command("recording_import_log")
def _import_log(st: OtiiState, a: Args) -> dict[str, Any]:
    st.recording(a)
    a.text("filename"), a.text("converter")
    raise RequestError("Operation not supported")
