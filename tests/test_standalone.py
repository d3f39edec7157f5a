"""The repository stands alone (issue 22): docs, code and tests never point at files a user does not
have (a design folder, a shared reference folder), and the facts the tests need ship under tests/data."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"design/math\.md|shared/reference|shared/design|/work/shared|\.\./shared")


def test_no_file_points_outside_the_repository():
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "sit").rglob("*.py"),
             *(p for p in (ROOT / "tests").rglob("*.py") if p.name != "test_standalone.py")]
    bad = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files for m in OUTSIDE.finditer(p.read_text())]
    assert bad == []


def test_the_official_key_lists_ship_with_the_tests():
    for name in ("SiT-XL-2.tsv", "SiT-S-2.tsv"):
        rows = [line.split("\t") for line in (ROOT / "tests" / "data" / "sit_state_dict" / name).read_text().splitlines()]
        assert rows[0] == ["pos_embed", rows[0][1]] and all(len(r) == 2 for r in rows)


def test_the_network_layer_never_imports_the_store():
    """Issue 22: formats read and write files (sit.models.checkpoint); the store alone resolves."""
    import ast

    for p in (ROOT / "sit" / "models").glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) and node.module else [])
            assert not any(n.startswith("sit.checkpoints") for n in names), f"{p.name} imports {names}"
