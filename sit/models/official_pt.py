"""Official SiT / DiT ``.pt`` files: their meta (path, prediction, kind, step from the file name or
the train.py args), the refusal of a file in another convention (`sit.models.repa_format`), and
export in the official format (`export_official`, `official_args`). Reading a ``.pt`` safely is
`sit.models.pt_file`'s (re-exported here).

Split from `sit.models.checkpoint` (which re-exports every name here); the shapes these files
do not state are inferred by `sit.models.shapes`.

Must not import: ``sit.checkpoints`` (the store), ``sit.train``, ``sit.generate``, ``sit.commands``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sit.config import ConfigError, ModelConfig
from sit.io import atomic_path
from sit.models.pt_file import jsonable, safe_torch_load, step_from_name
from sit.models.repa_format import refuse_unknown_convention
from sit.models.shapes import preset_name
from sit.models.sit import SiT

KINDS = ("sit", "dit")
SIT_DEFAULT_META = {"path": "linear", "prediction": "velocity", "time_input": "continuous"}
DIT_META = {"path": "ddpm", "prediction": "noise", "time_input": "discrete"}


def _read_official(path: Path, prefer: str, kind: str | None) -> tuple[dict[str, Tensor], dict]:
    obj = safe_torch_load(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict or a train.py checkpoint")
    args: dict = {}
    if "model" in obj or "ema" in obj:  # official train.py checkpoint
        order = (prefer, "model" if prefer == "ema" else "ema")
        which = next(k for k in order if k in obj)
        sd = obj[which]
        a = obj.get("args")
        if isinstance(a, argparse.Namespace):
            args = vars(a)
        elif isinstance(a, dict):
            args = a
        source = which
    else:
        sd, source = obj, "state_dict"
    if not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{str(path)!r}: the {source!r} entry is not a state_dict of tensors")
    refuse_unknown_convention(path, sd, args)  # REPA's, or args naming an unknown path / prediction
    if kind is None:
        if args:
            kind = "sit" if "path_type" in args or "prediction" in args else "dit"
        else:
            kind = "dit" if "dit" in path.name.lower() else "sit"
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; expected one of {list(KINDS)}")
    meta: dict[str, Any] = dict(DIT_META if kind == "dit" else SIT_DEFAULT_META)
    if kind == "sit" and args:
        if args.get("path_type"):
            meta["path"] = str(args["path_type"]).lower()
        if args.get("prediction"):
            meta["prediction"] = str(args["prediction"]).lower()
    step = step_from_name(path.name)
    if step is None and isinstance(args.get("step"), int):
        step = args["step"]  # written by export_official (official files name the step instead)
    meta.update(step=step if step is not None else 0, kind=kind, source=f"official {source}", weights=source)
    if args:
        meta["official_args"] = jsonable(args)
    return dict(sd), meta


def _plain_state_dict(net: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in net.state_dict().items()}


def export_official(
    net: SiT,
    path: str | os.PathLike,
    args: dict | argparse.Namespace | None = None,
    ema: nn.Module | None = None,
    opt_state: dict | None = None,
) -> Path:
    """Write ``path`` (.pt) in the official format so the official code loads it.

    args=None: a plain state_dict (like the released SiT-XL-2-256x256.pt; official sample.py
    and ``model.load_state_dict`` read it). With args (dict or Namespace, e.g. {"model":
    "SiT-XL/2", "path_type": "Linear", "prediction": "velocity", ...}): a train.py-style dict
    {"model", "ema", "opt", "args"}; "ema" is ``ema``'s weights (default: net's), "opt" is
    ``opt_state`` or a fresh AdamW(lr=1e-4, weight_decay=0) state as official train.py builds,
    "args" a plain dict (official train.py stores a Namespace, which ``torch.load(weights_only=True)``
    refuses; every reader, sit's included, takes either).
    """
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"official checkpoints are .pt files (got {str(path)!r})")
    modern = [f for f in ModelConfig.MODERN_FIELDS if getattr(net.config, f, False)]
    if modern:
        raise ConfigError("ModelConfig", modern[0], f"is not part of the official SiT network (this model: "
                          f"{', '.join(modern)}); keep sit's safetensors format")
    pred = (args.get("prediction") if isinstance(args, dict) else getattr(args, "prediction", None)) if args else None
    if pred == "data":
        raise ConfigError("", "prediction", "'data' (x-prediction) is unknown to the official code; keep sit's "
                          "safetensors format")
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = _plain_state_dict(net)
    if args is None:
        with atomic_path(path) as tmp:
            torch.save(sd, tmp)
        return path
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if not isinstance(args, dict):
        raise TypeError(f"args must be a dict or argparse.Namespace (got {type(args).__name__})")
    # plain data: the official loader (download.find_model: torch.load, weights_only by default on
    # torch >= 2.6) cannot unpickle an argparse.Namespace, which official train.py itself stores
    args = {str(k): v for k, v in args.items()}
    bad = [k for k, v in args.items() if not isinstance(v, (str, int, float, bool, type(None)))]
    if bad:
        raise TypeError(f"args must hold plain values (str, int, float, bool, None); {bad} do not")
    if opt_state is None:
        opt_state = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0).state_dict()
    ckpt = {"model": sd, "ema": _plain_state_dict(ema) if ema is not None else sd, "opt": opt_state, "args": args}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def official_args(config: ModelConfig, meta=None) -> dict:
    """train.py-style args for ``export_official`` from a config and a `sit.checkpoints.RunMeta`
    (or its meta dict; missing fields take RunMeta's defaults): model name, image size = 8 x
    latent size for 4-channel latent models, the input size for pixel models (1 or 3 channels),
    classes, path_type, prediction, loss weight and the training step."""
    if meta is None or isinstance(meta, dict):  # a meta dict, with RunMeta's defaults where it is silent
        d = {"path": "linear", "prediction": "velocity", "loss_weight": None, "step": 0, "time_input": "continuous",
             **{k: v for k, v in (meta or {}).items() if v is not None or k == "loss_weight"}}
        meta = argparse.Namespace(**d)
    name = preset_name(config) or "custom"
    image_size = config.input_size * 8 if config.in_channels == 4 else config.input_size
    path_type = {"linear": "Linear", "gvp": "GVP", "vp": "VP"}.get(str(meta.path), "Linear")
    return {
        "model": name,
        "image_size": image_size,
        "num_classes": config.num_classes,
        "path_type": path_type,
        "prediction": str(meta.prediction),
        "loss_weight": meta.loss_weight,
        "step": int(meta.step or 0),
        # what the official args cannot state and the shapes do not give (read back by infer_config)
        "num_heads": config.num_heads,
        "time_input": str(meta.time_input),
    }
