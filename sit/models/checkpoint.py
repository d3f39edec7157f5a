"""Checkpoints in and out: official SiT/DiT ``.pt`` files, sit safetensors + JSON, export.

This module holds sit's safetensors format and the readers that dispatch on a path
(`read_checkpoint`, `load_model`); the official ``.pt`` format (meta, export) lives in
`sit.models.official_pt`, safe ``.pt`` reading in `sit.models.pt_file` and shape inference in
`sit.models.shapes`; every name moved there is re-exported here.

What ``load_model(path)`` accepts:
  * an official ``.pt``: the released SiT-XL-2-256x256.pt / DiT-XL-2-{256,512}.pt (a plain
    state_dict) or a checkpoint of the official train.py (a dict with model, ema, opt, args,
    where args is a pickled ``argparse.Namespace``);
  * a sit ``.safetensors`` with its ``.json`` beside it (``save_model``);
  * a training checkpoint directory (``ema.safetensors`` and/or ``model.safetensors`` plus a
    ``config.json`` whose "model" key is the ModelConfig dict);
  (a run directory, and verification, are the store's: ``sit.checkpoints.load`` / ``resolve``).

Every ``.pt`` is read with ``torch.load(weights_only=True)`` and an allow-list of exactly one
class, ``argparse.Namespace``; a pickle that would construct anything else (a callable such as
``os.system`` smuggled in through ``__reduce__``) is refused before it runs.

The meta dict travelling with a model: {"model": ModelConfig dict, "path": "linear" | "gvp" |
"vp" | "ddpm", "prediction": "velocity" | "score" | "noise" | "data", "time_input": "continuous" |
"discrete", "step": int, ...free extra keys}. Official SiT files are assumed Linear + velocity
(the released SiT-XL/2) unless their train.py args say otherwise; DiT files (name contains
"DiT", or train.py args without path_type) are discrete-time noise predictors with learned
variance, path "ddpm" (``sit.discrete``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from sit.config import ModelConfig, from_dict, to_dict
from sit.io import atomic_path, write_text_atomic
from sit.models.official_pt import (  # noqa: F401  re-exported: the official .pt format moved there
    DIT_META,
    KINDS,
    SIT_DEFAULT_META,
    _plain_state_dict,
    _read_official,
    export_official,
    official_args,
)
from sit.models.pt_file import _is_zip, _safe_globals_ctx, _unpickling_message, safe_torch_load  # noqa: F401
from sit.models.pt_file import jsonable as _jsonable  # (the names these had here)
from sit.models.pt_file import step_from_name as _step_from_name
from sit.models.shapes import (  # noqa: F401  re-exported: shape inference moved there
    check_config_against_weights,
    check_state_dict,
    config_summary,
    infer_config,
    preset_name,
)
from sit.models.sit import SiT

PREFER = ("ema", "model")

__all__ = [
    "safe_torch_load",
    "infer_config",
    "check_state_dict",
    "read_checkpoint",
    "load_model",
    "save_model",
    "export_official",
    "preset_name",
]


# ------------------------------------------------------------------------------------------------
# reading any supported checkpoint into (state_dict, meta)
# ------------------------------------------------------------------------------------------------
def load_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """``safetensors.torch.load_file`` with a one-line ValueError for an empty, truncated or
    non-safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{str(path)!r} is empty (0 bytes): not a safetensors file")
    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as e:
        raise ValueError(f"{str(path)!r} is not a valid safetensors file: corrupt or truncated ({e})") from None


def _read_safetensors(path: Path, meta_path: Path | None = None) -> tuple[dict[str, Tensor], dict]:
    from safetensors import safe_open

    sd = load_safetensors(path)
    meta_path = meta_path or path.with_suffix(".json")
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
    else:
        with safe_open(str(path), framework="pt") as f:
            embedded = (f.metadata() or {}).get("sit")
        if embedded is None:
            raise FileNotFoundError(f"no {meta_path.name!r} beside {str(path)!r} and no sit metadata inside it")
        meta = json.loads(embedded)
    return sd, meta


