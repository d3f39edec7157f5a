"""sit against the official SiT ``transport`` package, number by number (issue 19, fidelity).

For each cell of ``bench_fidelity.py`` (path, prediction, loss weight) and one network (sit's SiT
at the fidelity settings, weights drawn at random with the zero-initialised adaLN / output layers
perturbed so that the output depends on x, t and y), on the same data batch x1, noise x0 and
official times tau (paper t = 1 - tau), this prints the largest relative difference between

  loss      official ``Transport.training_losses`` (its ``sample`` replaced by the fixed draw)
            and ``sit.objectives.training_losses`` (t = 1 - tau, eps = x0), per sample;
  grad      the gradients of the two batch losses w.r.t. every network weight;
  drift     official ``Transport.get_drift()`` (score_ode / velocity_ode, d/dtau) and minus sit's
            ``velocity_field`` (d/dt) at the official ODE grid's times;
  sample    official ``Sampler.sample_ode(sampling_method="heun2", num_steps=N)`` and sit's Heun
            from the same noise, with N - 1 steps (the official grid: N points) and with N steps;

and the official training / sampling intervals (``check_interval``) in paper time next to sit's
``Path.train_t_range`` / ``sample_t_range``. The official package is not part of sit and is never
shipped with it: pass the folder that holds ``transport/`` of a willisma/SiT checkout (it needs torch
and torchdiffeq only):

    python benchmarks/check_official_transport.py --official /path/to/SiT

Prints figures only; nothing here is a test.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from bench_fidelity import (  # noqa: E402
    CELLS,
    OFFICIAL_NAMES,
    fidelity_model_config,
    load_official,
    parse_cells,
    real_digits,
)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 when both are 0)."""
    a, b = a.double(), b.double()
    den = b.abs().max().item()
    num = (a - b).abs().max().item()
    return num / den if den > 0 else num


def perturbed_net(seed: int):
    """sit's SiT at the fidelity settings with every weight random (adaLN-Zero layers included)."""
    from sit.models.sit import SiT

    torch.manual_seed(seed)
    net = SiT(fidelity_model_config())
    with torch.no_grad():
        for block in net.blocks:
            block.adaLN_modulation[-1].weight.normal_(0, 0.02)
            block.adaLN_modulation[-1].bias.normal_(0, 0.02)
        net.final_layer.adaLN_modulation[-1].weight.normal_(0, 0.02)
        net.final_layer.linear.weight.normal_(0, 0.05)
        net.final_layer.linear.bias.normal_(0, 0.05)
    return net.eval()  # no label dropout: both sides see the same labels


