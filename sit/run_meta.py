"""`RunMeta`, the typed form of a checkpoint's config.json (or an official file's args),
``CONFIG_KEYS``, the config.json layout every sit version reads, `recorded_meta`, what a
converted official ``.pt`` records beyond the official format, and `CheckpointError`, the store's
one error (here, below the store, because `recorded_meta` raises it too).

Split from `sit.checkpoints` (which re-exports all of them): a record with no files, no torch and
no store logic, so the store keeps to writing, verifying, resolving and reading.

Must not import: anything of sit but ``sit.config``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from sit.config import ModelConfig, from_dict, to_dict

PathLike = str | os.PathLike


class CheckpointError(RuntimeError):
    """A checkpoint that is incomplete, truncated, corrupt or inconsistent.

    ``ckpt`` is the checkpoint refused, ``reason`` the problem alone (for fall-back messages)."""

    def __init__(self, ckpt: PathLike | str, reason: str):
        self.ckpt, self.reason = str(ckpt), reason
        super().__init__(f"checkpoint {str(ckpt)!r}: {reason}")


# the config.json layout (read by every earlier sit version)
CONFIG_KEYS = ("model", "path", "prediction", "loss_weight", "time_input", "train", "data", "sit_version", "step")


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
    def from_dict(cls, meta: Mapping[str, Any], source: str | os.PathLike = "") -> "RunMeta":
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

    def to_config(self) -> dict[str, Any]:
        """The config.json of a training run and checkpoint: keys model, path, prediction,
        loss_weight, time_input, train, data, sit_version, step (the layout every sit reader
        knows; reader-side fields such as ``weights`` / ``kind`` are not written)."""
        d = self.to_dict()
        return {k: d[k] for k in CONFIG_KEYS if k in d}


def recorded_meta(meta: dict, kind: str | None, ck: str | os.PathLike) -> dict:
    """The meta of an official ``.pt`` that `sit convert` wrote: its args record ``time_input``
    (`sit.models.checkpoint.official_args`), which the official format cannot state. A recorded
    "discrete" makes the model DiT's DDPM (path "ddpm", noise prediction), as its run was; a ``kind``
    given that contradicts the record is refused. Files without the record are read as before."""
    from sit.config import TIME_INPUTS, ConfigError

    args = meta.get("official_args")
    recorded = args.get("time_input") if isinstance(args, Mapping) else None
    if recorded is None:
        return meta
    if recorded not in TIME_INPUTS:
        raise CheckpointError(ck, f"its args record time_input {recorded!r}; expected one of {list(TIME_INPUTS)}")
    if kind is not None and (kind == "dit") != (recorded == "discrete"):
        raise ConfigError("", "kind", f"{kind} contradicts the checkpoint {str(ck)!r}, which records time_input "
                          f"{recorded!r} ({'dit' if recorded == 'discrete' else 'sit'})")
    if recorded == "discrete":
        return dict(meta, path="ddpm", prediction="noise", loss_weight=None, time_input="discrete")
    return dict(meta, time_input="continuous")
