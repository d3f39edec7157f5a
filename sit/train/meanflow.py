"""MeanFlow (Geng et al. 2025, "Mean Flows for One-step Generative Modeling", arXiv 2505.13447)
as a training objective on the seam (`sit.train.seam`), in paper time (t = 0 data, t = 1 noise,
MeanFlow's own convention).

The network learns the average velocity of the probability-flow ODE over [r, t],
u(z_t, r, t) = (1 / (t - r)) int_r^t v(z_s, s) ds. Differentiating (t - r) u = int_r^t v ds in t
gives the MeanFlow identity

    u(z_t, r, t) = v(z_t, t) - (t - r) d/dt u(z_t, r, t),   d/dt u = v . d_z u + d_t u

(the total derivative along the flow: a Jacobian-vector product with tangent (v, 0, 1) in
(z, r, t)). Training regresses u_theta on the stop-gradient target
u_tgt = v - clip(t - r, 0, 1) (v . d_z u_theta + d_t u_theta), with v the conditional velocity
alpha_dot x + sigma_dot eps of the path (Linear: eps - x; the expectation over (x, eps) at fixed
z_t is the marginal velocity, and the target is affine in v, so the minimiser is the true u).

  * (t, r): two logit-normal draws (location ``meanflow_p_mean``, scale ``meanflow_p_std``),
    t the larger, r the smaller; a share 1 - ``meanflow_ratio`` gets r = t (plain flow matching);
    mapped to the path's training range.
  * The JVP: ``torch.func.jvp`` of z, t, r -> u_theta(z, r, t) at (z_t, t, r) with tangents
    (v, 1, 0): one forward-mode pass that gives u_theta (with its graph, for the backward pass) and
    d/dt u_theta at once.
  * Loss per sample: with err = u_theta - sg(u_tgt), l = ||err||^2 (summed over pixels), the
    adaptive weight w = 1 / (sg(l) + c)^p (``meanflow_norm_eps`` c, ``meanflow_norm_p`` p; p = 0
    gives the plain squared error); the loss is w l.
  * Guidance folded into the target (MeanFlow eq. 19-21), with the network's own instantaneous
    velocities under stop-gradient: v~ = omega v + kappa u(z_t, t, t | c) + (1 - omega - kappa)
    u(z_t, t, t | null) for labelled samples (the dropped ones keep v); sample unguided then.
  * DDP: DDP's forward cannot run inside ``torch.func.jvp``; there the target comes from the JVP of
    the unwrapped network (no graph) and u_theta from a plain forward through DDP (one more forward).
  * Conditioning: the network sees (t, t - r): its usual time embedding (of tau = 1 - t, as every
    sit network) plus a second, zero-initialised one of t - r (ModelConfig.second_time), so at
    r = t it is a plain SiT velocity network (output -u in the official tau convention).

Sampling: the ``meanflow`` row of `sit.samplers.SAMPLERS` (x_r = x_t - (t - r) u, 1 NFE per step).

Must not import: sit.train.builders, sit.generate, sit.commands.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from sit.config import ModelConfig, TrainConfig
from sit.train.seam import Objective, Outputs

UFn = Callable[[Tensor, Tensor, Tensor], Tensor]   # (z, t, r) -> u(z, r, t)


def expand(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def meanflow_target(u_fn: UFn, z: Tensor, t: Tensor, r: Tensor, v: Tensor, aux: bool = False):
    """(u, u_tgt[, aux]): u = u_fn(z, t, r) (with its graph) and the stop-gradient target
    u_tgt = v - clip(t - r, 0, 1) d/dt u, d/dt u the JVP of u_fn at (z, t, r) along (v, 1, 0).
    ``aux``: u_fn returns (u, aux) (e.g. hidden states), passed back third."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    tangents = (v, torch.ones_like(t), torch.zeros_like(r))
    with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no forward-mode derivative
        if aux:
            u, dudt, extra = torch.func.jvp(u_fn, (z, t, r), tangents, has_aux=True)
        else:
            u, dudt = torch.func.jvp(u_fn, (z, t, r), tangents)
    u_tgt = (v - expand((t - r).clamp(0, 1), v).to(v.dtype) * dudt.to(v.dtype)).detach()
    return (u, u_tgt, extra) if aux else (u, u_tgt)


def adaptive_loss(err: Tensor, p: float, c: float) -> Tensor:
    """Per-sample w l with l = ||err||^2 (sum over non-batch dims, float32) and w = 1 / (sg(l) + c)^p."""
    sq = err.float().pow(2).flatten(1).sum(1)
    if p == 0:
        return sq
    return sq / (sq.detach() + c).pow(p)


