"""REPA checkpoints (sihyun-yu/REPA) in: their SiT's convention mapped onto sit's, projector split off.

REPA's SiT (``models/sit.py`` there) has the official SiT's key names and blocks, and differs in:

- **time and sign**: its network takes the paper time t itself (t = 0 data, t = 1 noise; REPA's
  ``loss.py``: x_t = (1 - t) x + t eps on the linear path) and outputs the velocity dx/dt = eps - x;
  the official SiT (and sit) take tau = 1 - t and output dx/dtau = x - eps. So
  ``net_sit(x, tau, y) = -net_repa(x, 1 - tau, y)``. Both halves fold exactly into the weights:
  the sinusoidal features of 1 - tau are a fixed rotation of those of tau, per frequency f_k,
  [cos((1 - tau) f), sin((1 - tau) f)] = [[cos f, sin f], [sin f, -cos f]] [cos(tau f), sin(tau f)],
  which multiplies into ``t_embedder.mlp.0.weight``; the sign goes into ``final_layer.linear``.
  The result is an ordinary sit checkpoint (velocity prediction, continuous time) that every sit
  reader samples correctly, with no new convention anywhere else.
- **no learned sigma** (out_channels = in_channels); ``path_type`` "linear" (default) or "cosine"
  (alpha = cos(pi t / 2), sigma = sin(pi t / 2): sit's GVP); prediction "v" only.
- **projectors**: ``projectors.{i}.{0,2,4}`` (MLP hidden -> projector_dim -> z_dim, SiLU between)
  after block ``encoder_depth``; older files (``--legacy`` in REPA) name the blocks after the
  encoder ``decoder_blocks.{j}`` (= ``blocks.{encoder_depth + j}``).
- checkpoints of its ``train.py``: {"model", "ema", "opt", "args" (argparse.Namespace), "steps"};
  ``args`` names ``enc_type``, ``proj_coeff``, ``encoder_depth``, ``path_type``, ``prediction``.

`looks_like_repa` names the evidence a file is REPA's, so the official reader (`sit.models.official_pt`)
can refuse it instead of sampling it in the wrong convention. Network layer: torch only.

Must not import: ``sit.models.checkpoint``, ``sit.models.official_pt`` (they import this),
``sit.checkpoints``, ``sit.train``, ``sit.generate``, ``sit.commands``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch
from torch import Tensor

REPA_ARGS = ("enc_type", "proj_coeff", "encoder_depth", "projector_embed_dims")
PATHS = {"linear": "linear", "cosine": "gvp"}  # REPA path_type -> sit path
_PROJ = re.compile(r"projectors\.(\d+)\.(\d+)\.(weight|bias)$")


class RepaFormatError(ValueError):
    """A REPA checkpoint sit cannot map (one line)."""


def looks_like_repa(sd: Mapping[str, Any], args: Mapping[str, Any] | None) -> str | None:
    """What shows ``sd`` / ``args`` to be a REPA checkpoint (for a one-line refusal), else None."""
    keys = [k for k in sd if k.startswith(("projectors.", "decoder_blocks."))]
    if keys:
        return f"its state_dict has REPA's {keys[0].split('.')[0]} keys ({keys[0]!r})"
    named = [a for a in REPA_ARGS if args and a in args]
    if named:
        return f"its args name REPA's {', '.join(named)}"
    if args and str(args.get("prediction", "")).lower() == "v":
        return "its args say prediction 'v' (REPA's train.py)"
    return None


def refuse_unknown_convention(path, sd: Mapping[str, Any], args: Mapping[str, Any]) -> None:
    """One line for a ``.pt`` whose time / sign convention is not the official SiT's or DiT's: a
    REPA checkpoint (`sit.models.repa_format`), or train.py args naming a path / prediction sit
    does not know (read as the official SiT, it would sample in the wrong convention, silently)."""
    from sit.config import field_error

    why = looks_like_repa(sd, args)
    if why:
        raise field_error(ValueError, f"{str(path)!r} is a REPA checkpoint ({why}): its network takes t (0 = data) and "
                          f"predicts eps - x, not the official SiT's 1 - t and x - eps; convert it first: "
                          f"sit convert {{ConvertOptions.from_format}} repa {path} OUT.safetensors")
    path_type, pred = args.get("path_type"), args.get("prediction")
    if (path_type is not None and str(path_type).lower() not in ("linear", "gvp", "vp")) or (
            pred is not None and str(pred).lower() not in ("velocity", "score", "noise")):
        raise field_error(ValueError, f"{str(path)!r}: its args say path_type {path_type!r}, prediction {pred!r}, not the "
                          "official SiT's (Linear/GVP/VP; velocity/score/noise), so its convention is unknown; a REPA "
                          "checkpoint converts with sit convert {ConvertOptions.from_format} repa FILE OUT.safetensors")


def _time_reversal(w: Tensor, max_period: float = 10000.0) -> Tensor:
    """``w`` (hidden, 2 * half) acting on [cos(t f), sin(t f)] -> the matrix acting on the features
    of tau = 1 - t that gives the same result (module docstring); computed in float64."""
    half = w.shape[1] // 2
    if w.shape[1] != 2 * half:
        raise RepaFormatError(f"t_embedder.mlp.0.weight has {w.shape[1]} inputs; expected an even frequency size")
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).double()
    c, s = torch.cos(freqs), torch.sin(freqs)
    a, b = w[:, :half].double(), w[:, half:].double()
    return torch.cat([a * c + b * s, a * s - b * c], dim=1).to(w.dtype)


def _unlegacy(sd: dict[str, Tensor], encoder_depth: int | None) -> dict[str, Tensor]:
    if not any(k.startswith("decoder_blocks.") for k in sd):
        return sd
    enc = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    if encoder_depth is not None and int(encoder_depth) != enc:
        raise RepaFormatError(f"its args say encoder_depth {encoder_depth} but it holds {enc} encoder blocks")
    out = {}
    for k, v in sd.items():
        m = re.match(r"decoder_blocks\.(\d+)\.(.*)", k)
        out[f"blocks.{enc + int(m.group(1))}.{m.group(2)}" if m else k] = v
    return out


def from_repa(sd: Mapping[str, Tensor], args: Mapping[str, Any] | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any]]:
    """(sit state_dict, projector state_dict (REPA's key names), recipe) of a REPA SiT state_dict.

    The sit state_dict computes ``net_sit(x, tau, y) = -net_repa(x, 1 - tau, y)`` (module
    docstring); ``recipe`` holds sit's ``path`` / ``prediction`` and what REPA's args state."""
    args = dict(args or {})
    prediction = str(args.get("prediction", "v")).lower()
    if prediction != "v":
        raise RepaFormatError(f"its args say prediction {prediction!r}; REPA's SiT is converted from velocity ('v') models only")
    path_type = str(args.get("path_type", "linear")).lower()
    if path_type not in PATHS:
        raise RepaFormatError(f"its args say path_type {path_type!r}; expected one of {list(PATHS)}")
    sd = _unlegacy(dict(sd), args.get("encoder_depth"))
    proj = {k: v for k, v in sd.items() if k.startswith("projectors.")}
    bad = [k for k in proj if not _PROJ.match(k)]
    if bad:
        raise RepaFormatError(f"unexpected projector key {bad[0]!r} (REPA's are projectors.I.{{0,2,4}}.weight/bias)")
    net = {k: v for k, v in sd.items() if not k.startswith("projectors.")}
    qk = [k for k in net if ".attn.q_norm." in k or ".attn.k_norm." in k]
    if qk:
        raise RepaFormatError(f"it was trained with REPA's qk_norm option ({qk[0]!r}); its query/key norm is not mapped to sit's (ModelConfig.qk_norm) yet")
    for k in ("t_embedder.mlp.0.weight", "final_layer.linear.weight", "final_layer.linear.bias", "x_embedder.proj.weight"):
        if k not in net:
            raise RepaFormatError(f"not a REPA SiT state_dict: missing {k!r}")
    net["t_embedder.mlp.0.weight"] = _time_reversal(net["t_embedder.mlp.0.weight"])
    _, C, p, _ = net["x_embedder.proj.weight"].shape
    rows = net["final_layer.linear.weight"].shape[0]
    if rows not in (p * p * C, p * p * 2 * C):
        raise RepaFormatError(f"final_layer.linear has {rows} outputs, not patch^2 x {C} channels")
    out_c = rows // (p * p)
    sign = torch.ones(rows, dtype=torch.float64)  # rows are (patch row, patch col, channel), channel fastest
    sign[(torch.arange(rows) % out_c) < C] = -1.0   # the prediction's channels (a learned sigma keeps its sign)
    for k in ("final_layer.linear.weight", "final_layer.linear.bias"):
        v = net[k]
        net[k] = (v.double() * sign.view(-1, *([1] * (v.ndim - 1)))).to(v.dtype)
    depth = args.get("encoder_depth")
    recipe = {
        "format": "repa", "path": PATHS[path_type], "prediction": "velocity", "time_input": "continuous",
        "repa_path_type": path_type, "path_assumed": "path_type" not in args,
        "encoder_depth": depth, "enc_type": args.get("enc_type"), "proj_coeff": args.get("proj_coeff"),
        "projectors": sorted({int(_PROJ.match(k).group(1)) for k in proj}),
        "time_map": "tau = 1 - t folded into t_embedder.mlp.0.weight; output sign folded into final_layer.linear",
    }
    return net, proj, recipe


def read_repa(path, prefer: str = "ema", num_heads: int | None = None):
    """(SiT in eval mode with the mapped weights, projector state_dict, meta) of a REPA ``.pt``: a
    train.py checkpoint ({"model", "ema", "args", "steps", ...}; ``prefer`` picks the weights) or
    a plain state_dict (REPA's defaults assumed: linear path, 'v'). ``meta`` is sit's meta dict
    (path, prediction, time_input, step, weights) with the recipe under "repa"."""
    import argparse
    from pathlib import Path

    from sit.config import to_dict
    from sit.models.pt_file import jsonable, safe_torch_load, step_from_name
    from sit.models.shapes import check_state_dict, infer_config
    from sit.models.sit import SiT

    path = Path(path)
    obj = safe_torch_load(path)
    if not isinstance(obj, dict):
        raise RepaFormatError(f"{str(path)!r} holds a {type(obj).__name__}, not a REPA state_dict or train.py checkpoint")
    args: dict[str, Any] = {}
    if "model" in obj or "ema" in obj:
        which = next(k for k in (prefer, "model" if prefer == "ema" else "ema") if k in obj)
        sd = obj[which]
        a = obj.get("args")
        args = vars(a) if isinstance(a, argparse.Namespace) else dict(a) if isinstance(a, dict) else {}
    else:
        sd, which = obj, "state_dict"
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise RepaFormatError(f"{str(path)!r}: the {which!r} entry is not a state_dict of tensors")
    net_sd, proj, recipe = from_repa(sd, args)
    try:
        config = infer_config(net_sd, {k: args[k] for k in ("model", "num_classes") if k in args}, num_heads)
    except ValueError as e:
        raise RepaFormatError(f"{str(path)!r}: {e}") from None
    net = SiT(config)
    check_state_dict(net, net_sd, source=str(path))
    net.load_state_dict({k: v.float() for k, v in net_sd.items()}, strict=True)
    step = obj.get("steps") if isinstance(obj.get("steps"), int) else step_from_name(path.name)
    recipe = dict(recipe, args=jsonable(args) if args else None, weights=which)
    meta = {"model": to_dict(config), "path": recipe["path"], "prediction": "velocity", "time_input": "continuous",
            "step": step or 0, "weights": which, "repa": recipe}
    return net.eval(), proj, meta
