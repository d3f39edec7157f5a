"""The training objectives of `sit train`, behind one small interface the loop uses.

An objective owns: the training-time draw (continuous t on the path's range with ``time_dist``, or
DiT's integer step k), the per-sample losses, the fraction in [0, 1] of each sample's time (the
loss-by-t bins of metrics.jsonl), the extra keys of its metrics records, and the matching sampler
for preview grids and the quality number.

  * `ContinuousObjective`: SiT, `sit.objectives.training_losses` (L_v (7), L_s (6), weighted
    score / noise losses) on a `sit.paths` interpolant, paper time t (0 = data, 1 = noise).
  * `DiscreteObjective`: DiT's DDPM, `sit.discrete.DiscreteDiffusion` (L_simple + L_vlb).

Per-sample losses are "mean_flat" (mean over all but the batch dimension).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from sit.config import ModelConfig, TrainConfig
from sit.train.seeds import generator

NetFn = Callable[[Tensor, Tensor, Tensor], Tensor]   # (x, t, y) -> network output


class Objective:
    """The interface: see the module docstring."""

    record: dict = {}                    # extra keys of every metrics.jsonl loss record

    def sample_t(self, n: int, g: torch.Generator) -> Tensor:
        """Times (n,) of a global micro-batch, from generator ``g`` (CPU)."""
        raise NotImplementedError

    def losses(self, net: NetFn, x: Tensor, t: Tensor, eps: Tensor, y: Tensor) -> Tensor:
        """Per-sample losses (B,) of network ``net`` on data ``x`` at times ``t`` with noise ``eps``."""
        raise NotImplementedError

    def t_fraction(self, t: Tensor) -> Tensor:
        """Each sample's time as a float64 fraction in [0, 1]."""
        raise NotImplementedError

    def sample(self, net: nn.Module, y: Tensor, noise: Tensor, cfg_scale: float, g: torch.Generator,
               device: torch.device) -> Tensor:
        """Samples from ``noise`` (B, C, S, S) for labels ``y`` with guidance ``cfg_scale``."""
        raise NotImplementedError


class ContinuousObjective(Objective):
    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig):
        from sit.objectives import LossConfig
        from sit.paths import get_path

        self.cfg, self.model_cfg = cfg, model_cfg
        self.path = get_path(cfg.path)
        self.loss_cfg = LossConfig(prediction=cfg.prediction, loss_weight=cfg.loss_weight, t_min=cfg.t_min,
                                   t_max=cfg.t_max, time_dist=cfg.time_dist)
        self.t_lo, self.t_hi = self.loss_cfg.t_range(self.path)

    def sample_t(self, n, g):
        from sit.timegrid import sample_training_t

        return sample_training_t(n, self.t_lo, self.t_hi, self.cfg.time_dist, generator=g)

    def losses(self, net, x, t, eps, y):
        from sit.models.field import ModelField
        from sit.objectives import training_losses

        model_fn = ModelField(net, self.cfg.prediction, "continuous")
        return training_losses(model_fn, self.path, x, self.loss_cfg, y=y, t=t, eps=eps)["loss"]

    def t_fraction(self, t):
        return t.double()

    def sample(self, net, y, noise, cfg_scale, g, device):
        from sit.samplers import SampleConfig
        from sit.sampling import ModelInfo, build_sampler, preview_guidance

        cfg = self.cfg
        sampler = build_sampler(net, ModelInfo(cfg.path, cfg.prediction, "continuous"),
                                SampleConfig(method=cfg.sample_method, num_steps=cfg.sample_steps),
                                preview_guidance(cfg_scale, self.model_cfg), precision=cfg.precision)
        return sampler(noise, y)[0]


class DiscreteObjective(Objective):
    record = {"t_is_step": True}

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig):
        from sit.discrete import DiscreteConfig, DiscreteDiffusion

        self.cfg, self.model_cfg = cfg, model_cfg
        self.diffusion = DiscreteDiffusion(DiscreteConfig(learn_sigma=model_cfg.learn_sigma))
        self.num_steps = self.diffusion.num_steps

    def sample_t(self, n, g):
        return torch.randint(0, self.num_steps, (n,), generator=g)

    def losses(self, net, x, t, eps, y):
        return self.diffusion.training_losses(lambda xx, kk: net(xx, kk, y).float(), x, t, eps)["loss"]

    def t_fraction(self, t):
        return t.double() / self.num_steps

    def sample(self, net, y, noise, cfg_scale, g, device):
        from sit.discrete import DiscreteSampleConfig
        from sit.sampling import ModelInfo, build_sampler, preview_guidance

        sampler = build_sampler(net, ModelInfo("ddpm", "noise", "discrete"),
                                DiscreteSampleConfig(method="ddpm", num_steps=self.cfg.sample_steps),
                                preview_guidance(cfg_scale, self.model_cfg), precision=self.cfg.precision)
        return sampler(noise, y, generator=g)[0]


def build_objective(cfg: TrainConfig, model_cfg: ModelConfig) -> Objective:
    """The objective of ``cfg.time_input``."""
    return (DiscreteObjective if cfg.time_input == "discrete" else ContinuousObjective)(cfg, model_cfg)


@torch.no_grad()
def generate(
    net: nn.Module, cfg: TrainConfig, model_cfg: ModelConfig, y: Tensor, seed: int, device: torch.device,
    cfg_scale: float | None = None, batch_size: int = 500, objective: Objective | None = None,
) -> Tensor:
    """Class-conditional samples (B, C, S, S) of ``net`` (e.g. the EMA model) for labels ``y``,
    with guidance ``cfg_scale`` (default cfg.cfg_scale), noise seeded by (``seed``, 7)."""
    objective = objective or build_objective(cfg, model_cfg)
    scale = cfg.cfg_scale if cfg_scale is None else cfg_scale
    was_training = net.training
    net.eval()
    C, S = model_cfg.in_channels, model_cfg.input_size
    g = generator(seed, 7)
    outs = []
    try:
        for i in range(0, y.shape[0], batch_size):
            yb = y[i : i + batch_size].to(device)
            noise = torch.randn((yb.shape[0], C, S, S), generator=g).to(device)
            outs.append(objective.sample(net, yb, noise, scale, g, device))
    finally:
        net.train(was_training)
    return torch.cat(outs)
