"""What a folder is: a run, sample, checkpoint, post-hoc EMA or diffusers export folder, never two at once.

Owns: reading a folder's kind (the explicit ``"kind"`` field of its ``manifest.json`` first, then
the files only one kind writes), and the one-line refusals of every cross-use: `sit sample --out`
into a run or checkpoint folder, `sit train --out` into a sample or checkpoint folder, a sample
folder given as ``--ckpt`` / ``--resume``, and any output inside a checkpoint folder (a checkpoint
is only ever written by the store, and pruning it would delete what was put beside it).

The kinds and their marks, explicit one first:

- ``samples``: ``manifest.json`` with ``"kind": "sample-set"`` (sit >= 0.1 issue 22), or an older
  one holding ``"settings"``; without a manifest, ``samples.npz`` / ``parts/``.
- ``checkpoint``: ``manifest.json`` with ``"kind": "checkpoint"`` or an older one holding
  ``"files"``; ``state.json``; or ``config.json`` beside ``.safetensors`` / ``.pt`` weights (an export).
- ``run``: ``run_config.json``, ``metrics.jsonl`` or ``checkpoints/``.
- ``posthoc-ema``: ``manifest.json`` with ``"kind": "posthoc-ema"`` (`sit ema --out`): read like a
  checkpoint (verified against its manifest), written only by `sit ema`, nothing written inside it.
- ``export``: a diffusers folder: ``sit_diffusers.json`` (`sit convert RUN --to diffusers OUT`) or
  ``model_index.json`` (any diffusers pipeline folder, e.g. the official DiT's). It is read as a
  checkpoint (wherever a checkpoint folder is accepted as input) and written only by `sit convert`,
  never inside a run or checkpoint folder (`require_standalone`).

Must not import: anything of ``sit`` but ``sit.io`` and ``sit.config`` (stdlib only: the refusals name
the field or argument that gave the folder, never a flag). The store, `sit.train` and `sit.generate` use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sit.config import field_error

PathLike = str | os.PathLike

SAMPLES, CHECKPOINT, RUN, EMA, EXPORT = "samples", "checkpoint", "run", "posthoc-ema", "export"
SAMPLE_SET_KIND = "sample-set"  # the "kind" field of a sample folder's manifest.json
CHECKPOINT_KIND = "checkpoint"  # the "kind" field of a training checkpoint's manifest.json
EMA_KIND = "posthoc-ema"        # the "kind" field of the manifest.json `sit ema --out` writes
NAMES = {SAMPLES: "a sample folder", CHECKPOINT: "a checkpoint folder", RUN: "a run folder",
         EMA: "a post-hoc EMA folder", EXPORT: "a diffusers export folder"}
READABLE = (RUN, CHECKPOINT, EMA)  # the kinds a checkpoint reader (--ckpt) takes
EXPORT_MARKS = ("sit_diffusers.json", "model_index.json")  # sit's export; any diffusers pipeline folder
_WEIGHTS = (".safetensors", ".pt", ".pth", ".bin")


def _manifest(folder: Path) -> dict | None:
    try:
        d = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def marks(folder: PathLike) -> dict[str, list[str]]:
    """{kind: [the files that show it]} for every kind ``folder`` shows (empty when none; more than
    one key when a folder was mixed by an older sit)."""
    folder = Path(folder)
    found: dict[str, list[str]] = {}
    if not folder.is_dir():
        return found

    def add(kind: str, what: str) -> None:
        found.setdefault(kind, []).append(what)

    m = _manifest(folder)
    if m is not None:
        kind = m.get("kind")
        if kind == SAMPLE_SET_KIND or (kind is None and "settings" in m):
            add(SAMPLES, "manifest.json of a sample set")
        elif kind == CHECKPOINT_KIND or (kind is None and "files" in m):
            add(CHECKPOINT, "manifest.json of a checkpoint")
        elif kind == EMA_KIND:
            add(EMA, "manifest.json of a post-hoc EMA")
    if (folder / "state.json").is_file():
        add(CHECKPOINT, "state.json")
    if EMA not in found and (folder / "config.json").is_file() and any(p.suffix in _WEIGHTS for p in folder.iterdir() if p.is_file()):
        add(CHECKPOINT, "config.json + weights")
    for name in ("run_config.json", "metrics.jsonl", "checkpoints"):
        if (folder / name).exists():
            add(RUN, name + ("/" if name == "checkpoints" else ""))
    for name in EXPORT_MARKS:
        if (folder / name).is_file():
            add(EXPORT, name)
    if SAMPLES not in found:
        for name in ("samples.npz", "parts"):
            if (folder / name).exists():
                add(SAMPLES, name + ("/" if (folder / name).is_dir() else ""))
    return found


def kind_of(folder: PathLike) -> str | None:
    """The kind of ``folder`` (None for a missing or empty-of-marks folder); a checkpoint mark wins
    over the others (its manifest is read first by every reader)."""
    found = marks(folder)
    for kind in (CHECKPOINT, EMA, EXPORT, RUN, SAMPLES):
        if kind in found:
            return kind
    return None


def checkpoint_above(path: PathLike) -> Path | None:
    """The checkpoint (or post-hoc EMA) folder ``path`` is (or lies inside), or ``RUN/checkpoints``
    itself; else None."""
    p = Path(os.path.abspath(path))
    for q in (p, *p.parents):
        found = marks(q)
        shown = found.get(CHECKPOINT, []) + found.get(EMA, [])
        # the folder itself by any mark; a parent by a training checkpoint's own files only (a
        # config.json beside a .pt in a home folder does not make everything below it a checkpoint)
        if shown and (q == p or any(w != "config.json + weights" for w in shown)):
            return q
        if q.name == "checkpoints" and RUN in marks(q.parent):
            return q
    return None


def _describe(folder: Path, found: dict[str, list[str]]) -> str:
    return "; ".join(f"{NAMES[k]} ({', '.join(v)})" for k, v in found.items())


def require_output(folder: PathLike, kind: str, field: str = "out") -> None:
    """Refuse, in one line, writing a folder of ``kind`` at ``folder`` when it is (or is inside) a
    checkpoint folder, or already shows another kind. A missing folder, an empty one, or one of
    the same kind passes (the caller then applies its own rules for an existing one). ``field``
    names what gave the folder (``out``, ``TrainConfig.out``); `sit.commands` writes it as a flag."""
    folder = Path(folder)
    who = "{" + (field if "." in field else "." + field) + "}"
    require_reachable(folder, field)
    if folder.exists() and not folder.is_dir():
        raise field_error(NotADirectoryError, f"{who} {_q(folder)} is a file, not a folder")
    ck = checkpoint_above(folder)
    if ck is not None:
        raise field_error(ValueError,
            f"{who} {_q(folder)} is inside the checkpoint folder {_q(ck)}; sit never writes into a "
            f"checkpoint (pruning old checkpoints would delete it): choose a folder outside it"
        )
    found = marks(folder)
    other = {k: v for k, v in found.items() if k != kind}
    if other:
        raise field_error(ValueError,
            f"{who} {_q(folder)} is {_describe(folder, other)}, not {NAMES[kind]}; a folder holds one "
            f"kind: choose a new folder"
        )


def require_standalone(folder: PathLike, kind: str, what: str) -> None:
    """`require_output`, and refuse ``folder`` inside a run folder or a folder of ``kind`` too: an
    export written into a run would be taken for part of it (and removed by ``--overwrite``).
    ``what`` names the argument in the message as the user typed it (e.g. ``OUT``)."""
    folder = Path(folder)
    ck = checkpoint_above(folder)
    if ck is not None:
        raise ValueError(f"{what} {_q(folder)} is inside the checkpoint folder {_q(ck)}; sit never writes into a "
                         f"checkpoint (pruning old checkpoints would delete it): choose a folder outside it")
    for q in Path(os.path.abspath(folder)).parents:
        shown = {k: v for k, v in marks(q).items() if k in (RUN, kind)}
        if shown:
            raise ValueError(f"{what} {_q(folder)} is inside {_q(q)}, {_describe(q, shown)}; a folder holds one "
                             f"kind: choose a folder outside it")
    found = {k: v for k, v in marks(folder).items() if k != kind}
    if found:
        raise ValueError(f"{what} {_q(folder)} is {_describe(folder, found)}, not {NAMES[kind]}; choose a new folder")


def require_reachable(path: PathLike, field: str = "out") -> None:
    """Refuse, in one line naming ``path`` as given, an output path the OS cannot reach: a symbolic
    link in a loop (here or above it) or one to a target that does not exist (which ``mkdir``
    would report as "File exists", or name a temporary file of the write)."""
    import errno
    import os

    path = Path(path)
    who = "{" + (field if "." in field else "." + field) + "}"
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise field_error(NotADirectoryError, f"{who} {_q(path)} cannot be reached: a symbolic link on the way "
                              "points back to itself (a loop); give a real folder") from None
        if path.is_symlink():
            raise field_error(NotADirectoryError, f"{who} {_q(path)} is a symbolic link to {os.readlink(path)!r}, "
                              "which does not exist; create the target or give a real folder") from None


def _q(path: Path) -> str:
    return repr(str(path))


def require_input(path: PathLike, kinds: tuple[str, ...], field: str) -> None:
    """Refuse, in one line, reading ``path`` as one of ``kinds`` when it is a folder of another kind only
    (a sample folder given as the checkpoint to sample or resume from); ``field`` as in `require_output`."""
    path = Path(path)
    if not path.is_dir():
        return
    found = marks(path)
    if CHECKPOINT in kinds:  # an export is read wherever a checkpoint is (`sit.checkpoints.load`)
        kinds = (*kinds, EXPORT)
    if found and not any(k in found for k in kinds):
        who = "{" + (field if "." in field else "." + field) + "}"
        hint = ""
        if SAMPLES in found:
            m = _manifest(path) or {}
            src = m.get("checkpoint")
            hint = f"; its samples came from {src!r}" if isinstance(src, str) else ""
        want = " or ".join(NAMES[k] for k in kinds)
        raise field_error(ValueError, f"{who} {_q(path)} is {_describe(path, found)}, not {want}{hint}")
