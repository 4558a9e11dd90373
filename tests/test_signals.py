"""SIGTERM ends a run like Ctrl-C (teardown runs), and pytest-timeout never ends it with os._exit.

The SIGTERM tests run a real pytest in a subprocess on a small test file whose fixture writes a
marker file in its teardown, send it SIGTERM while the test runs, and check the marker. They
load `hil.fixtures.signals` from their own conftest with the hil plugin disabled (`-p no:hil`),
so they test this module alone; the plugin-level test is in test_signals_plugin.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hil.fixtures import signals

WAIT_S = 30.0

CONFTEST = '''
from hil.fixtures.signals import install_sigterm_as_interrupt

def pytest_configure(config):
    assert install_sigterm_as_interrupt()
'''

HANGING_TEST = '''
import os, time
from pathlib import Path
import pytest

@pytest.fixture
def instrument(request):
    yield
    Path(f"teardown-{request.node.name}.txt").write_text("safe")

def test_hangs(instrument):
    Path("started-test_hangs.txt").write_text(str(os.getpid()))
    time.sleep(120)                       # a test stuck waiting: SIGTERM ends it
'''


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = WAIT_S) -> None:
    """Wait until `path` exists; fail at once if the process ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"pytest ended ({proc.returncode}) before {path.name} "
                                 f"appeared:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.02)


def start_pytest(folder: Path, *args: str, new_session: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hil", "-q", *args],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=new_session)


def finish(proc: subprocess.Popen[str]) -> str:
    try:
        out, err = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"pytest did not end within {WAIT_S} s:\n{out}\n{err}") from None
    return out + err


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "test_hang.py").write_text(textwrap.dedent(HANGING_TEST))
    return tmp_path


# --------------------------------------------------------------------------- SIGTERM
def test_without_the_handler_sigterm_skips_teardown(project: Path) -> None:
    """The fault being fixed: Python's default SIGTERM ends the process on the spot."""
    proc = start_pytest(project)
    wait_for(project / "started-test_hangs.txt", proc)
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    assert proc.returncode == -signal.SIGTERM
    assert not (project / "teardown-test_hangs.txt").exists()


def test_sigterm_runs_teardown_like_ctrl_c(project: Path) -> None:
    (project / "conftest.py").write_text(CONFTEST)
    proc = start_pytest(project)
    wait_for(project / "started-test_hangs.txt", proc)
    proc.send_signal(signal.SIGTERM)
    output = finish(proc)
    assert (project / "teardown-test_hangs.txt").read_text() == "safe"
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "SIGTERM received: stopping like Ctrl-C" in output


def test_a_second_sigterm_does_not_cut_teardown_short(project: Path) -> None:
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_hang.py").write_text(textwrap.dedent('''
        import time
        from pathlib import Path
        import pytest
        from hil.fixtures import signals

        @pytest.fixture
        def instrument():
            yield
            Path("teardown-started.txt").write_text("")
            deadline = time.monotonic() + 30
            while signals.sigterms_ignored() < 1 and time.monotonic() < deadline:
                time.sleep(0.01)               # teardown still busy when SIGTERM comes again
            Path("teardown-done.txt").write_text(str(signals.sigterms_ignored()))

        def test_hangs(instrument):
            Path("started-test_hangs.txt").write_text("")
            time.sleep(120)
    '''))
    proc = start_pytest(project)
    wait_for(project / "started-test_hangs.txt", proc)
    proc.send_signal(signal.SIGTERM)
    wait_for(project / "teardown-started.txt", proc)
    proc.send_signal(signal.SIGTERM)
    output = finish(proc)
    assert (project / "teardown-done.txt").read_text() == "1", output
    assert proc.returncode == pytest.ExitCode.INTERRUPTED


def test_sigterm_to_an_xdist_run_tears_down_in_every_worker(project: Path) -> None:
    """CI cancels the process group: the controller and each worker get SIGTERM."""
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_hang.py").write_text(textwrap.dedent(HANGING_TEST) + textwrap.dedent('''
        def test_hangs_too(instrument):
            Path("started-test_hangs_too.txt").write_text(str(os.getpid()))
            time.sleep(120)
    '''))
    proc = start_pytest(project, "-n", "2", new_session=True)
    for name in ("test_hangs", "test_hangs_too"):
        wait_for(project / f"started-{name}.txt", proc)
    workers = {(project / f"started-{n}.txt").read_text() for n in ("test_hangs", "test_hangs_too")}
    assert len(workers) == 2 and str(proc.pid) not in workers     # really in two workers
    os.killpg(proc.pid, signal.SIGTERM)
    output = finish(proc)
    for name in ("test_hangs", "test_hangs_too"):
        assert (project / f"teardown-{name}.txt").read_text() == "safe", output


# --------------------------------------------------------------------------- install/uninstall
@pytest.fixture
def clean_handler():
    """Leave this process's SIGTERM handler as it was, whatever the test does (the hil plugin
    of this very test run may have installed its own: it is put aside and back)."""
    was_installed = signals.sigterm_is_interrupt()
    signals.uninstall_sigterm_as_interrupt()
    before = signal.getsignal(signal.SIGTERM)
    yield before
    signals.uninstall_sigterm_as_interrupt()
    signal.signal(signal.SIGTERM, before)
    if was_installed:
        signals.install_sigterm_as_interrupt()


def test_install_is_idempotent_and_uninstall_restores_the_previous_handler(clean_handler) -> None:
    def mine(signum, frame):  # pragma: no cover - never called
        pass
    signal.signal(signal.SIGTERM, mine)
    assert signals.install_sigterm_as_interrupt() and signals.sigterm_is_interrupt()
    ours = signal.getsignal(signal.SIGTERM)
    assert ours is not mine
    assert signals.install_sigterm_as_interrupt()
    assert signal.getsignal(signal.SIGTERM) is ours               # not wrapped twice
    signals.uninstall_sigterm_as_interrupt()
    assert signal.getsignal(signal.SIGTERM) is mine and not signals.sigterm_is_interrupt()
    signals.uninstall_sigterm_as_interrupt()                      # twice: harmless
    assert signal.getsignal(signal.SIGTERM) is mine


def test_uninstall_keeps_a_handler_set_after_ours(clean_handler) -> None:
    signals.install_sigterm_as_interrupt()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signals.uninstall_sigterm_as_interrupt()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


def test_install_outside_the_main_thread_changes_nothing(clean_handler) -> None:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(
        signals.install_sigterm_as_interrupt()))
    thread.start()
    thread.join(WAIT_S)
    assert result == [False]
    assert signal.getsignal(signal.SIGTERM) is clean_handler and not signals.sigterm_is_interrupt()


# --------------------------------------------------------------------------- pytest-timeout
TIMEOUT_CONFTEST = '''
from hil.fixtures.signals import prefer_signal_timeout

