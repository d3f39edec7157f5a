"""Extra loss terms on the objective seam (`sit.train.objective.LossTerm`) that need no encoder.

`CosineVelocityTerm` (LightningDiT, Yao et al. 2025): the direction of the predicted velocity
against the target's, per pixel over the channels,

    L_cos = mean over pixels of 1 - cos(v_theta(x_t, t)[:, :, i, j], v*[:, :, i, j]),   v* = alpha_dot x* + sigma_dot eps

(eq. 7's target), weighted by ``cosine_coeff`` (LightningDiT: 1). Velocity prediction in
continuous time only. The network's output is taken by a forward hook on its final layer
(unpatchified here); the official tau convention's sign flip (v = -output) is applied before
the comparison. Owns no modules.

Must not import: sit.generate, sit.commands.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sit.config import ModelConfig, TrainConfig
from sit.train.objective import LossTerm


def cosine_velocity_loss(v: Tensor, target: Tensor) -> Tensor:
    """1 - cos over the channel dimension, averaged over the other non-batch dimensions: (B, C, ...) -> (B,)."""
    return (1 - F.cosine_similarity(v.float(), target.float(), dim=1)).flatten(1).mean(1)


class CosineVelocityTerm(LossTerm):
    name = "cos"

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig):
        super().__init__()
        from sit.paths import get_path

        self.coeff = float(cfg.cosine_coeff)
        self.channels = model_cfg.in_channels
        self.__dict__["path"] = get_path(cfg.path)
        self.__dict__["_out"] = None
        self.__dict__["_net"] = None

    def attach(self, net: nn.Module) -> None:
        self.__dict__["_net"] = net

        def keep(_module, _inputs, out):
            self.__dict__["_out"] = out

        net.final_layer.register_forward_hook(keep)

    def forward(self, x, t, eps, y, pixels):
        out = self.__dict__["_out"]
        self.__dict__["_out"] = None
        if out is None:
            raise RuntimeError("cosine term: the network's final layer did not run before the term")
        v = -self.__dict__["_net"].unpatchify(out)[:, : self.channels]  # paper-time velocity
        return cosine_velocity_loss(v, self.path.velocity_target(x, eps, t))
