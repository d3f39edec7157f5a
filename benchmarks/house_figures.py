"""Figures of the package's structure (docs/architecture.md, "The house, measured"): modules and
their lines, modules over 450 / 500 lines, functions over 60 lines, import circles (every import,
those inside functions and `importlib.import_module` of a literal name included) and the
hand-written `add_argument` calls of the commands. Reads the source with `ast`; runs nothing.

    python benchmarks/house_figures.py [--root DIR] [--json]
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``root/sit``."""
    out = {}
    for p in sorted((root / "sit").rglob("*.py")):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def imports(name: str, path: Path, tree: ast.AST, known: dict[str, Path]) -> set[str]:
    """The modules of sit that module ``name`` imports anywhere in its file."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()

    def add(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            f = node.func
            called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                add(node.args[0].value)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def figures(root: Path) -> dict:
    known = modules(root)
    lines, long_functions, graph, hand_flags = {}, [], {}, 0
    for name, path in known.items():
        text = path.read_text()
        tree = ast.parse(text)
        lines[name] = text.count("\n")
        graph[name] = imports(name, path, tree, known)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long_functions.append(f"{name}.{node.name} ({n} lines)")
            if name.startswith("sit.commands") and isinstance(node, ast.Call) \
                    and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
                hand_flags += 1
    return {
        "modules": len(known), "lines": sum(lines.values()),
        "modules_over_500_lines": sorted(m for m, n in lines.items() if n > 500),
        "modules_over_450_lines": sorted(m for m, n in lines.items() if n > 450),
        "functions_over_60_lines": sorted(long_functions),
        "import_circles": circles(graph),
        "hand_written_add_argument_calls_in_commands": hand_flags,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="repository root (default: this one)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    f = figures(args.root)
    if args.json:
        print(json.dumps(f, indent=1))
        return
    for key, value in f.items():
        shown = value if isinstance(value, int) else f"{len(value)}" + (f": {', '.join(map(str, value))}" if value else "")
        print(f"{key.replace('_', ' ')}: {shown}")


if __name__ == "__main__":
    main()