@pytest.hookimpl({order})
def pytest_configure(config):
    message = prefer_signal_timeout(config, uses_instruments=True)
    with open("hil-message.txt", "w") as f:
        f.write(str(message))
'''

TIMED_OUT_TEST = '''
import time
from pathlib import Path
import pytest

@pytest.fixture
def instrument():
    yield
    Path("teardown.txt").write_text("safe")

def test_too_slow(instrument):
    time.sleep(60)
'''


@pytest.mark.parametrize("order", ["tryfirst=True", "trylast=True"])
@pytest.mark.parametrize("how", ["option", "ini"])
def test_thread_timeout_is_switched_to_signal_so_teardown_runs(
        tmp_path: Path, order: str, how: str) -> None:
    (tmp_path / "conftest.py").write_text("import pytest\n" + TIMEOUT_CONFTEST.format(order=order))
    (tmp_path / "test_slow.py").write_text(textwrap.dedent(TIMED_OUT_TEST))
    args = ["--timeout", "1"]
    if how == "option":
        args += ["--timeout-method", "thread"]
    else:
        (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout_method = thread\n")
    proc = start_pytest(tmp_path, *args)
    output = finish(proc)
    assert "switched from 'thread' to 'signal'" in (tmp_path / "hil-message.txt").read_text()
    assert (tmp_path / "teardown.txt").read_text() == "safe", output
    assert "Timeout" in output and proc.returncode == pytest.ExitCode.TESTS_FAILED


def test_thread_timeout_without_the_switch_skips_teardown(tmp_path: Path) -> None:
    """The fault being fixed: the thread method ends the process with os._exit(1)."""
    (tmp_path / "test_slow.py").write_text(textwrap.dedent(TIMED_OUT_TEST))
    proc = start_pytest(tmp_path, "--timeout", "1", "--timeout-method", "thread")
    finish(proc)
    assert proc.returncode == 1 and not (tmp_path / "teardown.txt").exists()


def test_signal_method_or_no_instruments_needs_no_change(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(textwrap.dedent('''
        from hil.fixtures.signals import prefer_signal_timeout

        def pytest_configure(config):
            assert prefer_signal_timeout(config, uses_instruments=True) is None
            config.option.timeout_method = "thread"
            assert prefer_signal_timeout(config, uses_instruments=False) is None
            assert config.option.timeout_method == "thread"
    '''))
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    pass\n")
    output = finish(proc := start_pytest(tmp_path, "--timeout", "5"))
    assert proc.returncode == 0, output


def test_thread_timeout_markers_are_listed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(textwrap.dedent('''
        import pytest
        @pytest.mark.timeout(5, method="thread")
        def test_a(): pass
        @pytest.mark.timeout(5, "thread")
        def test_b(): pass
        @pytest.mark.timeout(5)
        def test_c(): pass
        def test_d(): pass
    '''))
    items, _ = pytester.inline_genitems("-p", "no:hil")
    assert [i.split("::")[1] for i in signals.thread_timeout_items(items)] == ["test_a", "test_b"]
