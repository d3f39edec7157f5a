import subprocess
import sys

import pytest

import sit
from sit.cli import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert sit.__version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "usage: sit" in capsys.readouterr().out


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "sit.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "COMMAND" in out.stdout


def test_unknown_subcommand_is_an_error():
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2


def test_every_command_takes_threads():
    from sit.cli import build_parser

    subs = build_parser()._sit_subparsers
    assert set(subs) >= {"train", "sample", "eval", "likelihood", "lt", "pathlength", "sweep", "extract", "info", "convert"}
    for name, p in subs.items():
        flags = {s for a in p._actions for s in a.option_strings}
        assert "--threads" in flags, name


def test_threads_resolution(monkeypatch):
    from sit.cli import THREADS_ENV, default_threads, resolve_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert resolve_threads(3) == (3, "--threads")
    monkeypatch.setenv(THREADS_ENV, "2")
    assert resolve_threads(None)[0] == 2
    monkeypatch.setenv(THREADS_ENV, "two")
    with pytest.raises(ValueError, match=THREADS_ENV):
        resolve_threads(None)
    with pytest.raises(ValueError, match="--threads"):
        resolve_threads(-1)
    n, why = default_threads()
    assert n >= 1 and "load average" in why
    monkeypatch.setattr("os.getloadavg", lambda: (1.0, 1.0, 1.0))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert default_threads()[0] == 1   # one of two cores busy -> one thread
    monkeypatch.setattr("os.getloadavg", lambda: (0.1, 0.1, 0.1))
    assert default_threads()[0] == 2


def test_unknown_flag_names_subcommand_and_suggests(capsys):
    with pytest.raises(SystemExit) as e:
        main(["info", "--jsn", "x.pt"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: sit info" in err and "did you mean --json?" in err
