"""Checkpoints in and out: official SiT/DiT ``.pt`` files, sit safetensors + JSON, export.

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

import argparse
import contextlib
import json
import math
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sit.config import MODEL_PRESETS, ConfigError, ModelConfig, from_dict, to_dict
from sit.io import atomic_path, write_text_atomic
from sit.models.modern import swiglu_hidden
from sit.models.sit import SiT

KINDS = ("sit", "dit")
PREFER = ("ema", "model")
SIT_DEFAULT_META = {"path": "linear", "prediction": "velocity", "time_input": "continuous"}
DIT_META = {"path": "ddpm", "prediction": "noise", "time_input": "discrete"}

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
# safe reading
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# configs from shapes
# ------------------------------------------------------------------------------------------------
def preset_name(config: ModelConfig) -> str | None:
    """'SiT-XL/2' when (depth, hidden, heads, patch, mlp_ratio) match a paper preset, else None."""
    for name, p in MODEL_PRESETS.items():
        if (p.depth, p.hidden_size, p.num_heads, p.patch_size, p.mlp_ratio) == (
            config.depth, config.hidden_size, config.num_heads, config.patch_size, config.mlp_ratio,
        ):
            return name
    return None


def infer_config(state_dict: dict[str, Tensor], args: dict | None = None, num_heads: int | None = None) -> ModelConfig:
    """ModelConfig from state_dict shapes (and official train.py args when given).

    Shapes give hidden size, in-channels, patch, input size (pos_embed), depth, MLP ratio,
    learn_sigma (output = 2 * in-channels) and the class table size. Not in the shapes: the
    number of heads (``num_heads`` when given, else the paper preset with the same depth and width,
    or args.model) and whether the table has a null row (assumed yes, dropout 0.1, as officially).
    """
    needed = ("x_embedder.proj.weight", "pos_embed", "final_layer.linear.weight", "y_embedder.embedding_table.weight")
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise ValueError(f"not a SiT/DiT state_dict: missing key(s) {missing}")
    D, C, p, _ = state_dict["x_embedder.proj.weight"].shape
    T = state_dict["pos_embed"].shape[1]
    grid = math.isqrt(T)
    if grid * grid != T:
        raise ValueError(f"pos_embed has {T} tokens, not a square grid")
    depth = 1 + max((int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    swiglu = "blocks.0.mlp.w12.weight" in state_dict  # the modern block's keys (sit.models.modern; RoPE has none)
    if swiglu:  # H = int(2/3 * D * ratio): the ratio to a quarter
        mlp_hidden = round(1.5 * state_dict["blocks.0.mlp.w12.weight"].shape[0] / 2 / D * 4) / 4 * D
    else:
        mlp_hidden = state_dict["blocks.0.mlp.fc1.weight"].shape[0] if depth else int(4 * D)
    out = state_dict["final_layer.linear.weight"].shape[0] // (p * p)
    if out not in (C, 2 * C):
        raise ValueError(f"final_layer.linear.weight has {out * p * p} rows; expected p*p*C or p*p*2C for C={C}, p={p}")
    rows = state_dict["y_embedder.embedding_table.weight"].shape[0]
    args = args or {}
    heads = None
    if num_heads is not None:
        if int(num_heads) < 1 or D % int(num_heads):
            raise ValueError(f"num_heads must be a positive divisor of the hidden size {D} (got {num_heads})")
        heads = int(num_heads)
    recorded = args.get("num_heads") if args else None  # written by sit's export_official (official_args)
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        if heads is not None and heads != recorded:
            raise ConfigError("", "num_heads", f"{heads} contradicts it: the checkpoint records num_heads={recorded}")
        heads = recorded
    model_name = args.get("model")
    if heads is None and isinstance(model_name, str):
        key = model_name.replace("DiT-", "SiT-")
        if key in MODEL_PRESETS and MODEL_PRESETS[key].hidden_size == D:
            heads = MODEL_PRESETS[key].num_heads
    if heads is None:
        for pr in MODEL_PRESETS.values():
            if (pr.depth, pr.hidden_size) == (depth, D):
                heads = pr.num_heads
                break
    if heads is None:
        raise ConfigError("", "num_heads",
            f"cannot be inferred for depth {depth}, hidden size {D} (not a paper preset; the weights' shapes "
            "do not depend on it): give it (or config=ModelConfig(...))"
        )
    num_classes = int(args.get("num_classes", rows - 1))
    if num_classes == rows:
        dropout = 0.0
    elif num_classes == rows - 1:
        dropout = 0.1
    else:
        raise ValueError(f"y_embedder.embedding_table.weight has {rows} rows but args.num_classes = {num_classes}")
    return ModelConfig(
        input_size=grid * p,
        patch_size=p,
        in_channels=C,
        hidden_size=D,
        depth=depth,
        num_heads=heads,
        mlp_ratio=mlp_hidden / D,
        class_dropout_prob=dropout,
        num_classes=num_classes,
        learn_sigma=out == 2 * C,
        swiglu=swiglu, rmsnorm="blocks.0.norm1.weight" in state_dict, qk_norm="blocks.0.attn.q_norm.weight" in state_dict,
    )


def check_config_against_weights(config: ModelConfig, state_dict: dict[str, Tensor], source: str) -> None:
    """ValueError naming the first size of ``config`` (a saved or given config: depth, hidden size,
    patch, input size, channels, MLP width) that the weights' shapes contradict, and
    any weight that is not floating point; checked before the network is built, so a corrupt or
    hostile config cannot allocate without end."""
    for k, v in state_dict.items():
        if not v.is_floating_point():
            raise ValueError(f"{source}: weight {k!r} has dtype {str(v.dtype).replace('torch.', '')}; "
                             "SiT weights are floating point")
    shapes = infer_config(state_dict, num_heads=config.num_heads)
    mlp_key = "blocks.0.mlp.w12.weight" if config.swiglu else "blocks.0.mlp.fc1.weight"
    mlp = int(state_dict[mlp_key].shape[0]) if shapes.depth and mlp_key in state_dict else None
    checks = [("depth", config.depth, shapes.depth), ("hidden_size", config.hidden_size, shapes.hidden_size),
              ("patch_size", config.patch_size, shapes.patch_size), ("input_size", config.input_size, shapes.input_size),
              ("in_channels", config.in_channels, shapes.in_channels)]  # the sizes that scale the build
    if mlp is not None:
        width = 2 * swiglu_hidden(config.hidden_size, config.mlp_ratio) if config.swiglu else int(config.hidden_size * config.mlp_ratio)
        checks.append(("MLP width (hidden_size * mlp_ratio)", width, mlp))
    for name, said, found in checks:
        if name == "depth" and said != found:
            gap = (f"missing keys blocks.{found}.* to blocks.{said - 1}.*" if said > found
                   else f"unexpected keys blocks.{said}.* to blocks.{found - 1}.*")
            raise ValueError(f"{source}: its config says depth={said} but the weights hold {found} blocks ({gap})")
        if said != found:
            raise ValueError(f"{source}: its config says {name}={said} but the weights hold {name}={found}")


def check_state_dict(net: nn.Module, state_dict: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Raise ValueError naming missing/unexpected keys, or the first key whose shapes differ."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match the model: missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    for k, v in own.items():
        if tuple(state_dict[k].shape) != tuple(v.shape):
            raise ValueError(
                f"{source}: shape mismatch for key {k!r}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
            )


# ------------------------------------------------------------------------------------------------
# reading any supported checkpoint into (state_dict, meta)
# ------------------------------------------------------------------------------------------------
def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = repr(v)
    return out


def _step_from_name(name: str) -> int | None:
    """Training step from names like '0400000.pt', 'ckpt-0001000', 'step_500'; else None."""
    m = re.fullmatch(r"(?:[A-Za-z]+[-_]?)?(\d+)", Path(name).stem if Path(name).suffix in (".pt", ".safetensors", ".pth") else Path(name).name)
    return int(m.group(1)) if m else None


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
    from sit.models.repa_format import refuse_unknown_convention

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
    step = _step_from_name(path.name)
    if step is None and isinstance(args.get("step"), int):
        step = args["step"]  # written by export_official (official files name the step instead)
    meta.update(step=step if step is not None else 0, kind=kind, source=f"official {source}", weights=source)
    if args:
        meta["official_args"] = _jsonable(args)
    return dict(sd), meta


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


def _plain_state_dict(net: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in net.state_dict().items()}


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


def config_summary(config: ModelConfig) -> dict:
    from sit.config import to_dict

    return {"preset": preset_name(config), **to_dict(config)}
