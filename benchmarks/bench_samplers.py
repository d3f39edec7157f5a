"""Sampler benchmark: per-step overhead and Gaussian-target error vs NFE.

1. Overhead: every sampler driven by a trivial field (v = -x, no network) on a (8, 4, 32, 32)
   batch, time per network evaluation; compared with one SiT-S/2 forward on the same batch
   (`sit.models.sit`; if that module is missing, a matmul chain of the same FLOPs, and the table
   says so). Median of --repeats runs after a warm-up.
2. Accuracy: x* ~ N(mu, diag c^2) in 3 dims on the Linear path with the exact field (math.md 7).
   Every scheme is affine per dimension in the initial state and the step noise, so the output
   mean and std are computed exactly from a few probe rows (no Monte-Carlo; SDE noise probes go
   through ``noise_fn``).

    python benchmarks/bench_samplers.py            # markdown tables on stdout
    python benchmarks/bench_samplers.py --device cuda --repeats 20
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from sit.paths import Linear
from sit.samplers import SampleConfig, sample
from sit.toy import GaussianMixture, sde_exact_moments

OVERHEAD = [
    ("euler", {}),
    ("heun", {}),
    ("dopri5", {}),
    ("rk4", {}),
    ("euler_maruyama", {"w": "sigma"}),
    ("euler_maruyama", {"w": "kl"}),
    ("sde_heun", {"w": "sigma"}),
]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, device, repeats):
    fn()
    _sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def network_time(device, dtype, repeats):
    """Seconds for one SiT-S/2 forward on (8, 4, 32, 32); or an equal-FLOP matmul chain."""
    x = torch.randn(8, 4, 32, 32, device=device, dtype=dtype)
    t = torch.rand(8, device=device)
    y = torch.randint(0, 1000, (8,), device=device)
    try:
        from sit.config import MODEL_PRESETS
        from sit.models.sit import SiT, forward_flops

        cfg = MODEL_PRESETS["SiT-S/2"]
        net = SiT(cfg).to(device=device, dtype=dtype).eval()
        label = "SiT-S/2 forward"
        with torch.no_grad():
            sec = _median_time(lambda: net(x, t, y), device, repeats)
        return sec, label, forward_flops(cfg, 8)
    except ImportError:
        flops = 2 * 8 * 256 * 384 * 384 * 12 * 12  # ~ SiT-S/2 linear layers
        a = torch.randn(8 * 256, 384, device=device, dtype=dtype)
        w = torch.randn(384, 384, device=device, dtype=dtype) / 20
        n = max(1, flops // (2 * a.shape[0] * 384 * 384))

        def chain():
            h = a
            for _ in range(n):
                h = h @ w
            return h

        return _median_time(chain, device, repeats), "matmul chain of SiT-S/2 FLOPs (sit.models.sit missing)", flops


def overhead_table(device, dtype, steps, repeats):
    x = torch.randn(8, 4, 32, 32, device=device, dtype=dtype)
    field = lambda x, t: -x  # noqa: E731  trivial "network"
    rows = []
    for method, kw in OVERHEAD:
        cfg = SampleConfig(method=method, num_steps=steps, **kw)
        info = {}

        def run():
            g = torch.Generator(device=device).manual_seed(0)
            _, i = sample(field, x, cfg, Linear(), generator=g)
            info.update(i)

        sec = _median_time(run, device, repeats)
        label = method + (f" (w={kw['w']})" if "w" in kw else "")
        rows.append((label, info["nfe"], sec, sec / max(info["nfe"], 1)))
    return rows


def accuracy_table():
    mu = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    c = torch.tensor([0.5, 1.0, 0.2], dtype=torch.float64)
    gauss = GaussianMixture.gaussian(mu, c)
    path = Linear()
    rows = []
    x01 = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    for method in ("euler", "heun", "rk4", "dopri5"):
        for steps in ((4, 8, 16, 32, 64) if method != "dopri5" else (1,)):
            out, info = sample(gauss.field(path), x01, SampleConfig(method=method, num_steps=steps), path)
            b, A = out[0], out[1] - out[0]
            rows.append((method, steps, info["nfe"], float((b - mu).abs().max()), float((A.abs() - c).abs().max())))
    for method in ("euler_maruyama", "sde_heun"):
        for w in ("sigma", "kl"):
            for last in (None, "mean"):
                for steps in (16, 32, 64, 128):
                    cfg = SampleConfig(method=method, num_steps=steps, w=w, last_step=last)
                    b, sd, info = sde_exact_moments(gauss.field(path), path, cfg, mu.numel())
                    rows.append((f"{method} (w={w}, last step {last})", steps, info["nfe"],
                                 float((b - mu).abs().max()), float((sd - c).abs().max())))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--steps", type=int, default=50, help="steps per sampler in the overhead table")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, device {device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads), dtype {args.dtype}\n")
    net_sec, net_label, flops = network_time(device, dtype, args.repeats)
    print(f"network reference: {net_label}, batch 8 x 4 x 32 x 32: {net_sec * 1e3:.2f} ms ({flops / 1e9:.1f} GFLOP)\n")
    print(f"### Sampler overhead per network evaluation (trivial field v = -x, batch 8x4x32x32, {args.steps} steps)\n")
    print("| sampler | NFE | total ms | overhead per NFE (us) | overhead / network forward |")
    print("|---|---|---|---|---|")
    for label, nfe, sec, per in overhead_table(device, dtype, args.steps, args.repeats):
        print(f"| {label} | {nfe} | {sec * 1e3:.2f} | {per * 1e6:.1f} | {per / net_sec:.1e} |")
    print("\n### Gaussian target N(mu, diag c^2), 3-D, Linear path, exact field: max abs error of mean and std\n")
    print("Exact moments of the numerical scheme, no Monte-Carlo: the scheme is affine in the initial state "
          "(and in the step noise), so a few probe rows give the output mean and std. On Linear the mean path "
          "alpha_t mu is linear in t, so every ODE method gets the mean exactly.\n")
    print("| sampler | steps | NFE | mean error | std error |")
    print("|---|---|---|---|---|")
    for label, steps, nfe, me, se in accuracy_table():
        print(f"| {label} | {steps} | {nfe} | {me:.2e} | {se:.2e} |")


if __name__ == "__main__":
    main()
