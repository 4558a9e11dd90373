"""`hil report [RESULTS] [-o FOLDER]`: build the HTML report of a run from its Allure results, as
one self-contained HTML file that opens from disk.

The report is made by the `allure` npm package installed into the project (`npm ci`, which
`./run report` does; no global install). Its single-file mode inlines every script, style and
attachment; the one thing it loads from outside, an analytics script, is removed here, and the
file is checked for any other reference to an outside host before it is called done.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_RESULTS = Path("results/allure-results")
DEFAULT_OUTPUT = Path("results/report")
REPORT_NAME = "hil test benches"
GENERATE_TIMEOUT_S = 300

_SCRIPT_OPEN = re.compile(r"<script\b[^>]*>", re.IGNORECASE)
_OUTSIDE_SRC = re.compile(r"\bsrc\s*=\s*[\"']?(?:https?:)?//", re.IGNORECASE)
_ANALYTICS = re.compile(r"\bgtag\s*\(|dataLayer")
#: What makes a browser fetch from a host: src/href/srcset/poster/data attributes of elements,
#: CSS url(...) and @import, with an http(s) or protocol-relative address.
_OUTSIDE_LOAD = re.compile(
    r"<(?:script|link|img|iframe|frame|embed|object|source|video|audio|track|image|input)\b"
    r"[^>]*\b(?:src|href|srcset|poster|data)\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)"
    r"|url\(\s*[\"']?((?:https?:)?//[^\"')\s]+)|@import\s+[\"']((?:https?:)?//[^\"']+)",
    re.IGNORECASE)


class ReportError(Exception):
    """The report could not be built; the message says why and what to do."""


def strip_outside_calls(html: str) -> tuple[str, int]:
    """`html` without the scripts that load from other hosts or call analytics (gtag); and how
    many were removed. Scripts are cut whole, from `<script` to their `</script>`."""
    kept, removed, at, pos = [], 0, 0, 0
    while (opening := _SCRIPT_OPEN.search(html, pos)) is not None:
        close = html.find("</script>", opening.end())
        if close < 0:
            break
        pos = close + len("</script>")
        body = html[opening.end():close]
        if _OUTSIDE_SRC.search(opening.group()) or (len(body) < 4096 and _ANALYTICS.search(body)):
            kept.append(html[at:opening.start()])
            removed += 1
            at = pos
    kept.append(html[at:])
    return "".join(kept), removed


def outside_references(html: str) -> list[str]:
    """Addresses on other hosts that the page would load (empty for a self-contained page).
    Text and links a reader clicks are not loads; the SVG namespace is not an address."""
    found = [next(g for g in m.groups() if g) for m in _OUTSIDE_LOAD.finditer(html)]
    return [url for url in found if "www.w3.org/" not in url]


def project_root(start: Path) -> Path | None:
    """The nearest folder at or above `start` whose package.json depends on `allure`."""
    for folder in [start, *start.parents]:
        manifest = folder / "package.json"
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if "allure" in {**data.get("dependencies", {}), **data.get("devDependencies", {})}:
                return folder
    return None


def allure_command(start: Path) -> list[str]:
    """How to run the project's own `allure` (HIL_ALLURE overrides), or a ReportError."""
    if os.environ.get("HIL_ALLURE"):
        return [os.environ["HIL_ALLURE"]]
    root = project_root(start.resolve())
    if root is None:
        raise ReportError("no package.json depending on the allure npm package in this folder "
                          "or above: run hil report from the project")
    binary = root / "node_modules" / ".bin" / "allure"
    if not binary.exists():
        raise ReportError(f"the allure npm package is not installed in {root}: run `npm ci` "
                          f"there (./run report does it for you)")
    if shutil.which("node") is None:
        raise ReportError("node is not installed (the allure npm package needs Node.js 18+)")
    return [str(binary)]


def build(results: Path, output: Path, name: str = REPORT_NAME,
          cwd: Path | None = None) -> Path:
    """Generate the single-file report of `results` into `output`; the HTML file's path."""
    if not results.is_dir() or not any(results.glob("*-result.json")):
        raise ReportError(f"no Allure results in {results}: run the test benches with "
                          f"--alluredir={results} first (./run benches does)")
    command = allure_command(cwd or Path.cwd())
    output = output.absolute()
    with tempfile.TemporaryDirectory(prefix="hil-report-") as tmp:
        config = Path(tmp) / "allurerc.json"
        config.write_text(json.dumps({
            "name": name, "output": str(output),
            "plugins": {"awesome": {"options": {"singleFile": True, "reportName": name,
                                                "reportLanguage": "en", "theme": "light",
                                                "stepTreeExpansion": "expanded"}}}}))
        if output.exists():
            shutil.rmtree(output)
        try:
            done = subprocess.run([*command, "generate", "--config", str(config),
                                   str(results.absolute())], cwd=tmp, capture_output=True,
                                  text=True, timeout=GENERATE_TIMEOUT_S,
                                  env={**os.environ, "ALLURE_NO_ANALYTICS": "true",
                                       "NO_COLOR": "1"})
        except subprocess.TimeoutExpired:
            raise ReportError(f"allure generate did not finish within {GENERATE_TIMEOUT_S} s") \
                from None
    page = output / "index.html"
    if done.returncode != 0 or not page.is_file():
        raise ReportError(f"allure generate failed (exit {done.returncode}):\n"
                          f"{(done.stderr or done.stdout).strip()[-2000:]}")
    html, _ = strip_outside_calls(page.read_text(encoding="utf-8"))
    left = outside_references(html)
    if left:
        raise ReportError(f"the report would still load from other hosts: {', '.join(left[:5])}")
    page.write_text(html, encoding="utf-8")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hil report", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default=str(DEFAULT_RESULTS),
                        help=f"Allure results folder (default {DEFAULT_RESULTS})")
    parser.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT),
                        help=f"report folder; the report is its index.html "
                             f"(default {DEFAULT_OUTPUT})")
    parser.add_argument("--name", default=REPORT_NAME, help="the report's title")
    args = parser.parse_args(argv)
    try:
        page = build(Path(args.results), Path(args.output), args.name)
    except ReportError as exc:
        print(f"hil report: error: {exc}", file=sys.stderr)
        return 1
    size = page.stat().st_size / 1e6
    print(f"report: {page} ({size:.1f} MB, one self-contained file: open it in a browser)")
    return 0
