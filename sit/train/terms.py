"""Extra loss terms on the objective seam (`sit.train.seam.LossTerm`) that need no encoder.

`CosineVelocityTerm` (LightningDiT, Yao et al. 2025): the direction of the predicted velocity
against the target's, per pixel over the channels,

    L_cos = mean over pixels of 1 - cos(v_theta(x_t, t)[:, :, i, j], v*[:, :, i, j]),   v* = alpha_dot x* + sigma_dot eps

(eq. 7's target), weighted by ``cosine_coeff`` (LightningDiT: 1). Velocity prediction in
continuous time only. It reads the objective's outputs: ``pred`` is already the paper-time
velocity (the tau sign flip applied once, by `sit.models.field.ModelField`) and ``target`` is
v*. Owns no modules.

Must not import: sit.train.builders, sit.generate, sit.commands.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sit.config import ModelConfig, TrainConfig
from sit.train.seam import LossTerm, Outputs


def cosine_velocity_loss(v: Tensor, target: Tensor) -> Tensor:
    """1 - cos over the channel dimension, averaged over the other non-batch dimensions: (B, C, ...) -> (B,)."""
    return (1 - F.cosine_similarity(v.float(), target.float(), dim=1)).flatten(1).mean(1)


class CosineVelocityTerm(LossTerm):
    name = "cos"

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig):
        super().__init__()
        self.coeff = float(cfg.cosine_coeff)

    def forward(self, out: Outputs) -> Tensor:
        return cosine_velocity_loss(out.pred, out.target)
