"""Model glue: a loaded network + its `RunMeta` -> a latent sampler ``(x0, y, noise_fn) -> (x, info)``.

The prediction function in paper time (`sit.models.field.ModelField`), classifier-free guidance
(`sit.guidance.GuidedModel`, one batched call per step), the velocity field
(`sit.objectives.velocity_field`) and a continuous sampler (`sit.samplers.sample`) or DiT's
discrete ancestral / DDIM sampler (`sit.discrete`). Used by `sit sample`, `sit sweep` and meant
for training's preview grids (`latent_sampler`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from sit.checkpoints import RunMeta
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


class _CallCounter:
    """Counts calls of a prediction function (network evaluations per sample = calls, since a
    guided call evaluates the conditional and unconditional rows in one batch)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.fn(*a, **k)


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
    """A latent sampler ``(x0, y, noise_fn) -> (x, info)`` for a loaded network and its RunMeta.

    ``sample_cfg``: a `SampleConfig` (continuous SiT models) or a `DiscreteSampleConfig` (DiT).
    ``noise_fn(x)`` gives the SDE / ancestral step noise shaped like x (a `RowNoise` makes it
    per sample). ``info["nfe"]`` is the network evaluations per sample. Returns the sampler and a
    description of the resolved sampler for the manifest."""
    from sit.models.field import ModelField

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    if not isinstance(guidance, GuidanceConfig):
        raise TypeError(f"guidance must be a GuidanceConfig (got {type(guidance).__name__})")
    dtype = torch.bfloat16 if precision == "bf16" else None
    num_classes = model_num_classes(net)
    field_fn = ModelField(net, meta.prediction, meta.time_input, dtype=dtype)
    if isinstance(sample_cfg, DiscreteSampleConfig) or meta.discrete:
        if not isinstance(sample_cfg, DiscreteSampleConfig):
            raise ValueError(f"this checkpoint is a discrete-time DDPM model (DiT); --method must be one of "
                             f"{list(DISCRETE_METHODS)} (got {sample_cfg.method!r})")
        if not meta.discrete:
            raise ValueError(f"--method {sample_cfg.method} needs a discrete-time (DiT) checkpoint; "
                             f"this one is {meta.time_input!r}")
        return _discrete_sampler(field_fn, sample_cfg, guidance, num_classes, progress)
    return _continuous_sampler(field_fn, meta, sample_cfg, guidance, num_classes, table, progress)


def _discrete_sampler(field_fn, cfg: DiscreteSampleConfig, guidance: GuidanceConfig, num_classes, progress):
    from sit import discrete

    if guidance.interval is not None:
        raise ValueError("--cfg-interval is in continuous time t; it does not apply to --method ddpm/ddim")
    learn_sigma = field_fn.out_channels == 2 * field_fn.in_channels
    diffusion = discrete.DiscreteDiffusion(discrete.DiscreteConfig(learn_sigma=learn_sigma)).respace(cfg.num_steps)
    raw = _CallCounter(field_fn.raw)
    # 'all' means all eps channels: the learned-variance channels keep the conditional value (as DiT)
    ch = field_fn.in_channels if guidance.channels is None else min(guidance.channels, field_fn.in_channels)
    guided = dataclasses.replace(guidance, channels=ch).wrap(raw, num_classes)

    def sampler_fn(x0: Tensor, y: Tensor, noise):
        raw.calls = 0
        fn = lambda x, k: guided(x, k, y)  # noqa: E731
        if cfg.method == "ddpm":
            x = discrete.sample_ddpm(fn, x0, diffusion, progress=progress, noise_fn=noise)
        else:
            x = discrete.sample_ddim(fn, x0, diffusion, eta=cfg.eta, progress=progress, noise_fn=noise)
        return x, {"nfe": raw.calls}

    desc = {"method": cfg.method, "num_steps": cfg.num_steps, "eta": cfg.eta if cfg.method == "ddim" else None,
            "timesteps": "DiT respacing", "per_seed_step_noise": True}
    return sampler_fn, desc


def _continuous_sampler(field_fn, meta: RunMeta, cfg: SampleConfig, guidance: GuidanceConfig, num_classes,
                        table, progress):
    from sit.objectives import velocity_field
    from sit.paths import get_path
    from sit.samplers import sample as run_sampler

    if not isinstance(cfg, SampleConfig):
        raise TypeError(f"sample_cfg must be a SampleConfig or DiscreteSampleConfig (got {type(cfg).__name__})")
    path = get_path(meta.path)
    prediction = meta.prediction
    counter = _CallCounter(field_fn)
    guided = guidance.wrap(counter, num_classes)

    def sampler_fn(x0: Tensor, y: Tensor, noise):
        counter.calls = 0
        field = velocity_field(guided, path, prediction, y=y)
        # per-row step noise: sample i's SDE noise depends on seed i only, not on its batch
        extra = {"noise_fn": noise} if cfg.is_sde else {}
        x, info = run_sampler(field, x0, cfg, path, table=table, prediction=prediction, progress=progress, **extra)
        info = dict(info or {})
        info["network_calls"] = counter.calls
        info.setdefault("nfe", counter.calls)
        return x, info

    t_start, t_end = cfg.time_range(path, prediction, table)
    desc = {"config": dataclasses.asdict(cfg), "path": path.name, "prediction": prediction,
            "t_start": t_start, "t_end": t_end, "per_seed_step_noise": True}
    return sampler_fn, desc


def sample_config(method: str, options: Mapping[str, Any]) -> AnySampleConfig:
    """The typed sampler config of ``method`` with SampleConfig field values ``options`` (None =
    default); for ddpm/ddim only num_steps and eta (DDIM's eta) apply."""
    opts = {k: v for k, v in options.items() if v is not None and k != "method"}
    if isinstance(opts.get("last_step"), str) and opts["last_step"].lower() == "none":
        opts["last_step"] = None  # explicit: no last step (the Euler-Maruyama grid runs to t_end)
    if method in DISCRETE_METHODS:
        extra = sorted(set(opts) - {"num_steps", "eta"})
        if extra:
            raise ValueError(f"option(s) {extra} do not apply to --method {method}")
        return DiscreteSampleConfig(method=method, **opts)
    names = {f.name for f in dataclasses.fields(SampleConfig)}
    unknown = sorted(set(opts) - names)
    if unknown:
        raise ValueError(f"sampler option(s) {unknown} are not SampleConfig fields; expected some of {sorted(names)}")
    return SampleConfig(method=method, **opts)


def build_latent_sampler(net, meta: RunMeta | Mapping, *, method: str, sample_options: dict, cfg_scale: float = 1.0,
                         cfg_channels: int | None = None, cfg_interval=None, precision: str = "fp32", table=None,
                         progress: bool = False) -> tuple[LatentSampler, dict]:
    """`latent_sampler` from loose options (`sit sweep`'s METHOD:FIELD=VALUE lists): the options
    become a typed sampler config and GuidanceConfig first."""
    if not isinstance(meta, RunMeta):
        meta = RunMeta.from_dict(meta)
    cfg = sample_config(method, sample_options)
    guidance = GuidanceConfig(scale=cfg_scale, channels=cfg_channels, interval=cfg_interval)
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