def sample_tr(n: int, g: torch.Generator, ratio: float, p_mean: float, p_std: float, lo: float = 0.0,
              hi: float = 1.0) -> Tensor:
    """(n, 2) float32 pairs (t, r), t >= r, in [lo, hi] (module docstring), from generator ``g``."""
    s = torch.sigmoid(torch.randn(n, 2, generator=g) * p_std + p_mean)
    t, r = s.max(1).values, s.min(1).values
    r = torch.where(torch.rand(n, generator=g) < ratio, r, t)
    return torch.stack([lo + (hi - lo) * t, lo + (hi - lo) * r], 1)


class MeanFlowObjective(Objective):
    """MeanFlow on ``cfg.path`` (module docstring)."""

    conditioning = {"second_time": True}
    record = {"objective": "meanflow"}

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig):
        from sit.paths import get_path

        self.cfg, self.model_cfg = cfg, model_cfg
        self.path = get_path(cfg.path)
        self.t_lo, self.t_hi = self.path.train_t_range("velocity")
        if cfg.t_min is not None:
            self.t_lo = float(cfg.t_min)
        if cfg.t_max is not None:
            self.t_hi = float(cfg.t_max)

    def sample_t(self, n, g):
        c = self.cfg
        return sample_tr(n, g, c.meanflow_ratio, c.meanflow_p_mean, c.meanflow_p_std, self.t_lo, self.t_hi)

    def t_fraction(self, t):
        return t[:, 0].double()

    def _u_fn(self, net, y: Tensor, blocks: tuple[int, ...]) -> Callable:
        C = self.model_cfg.in_channels

        def u_fn(z, t, r):
            out = net(z, 1 - t, y, t2=t - r, hidden=blocks) if blocks else net(z, 1 - t, y, t2=t - r)
            if blocks:
                out, hidden = out
                return -out[:, :C].to(z.dtype), hidden
            return -out[:, :C].to(z.dtype)  # paper-time average velocity (tau convention: output = -u)

        return u_fn

    def guided_velocity(self, net, z: Tensor, t: Tensor, v: Tensor, y: Tensor) -> Tensor:
        """v~ = omega v + kappa u(z, t, t | y) + (1 - omega - kappa) u(z, t, t | null) on labelled rows
        (stop-gradient network velocities); v itself where the label is the null one or omega = 1, kappa = 0."""
        om, ka = float(self.cfg.meanflow_omega), float(self.cfg.meanflow_kappa)
        if om == 1.0 and ka == 0.0:
            return v
        null = self.model_cfg.num_classes
        u_fn = self._u_fn(net, torch.cat([y, torch.full_like(y, null)]), ())
        with torch.no_grad():
            both = u_fn(torch.cat([z, z]), torch.cat([t, t]), torch.cat([t, t])).to(v.dtype)
        u_c, u_u = both.chunk(2)
        vg = om * v + ka * u_c + (1 - om - ka) * u_u
        return torch.where(expand(y == null, v), v, vg)

    def outputs(self, net, x, t, eps, y):
        from sit.paths import as_coef

        tr = t.to(as_coef(t, x).dtype)
        t_, r_ = tr[:, 0], tr[:, 1]
        z = self.path.x_t(x, eps, t_)
        v = self.guided_velocity(net, z, t_, self.path.velocity_target(x, eps, t_), y)
        blocks = self.hidden_blocks
        bare = getattr(net, "bare", None)
        if bare is None:
            res = meanflow_target(self._u_fn(net, y, blocks), z, t_, r_, v, aux=bool(blocks))
            u, u_tgt = res[0], res[1]
        else:  # DDP: its forward cannot run inside the JVP; the target from the bare network, u through DDP
            with torch.no_grad():
                u_tgt = meanflow_target(self._u_fn(bare, y, ()), z, t_, r_, v)[1]
            res = self._u_fn(net, y, blocks)(z, t_, r_)
            res = (res[0], u_tgt, res[1]) if blocks else (res, u_tgt)
            u = res[0]
        loss = adaptive_loss(u - u_tgt, float(self.cfg.meanflow_norm_p), float(self.cfg.meanflow_norm_eps))
        return Outputs(loss=loss, pred=u, target=u_tgt, x=x, x_t=z, t=t_, eps=eps, y=y,
                       hidden=res[2] if blocks else {}, extra={"r": r_})

    def sample(self, net, y, noise, cfg_scale, g, device):
        """Preview grids and the quality number: the 1-step sampler (x_0 = x_1 - u(x_1, 0, 1)),
        guided at ``cfg_scale`` unless the guidance was folded into training (omega != 1)."""
        from sit.network_sampler import ModelInfo, build_sampler, preview_guidance
        from sit.samplers import SampleConfig

        folded = self.cfg.meanflow_omega != 1.0 or self.cfg.meanflow_kappa != 0.0
        sampler = build_sampler(net, ModelInfo(self.cfg.path, "velocity", "continuous"),
                                SampleConfig(method="meanflow", num_steps=1),
                                preview_guidance(1.0 if folded else cfg_scale, self.model_cfg),
                                precision=self.cfg.precision)
        return sampler(noise, y)[0]
