"""`compile_for_inference`: a network compiled with inductor's freezing for sampling and evaluation."""

from __future__ import annotations

import torch
import torch.nn as nn


class FrozenCompiled(nn.Module):
    """``net`` compiled for inference with inductor freezing (see ``compile_for_inference``).
    Calls run under ``torch.no_grad()`` with freezing on; attributes fall through to ``net``."""

    def __init__(self, net: nn.Module, dynamic: bool = False):
        super().__init__()
        self.net = net
        self._compiled = torch.compile(net, dynamic=dynamic)

    def forward(self, *args, **kwargs):
        import torch._inductor.config as inductor_config

        # freezing is read when a graph is compiled (first call, and each new input shape); it is
        # set only around these calls so other compiled code in the process is not frozen
        with inductor_config.patch(freezing=True), torch.no_grad():
            return self._compiled(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["net"], name)


def compile_for_inference(net: nn.Module, dynamic: bool = False) -> FrozenCompiled:
    """``torch.compile`` for sampling and evaluation, with inductor's *freezing*: the weights become
    constants of the compiled graph, so casts are folded, and on CPUs the linear weights are
    prepacked once into oneDNN's blocked layout and the LayerNorm/modulate/GELU/residual passes
    are fused around them (SiT-S/2 bf16 forward on 8 rows: about 66 % -> 80 % of the bf16 matmul
    peak on an AVX-512-BF16 CPU; docs/benchmarks.md "Network").

    Puts ``net`` in eval mode without gradients and returns a module whose calls run under
    ``torch.no_grad()``. The compiled graph is only valid while the weights do not change
    (compile again after loading new ones); each new batch shape compiles once (``dynamic=False``:
    samplers keep one shape). Attribute access (``config``, ``in_channels`` ...) falls through.
    """
    net.eval().requires_grad_(False)
    return FrozenCompiled(net, dynamic=dynamic)
