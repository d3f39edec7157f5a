"""Reading a torch ``.pt`` file safely: ``torch.load(weights_only=True)`` with an allow-list of
exactly one class, ``argparse.Namespace`` (a pickle that would construct anything else is refused
before it runs, in one line), and two helpers every ``.pt`` reader shares: `jsonable` (a train.py
args dict made JSON-able) and `step_from_name` (the training step a file's name gives).

The lowest of the checkpoint formats: the official reader (`sit.models.official_pt`), REPA's
(`sit.models.repa_format`) and the store read ``.pt`` files through it.

Must not import: anything of sit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch


def _safe_globals_ctx():
    ctx = getattr(torch.serialization, "safe_globals", None)
    if ctx is not None:
        return ctx([argparse.Namespace])
    torch.serialization.add_safe_globals([argparse.Namespace])  # torch < 2.5
    return contextlib.nullcontext()


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` allowing tensors, containers, primitives and
    ``argparse.Namespace`` only; anything that could run code raises ValueError (nothing is run).
    An empty, truncated or non-torch file raises ValueError with one line saying so."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {str(path)!r}")
    if path.stat().st_size == 0:
        raise ValueError(f"{str(path)!r} is empty (0 bytes): not a torch checkpoint")
    try:
        with _safe_globals_ctx():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as e:
        raise ValueError(_unpickling_message(path, str(e))) from None
    except (EOFError, RuntimeError, OSError) as e:
        first = str(e).splitlines()[0].split(". ")[0] if str(e) else type(e).__name__
        raise ValueError(f"{str(path)!r} is not a readable torch checkpoint: corrupt or truncated ({first})") from None


def _unpickling_message(path: Path, text: str) -> str:
    """One line for a refused weights_only load: the disallowed global, or 'not a torch file'."""
    m = re.search(r"unsupported GLOBAL (\S+)", text, re.I) or re.search(r"Unsupported global: GLOBAL (\S+)", text, re.I)
    if m:
        return (
            f"refusing to load {str(path)!r}: it would construct {m.group(1).rstrip('.')}, a pickled Python object "
            "that could run code; sit only reads tensors, plain containers and argparse.Namespace. "
            "Re-save it with the code that wrote it as a plain state_dict or as safetensors."
        )
    m = re.search(r"(Unsupported operand \d+|invalid load key[^\n]*)", text, re.I)
    why = f" ({m.group(1).strip()})" if m else ""
    return f"{str(path)!r} is not a torch checkpoint or is corrupt: it does not unpickle{why}"


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = repr(v)
    return out


def step_from_name(name: str) -> int | None:
    """Training step from names like '0400000.pt', 'ckpt-0001000', 'step_500'; else None."""
    m = re.fullmatch(r"(?:[A-Za-z]+[-_]?)?(\d+)", Path(name).stem if Path(name).suffix in (".pt", ".safetensors", ".pth") else Path(name).name)
    return int(m.group(1)) if m else None
