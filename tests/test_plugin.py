"""The pytest plugin end to end, in a scratch project run by pytester (a real pytest run).

The scratch project registers a small `counter` kind: an instrument whose safe state and
close are counted, so the plugin's contract with handles can be checked exactly.
"""
from __future__ import annotations

import json
import textwrap

import pytest

CONFTEST = '''
from hil.rig import Key, RigKind, kinds

class Counter:
    def __init__(self, res):
        self.start = res["start"]
        self.safe = 0
        self.closed = 0
    def safe_state(self):
        self.safe += 1
    def close(self):
        self.closed += 1
        with open("closed.txt", "w") as f:
            f.write(f"{self.safe} {self.closed}")

RIG_KIND = RigKind(keys={"start": Key(int, 0), "label": Key(str, "")},
                   open=lambda res, bench: Counter(res))
kinds.register("counter", RIG_KIND)
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.path.joinpath("rig.toml").write_text('[meter]\nkind = "counter"\nstart = 5\n')
    # another rig of the project: its tables are rig resources too (skipped when missing)
    pytester.path.joinpath("lab.toml").write_text('[meter]\nkind = "counter"\n'
                                                  '[power]\nkind = "counter"\n')
    return pytester


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess("--rig", "rig.toml", "-p", "no:cacheprovider",
                                  "--hil-results", "out", *args)


def test_resource_becomes_fixture_and_missing_one_is_skipped(project: pytest.Pytester) -> None:
    project.makepyfile(textwrap.dedent('''
        def test_uses_meter(meter):
            assert meter.start == 5
        def test_needs_power(power):
            pass
    '''))
    result = run(project, "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*needs power, which rig rig.toml does not provide (it has: meter)*"])


def test_safe_state_after_each_test_and_close_once(project: pytest.Pytester) -> None:
    project.makepyfile(textwrap.dedent('''
        def test_a(meter):
            assert meter.safe == 0
        def test_b(meter):
            assert meter.safe == 1
        def test_c(meter):
            assert meter.safe == 2
            raise RuntimeError("a failing test still gets its teardown")
    '''))
    result = run(project)
    result.assert_outcomes(passed=2, failed=1)
    # three tests -> three safe states; close adds its own safe state, then closes once
    assert (project.path / "closed.txt").read_text() == "4 1"


def test_measurements_recorded_then_judged(project: pytest.Pytester) -> None:
    project.makepyfile(textwrap.dedent('''
        def test_in_limits(measure):
            m = measure("sleep_current", 4.2e-6, unit="A", high=10e-6)
            assert m.passed
        def test_out_of_limits(measure):
            measure("boot_time", 0.9, unit="s", high=0.5)
            measure("inrush", 0.18, unit="A", high=0.1)
            measure("voltage", 3.3, unit="V", low=3.0, high=3.6)
    '''))
    result = run(project, "--junitxml", "junit.xml")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*2 measurement(s) out of limits*", "*boot_time = 0.9 s*fail*",
                                 "*inrush = 0.18 A*fail*", "*hil measurements: 4 recorded, 2 out of limits*"])
    records = json.loads((project.path / "out" / "measurements.json").read_text())
    assert [(r["name"], r["outcome"]) for r in records] == [
        ("sleep_current", "pass"), ("boot_time", "fail"), ("inrush", "fail"), ("voltage", "pass")]
    junit = (project.path / "junit.xml").read_text()
    assert 'name="measure.boot_time"' in junit and "fail" in junit


def test_measure_rejects_non_numbers(project: pytest.Pytester) -> None:
    project.makepyfile(textwrap.dedent('''
        import pytest
        def test_text(measure):
            with pytest.raises(TypeError, match="needs a number"):
                measure("name", "3.3 V")
    '''))
    run(project).assert_outcomes(passed=1)


@pytest.mark.parametrize("rig, where", [
    ('[meter]\nkind = "counter"\nstrat = 5\n', "table [meter], key 'strat'"),
    ('[meter]\nkind = "counter"\nstart = "five"\n', "table [meter], key 'start'"),
    ('[meter]\nkind = "voltmeter"\n', "table [meter], key 'kind'"),
    ('[meter]\nstart = 1\n', "table [meter], key 'kind'"),
    ('[meter\nkind = "counter"\n', "not valid TOML"),
    ('meter = 3\n', "table [meter]"),
])
def test_broken_rig_is_one_clear_error(project: pytest.Pytester, rig: str, where: str) -> None:
    project.path.joinpath("rig.toml").write_text(rig)
    project.makepyfile("def test_x(): pass")
    result = run(project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "hil: bad rig file" in err and "rig.toml" in err and where in err
    assert "Traceback" not in err


def test_missing_rig_file(project: pytest.Pytester) -> None:
    project.makepyfile("def test_x(): pass")
    result = project.runpytest_subprocess("--rig", "nope.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "rig file not found (file nope.toml)" in result.stderr.str()


SIM_CONSOLE_RIG = '[console]\nkind = "tcp"\nhost = "sim"\n'


def test_transcript_saved_per_test_and_shown_on_failure(pytester: pytest.Pytester) -> None:
    """A real simulated console over TCP: the failing test's report carries what the DUT said."""
    pytester.path.joinpath("rig.toml").write_text(SIM_CONSOLE_RIG)
    pytester.makepyfile(textwrap.dedent('''
        def test_passes(console):
            console.query("echo first-test\\n", expect="first-test")
        def test_fails(console):
            console.query("echo second-test\\n", expect="second-test")
            console.expect("never printed", timeout=0.3)
    '''))
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*Captured transcript console*", "*tx*echo second-test*",
                                 "*rx*second-test*"])
    folders = sorted(p.name for p in (pytester.path / "out" / "transcripts").iterdir())
    assert len(folders) == 2
    failing = next(f for f in folders if "test_fails" in f)
    text = (pytester.path / "out" / "transcripts" / failing / "console.txt").read_text()
    assert "second-test" in text and "first-test" not in text


def test_results_show_the_last_run_only(pytester: pytest.Pytester) -> None:
    """A later run that used the rig leaves no earlier figures or transcripts behind; a run
    that used no rig resource (a unit-test suite beside the benches) leaves results alone."""
    pytester.path.joinpath("rig.toml").write_text(SIM_CONSOLE_RIG)
    pytester.makepyfile(textwrap.dedent('''
        def test_one(console, measure):
            console.query("echo one\\n", expect="one")
            measure("x", 1.0)
        def test_two(console):
            console.query("echo two\\n", expect="two")
        def test_plain():
            pass
    '''))
    out = pytester.path / "out"
    run(pytester).assert_outcomes(passed=3)
    assert len(json.loads((out / "measurements.json").read_text())) == 1
    assert len(list((out / "transcripts").iterdir())) == 2
    run(pytester, "-k", "test_plain").assert_outcomes(passed=1, deselected=2)
    assert len(list((out / "transcripts").iterdir())) == 2          # untouched
    assert len(json.loads((out / "measurements.json").read_text())) == 1
    run(pytester, "-k", "test_two").assert_outcomes(passed=1, deselected=2)
    assert json.loads((out / "measurements.json").read_text()) == []
    left = [f.name for f in (out / "transcripts").iterdir()]
    assert left == ["test_results_show_the_last_run_only.py_test_two"]


def test_watcher_fails_a_test_that_never_calls_expect(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("rig.toml").write_text(SIM_CONSOLE_RIG)
    pytester.makepyfile(textwrap.dedent('''
        import time
        def test_panics_unnoticed(console):
            console.fail_on("PANIC")
            console.writeline("panic")
            deadline = time.monotonic() + 10
            while not console.watcher_hits and time.monotonic() < deadline:
                time.sleep(0.01)           # waits for the reader to see it; never calls expect
            assert console.watcher_hits
    '''))
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*WatcherTriggered*PANIC*"])


def test_a_watcher_ends_with_the_test_that_set_it(pytester: pytest.Pytester) -> None:
    """Test order cannot change what fails: a test's own watchers end with it; one set by a
    fixture of wider scope stays for the tests that use it."""
    pytester.path.joinpath("rig.toml").write_text(SIM_CONSOLE_RIG)
    pytester.makepyfile(textwrap.dedent('''
        import pytest
        @pytest.fixture(scope="module")
        def strict(console):
            return console.fail_on("never-said")
        def test_a(console, strict):
            console.fail_on("PANIC")
            console.query("echo a\\n", expect="a")
        def test_b(console, strict):
            console.writeline("panic")            # on purpose: test_a's watcher is gone
            console.expect("PANIC", timeout=5)
            assert [w.pattern.source for w in console.watchers] == ["never-said"]
    '''))
    result = run(pytester)
    result.assert_outcomes(passed=2)


def test_a_misspelled_fixture_keeps_pytests_own_error(project: pytest.Pytester) -> None:
    project.makepyfile("def test_typo(meterr):\n    pass\n")
    result = run(project)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'meterr' not found*"])
    assert "does not provide" not in result.stdout.str()


def test_a_marker_declares_a_resource(project: pytest.Pytester) -> None:
    project.makepyfile(textwrap.dedent('''
        import pytest
        @pytest.mark.rig("scope")
        def test_needs_scope():
            pass
    '''))
    result = run(project, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs scope, which rig rig.toml does not provide*"])


def test_without_a_rig_the_plugin_stays_out_of_the_way(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain(tmp_path):\n    assert tmp_path.is_dir()\n"
                        "def test_typo(consle):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'consle' not found*"])
    assert "hil rig" not in result.stdout.str()
    assert not (pytester.path / "results").exists()


def test_a_table_of_the_wrong_kind_names_file_table_and_kind(project: pytest.Pytester) -> None:
    project.makepyfile("def test_power_on(meter):\n    meter.on(voltage=3.3)\n")
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RigError: the test bench uses .on of ?meter?, but this rig's "
                                 "?meter? is kind 'counter' (Counter), which has no 'on'*"])


def test_results_go_beside_the_project_config_however_rig_is_spelled(
        project: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    project.makeini("[pytest]\n")
    elsewhere = tmp_path_factory.mktemp("rigs") / "other.toml"
    elsewhere.write_text('[meter]\nkind = "counter"\n')
    project.makepyfile("def test_m(meter, measure):\n    measure('x', 1.0)\n")
    for spelling in (["--rig", str(elsewhere)], [f"--rig={elsewhere}"]):
        result = project.runpytest_subprocess(*spelling, "-p", "no:cacheprovider")
        result.assert_outcomes(passed=1)
        written = project.path / "results" / "measurements.json"
        assert json.loads(written.read_text())[0]["name"] == "x"
        written.unlink()
    assert not (elsewhere.parent / "results").exists()


def test_a_test_file_outside_the_rootdir_keeps_its_name_in_results(
        project: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    project.makeini("[pytest]\n")
    outside = tmp_path_factory.mktemp("elsewhere")
    for name in ("test_one.py", "test_two.py"):
        (outside / name).write_text("def test_same(meter, measure):\n    measure('x', 1.0)\n")
    result = run(project, "-p", "conftest",        # the kind's conftest is not beside the tests
                 str(outside / "test_one.py"), str(outside / "test_two.py"))
    result.assert_outcomes(passed=2)
    tests = [r["test"] for r in json.loads((project.path / "out" / "measurements.json").read_text())]
    assert len(set(tests)) == 2 and all("test_same" in t for t in tests), tests
    assert any("test_one.py" in t for t in tests) and any("test_two.py" in t for t in tests)


def test_a_long_failure_transcript_says_what_it_left_out(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("rig.toml").write_text(SIM_CONSOLE_RIG)
    pytester.makepyfile(textwrap.dedent('''
        def test_floods_then_fails(console):
            console.query("log 60000\\n", expect="log: done", timeout=20)
            assert False, "fails after a long log"
    '''))
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r".*\[first \d+ characters omitted\]"])
    saved = next((pytester.path / "out" / "transcripts").iterdir()) / "console.txt"
    assert "log: done" in saved.read_text()          # the saved file keeps it whole here


def test_a_long_capture_says_how_far_it_is(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("rig.toml").write_text(
        '[eeg]\nkind = "tia"\nhost = "sim"\nsignals = "eeg:2x4@500/sine"\n')
    pytester.makepyfile(textwrap.dedent('''
        import hil.progress
        def test_capture(eeg):
            hil.progress.QUIET_FOR = hil.progress.EVERY = 0.2   # "long" for this test
            assert eeg.capture(seconds=1.0).n_packets > 0
    '''))
    result = run(pytester)                  # output capture on: the lines still show live
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"hil: eeg: capturing, \d+ of 1 s, \d+ packets"])
