"""The training objectives of `sit train`, behind one small interface the loop uses.

An objective owns: the training-time draw (continuous t on the path's range with ``time_dist``, or
DiT's integer step k), the per-sample losses, the fraction in [0, 1] of each sample's time (the
loss-by-t bins of metrics.jsonl), the extra keys of its metrics records, and the matching sampler
for preview grids and the quality number.

  * `ContinuousObjective`: SiT, `sit.objectives.training_losses` (L_v (7), L_s (6), weighted
    score / noise losses) on a `sit.paths` interpolant, paper time t (0 = data, 1 = noise).
  * `DiscreteObjective`: DiT's DDPM, `sit.discrete.DiscreteDiffusion` (L_simple + L_vlb).

Per-sample losses are "mean_flat" (mean over all but the batch dimension).

The seam for more loss terms: an objective holds ``terms``, a ModuleList of `LossTerm` (empty for
the paper's objectives, so their runs are unchanged). A term is one module plus one typed
TrainConfig field (its builder in `TERM_BUILDERS` reads the field): it returns a named
per-sample loss added to the total with weight ``coeff``, may own trainable modules (REPA's
projector), whose parameters the loop gives to AdamW, averages over DDP ranks, and saves as the
checkpoint's ``objective.safetensors`` (verified by the store, restored on resume). Owned
modules have no EMA copy and never reach sampling or exported checkpoints: only the network does.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from sit.config import ModelConfig, TrainConfig
from sit.train.seeds import generator

NetFn = Callable[[Tensor, Tensor, Tensor], Tensor]   # (x, t, y) -> network output


class LossTerm(nn.Module):
    """An extra loss term of an objective (see the module docstring). ``name`` keys its mean in
    metrics.jsonl (``loss_<name>``); the step's loss is denoising + sum of ``coeff`` x term.
    ``attach(net)`` is called once with the bare network (before compile / DDP wrapping), e.g. to
    hook a block's output; ``forward`` runs after the denoising loss of the same micro-batch, under
    the same autocast. ``needs_pixels``: the term reads the training images (in [-1, 1]) of the
    batch, not only the network inputs (latents)."""

    name: str = "term"
    coeff: float = 1.0
    needs_pixels: bool = False

    def attach(self, net: nn.Module) -> None:
        pass

    def forward(self, x: Tensor, t: Tensor, eps: Tensor, y: Tensor, pixels: Tensor | None) -> Tensor:
        """Per-sample losses (B,) of this term on the micro-batch (data x, times t, noise eps, labels y)."""
        raise NotImplementedError


class Objective:
    """The interface: see the module docstring."""

    record: dict = {}                    # extra keys of every metrics.jsonl loss record
    terms: nn.ModuleList = nn.ModuleList()   # extra loss terms (`LossTerm`); replaced by build_objective

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
                                   t_max=cfg.t_max, time_dist=cfg.time_dist, loss_space=cfg.loss_space)
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


def _repa_term(cfg: TrainConfig, model_cfg: ModelConfig, device: torch.device) -> LossTerm | None:
    if cfg.repa_encoder is None:
        return None
    from sit.train.repa import build_repa

    return build_repa(cfg, model_cfg, device)


def _cosine_term(cfg: TrainConfig, model_cfg: ModelConfig, device: torch.device) -> LossTerm | None:
    if cfg.cosine_coeff == 0:
        return None
    from sit.train.terms import CosineVelocityTerm

    return CosineVelocityTerm(cfg, model_cfg)


# one builder per extra loss term: (cfg, model_cfg, device) -> LossTerm, or None when its field leaves it off
TERM_BUILDERS: list[Callable[[TrainConfig, ModelConfig, torch.device], LossTerm | None]] = [_repa_term, _cosine_term]


def build_objective(cfg: TrainConfig, model_cfg: ModelConfig, terms_device: torch.device | None = None) -> Objective:
    """The objective of ``cfg.time_input``; with ``terms_device`` (training) also the extra loss
    terms ``cfg`` turns on, built there (sampling needs none of them)."""
    obj = (DiscreteObjective if cfg.time_input == "discrete" else ContinuousObjective)(cfg, model_cfg)
    if terms_device is not None:
        obj.terms = nn.ModuleList([t for t in (b(cfg, model_cfg, terms_device) for b in TERM_BUILDERS) if t is not None])
        names = [t.name for t in obj.terms]
        if len(set(names)) != len(names):
            raise ValueError(f"two loss terms share a name: {names}")
        obj.terms.to(terms_device)
    return obj


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
