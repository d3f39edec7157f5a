"""The training objectives of `sit train` and their extra loss terms: the builder tables.

An objective owns: the training-time draw (continuous t on the path's range with ``time_dist``,
DiT's integer step k, MeanFlow's pair (t, r)), the per-sample losses and what it computed on the
way (`sit.train.seam.Outputs`, handed to every loss term), the fraction in [0, 1] of each sample's
time (the loss-by-t bins of metrics.jsonl), the extra keys of its metrics records, the inputs it
adds to the network's conditioning, and the matching sampler for preview grids and the quality
number. The interface, `Outputs` and `LossTerm` live in `sit.train.seam`, which imports nothing of
sit.train; this module imports the objectives and (lazily) the terms, and nothing imports it back.

  * ``objective = "sit"`` (default): `sit.train.paper.ContinuousObjective` (SiT, paper time) or,
    with ``time_input = "discrete"``, `sit.train.paper.DiscreteObjective` (DiT's DDPM).
  * ``objective = "meanflow"``: `sit.train.meanflow.MeanFlowObjective` (average velocity, 1-step).

Adding an objective = its module + one row of `OBJECTIVES` (+ its typed TrainConfig fields);
adding a loss term = its module + one builder in `TERM_BUILDERS` reading its typed field: it
returns a named per-sample loss added to the total with weight ``coeff``, may own trainable
modules (REPA's projector), whose parameters the loop gives to AdamW, averages over DDP ranks, and
saves as the checkpoint's ``objective.safetensors`` (verified by the store, restored on resume).
Owned modules have no EMA copy and never reach sampling or exported checkpoints: only the network.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor, nn

from sit.config import ModelConfig, TrainConfig
from sit.train.meanflow import MeanFlowObjective
from sit.train.paper import ContinuousObjective, DiscreteObjective
from sit.train.seam import LossTerm, NetFn, Objective, Outputs
from sit.train.seeds import generator

__all__ = ["OBJECTIVES", "TERM_BUILDERS", "build_objective", "model_config_for", "generate", "LossTerm", "NetFn",
           "Objective", "Outputs", "ContinuousObjective", "DiscreteObjective", "MeanFlowObjective"]


def _sit(cfg: TrainConfig, model_cfg: ModelConfig) -> Objective:
    return (DiscreteObjective if cfg.time_input == "discrete" else ContinuousObjective)(cfg, model_cfg)


# one row per objective (TrainConfig.objective): (cfg, model_cfg) -> Objective
OBJECTIVES: dict[str, Callable[[TrainConfig, ModelConfig], Objective]] = {
    "sit": _sit,
    "meanflow": MeanFlowObjective,
}
# the ModelConfig fields an objective's conditioning needs (inputs it adds to the network)
CONDITIONING: dict[str, dict] = {"sit": {}, "meanflow": MeanFlowObjective.conditioning}


def model_config_for(cfg: TrainConfig, model_cfg: ModelConfig) -> ModelConfig:
    """``model_cfg`` with the conditioning inputs ``cfg.objective`` adds (MeanFlow: second_time)."""
    need = CONDITIONING[cfg.objective]
    return dataclasses.replace(model_cfg, **need) if any(getattr(model_cfg, k) != v for k, v in need.items()) else model_cfg


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
    """The objective of ``cfg.objective`` (and ``cfg.time_input``); with ``terms_device``
    (training) also the extra loss terms ``cfg`` turns on, built there (sampling needs none)."""
    obj = OBJECTIVES[cfg.objective](cfg, model_config_for(cfg, model_cfg))
    if terms_device is not None:
        obj.terms = nn.ModuleList([t for t in (b(cfg, model_cfg, terms_device) for b in TERM_BUILDERS) if t is not None])
        names = [t.name for t in obj.terms]
        if len(set(names)) != len(names):
            raise ValueError(f"two loss terms share a name: {names}")
        obj.hidden_blocks = tuple(sorted({b for t in obj.terms for b in t.hidden_blocks}))
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
