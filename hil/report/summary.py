"""The end-of-run measurement table for the terminal: one row per measurement with its name,
value, unit, limits and outcome, columns aligned, and where the results were written."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from hil.report.measurements import Measurement, format_number

HEADER = ("outcome", "name", "value", "unit", "limits", "test")
MAX_NAME = 48           # longer names are cut in the table (never in the JSON)


def rows(measurements: Iterable[Measurement]) -> list[tuple[str, ...]]:
    """The table's cells, as text."""
    found = []
    for m in measurements:
        name = m.name if len(m.name) <= MAX_NAME else m.name[:MAX_NAME - 1] + "…"
        found.append((m.outcome.upper(), name, format_number(m.value, m.digits()), m.unit,
                      m.limits() if m.has_limits else "-", m.test))
    return found


def table(measurements: Sequence[Measurement]) -> list[str]:
    """The header and one aligned line per measurement (the test column is left unpadded)."""
    cells = [HEADER, *rows(measurements)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER) - 1)]
    lines = []
    for row in cells:
        padded = [cell.rjust(w) if i == 2 else cell.ljust(w)
                  for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(padded + [row[-1]]).rstrip())
    return lines


def where(results: Path, alluredir: str | None, junitxml: str | None) -> list[str]:
    """Lines naming the files a run leaves behind, and how to build the HTML report."""
    lines = [f"measurements: {results / 'measurements.json'}"]
    transcripts = results / "transcripts"
    if transcripts.is_dir():
        lines.append(f"transcripts:  {transcripts}/")
    plots = results / "plots"
    if plots.is_dir():
        lines.append(f"plots, CSV:   {plots}/")
    if junitxml:
        lines.append(f"JUnit XML:    {junitxml}")
    if alluredir:
        lines.append(f"allure:       {alluredir}/  (HTML report: ./run report, or "
                     f"hil report {alluredir})")
    return lines
