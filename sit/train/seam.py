"""The objective seam of `sit train`: what an objective hands its loss terms, the term base class
and the objective interface. Imports nothing of sit.train, so every objective and term module
imports it and nothing circles (`sit.train.builders` holds the builder tables).

An objective's ``outputs(net, x, t, eps, y)`` runs the network once (or, for MeanFlow, once with
its Jacobian-vector product) and returns an `Outputs`: the per-sample base loss it minimises and
what it computed on the way, in paper time (t = 0 data, t = 1 noise):

  loss (B,)     the objective's per-sample loss (the step minimises loss + sum coeff x term)
  pred, target  what the network predicted (after the tau sign flip: a paper-time velocity for a
                velocity model; MeanFlow: the average velocity u(x_t, r, t)) and what it regresses on
  x, x_t, t, eps, y   data, network input, times (B,), noise, labels (the null label where dropped)
  hidden        {block (1-based): tokens (B, N, D) after that block}, for the blocks the terms ask
                for (``LossTerm.hidden_blocks``); empty when none do
  pixels        the training images in [-1, 1] when a term ``needs_pixels``, else None
  extra         objective-specific tensors (MeanFlow: "r", the start time of the average)

A term is one module plus one typed TrainConfig field: ``forward(out: Outputs) -> (B,)``; it may
own trainable modules (REPA's projector), which the loop trains, averages over DDP ranks and saves
as the checkpoint's ``objective.safetensors``. Terms never hook the network.

Must not import: sit.train (any module), sit.generate, sit.commands.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor, nn

NetFn = Callable[..., Tensor]   # (x, t_net, y, **cond) -> network output (or (output, hidden) with hidden=...)


@dataclasses.dataclass
class Outputs:
    """What an objective computed on one micro-batch (module docstring)."""

    loss: Tensor
    pred: Tensor
    target: Tensor
    x: Tensor
    x_t: Tensor
    t: Tensor
    eps: Tensor
    y: Tensor | None = None
    hidden: dict[int, Tensor] = dataclasses.field(default_factory=dict)
    pixels: Tensor | None = None
    extra: dict[str, Tensor] = dataclasses.field(default_factory=dict)


class LossTerm(nn.Module):
    """An extra loss term of an objective. ``name`` keys its mean in metrics.jsonl
    (``loss_<name>``); the step's loss is the objective's + sum of ``coeff`` x term.
    ``hidden_blocks``: the blocks (1-based) whose output tokens the term reads from
    ``Outputs.hidden``; ``needs_pixels``: it reads the training images (``Outputs.pixels``).
    ``forward(out)`` runs after the objective on the same micro-batch, under the same autocast."""

    name: str = "term"
    coeff: float = 1.0
    needs_pixels: bool = False
    hidden_blocks: tuple[int, ...] = ()

    def forward(self, out: Outputs) -> Tensor:
        """Per-sample losses (B,) of this term on the objective's outputs."""
        raise NotImplementedError


class Objective:
    """The interface the loop uses. ``record``: extra keys of every metrics.jsonl loss record;
    ``terms``: the extra loss terms; ``hidden_blocks``: the union of theirs (the network returns
    those blocks' tokens); ``conditioning``: ModelConfig fields the objective needs set (inputs it
    adds to the network's conditioning, e.g. MeanFlow's second time)."""

    record: dict = {}
    terms: nn.ModuleList = nn.ModuleList()
    hidden_blocks: tuple[int, ...] = ()
    conditioning: dict = {}

    def sample_t(self, n: int, g: torch.Generator) -> Tensor:
        """Times of a global micro-batch, from generator ``g`` (CPU): (n,), or (n, k) for an
        objective with k times per sample (MeanFlow: (t, r))."""
        raise NotImplementedError

    def outputs(self, net: NetFn, x: Tensor, t: Tensor, eps: Tensor, y: Tensor) -> Outputs:
        """The `Outputs` of network ``net`` on data ``x`` at times ``t`` with noise ``eps``."""
        raise NotImplementedError

    def losses(self, net: NetFn, x: Tensor, t: Tensor, eps: Tensor, y: Tensor) -> Tensor:
        """Per-sample losses (B,): ``outputs(...).loss``."""
        return self.outputs(net, x, t, eps, y).loss

    def t_fraction(self, t: Tensor) -> Tensor:
        """Each sample's time as a float64 fraction in [0, 1]."""
        raise NotImplementedError

    def sample(self, net: nn.Module, y: Tensor, noise: Tensor, cfg_scale: float, g: torch.Generator,
               device: torch.device) -> Tensor:
        """Samples from ``noise`` (B, C, S, S) for labels ``y`` with guidance ``cfg_scale``."""
        raise NotImplementedError


def call_net(net: NetFn, x: Tensor, t_net: Tensor, y: Tensor | None, hidden: tuple[int, ...] = (),
             **cond) -> tuple[Tensor, dict[int, Tensor]]:
    """(output, {block: tokens}) of ``net``; asks for hidden states only when ``hidden`` is given,
    so a network called without them runs exactly as before."""
    if hidden:
        return net(x, t_net, y, hidden=hidden, **cond)
    return net(x, t_net, y, **cond), {}
