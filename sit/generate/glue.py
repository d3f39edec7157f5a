"""Model glue for `sit sample` / `sit sweep`: a loaded network + its `RunMeta` -> a latent sampler
``(x0, y, noise_fn) -> (x, info)`` through the one seam `sit.network_sampler.build_sampler` (which the
training previews, the study and the benchmarks use too), plus what those commands need around
it: the device, preparing the network (precision, compile), the one guide loader (`load_guide`:
a guidance record in, the record with its guide loaded out), typed sampler configs from loose
options (`sample_config`, `build_latent_sampler`) and the L_t table stored with a checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from sit.checkpoints import RunMeta
from sit.config import ConfigError
from sit.generate.spec import DISCRETE_METHODS, PRECISIONS, AnySampleConfig, DiscreteSampleConfig
from sit.guidance import GuidanceConfig
from sit.samplers import SampleConfig

LatentSampler = Callable[[Tensor, Tensor, Callable[[Tensor], Tensor]], "tuple[Tensor, dict]"]
LT_TABLE_NAME = "lt_table.json"


def default_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_num_classes(net) -> int | None:
    n = getattr(net, "num_classes", None)
    return int(n) if n is not None else None


def prepare_network(net, precision: str = "fp32", compile: bool = False, device=None):
    """A loaded network ready for sampling: on ``device``, eval mode, no gradients; with
    ``precision="bf16-weights"`` its weights (and so its activations) are cast to bfloat16 (the
    fastest eager path; larger rounding); ``compile`` then runs it through
    `sit.models.sit.compile_for_inference` (after the cast, since compiling freezes the weights)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    if device is not None:
        net = net.to(device)
    net = net.eval().requires_grad_(False)
    if precision == "bf16-weights":
        net = net.to(torch.bfloat16)
    if compile:
        from sit.models.sit import compile_for_inference

        net = compile_for_inference(net)
    return net


def latent_sampler(
    net,
    meta: RunMeta,
    sample_cfg: AnySampleConfig,
    guidance: GuidanceConfig = GuidanceConfig(),
    precision: str = "fp32",
    *,
    table=None,
    progress: bool = False,
) -> tuple[LatentSampler, dict]:
    """A latent sampler ``(x0, y, noise_fn) -> (x, info)`` for a loaded network and its RunMeta:
    `sit.network_sampler.build_sampler` (the one seam), with the description of the resolved sampler for
    the manifest. ``sample_cfg``: a `SampleConfig` (continuous SiT models) or a
    `DiscreteSampleConfig` (DiT). ``guidance``: its record holds the loaded guide of autoguidance
    (`load_guide`). ``info["nfe"]`` is the network evaluations per sample."""
    from sit.guidance import NEEDS_NETWORK
    from sit.network_sampler import build_sampler

    sampler = build_sampler(net, meta, sample_cfg, guidance, precision=precision, table=table, progress=progress)
    desc = dict(sampler.description)
    if guidance.active and guidance.row.needs == NEEDS_NETWORK:  # the guide network the record holds
        g = guidance.guide
        desc["guide"] = {"identity": g.identity, "source": getattr(g.meta, "source", None),
                         "step": getattr(g.meta, "step", None)}
    return sampler, desc


def _space(meta) -> tuple:
    from sit.vae import LatentSpace

    s = LatentSpace.from_record(getattr(meta, "data", None))
    return s.scale, s.shift, s.mean, s.std


def check_guide_space(meta: RunMeta, guide_meta: RunMeta) -> None:
    """Refuse, in one line, an autoguidance guide trained in another latent space than the model
    (scale, shift or per-channel normalisation of the run's data record; official checkpoints:
    0.18215, no shift): its predictions live in other coordinates and cannot be mixed in."""
    a, b = _space(meta), _space(guide_meta)
    if a == b:
        return
    names = ("scale", "shift", "normalisation mean", "normalisation std")
    diff = "; ".join(f"{n} {x} vs {y}" for n, x, y in zip(names, a, b) if x != y)
    raise ConfigError("GuidanceConfig", "guide", f"{getattr(guide_meta, 'source', '')!s} was trained in another latent "
                      f"space than the model (model vs guide: {diff}); guide with a checkpoint of the same latent space")


