"""STTP metadata: the DataSet XML a MetadataRefresh answers with (spec §5), gzip'd or not.

`decode_metadata` reads the `DeviceDetail` and `MeasurementDetail` rows with ElementTree (the
inline schema is ignored), parsing datetimes tolerantly (with or without fractions, `Z`, and
`sttpapi`'s `…:00.Z`, spec §11 defect 4). `encode_metadata` writes a DataSet that `sttpapi`'s
parser accepts: an `xs:schema` whose id is the root tag, every datetime with fractional seconds.
"""
from __future__ import annotations

import gzip
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from xml.sax.saxutils import escape

from hil.errors import ProtocolError
from hil.protocols.sttp_cache import GZIP_MAGIC, _gunzip

MAX_XML = 256 << 20
#: Most XML tags a metadata DataSet may hold: ~26 a measurement row, so some 300,000 points;
#: a small gzip bomb of empty elements is refused before a tree of them fills memory.
MAX_TAGS = 8_000_000


@dataclass(frozen=True)
class Device:
    """One DeviceDetail row."""

    acronym: str
    name: str = ""
    unique_id: uuid.UUID | None = None
    frames_per_second: int = 0
    enabled: bool = True


@dataclass(frozen=True)
class MeasurementRecord:
    """One MeasurementDetail row: what a test asks about a signal."""

    signal_id: uuid.UUID
    point_tag: str
    signal_type: str = ""
    id: str = ""                      # "SOURCE:n"
    signal_reference: str = ""
    device: str = ""
    description: str = ""
    enabled: bool = True
    internal: bool = True
    phasor_index: int | None = None
    updated_on: datetime | None = None


@dataclass
class Metadata:
    """Devices and measurements of a publisher; lookups by point tag and signal id."""

    devices: list[Device] = field(default_factory=list)
    measurements: list[MeasurementRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_id = {m.signal_id: m for m in self.measurements}
        self.by_tag = {m.point_tag: m for m in self.measurements if m.point_tag}
        self.by_device = {d.acronym: d for d in self.devices}

    def select(self, signal_type: str | None = None, device: str | None = None
               ) -> list[MeasurementRecord]:
        """Measurements of a signal type (e.g. "FREQ") and/or device acronym."""
        return [m for m in self.measurements
                if (signal_type is None or m.signal_type.upper() == signal_type.upper())
                and (device is None or m.device == device)]

    def frame_rate(self, signal_id: uuid.UUID) -> float:
        """FramesPerSecond of the signal's device (0 when unknown)."""
        m = self.by_id.get(signal_id)
        d = self.by_device.get(m.device) if m else None
        return float(d.frames_per_second) if d else 0.0


_DT = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d*))?"
                 r"(Z|[+-]\d\d:?\d\d)?$")


def parse_datetime(text: str) -> datetime:
    """An xs:dateTime, tolerantly: fractions of any length or a bare `.`, optional zone."""
    m = _DT.match(text.strip())
    if not m:
        raise ValueError(f"not a date/time: {text[:40]!r}")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    value = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        hh, mm = int(zone[1:3]), int(zone[-2:])
        from datetime import timedelta
        return value.replace(tzinfo=timezone(sign * timedelta(hours=hh, minutes=mm)))
    return value.replace(tzinfo=timezone.utc)


def format_datetime(value: datetime) -> str:
    """xs:dateTime in UTC with milliseconds (never a whole-second form, spec §11 defect 4)."""
    value = value.astimezone(timezone.utc) if value.tzinfo else value
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


# ------------------------------------------------------------------------ decoding
def decode_metadata(data: bytes, offset: int = 0) -> Metadata:
    """Metadata from MetadataRefresh data (gzip sniffed by its magic)."""
    if bytes(data[:2]) == GZIP_MAGIC:
        data = _gunzip(data, "metadata", offset, MAX_XML)
    data = bytes(data)
    if data.count(b"<") > MAX_TAGS:
        raise ProtocolError(f"metadata holds more than {MAX_TAGS} XML tags "
                            f"({len(data)} bytes of XML)", field="metadata XML", offset=offset)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, column = exc.position
        raise ProtocolError(f"metadata is not well-formed XML: {exc} (line {line}, column "
                            f"{column})", field="metadata XML", offset=offset) from None
    devices = [_device(row) for row in root if _local(row.tag) == "DeviceDetail"]
    measurements = [_measurement(row, i) for i, row in
                    enumerate(r for r in root if _local(r.tag) == "MeasurementDetail")]
    return Metadata(devices, measurements)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _fields(row: ET.Element) -> dict[str, str]:
    return {_local(c.tag): (c.text or "").strip() for c in row}


def _bool(text: str, default: bool = True) -> bool:
    return default if text == "" else text.lower() in ("true", "1", "yes")


def _device(row: ET.Element) -> Device:
    f = _fields(row)
    try:
        unique = uuid.UUID(f["UniqueID"]) if f.get("UniqueID") else None
        fps = int(f.get("FramesPerSecond") or 0)
    except ValueError as exc:
        raise ProtocolError(f"DeviceDetail {f.get('Acronym', '?')!r}: {exc}",
                            field="DeviceDetail") from None
    return Device(f.get("Acronym", ""), f.get("Name", ""), unique, fps,
                  _bool(f.get("Enabled", "")))


