"""Every `sit` command shown in README.md, docs/*.md and the `--help` examples runs as written.

Two checks:
* every command parses: `sit`'s own parser accepts each flag and value (a flag that does not
  exist, a renamed option or a bad choice fails here, for all commands, in seconds);
* every command that needs nothing from outside (the embedded demo and what the docs make from it)
  runs, in the order the page shows them, in one folder per page, with small step counts
  substituted where a flag allows (`SUBSTITUTE`). Commands that need files a user brings
  (official checkpoints, ImageNet, a VAE folder) are recognised by `EXTERNAL` and only parsed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# a command mentioning any of these needs data or weights a user brings: parsed, not run
EXTERNAL = ("/models/", "imagenet", "SiT-XL-2", "DiT-XL-2", "VIRTUAL_", ".pth", "latents/in256", "runs/xl2", "ref.npz",
            "samples/xl2", "my-custom-size.pt", "$", "torchrun", "runs/s2", "--model SiT-", "--vae", "~/", "/data/",
            "--device cuda", "--compile", "--latents", "--data ", "weights/", "runs/mnist", "mnist_5k", "<", "...")
# flag -> small value, so the docs' commands run in seconds
SUBSTITUTE = {"--steps": "12", "--num-samples": "8", "--num-steps": "4", "--quality-samples-per-class": "2",
              "--nfe": "2,4", "--sample-steps": "4", "--samples-per-class": "2", "--batch": "32",
              "--num-points": "64", "--ckpt-every": "6", "--phema-every": "4"}
ADDED = {"train": ["--no-quality", "--samples-per-class", "2", "--sample-steps", "4", "--steps", "12",
                   "--batch", "32", "--log-every", "4", "--no-progress"]}


def _commands_in(text: str) -> list[str]:
    """`sit ...` / `python -m sit.cli ...` / `torchrun ... -m sit.cli ...` lines in code blocks,
    backslash continuations joined, trailing comments dropped."""
    out, block, lines = [], False, text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            block = not block
            i += 1
            continue
        code = block or line.startswith("    ")
        s = line.strip()
        while code and s.endswith("\\") and i + 1 < len(lines):
            i += 1
            s = s[:-1] + " " + lines[i].strip()
        i += 1
        if not code:
            continue
        s = re.sub(r"\s+#.*$", "", s)
        for seg in s.split("&&"):
            seg = re.sub(r"^(\$ |time )", "", seg.strip())
            if re.match(r"^(sit |python3? -m sit\.cli |torchrun .* -m sit\.cli )", seg):
                out.append(seg)
    return out


def _argv(cmd: str) -> list[str]:
    toks = shlex.split(cmd.replace("$CK", "ckpt_dir"))
    i = toks.index("sit.cli") + 1 if "sit.cli" in toks else 1
    return toks[i:]


def doc_commands() -> list[tuple[str, str]]:
    found = [(p.name, c) for p in PAGES for c in _commands_in(p.read_text())]
    from sit.cli import build_parser

    for name, sp in build_parser()._sit_subparsers.items():
        found += [(f"sit {name} --help", c) for c in _commands_in("```\n" + (sp.description or "") + "\n```")]
    return found


ALL = doc_commands()


def test_docs_hold_commands():
    assert len(ALL) > 20 and any(p == "README.md" for p, _ in ALL)


@pytest.mark.parametrize("page,cmd", ALL, ids=[f"{p}:{c[:60]}" for p, c in ALL])
def test_command_parses(page, cmd, capsys):
    from sit.cli import build_parser

    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(_argv(cmd))
    except SystemExit:
        pytest.fail(f"{page}: `{cmd}` does not parse: {capsys.readouterr().err.strip()}")
    assert not extras, f"{page}: `{cmd}`: unknown arguments {extras}"
    assert getattr(args, "func", None), f"{page}: `{cmd}` names no subcommand"


# commands that are parsed here and run end to end by their own tests at a tiny scale: even two cells
# of `sit study` with 4 steps take minutes (L_t tables, path lengths, NFE curves), see tests/test_study.py
RUN_ELSEWHERE = ("sit study",)


def runnable(cmd: str) -> bool:
    return not any(m in cmd for m in EXTERNAL + RUN_ELSEWHERE)


def small(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, tok in enumerate(out[:-1]):
        if tok in SUBSTITUTE and not out[i + 1].startswith("-"):
            out[i + 1] = SUBSTITUTE[tok]
    if out[0] in ADDED:
        extra = ADDED[out[0]]
        if "--resume" in out:  # a resumed run keeps its batch
            extra = [e for i, e in enumerate(extra) if "--batch" not in extra[max(0, i - 1): i + 1]]
        j = 0
        while j < len(extra):
            flag = extra[j]
            has_value = j + 1 < len(extra) and not extra[j + 1].startswith("-")
            if flag not in out:
                out += extra[j: j + 2] if has_value else [flag]
            j += 2 if has_value else 1
    return out


PAGES_TO_RUN = sorted({p for p, c in ALL if runnable(c)})


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_TO_RUN)
def test_page_commands_run(page, tmp_path):
    """The page's runnable commands, in order, in one folder (a demo run trained first, as a
    reader who followed the README has one)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), SIT_THREADS="1")
    cmds = [c for p, c in ALL if p == page and runnable(c)]
    if not any(_argv(c)[0] == "train" and "runs/demo" in c for c in cmds):
        cmds = ["sit train --out runs/demo"] + cmds
    for cmd in cmds:
        argv = small(_argv(cmd))
        r = subprocess.run([sys.executable, "-m", "sit.cli", *argv], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, f"{page}: `{cmd}` (run as {' '.join(argv)}) failed:\n{r.stderr[-2000:]}"


def test_guarantees_name_real_tests():
    """docs/guarantees.md cites the tests that hold each promise: every cited test must exist."""
    text = (ROOT / "docs" / "guarantees.md").read_text()
    cited = set(re.findall(r"\b(test_\w+)", text))
    defined = set()
    for f in (ROOT / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", f.read_text(), flags=re.M))
    missing = sorted(c for c in cited if c not in defined and not (ROOT / "tests" / f"{c}.py").exists())
    assert len(cited) > 20 and not missing, missing
