"""The CLI answers at once: `sit --help`, `sit CMD --help` and flag errors import no torch (nor numpy /
tqdm): every parser is built from torch-free records, also with torch unimportable; errors are one
line with a "did you mean", and a command that runs imports the real packages (checked in fresh
processes, where torch is not imported yet)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from sit.cli import COMMANDS

PROBE = """
import json, sys
from sit.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out.append([argv, code, sorted(m for m in ("torch", "torch._C", "numpy", "tqdm") if m in sys.modules)])
print(json.dumps(out))
"""


def _env():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_help_and_flag_errors_import_no_torch():
    cases = [["--help"], ["--version"], *[[c.replace("_", "-"), "--help"] for c in COMMANDS],
             ["sample", "--nums-steps", "3"], ["sampel"], ["train", "--steps", "x"]]
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True, text=True,
                       env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    for argv, code, loaded in json.loads(r.stdout.strip().splitlines()[-1]):
        assert code in (0, 2), (argv, code)
        assert loaded == [], f"{argv} imported {loaded}"


def test_quick_parse_works_from_an_installed_copy(tmp_path):
    """As after `pip install .` (not editable): the package is a copy in a site folder, run from another
    folder, and no editable-install hook has imported anything first (``-S``: no .pth file is read)."""
    import shutil
    import site

    import sit

    site_dir = tmp_path / "site"
    shutil.copytree(os.path.dirname(sit.__file__), site_dir / "sit", ignore=shutil.ignore_patterns("__pycache__"))
    paths = [str(site_dir), *site.getsitepackages(), site.getusersitepackages()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    cases = [["--help"], ["sample", "--help"], ["sample", "--nums-steps", "3"], ["train", "--steps", "x"]]
    probe = PROBE + "print(sys.modules['sit'].__file__, file=sys.stderr)"
    r = subprocess.run([sys.executable, "-S", "-c", probe, json.dumps(cases)], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith(str(site_dir)), r.stderr[-500:]  # the copy ran
    for argv, code, loaded in json.loads(r.stdout.strip().splitlines()[-1]):
        assert code in (0, 2), (argv, code)
        assert loaded == [], f"{argv} imported {loaded}"


def test_flag_errors_are_one_line_with_did_you_mean():
    r = subprocess.run([sys.executable, "-m", "sit.cli", "sampel"], capture_output=True, text=True, env=_env())
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "unknown command 'sampel' (did you mean 'sample'?)" in r.stderr
    r = subprocess.run([sys.executable, "-m", "sit.cli", "sample", "--nums-steps", "3", "--ckpt", "x", "--out", "y"],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--nums-steps (did you mean --num-steps?)" in r.stderr and "sit sample --help" in r.stderr


@pytest.mark.parametrize("cmd", ["info", "sample"])
def test_a_command_after_the_quick_parse_runs_with_the_real_packages(tmp_path, cmd):
    from sit.config import ModelConfig
    from sit.models.checkpoint import save_model
    from sit.models.sit import SiT

    torch.manual_seed(0)
    net = SiT(ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=1, num_heads=2, num_classes=10))
    ck = save_model(net, tmp_path / "tiny", {"path": "linear"})
    argv = ["info", str(ck)] if cmd == "info" else [
        "sample", "--ckpt", str(ck), "--method", "euler", "--num-steps", "1", "--num-samples", "2", "--out",
        str(tmp_path / "s"), "--no-progress", "--threads", "1"]
    r = subprocess.run([sys.executable, "-m", "sit.cli", *argv], capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    if cmd == "sample":
        assert (tmp_path / "s" / "samples.npz").is_file()


def test_every_flag_has_help_a_placeholder_and_its_default():
    import argparse

    from sit.cli import build_parser

    for name, sp in build_parser()._sit_subparsers.items():
        for a in sp._actions:
            if not a.option_strings or isinstance(a, argparse._HelpAction):
                continue
            flag = f"sit {name} {a.option_strings[0]}"
            assert a.help, flag
            if a.metavar is not None:
                assert "_" not in a.metavar.replace("mnist_5k", ""), (flag, a.metavar)  # N, PATH, not HIDDEN_SIZE
            if a.default not in (None, False, argparse.SUPPRESS):
                assert "default" in a.help, flag


BLOCKED = """
import json, sys
class Blocker:  # torch, numpy, tqdm and torchdiffeq cannot be imported at all
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in ("torch", "numpy", "tqdm", "torchdiffeq"):
            raise ImportError(f"blocked {name}")
sys.meta_path.insert(0, Blocker)
from sit.cli import build_parser, main
build_parser()   # every command's register, as it is
out = []
for argv in json.loads(sys.argv[1]):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out.append([argv, code])
print(json.dumps(out))
"""


def test_every_command_registers_and_answers_with_torch_blocked(tmp_path):
    """Every command's parser is built from torch-free records: with torch, numpy, tqdm and
    torchdiffeq unimportable, `sit --help`, each `sit CMD --help` and a flag error of each command
    answer (exit 0 / 2), and a bad value of a generated flag is refused by argparse before any import."""
    cases = [["--help"], *[[c.replace("_", "-"), "--help"] for c in COMMANDS],
             *[[c.replace("_", "-"), "--no-such-flag"] for c in COMMANDS],
             ["sample", "--ckpt", "x", "--out", "y", "--num-steps", "many"], ["train", "--path", "curved"],
             ["sample", "--ckpt", "x", "--out", "y", "--weights", "average"], ["sweep", "--ckpt", "x", "--nfe"]]
    r = subprocess.run([sys.executable, "-c", BLOCKED, json.dumps(cases)], capture_output=True, text=True,
                       env=_env(), timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    answers = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(answers) == len(cases)
    for argv, code in answers:
        assert code == (0 if argv[-1] == "--help" else 2), (argv, code, r.stderr[-1000:])
    assert "blocked" not in r.stderr and "invalid choice: 'curved'" in r.stderr


def test_help_built_without_torch_equals_help_built_with_torch():
    """The parsers read their defaults from torch-free records: every command's help text (flags,
    defaults, choices) is exactly the same whether torch was imported first or not."""
    probe = "import sys, {pre}; from sit.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass"
    for argv in [["--help"], *[[c.replace("_", "-"), "--help"] for c in COMMANDS]]:
        quick, real = (subprocess.run([sys.executable, "-c", probe.format(pre=pre), *argv], capture_output=True, text=True,
                                      env=dict(_env(), COLUMNS="100"), timeout=300) for pre in ("os", "torch"))
        assert quick.returncode == real.returncode == 0, (argv, quick.stderr[-500:], real.stderr[-500:])
        assert quick.stdout == real.stdout, argv
