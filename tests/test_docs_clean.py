"""README.md, docs/*.md and every command's --help speak to a user: no paths into a developer's
scratch space (`/tmp/...`, a shared design folder), no tracker numbers ("issue 19"), no script a
user does not have, and the demo's numbers are the code's defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# what a user does not have: scratch paths, the developers' shared folder, issue numbers
_SHARED = "sha" + "red"  # in two parts, so that the repository-wide check (test_standalone) does not match this file
FORBIDDEN = re.compile(rf"/tmp/|\.\./{_SHARED}|/work/{_SHARED}|/work/wt/|\bissues? #?\d+|#\d{{2,}}\b|newcomer report"
                       r"|not committed", re.IGNORECASE)


def forbidden_in(text: str) -> list[str]:
    """Each forbidden reference in ``text`` with its line number."""
    return [f"line {i}: {m.group(0)!r}" for i, line in enumerate(text.splitlines(), 1)
            for m in FORBIDDEN.finditer(line)]


def test_forbidden_pattern_catches_what_it_should():
    shared = "../sha" + "red/design"  # in two parts, so that the repository-wide check does not match this file
    bad = f"see issue 19\nrun python /tmp/c1/bench/x.py\nfrom {shared}\nissue #13 and #29\nan ad-hoc script, not committed"
    assert len(forbidden_in(bad)) == 6
    assert forbidden_in("a checkpoint's step-0000600, tissue 3, 1,797 digits, runs/demo") == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_name_nothing_a_user_lacks(page):
    assert forbidden_in(page.read_text()) == []


def test_help_texts_name_nothing_a_user_lacks():
    from sit.cli import build_parser

    parser = build_parser()
    for name, sp in parser._sit_subparsers.items():
        assert forbidden_in(sp.format_help()) == [], name
    assert forbidden_in(parser.format_help()) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_scripts_the_pages_run_exist(page):
    """Every `python some/script.py` a page shows is in the repository."""
    scripts = set(re.findall(r"python3? (?:-\S+ )*((?:benchmarks|tests|scripts)/[\w/.-]+\.py)", page.read_text()))
    assert [s for s in sorted(scripts) if not (ROOT / s).is_file()] == []


def test_training_page_names_the_demo_checkpoint_of_the_defaults():
    from sit.train.recipes import DEMO_TRAIN

    text = (ROOT / "docs" / "training.md").read_text()
    assert f"checkpoints/step-{DEMO_TRAIN['steps']:07d}/" in text
