"""The study's sampling helper on the math core: one evaluation spec -> class-conditional samples.

A spec is a small dict (stored in every result, so a cell says exactly how it was sampled):
  {"kind": "ode",  "nfe": N}                         Heun on the probability-flow ODE (2), N/2 steps
  {"kind": "sde",  "nfe": N, "w": W, "eta": E}       Euler-Maruyama on the reverse SDE (4), N steps
                                                     (the last one the official "mean" step), w_t = W
  {"kind": "ddpm", "nfe": N}                         DiT's ancestral DDPM sampler, N respaced steps
A spec may name another row of the sampler table `sit.samplers.SAMPLERS` of its kind as
``"method"`` (ode: any ode / multistep row; sde: any sde row; ddpm: ddpm, ddim); its steps for the
NFE budget come from the row (`sit.samplers.steps_for_nfe`). Without it: ``DEFAULT_METHODS``.
Initial and step noise come from a CPU generator seeded by ``noise_seed(seed, key)``: the same
for every cell at a given seed, so cells compare on common noise (and the result does not
depend on the device).
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from sit.config import ModelConfig
from sit.diffusion_coef import LossTable

KINDS = ("ode", "sde", "ddpm")
DEFAULT_METHODS = {"ode": "heun", "sde": "euler_maruyama", "ddpm": "ddpm"}  # the row a spec without "method" uses
ROW_KINDS = {"ode": ("ode", "multistep"), "sde": ("sde",), "ddpm": ("discrete",)}  # the rows a spec kind may name


def spec_method(spec: dict) -> str:
    """The sampler row of ``spec``: its ``"method"``, else its kind's default; ValueError for a row
    of another kind."""
    from sit.sampler_kinds import kind_of

    method = spec.get("method") or DEFAULT_METHODS[spec["kind"]]
    if kind_of(method) not in ROW_KINDS[spec["kind"]]:
        raise ValueError(f"study sampling spec {spec}: method {method!r} is not a sampler row of kind "
                         f"{' / '.join(ROW_KINDS[spec['kind']])}")
    return method


def noise_seed(seed: int, key: str) -> int:
    """A 63-bit seed from the study seed and an evaluation key (stable across runs and machines)."""
    h = hashlib.sha256(f"sit-study/{seed}/{key}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def spec_name(spec: dict) -> str:
    """"ode", "sde:kl", "ddpm" ... (the eta of kl_eta is a separate field)."""
    return f"sde:{spec['w']}" if spec["kind"] == "sde" else spec["kind"]


def _batch(net, cell, model_cfg, spec, y, noise, g, cfg_scale, table) -> tuple[Tensor, int]:
    from sit.discrete import DiscreteSampleConfig
    from sit.network_sampler import ModelInfo, build_sampler, preview_guidance
    from sit.samplers import SampleConfig, steps_for_nfe

    def step_noise(x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=g, dtype=torch.float32).to(device=x.device, dtype=x.dtype)

    method = spec_method(spec)
    if spec["kind"] == "ddpm":
        info, sc = ModelInfo("ddpm", "noise", "discrete"), DiscreteSampleConfig(method=method, num_steps=spec["nfe"])
    elif spec["kind"] == "ode":
        info, sc = ModelInfo(cell.path, cell.prediction), SampleConfig(method=method, num_steps=steps_for_nfe(method, spec["nfe"]))
    else:
        info = ModelInfo(cell.path, cell.prediction)
        sc = SampleConfig(method=method, num_steps=steps_for_nfe(method, spec["nfe"]), w=spec["w"],
                          eta=float(spec.get("eta", 0.0)))
    sampler = build_sampler(net, info, sc, preview_guidance(cfg_scale, model_cfg), table=table)
    x, out = sampler(noise, y, step_noise)
    return x, (spec["nfe"] if spec["kind"] == "ddpm" else int(out["nfe"]))


@torch.no_grad()
def generate(net: nn.Module, cell, model_cfg: ModelConfig, spec: dict, y: Tensor, seed: int, key: str, *,
             cfg_scale: float = 1.0, table: LossTable | None = None, batch_size: int = 500) -> tuple[Tensor, int]:
    """Samples (N, C, S, S) for labels ``y`` (N,) from ``net`` (the EMA network of ``cell``) with
    ``spec``; returns them (on the CPU, float32) and the NFE per sample the sampler used."""
    if spec.get("kind") not in KINDS:
        raise ValueError(f"unknown sampling kind {spec.get('kind')!r}; expected one of {list(KINDS)}")
    spec_method(spec)
    if (spec["kind"] == "ddpm") != (cell.time_input == "discrete"):
        raise ValueError(f"cell {cell.name!r} ({cell.time_input} time) cannot be sampled with {spec['kind']!r}")
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    C, S = model_cfg.in_channels, model_cfg.input_size
    g = torch.Generator().manual_seed(noise_seed(seed, key))
    outs, nfe = [], 0
    try:
        for i in range(0, y.shape[0], batch_size):
            yb = y[i : i + batch_size].to(device)
            noise = torch.randn((yb.shape[0], C, S, S), generator=g).to(device)
            x, nfe = _batch(net, cell, model_cfg, spec, yb, noise, g, cfg_scale, table)
            outs.append(x.float().cpu())
    finally:
        net.train(was_training)
    return torch.cat(outs), nfe
