"""Names of a package imported when first used (PEP 562), so importing one light submodule (a
torch-free record, e.g. for ``--help``) does not import the package's heavy ones.

A package lists ``_EXPORTS = {name: (module, attribute)}`` and sets
``__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)``. Imports nothing of sit.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, tuple[str, str]]) -> tuple[Callable, Callable]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: a name of ``exports`` is imported from
    its module on first use and kept in the package (later uses are plain attribute reads)."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = exports[name]
        value = getattr(importlib.import_module(module), attr)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
