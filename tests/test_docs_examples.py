"""The docs' examples run: every fenced block of docs/writing-test-benches.md marked with a file
name (```python file=test_x.py) goes into a scratch project, which runs against the simulated
rig the page describes. An example that no longer works fails here, not in a newcomer's hands."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```(\w+) file=(\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def example_files(page: Path) -> dict[str, str]:
    """{file name: text} of the page's marked blocks (a name given twice is an error)."""
    files: dict[str, str] = {}
    for match in BLOCK.finditer(page.read_text(encoding="utf-8")):
        name = match.group(2)
        assert name not in files, f"{page.name}: two examples are both called {name}"
        files[name] = match.group(3)
    return files


def test_every_example_of_writing_test_benches_runs(pytester: pytest.Pytester) -> None:
    files = example_files(DOCS / "writing-test-benches.md")
    tests = [name for name in files if name.startswith("test_")]
    assert {"rig.toml", "conftest.py"} <= set(files) and len(tests) >= 3
    for name, text in files.items():
        (pytester.path / name).write_text(text, encoding="utf-8")
    result = pytester.runpytest_subprocess("--rig", "rig.toml", "-p", "no:cacheprovider",
                                           "--hil-results", "out")
    result.assert_outcomes(passed=sum(text.count("\ndef test_") + text.startswith("def test_")
                                      for name, text in files.items() if name in tests))
    assert (pytester.path / "out" / "plots").is_dir()      # report.power/stream wrote PNGs


def test_pages_link_to_pages_that_exist() -> None:
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([\w./-]+\.md)(?:#[\w-]+)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"