def _measurement(row: ET.Element, n: int) -> MeasurementRecord:
    f = _fields(row)
    try:
        sid = uuid.UUID(f.get("SignalID", ""))
    except ValueError:
        raise ProtocolError(f"MeasurementDetail row {n}: SignalID {f.get('SignalID', '')[:40]!r}"
                            " is not a GUID", field="MeasurementDetail.SignalID") from None
    try:
        updated = parse_datetime(f["UpdatedOn"]) if f.get("UpdatedOn") else None
        phasor = int(f["PhasorSourceIndex"]) if f.get("PhasorSourceIndex") else None
    except ValueError as exc:
        raise ProtocolError(f"MeasurementDetail row {n} ({f.get('PointTag', '')!r}): {exc}",
                            field="MeasurementDetail") from None
    return MeasurementRecord(sid, f.get("PointTag", ""), f.get("SignalAcronym", ""),
                             f.get("ID", ""), f.get("SignalReference", ""),
                             f.get("DeviceAcronym", ""), f.get("Description", ""),
                             _bool(f.get("Enabled", "")), _bool(f.get("Internal", "")),
                             phasor, updated)


# ------------------------------------------------------------------------ encoding
_DEVICE_COLUMNS = (("UniqueID", "xs:string", True), ("Acronym", "xs:string", False),
                   ("Name", "xs:string", False), ("FramesPerSecond", "xs:int", False),
                   ("Enabled", "xs:boolean", False), ("UpdatedOn", "xs:dateTime", False))
_MEASUREMENT_COLUMNS = (("DeviceAcronym", "xs:string", False), ("ID", "xs:string", False),
                        ("SignalID", "xs:string", True), ("PointTag", "xs:string", False),
                        ("SignalReference", "xs:string", False),
                        ("SignalAcronym", "xs:string", False),
                        ("PhasorSourceIndex", "xs:int", False),
                        ("Description", "xs:string", False), ("Internal", "xs:boolean", False),
                        ("Enabled", "xs:boolean", False), ("UpdatedOn", "xs:dateTime", False))
_PHASOR_COLUMNS = (("ID", "xs:int", False), ("DeviceAcronym", "xs:string", False),
                   ("Label", "xs:string", False), ("Type", "xs:string", False),
                   ("Phase", "xs:string", False), ("SourceIndex", "xs:int", False),
                   ("UpdatedOn", "xs:dateTime", False))
_SCHEMA_VERSION = (("VersionNumber", "xs:int", False),)


def _schema(name: str) -> str:
    tables = []
    for table, columns in (("DeviceDetail", _DEVICE_COLUMNS),
                           ("MeasurementDetail", _MEASUREMENT_COLUMNS),
                           ("PhasorDetail", _PHASOR_COLUMNS), ("SchemaVersion", _SCHEMA_VERSION)):
        cols = "".join(f'<xs:element name="{c}" type="{t}" minOccurs="0"'
                       + (' ext:DataType="System.Guid"' if guid else "") + " />"
                       for c, t, guid in columns)
        tables.append(f'<xs:element name="{table}"><xs:complexType><xs:sequence>{cols}'
                      "</xs:sequence></xs:complexType></xs:element>")
    return (f'<xs:schema id="{name}" xmlns:xs="http://www.w3.org/2001/XMLSchema" '
            'xmlns:ext="urn:schemas-microsoft-com:xml-msdata">'
            f'<xs:element name="{name}"><xs:complexType><xs:choice minOccurs="0" '
            f'maxOccurs="unbounded">{"".join(tables)}</xs:choice></xs:complexType>'
            "</xs:element></xs:schema>")


def _row(table: str, values: dict[str, object]) -> str:
    cells = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, datetime):
            text = format_datetime(value)
        else:
            text = escape(str(value))
        cells.append(f"<{key}>{text}</{key}>")
    return f"<{table}>{''.join(cells)}</{table}>"


def encode_metadata(meta: Metadata, compress: bool = False, name: str = "DataSet",
                    updated: datetime | None = None) -> bytes:
    """The DataSet XML of `meta` (gzip'd when `compress`)."""
    stamp = updated or datetime.now(timezone.utc)
    rows = [_row("DeviceDetail", {"UniqueID": d.unique_id, "Acronym": d.acronym,
                                  "Name": d.name or d.acronym,
                                  "FramesPerSecond": d.frames_per_second,
                                  "Enabled": d.enabled, "UpdatedOn": stamp})
            for d in meta.devices]
    rows += [_row("MeasurementDetail", {
        "DeviceAcronym": m.device, "ID": m.id, "SignalID": m.signal_id, "PointTag": m.point_tag,
        "SignalReference": m.signal_reference, "SignalAcronym": m.signal_type,
        "PhasorSourceIndex": m.phasor_index, "Description": m.description,
        "Internal": m.internal, "Enabled": m.enabled, "UpdatedOn": m.updated_on or stamp})
        for m in meta.measurements]
    phasors = [m for m in meta.measurements
                if m.phasor_index is not None and m.signal_type.endswith("PHM")]
    rows += [_row("PhasorDetail", {"ID": n + 1, "DeviceAcronym": m.device,
                                   "Label": f"{m.signal_type[0]}{m.phasor_index}",
                                   "Type": m.signal_type[0], "Phase": "+",
                                   "SourceIndex": m.phasor_index, "UpdatedOn": stamp})
             for n, m in enumerate(phasors)]
    rows.append(_row("SchemaVersion", {"VersionNumber": 14}))
    xml = (f"<?xml version='1.0' encoding='utf-8'?>\n<{name}>{_schema(name)}{''.join(rows)}"
           f"</{name}>").encode("utf-8")
    return gzip.compress(xml, compresslevel=6, mtime=0) if compress else xml
