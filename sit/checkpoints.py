"""The one checkpoint store: list, verify, resolve and read checkpoints and run folders.

Owns: what a path given to any reader stands for (a run folder = its newest checkpoint that
verifies; a checkpoint folder; an official ``.pt``; a sit ``.safetensors``), the verification of
training checkpoints (sha256 of every file against the manifest written last), the fall-back to
the previous valid checkpoint with a message naming the refused one and the one used, the typed
`RunMeta` every reader gets, and a checkpoint's identity (its weights and config, not files added
beside it later, such as ``lt_table.json``).

Every reader (`sit train --resume`, sample, convert, info, eval, lt, likelihood, pathlength,
sweep, study) goes through `resolve` / `load`, so all get the same checks.

Must not import: ``sit.train``, ``sit.generate``, ``sit.evaluate``, ``sit.commands``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from sit.config import ModelConfig, from_dict, to_dict

PathLike = str | os.PathLike
Log = Callable[[str], None]


class CheckpointError(RuntimeError):
    """A checkpoint that is incomplete, truncated, corrupt or inconsistent."""


@dataclasses.dataclass(frozen=True)
class RunMeta:
    """What a loaded checkpoint is: the typed form of its config.json / official args.

    ``path`` is the interpolant ("linear", "gvp", "vp"; "ddpm" for DiT's discrete models),
    ``prediction`` what the network outputs ("velocity", "score", "noise"), ``time_input``
    "continuous" (SiT, tau = 1 - t) or "discrete" (DiT's integer step). ``source`` is the concrete
    checkpoint read; ``weights`` which weights were taken ("ema", "model", or "state_dict" for a
    plain official file)."""

    model: ModelConfig
    path: str = "linear"
    prediction: str = "velocity"
    time_input: str = "continuous"
    loss_weight: str | None = None
    step: int = 0
    weights: str = "ema"
    kind: str = "sit"                       # "sit" | "dit" (how an official file was read)
    source: str = ""                        # the concrete checkpoint file or folder
    train: Mapping[str, Any] | None = None  # the TrainConfig dict of a sit run
    data: Mapping[str, Any] | None = None   # the data description of a sit run
    loss_table: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # other saved keys

    @property
    def discrete(self) -> bool:
        return self.time_input == "discrete"

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any], source: PathLike = "") -> "RunMeta":
        """From the meta dict of `sit.models.checkpoint.read_checkpoint` / a config.json."""
        m = dict(meta)
        model = m.pop("model")
        model = model if isinstance(model, ModelConfig) else from_dict(ModelConfig, model)
        known = {f.name for f in dataclasses.fields(cls)} - {"model", "extra", "source"}
        kw = {k: m.pop(k) for k in list(m) if k in known}
        m.pop("source", None)
        if kw.get("step") is None:
            kw["step"] = 0
        if kw.get("weights") is None:
            kw.pop("weights", None)
        return cls(model=model, source=str(source), extra=m, **kw)

    def to_dict(self) -> dict[str, Any]:
        """The config.json form (the inverse of `from_dict` up to ``source``)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "model", "source")}
        d["model"] = to_dict(self.model)
        d.update(self.extra)
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in d.items()}


def resolve(path: PathLike, *, log: Log | None = None) -> Path:
    """The concrete checkpoint ``path`` stands for: a run folder means its newest checkpoint that
    verifies (refused ones are named through ``log``); a checkpoint folder must verify; a file is
    itself. Raises FileNotFoundError / CheckpointError with one line naming the problem."""
    from sit._store_legacy import resolve_checkpoint

    return resolve_checkpoint(path)


def load(
    path: PathLike,
    *,
    weights: str = "ema",
    kind: str | None = None,
    num_heads: int | None = None,
    config: ModelConfig | None = None,
    log: Log | None = None,
):
    """(net (SiT, eval mode, float32, CPU), RunMeta) of the checkpoint ``path`` stands for
    (`resolve`), with ``weights`` "ema" or "model" where both exist. ``kind`` / ``num_heads`` /
    ``config`` override what official files cannot state (see `sit.models.checkpoint.load_model`)."""
    from sit.models.checkpoint import load_model

    ck = resolve(path, log=log)
    net, meta = load_model(ck, config=config, prefer=weights, kind=kind, num_heads=num_heads)
    return net, RunMeta.from_dict(meta, source=ck)


def identity(ckpt: PathLike) -> str:
    """sha256 naming a checkpoint by its weights and config only (files added beside it later, such
    as ``lt_table.json`` from `sit lt`, do not change it)."""
    from sit._store_legacy import file_sha256

    return file_sha256(resolve(ckpt))