def check_cell(cell: str, official, args, x1: torch.Tensor, y: torch.Tensor) -> dict:
    from sit.models.field import ModelField
    from sit.objectives import LossConfig, training_losses, velocity_field
    from sit.paths import get_path
    from sit.samplers import SampleConfig, sample

    path_name, prediction, weight = CELLS[cell]
    transport = official.create_transport(OFFICIAL_NAMES[path_name], prediction, weight)
    path = get_path(path_name)
    net = perturbed_net(args.seed)
    out: dict = {}

    # time ranges: official check_interval (official time tau) -> paper time t = 1 - tau
    t0, t1 = transport.check_interval(transport.train_eps, transport.sample_eps)
    out["train_range_official"] = (round(1 - t1, 9), round(1 - t0, 9))
    out["train_range_sit"] = path.train_t_range(prediction)
    t0, t1 = transport.check_interval(transport.train_eps, transport.sample_eps, sde=False, eval=True)
    out["sample_range_official"] = (round(1 - t0, 9), round(1 - t1, 9))
    out["sample_range_sit"] = path.sample_t_range(prediction)

    # loss and gradient on one fixed draw
    g = torch.Generator().manual_seed(args.seed + 1)
    x0 = torch.randn(x1.shape, generator=g)
    lo, hi = transport.check_interval(transport.train_eps, transport.sample_eps)
    tau = torch.rand(x1.shape[0], generator=g) * (hi - lo) + lo
    tau[:4] = torch.tensor([lo, hi, 0.5, 0.25])  # the interval's ends and two exact midpoints
    transport.sample = lambda x: (tau, x0, x)  # official training_losses draws through self.sample
    net.zero_grad()
    lo_off = transport.training_losses(lambda x, t, **kw: net(x, t, **kw), x1, dict(y=y))["loss"]
    lo_off.mean().backward()
    g_off = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    net.zero_grad()
    cfg = LossConfig(prediction=prediction, loss_weight=weight)
    lo_sit = training_losses(ModelField(net, prediction, "continuous"), path, x1, cfg, y=y, t=1 - tau, eps=x0)["loss"]
    lo_sit.mean().backward()
    g_sit = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    per_sample = ((lo_sit.double() - lo_off.double()).abs() / lo_off.double().abs()).max().item()
    out["loss_rel"] = per_sample
    out["loss_mean"] = (lo_off.mean().item(), lo_sit.mean().item())
    out["grad_rel"] = rel(g_sit, g_off)

    # drift at the official ODE grid's times
    n = args.samples
    labels = torch.arange(n) % 10
    noise = torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(args.seed + 2))
    t0, t1 = transport.check_interval(transport.train_eps, transport.sample_eps, sde=False, eval=True)
    grid = torch.linspace(t0, t1, args.heun_steps)
    drift_off = transport.get_drift()
    field = velocity_field(ModelField(net, prediction, "continuous"), path, prediction, y=labels)
    worst = 0.0
    with torch.no_grad():
        for tt in grid:
            tv = torch.full((n,), float(tt))
            d_off = drift_off(noise, tv, lambda x, t, **kw: net(x, t, **kw), y=labels)
            d_sit = -field(noise, 1 - tv)
            worst = max(worst, rel(d_sit, d_off))
    out["drift_rel"] = worst

    # the whole ODE sample
    sampler = official.Sampler(transport)
    with torch.no_grad():
        x_off = sampler.sample_ode(sampling_method="heun2", num_steps=args.heun_steps)(
            noise, lambda x, t, **kw: net(x, t, **kw), y=labels)[-1]
        for steps in (args.heun_steps - 1, args.heun_steps):
            x_sit, _ = sample(field, noise, SampleConfig(method="heun", num_steps=steps), path, prediction=prediction)
            out[f"sample_rel_{steps}"] = rel(x_sit, x_off)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="folder holding the official transport/ package (a willisma/SiT checkout)")
    ap.add_argument("--cells", default=",".join(CELLS), help="comma list (default: all six)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=256, help="data batch of the loss check")
    ap.add_argument("--samples", type=int, default=256, help="samples of the drift / ODE check")
    ap.add_argument("--heun-steps", type=int, default=25, help="official num_steps (grid points)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cells = parse_cells(ap, args.cells)
    official = load_official(args.official)
    importlib.import_module("torchdiffeq")
    x, y = real_digits()
    idx = torch.randint(0, x.shape[0], (args.batch,), generator=torch.Generator().manual_seed(args.seed))
    x1, y1 = x[idx], y[idx]
    n = args.heun_steps
    print(f"{'cell':16s} {'train t (official | sit)':>34s} {'ODE t (official | sit)':>32s} "
          f"{'loss rel':>9s} {'grad rel':>9s} {'drift rel':>9s} {f'x {n - 1} st':>9s} {f'x {n} st':>9s}")
    for cell in cells:
        r = check_cell(cell, official, args, x1, y1)

        def rng(a, b):
            return f"[{a[0]:g},{a[1]:g}]|[{b[0]:g},{b[1]:g}]"

        print(f"{cell:16s} {rng(r['train_range_official'], r['train_range_sit']):>34s} "
              f"{rng(r['sample_range_official'], r['sample_range_sit']):>32s} "
              f"{r['loss_rel']:9.1e} {r['grad_rel']:9.1e} {r['drift_rel']:9.1e} "
              f"{r[f'sample_rel_{n - 1}']:9.1e} {r[f'sample_rel_{n}']:9.1e}", flush=True)
        if not math.isfinite(r["loss_rel"]):
            print(f"  loss means (official, sit): {r['loss_mean']}")
    print("\nrelative differences: max |sit - official| / max |official| (loss: per sample); "
          "ODE t: (start, end) in paper time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
