"""The one seam between networks and samplers: (network(s), run metadata, sampler config,
guidance config) -> a `Sampler` ``(x0, y, noise_fn) -> (x, info)``.

Used by `sit sample` / `sit sweep` (`sit.generate.glue`), training previews
(`sit.train.builders`), the study (`sit.study.eval_sampler`) and the benchmarks, so the rule for
when guidance applies, the call counting and the choice of sampler (the table
`sit.samplers.SAMPLERS`; DiT's ``ddpm`` / ``ddim`` for discrete-time models) live here once:
  - the prediction function in paper time is `sit.models.field.ModelField` (the only t <-> tau);
  - guidance is `GuidanceConfig.wrap`, through its strategy's row (`sit.guidance.STRATEGIES`:
    CFG with the null label, or autoguidance with the guide network its record holds); CFG needs
    a null label, which a model has iff it was trained with label dropout (`null_class`);
  - network evaluations are counted by `sit.samplers.NFECounter` on the main network (``nfe``:
    a CFG call sends conditional and null rows in one batch, one evaluation) and on the guide
    (``guide_nfe``).

Programs layer: imports the math core, `sit.models` and `sit.config`; never train, generate,
study or commands (they import it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import Tensor

from sit.config import ConfigError, ModelConfig
from sit.discrete import DiscreteSampleConfig
from sit.guidance import NEEDS_NETWORK, GuidanceConfig
from sit.sampler_config import PRECISIONS
from sit.samplers import NFECounter, SampleConfig


def null_class(model: ModelConfig | Any) -> int | None:
    """The null label of a model (``num_classes``), or None when it has none: unconditional, or
    trained without label dropout (no embedding row for the null label). The one rule for when
    classifier-free guidance can apply. Takes a ModelConfig or a network with ``.config``."""
    cfg = model if isinstance(model, ModelConfig) else getattr(model, "config", None)
    if cfg is None or not getattr(cfg, "num_classes", 0) or getattr(cfg, "class_dropout_prob", 0.0) <= 0:
        return None
    return int(cfg.num_classes)


def preview_guidance(scale: float, model: ModelConfig) -> GuidanceConfig:
    """CFG at ``scale`` where the model has a null label, else unguided: training previews and the
    study sample every model, including those trained without label dropout."""
    return GuidanceConfig(scale=scale) if null_class(model) is not None else GuidanceConfig()


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the seam needs to know of a network besides its weights: the interpolant, what it
    predicts and its time input (the fields of `sit.checkpoints.RunMeta` of the same names)."""

    path: str = "linear"
    prediction: str = "velocity"
    time_input: str = "continuous"

    @classmethod
    def of(cls, meta) -> "ModelInfo":
        """From a RunMeta (or anything with path, prediction, time_input)."""
        return cls(path=meta.path, prediction=meta.prediction, time_input=meta.time_input)

    @property
    def discrete(self) -> bool:
        return self.time_input == "discrete"


def prediction_fn(net, meta, precision: str = "fp32"):
    """The network as a prediction function ``fn(x, t, y)`` in paper time
    (`sit.models.field.ModelField`) with the precision rule of every sampler: "bf16" = autocast
    (outputs float32), otherwise the network's own dtype. Used by `build_sampler` and by the
    likelihood / L_t / path-length commands (`sit.generate.evaldata.load_eval_model`)."""
    from sit.models.field import ModelField

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    info = meta if isinstance(meta, ModelInfo) else ModelInfo.of(meta)
    return ModelField(net, info.prediction, info.time_input, dtype=torch.bfloat16 if precision == "bf16" else None)


