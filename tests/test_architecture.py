"""The import rules of docs/architecture.md, checked over every module of ``sit/``.

Every import statement counts (module level, inside functions, under ``TYPE_CHECKING``), and so does
``importlib.import_module("sit....")`` with a literal name. Three sources of rules, one checker:

- the layers (``LAYERS`` below): the math core imports no network and no program, the network
  no program that uses it, and nothing below the commands imports ``sit.commands`` or ``sit.cli``;
- the "must not import" column of docs/architecture.md's tables (parsed from the page);
- the "Must not import:" sentence of each module's docstring.

A rule reads "train, generate, ``sit.checkpoints``" (a bare word is a package of sit), "anything of
sit but ``sit.config``" or "evaluate except ``sit.evaluate.scorers``"; remarks in parentheses are
skipped. Importing the package ``sit`` itself (its version) is always allowed. A rule naming no
module of sit is an error (a rename leaves no stale rule behind). Also: no import circle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MATH_CORE = ("sit.config", "sit.field_errors", "sit.stored_form", "sit.bounds", "sit.config_rules", "sit.sampler_kinds",
             "sit.sampler_config", "sit.timegrid", "sit.paths", "sit.objectives", "sit.diffusion_coef",
             "sit.samplers", "sit.guidance", "sit.discrete", "sit.likelihood", "sit.lt", "sit.toy")
FRONT = ("sit.cli", "sit.commands")
# (who, rule): every module under ``who`` obeys ``rule`` (the grammar of the docstrings)
LAYERS = (
    (MATH_CORE, "anything of sit but " + " and ".join(MATH_CORE)),
    (("sit.models",), "train, generate, evaluate, study, checkpoints, commands, cli"),
    (("sit",), "commands, cli"),   # (sit.cli and sit.commands themselves are exempt: see `layer_rules`)
)


# ------------------------------------------------------------------------------------------------
# reading the code


def module_files(root: Path) -> dict[str, Path]:
    """module name -> file of every module of the package ``sit`` under ``root``."""
    out = {}
    for p in sorted((root / "sit").rglob("*.py")):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def imports_of(name: str, path: Path, modules) -> dict[str, int]:
    """The modules of sit that module ``name`` imports (every import statement, at any depth, and
    ``importlib.import_module`` / ``__import__`` of a literal name) -> the line of the first one."""
    tree = ast.parse(path.read_text(), str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        if target.split(".")[0] == "sit" and target != name:
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]) if node.level \
                else node.module
            base = base.rstrip(".")
            for a in node.names:
                add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base, node.lineno)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if fname in ("import_module", "__import__"):
                add(node.args[0].value, node.lineno)
    return found


def import_graph(root: Path) -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    modules = module_files(root)
    return modules, {m: imports_of(m, p, modules) for m, p in modules.items()}


# ------------------------------------------------------------------------------------------------
# the rules


def under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def parse_rule(text: str, modules) -> list[tuple[str, tuple[str, ...]]]:
    """A "must not import" text -> [(forbidden prefix, allowed prefixes)]. ValueError for a name
    that is not a module of sit."""
    text = text.replace("`", "")
    while re.search(r"\([^()]*\)", text):
        text = re.sub(r"\s*\([^()]*\)", "", text)
    text = re.split(r"\.(?:\s|$)", text.strip(), maxsplit=1)[0].strip()
    if text in ("", "—", "-"):
        return []

    def name(word: str) -> str:
        word = word.strip()
        n = word if word.split(".")[0] == "sit" else f"sit.{word}"
        if not re.fullmatch(r"sit(\.\w+)*", n) or not any(under(m, n) for m in modules):
            raise ValueError(f"{word!r} in the rule {text!r} names no module of sit")
        return n

    rules = []
    for item in re.split(r",\s*(?:and\s+)?", text):
        head, _, allowed = (re.split(r"\s+(but|except)\s+", item, maxsplit=1) + ["", ""])[:3]
        heads = ["sit"] if re.fullmatch(r"anything (?:else )?of sit", head.strip()) else \
            [name(h) for h in re.split(r"\s+and\s+", head)]
        keep = tuple(name(a) for a in re.split(r"\s+and\s+", allowed)) if allowed else ()
        rules += [(h, keep) for h in heads]
    return rules


def docstring_rule(path: Path) -> str | None:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    m = re.search(r"Must not import:(.*)", doc, re.S)
    return m.group(1) if m else None


def doc_rules(page: Path) -> list[tuple[tuple[str, ...], str]]:
    """(module prefixes, rule) of every row of a table with a "must not import" column."""
    out, col = [], None
    for line in page.read_text().splitlines():
        if not line.startswith("|"):
            col = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if col is None:
            col = cells.index("must not import") if "must not import" in cells else -1
            continue
        if col < 0 or set(line) <= set("|-: "):
            continue
        paths = re.findall(r"`(sit/[\w/]*(?:\.py)?)`", cells[0])
        who = tuple(p.removesuffix(".py").removesuffix("/").replace("/", ".") for p in paths)
        out.append((who, cells[col]))
    return out


def layer_rules() -> list[tuple[tuple[str, ...], str, str]]:
    return [(who, rule, "layers") for who, rule in LAYERS]


def violations(root: Path, rules: list[tuple[tuple[str, ...], str, str]]) -> list[str]:
    """One line per import that breaks a rule: 'module:line imports target (rule of SOURCE)'."""
    modules, graph = import_graph(root)
    rules = list(rules) + [((m,), r, "its docstring") for m, p in modules.items() if (r := docstring_rule(p))]
    bad = []
    for who, text, source in rules:
        parsed = parse_rule(text, modules)
        for m in modules:
            if not any(under(m, w) for w in who) or (source == "layers" and who == ("sit",)
                                                       and any(under(m, f) for f in FRONT)):
                continue
            for target, line in graph[m].items():
                if target == "sit" or under(target, m):
                    continue
                for forbidden, allowed in parsed:
                    if under(target, forbidden) and not any(under(target, a) for a in allowed):
                        bad.append(f"{modules[m].relative_to(root)}:{line} imports {target} "
                                   f"(rule of {source}: must not import {text.strip()[:80]!r})")
    return sorted(set(bad))


def circles(root: Path) -> list[list[str]]:
    """The import circles (strongly connected components of two modules or more)."""
    modules, graph = import_graph(root)
    edges = {m: [t for t in graph[m] if t in modules] for m in modules}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in modules:
        if v not in index:
            visit(v)
    return sorted(out)


# ------------------------------------------------------------------------------------------------
# the house


def test_every_module_keeps_the_must_not_import_rules():
    rules = layer_rules() + [(who, text, "docs/architecture.md") for who, text in doc_rules(ROOT / "docs/architecture.md")]
    assert len(rules) > 15   # the page's table was found and read
    assert violations(ROOT, rules) == []


def test_no_import_circle():
    assert circles(ROOT) == []


# ------------------------------------------------------------------------------------------------
# the checker catches what it should (a synthetic package)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.fixture
def toy(tmp_path):
    return _write(tmp_path, {
        "sit/__init__.py": "__version__ = '0'\n",
        "sit/config.py": '"""Records."""\n',
        "sit/paths.py": '"""Core."""\nfrom sit.config import x\n',
        "sit/models/__init__.py": "",
        "sit/models/sit.py": '"""Net."""\nimport sit\n',
        "sit/io.py": '"""Files.\n\nMust not import: anything of ``sit`` but ``sit.config`` (the record).\n"""\n'
                     "from sit.config import y\n",
        "sit/train/__init__.py": "",
        "sit/train/loop.py": '"""Loop.\n\nMust not import: sit.generate, ``sit.commands`` (the flags).\n"""\n',
        "sit/generate/__init__.py": "",
        "sit/commands/__init__.py": "",
        "sit/commands/sample.py": "from sit.generate import z\n",
    })


def test_the_checker_passes_a_clean_toy_and_fails_each_planted_violation(toy):
    layers = [(("sit.paths", "sit.config"), "anything of sit but sit.config and sit.paths", "layers"),
              (("sit.models",), "train, generate, commands", "layers")]
    assert violations(toy, layers) == [] and circles(toy) == []
    plants = {
        "sit/paths.py": ("def f():\n    from sit.models.sit import SiT\n", "sit/paths.py:4 imports sit.models.sit"),
        "sit/io.py": ("def g():\n    from sit import train\n", "sit/io.py:7 imports sit.train"),
        "sit/train/loop.py": ("import importlib\nimportlib.import_module('sit.commands.sample')\n",
                              "sit/train/loop.py:6 imports sit.commands.sample"),
        "sit/models/sit.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..train import loop\n",
                              "sit/models/sit.py:5 imports sit.train.loop"),
    }
    for rel, (code, line) in plants.items():
        before = (toy / rel).read_text()
        (toy / rel).write_text(before + code)
        found = violations(toy, layers)
        assert len(found) == 1 and found[0].startswith(line), (rel, found)
        (toy / rel).write_text(before)
    assert violations(toy, layers) == []


def test_the_checker_finds_a_circle_through_a_function_level_import(toy):
    (toy / "sit/generate/run.py").write_text("from sit.train import loop\n")
    (toy / "sit/train/loop.py").write_text("def f():\n    from sit.generate.run import g\n")
    assert circles(toy) == [["sit.generate.run", "sit.train.loop"]]


def test_a_rule_naming_no_module_is_refused(toy):
    with pytest.raises(ValueError, match="'trian' in the rule"):
        parse_rule("trian, commands.", module_files(toy))
    assert parse_rule("anything of ``sit`` but ``sit.config`` (the record). The store uses it.",
                      module_files(toy)) == [("sit", ("sit.config",))]
    assert parse_rule("train except ``sit.train.loop``, and commands", module_files(toy)) == [
        ("sit.train", ("sit.train.loop",)), ("sit.commands", ())]


def test_a_rule_of_the_architecture_page_is_read_and_kept(toy):
    page = toy / "arch.md"
    page.write_text("| module | owns | must not import |\n|---|---|---|\n"
                    "| `sit/train/` | the loop | generate, commands |\n| `sit/cli.py` + `sit/commands/` | flags | — |\n")
    rules = [(who, text, "page") for who, text in doc_rules(page)]
    assert [r[0] for r in rules] == [("sit.train",), ("sit.cli", "sit.commands")]
    assert violations(toy, rules) == []
    (toy / "sit/train/loop.py").write_text("def f():\n    from sit import generate\n")
    assert violations(toy, rules) == ["sit/train/loop.py:2 imports sit.generate (rule of page: must not import "
                                      "'generate, commands')"]