def load_guide(guidance: GuidanceConfig, meta: RunMeta, *, weights: str = "ema", kind: str | None = None,
               num_heads: int | None = None, precision: str = "fp32", compile: bool = False, device=None,
               log=None) -> GuidanceConfig:
    """THE guide loader: ``guidance`` with what its strategy needs loaded into its record
    (`sit.guidance.NEEDS_NETWORK`: the guide checkpoint ``guidance.guide.path`` read through the
    one store, its identity, and the network prepared like the model's (`prepare_network`));
    ``guidance`` itself for a strategy that loads nothing. Every refusal names the guide's flag
    (``guide_ckpt``), and a guide of another latent space than the model (``meta``) is refused
    (`check_guide_space`). `sit sample`, `sit sweep` and anything else with a guide call it."""
    from sit import checkpoints
    from sit.guidance import NEEDS_NETWORK

    if guidance.row.needs != NEEDS_NETWORK:
        return guidance
    path = guidance.guide.path
    try:
        gk = checkpoints.resolve(path, log=log, field="guide_ckpt")
        g_net, g_meta = checkpoints.load(gk, weights=weights, kind=kind, num_heads=num_heads, log=log)
    except ConfigError:
        raise
    except (OSError, ValueError, RuntimeError) as e:  # CheckpointError is a RuntimeError
        template = getattr(e, "template", None)
        if isinstance(template, str) and "{.guide_ckpt}" in template:
            raise
        raise ConfigError("", "guide_ckpt", f"{str(path)!r} cannot be read as the guide: {e}") from None
    check_guide_space(meta, g_meta)
    guide = dataclasses.replace(guidance.guide, identity=checkpoints.identity(gk), meta=g_meta,
                                net=prepare_network(g_net, precision, compile, device))
    return dataclasses.replace(guidance, guide=guide)


def sample_config(method: str, options: Mapping[str, Any]) -> AnySampleConfig:
    """The typed sampler config of ``method`` with SampleConfig field values ``options`` (None =
    default); for ddpm/ddim only num_steps and eta (DDIM's eta) apply."""
    opts = {k: v for k, v in options.items() if v is not None and k != "method"}
    if isinstance(opts.get("last_step"), str) and opts["last_step"].lower() == "none":
        opts["last_step"] = None  # explicit: no last step (the Euler-Maruyama grid runs to t_end)
    if method in DISCRETE_METHODS:
        extra = sorted(set(opts) - {"num_steps", "eta"})
        if extra:
            raise ConfigError("DiscreteSampleConfig", "method", f"{method} takes no option(s) {extra}")
        return DiscreteSampleConfig(method=method, **opts)
    names = {f.name for f in dataclasses.fields(SampleConfig)}
    unknown = sorted(set(opts) - names)
    if unknown:
        raise ValueError(f"sampler option(s) {unknown} are not SampleConfig fields; expected some of {sorted(names)}")
    return SampleConfig(method=method, **opts)


def build_latent_sampler(net, meta: RunMeta | Mapping, *, method: str, sample_options: dict,
                         guidance: GuidanceConfig = GuidanceConfig(), precision: str = "fp32", table=None,
                         progress: bool = False) -> tuple[LatentSampler, dict]:
    """`latent_sampler` from loose sampler options (`sit sweep`'s METHOD:FIELD=VALUE lists): the
    options become a typed sampler config first; ``guidance`` with its guide loaded (`load_guide`)."""
    if not isinstance(meta, RunMeta):
        meta = RunMeta.from_dict(meta)
    cfg = sample_config(method, sample_options)
    return latent_sampler(net, meta, cfg, guidance, precision, table=table, progress=progress)


def loss_table_path(ckpt: str | os.PathLike) -> Path:
    """Where `sit lt` stores the L_t table of a checkpoint: ``DIR/lt_table.json`` for a checkpoint
    directory, ``NAME.lt.json`` beside a checkpoint file."""
    from sit.checkpoints import resolve

    ck = resolve(ckpt)
    if ck.is_dir():
        return ck / LT_TABLE_NAME
    return ck.with_name(ck.stem + ".lt.json")


def find_loss_table(ckpt: str | os.PathLike, meta: RunMeta | Mapping | None = None):
    """The L_t table stored with a checkpoint (file from `sit lt`, else the meta's loss_table), or None."""
    from sit.diffusion_coef import LossTable

    p = loss_table_path(ckpt)
    if p.is_file():
        return LossTable.load(p)
    stored = meta.loss_table if isinstance(meta, RunMeta) else (meta or {}).get("loss_table")
    if isinstance(stored, Mapping):
        d = dict(stored)
        d.pop("kind", None)
        return LossTable(**d)
    return None
