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
import sys
from pathlib import Path

# the import reader and circle finder are the architecture test's (tests/test_architecture.py), so the
# figure and the test count the same imports
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_architecture import circles, module_files  # noqa: E402


def figures(root: Path) -> dict:
    known = module_files(root)
    lines, long_functions, hand_flags = {}, [], 0
    for name, path in known.items():
        text = path.read_text()
        tree = ast.parse(text)
        lines[name] = text.count("\n")
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
        "import_circles": circles(root),
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
