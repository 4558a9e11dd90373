"""Attach files and text to the running test's Allure result (a no-op without --alluredir)."""
from __future__ import annotations

from pathlib import Path

import allure

_TYPES = {
    ".png": allure.attachment_type.PNG,
    ".csv": allure.attachment_type.CSV,
    ".txt": allure.attachment_type.TEXT,
    ".json": allure.attachment_type.JSON,
}


def attach_text(text: str, name: str) -> None:
    allure.attach(text, name=name, attachment_type=allure.attachment_type.TEXT)


def attach_file(path: str | Path, name: str | None = None) -> None:
    """Attach a PNG/CSV/TXT/JSON file under `name` (default: the file name)."""
    path = Path(path)
    allure.attach.file(str(path), name=name or path.name,
                       attachment_type=_TYPES.get(path.suffix.lower(), allure.attachment_type.TEXT))


def parameter(name: str, value: str) -> None:
    """A parameter of the running test's Allure result, shown as plain text (not quoted)."""
    from hil.report.measurements import Unquoted
    allure.dynamic.parameter(name, Unquoted(value))


def label(name: str, value: str) -> None:
    """A label of the running test's Allure result (e.g. the rig it ran on)."""
    allure.dynamic.label(name, value)