class Sampler:
    """``sampler(x0, y, noise_fn=None, generator=None) -> (x, info)`` for one network (and guide).

    ``noise_fn(x)`` gives the SDE / ancestral step noise shaped like x (a `RowNoise` makes it per
    sample); without it the step noise comes from ``generator``. ``info``: "nfe" (network
    evaluations per sample: the sampler's evaluations of the guided prediction, a CFG call being
    one batched evaluation, plus the guide's with autoguidance), "network_calls" (the main
    network's), "guide_nfe" (the guide's; 0 without autoguidance), "sampler_nfe" (with a guide)
    and, for continuous samplers, the grid etc. of `sit.samplers.sample`. ``description`` describes the resolved sampler for a manifest."""

    def __init__(self, run: Callable, description: dict, counter: NFECounter, guide_counter: NFECounter | None):
        self._run, self.description = run, description
        self.counter, self.guide_counter = counter, guide_counter

    def __call__(self, x0: Tensor, y: Tensor, noise_fn: Callable[[Tensor], Tensor] | None = None, *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        self.counter.reset()
        if self.guide_counter is not None:
            self.guide_counter.reset()
        x, info = self._run(x0, y, noise_fn, generator)
        info = dict(info or {})
        info["network_calls"] = self.counter.nfe
        info.setdefault("nfe", self.counter.nfe)
        info["guide_nfe"] = self.guide_counter.nfe if self.guide_counter is not None else 0
        if info["guide_nfe"]:  # autoguidance: the guide's evaluations are network evaluations too
            info["sampler_nfe"] = info["nfe"]
            info["nfe"] = info["nfe"] + info["guide_nfe"]
        return x, info


def _check_guide(info: ModelInfo, net, guide_info: ModelInfo, guide_net) -> None:
    for name in ("path", "prediction", "time_input"):
        a, b = getattr(info, name), getattr(guide_info, name)
        if a != b:
            raise ValueError(f"the guide network must match the model's {name} (model {a!r}, guide {b!r})")
    for name in ("in_channels", "num_classes"):
        a, b = getattr(net, name, None), getattr(guide_net, name, None)
        if a != b:
            raise ValueError(f"the guide network must match the model's {name} (model {a}, guide {b})")
    a, b = getattr(getattr(net, "config", None), "input_size", None), getattr(getattr(guide_net, "config", None), "input_size", None)
    if a != b:
        raise ValueError(f"the guide network must match the model's input_size (model {a}, guide {b})")


def _guide(guidance: GuidanceConfig, info: ModelInfo, net, precision: str):
    """(network, prediction function) of the guidance record's loaded network, (None, None) for a
    strategy that needs none."""
    if guidance.row.needs != NEEDS_NETWORK:
        return None, None
    guide = guidance.guide
    if not getattr(guide, "loaded", False):
        raise ValueError(f"the guide {guide.path!r} is not loaded: load it first (sit.generate.glue.load_guide)")
    g_info = info if guide.meta is None else (guide.meta if isinstance(guide.meta, ModelInfo) else ModelInfo.of(guide.meta))
    _check_guide(info, net, g_info, guide.net)
    return guide.net, prediction_fn(guide.net, g_info, precision)


def build_sampler(
    net,
    meta,
    sample_cfg: SampleConfig | DiscreteSampleConfig,
    guidance: GuidanceConfig = GuidanceConfig(),
    *,
    precision: str = "fp32",
    table=None,
    progress: bool = False,
) -> Sampler:
    """THE sampler of a network: ``net`` (a SiT/DiT module, ready: device, eval mode), ``meta``
    (RunMeta, `ModelInfo` or anything with path / prediction / time_input), ``sample_cfg`` (a
    `SampleConfig` for continuous models, a `DiscreteSampleConfig` for DiT), ``guidance`` (off, or
    a strategy of `sit.guidance.STRATEGIES`; autoguidance's record holds its loaded guide
    network and RunMeta (`sit.generate.glue.load_guide`), which must match the model's path,
    prediction, time input, channels, size and classes), ``precision`` "bf16" = autocast
    (the sampler math stays float32), ``table`` the L_t table of w = kl_eta."""
    if not isinstance(guidance, GuidanceConfig):
        raise TypeError(f"guidance must be a GuidanceConfig (got {type(guidance).__name__})")
    info = meta if isinstance(meta, ModelInfo) else ModelInfo.of(meta)
    field_fn = prediction_fn(net, info, precision)
    guide_net, guide_fn = _guide(guidance, info, net, precision)
    if isinstance(sample_cfg, DiscreteSampleConfig) or info.discrete:
        if not isinstance(sample_cfg, DiscreteSampleConfig):
            raise ConfigError("SampleConfig", "method", "must be one of ['ddpm', 'ddim'] for this checkpoint, a "
                              f"discrete-time DDPM model (DiT) (got {sample_cfg.method!r})")
        if not info.discrete:
            raise ConfigError("DiscreteSampleConfig", "method", f"{sample_cfg.method} needs a discrete-time (DiT) "
                              f"checkpoint; this one is {info.time_input!r}")
        return _discrete(net, field_fn, guide_fn, sample_cfg, guidance, progress)
    if not isinstance(sample_cfg, SampleConfig):
        raise TypeError(f"sample_cfg must be a SampleConfig or DiscreteSampleConfig (got {type(sample_cfg).__name__})")
    if sample_cfg.kind == "average":
        for name, n in (("model", net), ("guide", guide_net)):
            if n is not None and not getattr(getattr(n, "config", None), "second_time", False):
                raise ConfigError("SampleConfig", "method", f"{sample_cfg.method!r} needs an average-velocity network "
                                  f"(trained with objective 'meanflow'); this {name} has no second time input")
        if info.prediction != "velocity":
            raise ConfigError("SampleConfig", "method", f"{sample_cfg.method!r} needs a velocity model (got prediction "
                              f"{info.prediction!r})")
    return _continuous(net, field_fn, guide_fn, info, sample_cfg, guidance, table, progress)


def _discrete(net, field_fn, guide_fn, cfg: DiscreteSampleConfig, guidance: GuidanceConfig, progress) -> Sampler:
    from sit import discrete

    guidance.check_model(discrete=True)
    learn_sigma = field_fn.out_channels == 2 * field_fn.in_channels
    diffusion = discrete.DiscreteDiffusion(discrete.DiscreteConfig(learn_sigma=learn_sigma)).respace(cfg.num_steps)
    raw = NFECounter(field_fn.raw)
    g_raw = NFECounter(guide_fn.raw) if guide_fn is not None else None
    # 'all' means all eps channels: the learned-variance channels keep the conditional value (as DiT)
    ch = field_fn.in_channels if guidance.channels is None else min(guidance.channels, field_fn.in_channels)
    guided = dataclasses.replace(guidance, channels=ch).wrap(raw, null_class(net), g_raw)

    def run(x0: Tensor, y: Tensor, noise_fn, generator):
        fn = lambda x, k: guided(x, k, y)  # noqa: E731
        if cfg.method == "ddpm":
            x = discrete.sample_ddpm(fn, x0, diffusion, progress=progress, noise_fn=noise_fn, generator=generator)
        else:
            x = discrete.sample_ddim(fn, x0, diffusion, eta=cfg.eta, progress=progress, noise_fn=noise_fn,
                                     generator=generator)
        return x, {}

    desc = {"method": cfg.method, "num_steps": cfg.num_steps, "eta": cfg.eta if cfg.method == "ddim" else None,
            "timesteps": "DiT respacing", "per_seed_step_noise": True}
    return Sampler(run, desc, raw, g_raw)


def _continuous(net, field_fn, guide_fn, info: ModelInfo, cfg: SampleConfig, guidance: GuidanceConfig, table,
                progress) -> Sampler:
    from sit.objectives import velocity_field
    from sit.paths import get_path
    from sit.samplers import sample as run_sampler

    path = get_path(info.path)
    prediction = info.prediction
    counter = NFECounter(field_fn)
    g_counter = NFECounter(guide_fn) if guide_fn is not None else None
    guided = guidance.wrap(counter, null_class(net), g_counter)

    def run(x0: Tensor, y: Tensor, noise_fn, generator):
        field = velocity_field(guided, path, prediction, y=y)
        # per-row step noise: sample i's SDE noise depends on seed i only, not on its batch
        extra = {"noise_fn": noise_fn} if cfg.is_sde and noise_fn is not None else {}
        return run_sampler(field, x0, cfg, path, table=table, prediction=prediction, progress=progress,
                           generator=generator, **extra)

    t_start, t_end = cfg.time_range(path, prediction, table)
    cfg.make_grid(path, prediction, table)   # a degenerate grid is refused here, before any sample is made
    desc = {"config": dataclasses.asdict(cfg), "path": path.name, "prediction": prediction,
            "t_start": t_start, "t_end": t_end, "per_seed_step_noise": True}
    return Sampler(run, desc, counter, g_counter)