def read_checkpoint(
    path: str | os.PathLike, prefer: str = "ema", kind: str | None = None, log=None
) -> tuple[dict[str, Tensor], dict]:
    """(state_dict, meta) from any supported checkpoint (module docstring), without building a net.
    meta["model"] is filled only when the checkpoint states it (sit files); see ``infer_config``.
    This module only reads formats: ``path`` is a file or one checkpoint folder, read as it is.
    Which checkpoint a run folder stands for, and whether a checkpoint verifies, is the store's
    (`sit.checkpoints.resolve` / `sit.checkpoints.load`), which every reader goes through."""
    if prefer not in PREFER:
        raise ValueError(f"unknown prefer {prefer!r}; expected one of {list(PREFER)}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    if path.is_dir() and not (path / "config.json").is_file():
        if (path / "checkpoints").is_dir():
            raise FileNotFoundError(f"{str(path)!r} is a run folder: read it through sit.checkpoints.load (or "
                                    "resolve), which takes its newest checkpoint that verifies")
        raise FileNotFoundError(f"{str(path)!r} is neither a checkpoint directory (config.json + "
                                "ema/model.safetensors) nor a checkpoint file")
    if path.is_dir():
        if (path / "config.json").is_file():
            order = (prefer, "model" if prefer == "ema" else "ema")
            files = [path / f"{w}.safetensors" for w in order if (path / f"{w}.safetensors").is_file()]
            if not files:
                raise FileNotFoundError(f"{str(path)!r} has config.json but no ema.safetensors or model.safetensors")
            sd, meta = _read_safetensors(files[0], path / "config.json")
            meta = dict(meta)
            meta.setdefault("weights", files[0].stem)
            if "step" not in meta:
                step = _step_from_name(path.name)
                meta["step"] = step if step is not None else 0
            return sd, meta
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return _read_official(path, prefer, kind)
    raise ValueError(f"unknown checkpoint type {path.suffix!r} for {str(path)!r}; expected one of ['.pt', '.safetensors', a directory]")


def load_model(
    path: str | os.PathLike,
    config: ModelConfig | None = None,
    prefer: str = "ema",
    kind: str | None = None,
    num_heads: int | None = None,
    log=None,
) -> tuple[SiT, dict]:
    """Build and load a SiT from any supported checkpoint; returns (net in eval mode, meta).

    config: the ModelConfig to build (default: the saved one, else inferred from the shapes).
    prefer: "ema" or "model" weights where a checkpoint has both. kind: "sit" or "dit" to
    override the guess for official files. num_heads: for official files of a size that is not a
    paper preset (the shapes do not give it); a saved sit config that disagrees is an error.
    Shapes are checked key by key (a mismatch names the key and both shapes); weights keep their
    saved dtype cast to float32.
    """
    sd, meta = read_checkpoint(path, prefer, kind, log=log)
    if config is None:
        if "model" in meta and isinstance(meta["model"], dict):
            config = from_dict(ModelConfig, meta["model"])
            if num_heads is not None and int(num_heads) != config.num_heads:
                raise ValueError(f"{path}: its saved config has num_heads={config.num_heads}, not {num_heads}")
        else:
            config = infer_config(sd, meta.get("official_args"), num_heads)
    check_config_against_weights(config, sd, str(path))  # before building: a huge saved depth allocates nothing
    meta = dict(meta)
    meta["model"] = to_dict(config)
    with torch.device("meta"):
        net = SiT(config)
    check_state_dict(net, sd, source=str(path))
    net = net.to_empty(device="cpu").rebuild_buffers()
    net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=False)
    net.pos_embed.requires_grad_(False)
    return net.eval(), meta


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def _stem(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def save_model(net: SiT, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write ``path.safetensors`` (float32 weights) and ``path.json`` (meta). Returns the
    safetensors path. meta gets "model" (net.config), and defaults for path/prediction/
    time_input (linear/velocity/continuous) and step (0) where missing; extra keys are kept.
    The JSON is also embedded in the safetensors metadata so the file alone is loadable."""
    from safetensors.torch import save_file

    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    meta["model"] = to_dict(net.config)
    for k, v in SIT_DEFAULT_META.items():
        meta.setdefault(k, v)
    meta.setdefault("step", 0)
    text = json.dumps(_jsonable(meta), indent=2, sort_keys=True)
    st = stem.with_name(stem.name + ".safetensors")
    with atomic_path(st) as tmp:
        save_file(_plain_state_dict(net), str(tmp), metadata={"sit": text})
    write_text_atomic(stem.with_name(stem.name + ".json"), text + "\n")
    return st


