"""The paper's training objectives on the seam (`sit.train.seam`): SiT in continuous time and
DiT's DDPM in discrete time.

  * `ContinuousObjective`: SiT, `sit.objectives.training_losses` (L_v (7), L_s (6), weighted
    score / noise losses) on a `sit.paths` interpolant, paper time t (0 = data, 1 = noise).
  * `DiscreteObjective`: DiT's DDPM, `sit.discrete.DiscreteDiffusion` (L_simple + L_vlb).

Per-sample losses are "mean_flat" (mean over all but the batch dimension). The network is called
once per micro-batch; the block outputs the terms ask for come back from that same call.

Must not import: sit.train.builders (the builder tables), sit.generate, sit.commands.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sit.config import ModelConfig, TrainConfig
from sit.train.seam import Objective, Outputs, call_net


class KeepHidden:
    """``net`` as ``(x, t_net, y) -> output`` that also keeps the tokens of ``blocks`` from the
    same call in ``self.hidden`` (the objective hands them to the terms); ``cond``: extra
    conditioning passed to every call (MeanFlow's t2). Has ``in_channels`` / ``out_channels``
    for `sit.models.field.ModelField`."""

    def __init__(self, net, blocks: tuple[int, ...], in_channels: int, out_channels: int, **cond):
        self.net, self.blocks, self.cond = net, tuple(blocks), cond
        self.in_channels, self.out_channels = in_channels, out_channels
        self.hidden: dict[int, Tensor] = {}

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        out, hidden = call_net(self.net, x, t, y, self.blocks, **self.cond)
        self.hidden.update(hidden)
        return out


class ContinuousObjective(Objective):
    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig):
        from sit.objectives import LossConfig
        from sit.paths import get_path

        self.cfg, self.model_cfg = cfg, model_cfg
        self.path = get_path(cfg.path)
        self.loss_cfg = LossConfig(prediction=cfg.prediction, loss_weight=cfg.loss_weight, t_min=cfg.t_min,
                                   t_max=cfg.t_max, time_dist=cfg.time_dist, loss_space=cfg.loss_space)
        self.t_lo, self.t_hi = self.loss_cfg.t_range(self.path)

    def sample_t(self, n, g):
        from sit.timegrid import sample_training_t

        return sample_training_t(n, self.t_lo, self.t_hi, self.cfg.time_dist, generator=g)

    def outputs(self, net, x, t, eps, y):
        from sit.models.field import ModelField
        from sit.objectives import training_losses

        keep = KeepHidden(net, self.hidden_blocks, self.model_cfg.in_channels, self.model_cfg.out_channels)
        model_fn = ModelField(keep, self.cfg.prediction, "continuous")
        r = training_losses(model_fn, self.path, x, self.loss_cfg, y=y, t=t, eps=eps)
        return Outputs(loss=r["loss"], pred=r["pred"], target=r["target"], x=x, x_t=r["x_t"], t=r["t"], eps=eps, y=y,
                       hidden=keep.hidden)

    def t_fraction(self, t):
        return t.double()

    def sample(self, net, y, noise, cfg_scale, g, device):
        from sit.network_sampler import ModelInfo, build_sampler, preview_guidance
        from sit.samplers import SampleConfig

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

    def outputs(self, net, x, t, eps, y):
        keep = KeepHidden(net, self.hidden_blocks, self.model_cfg.in_channels, self.model_cfg.out_channels)
        seen = {}

        def model_fn(xx, kk):
            seen["x_t"] = xx
            seen["out"] = out = keep(xx, kk, y).float()
            return out

        r = self.diffusion.training_losses(model_fn, x, t, eps)
        pred = seen["out"][:, : self.model_cfg.in_channels]
        return Outputs(loss=r["loss"], pred=pred, target=eps, x=x, x_t=seen["x_t"], t=t, eps=eps, y=y,
                       hidden=keep.hidden)

    def t_fraction(self, t):
        return t.double() / self.num_steps

    def sample(self, net, y, noise, cfg_scale, g, device):
        from sit.discrete import DiscreteSampleConfig
        from sit.network_sampler import ModelInfo, build_sampler, preview_guidance

        sampler = build_sampler(net, ModelInfo("ddpm", "noise", "discrete"),
                                DiscreteSampleConfig(method="ddpm", num_steps=self.cfg.sample_steps),
                                preview_guidance(cfg_scale, self.model_cfg), precision=self.cfg.precision)
        return sampler(noise, y, generator=g)[0]
