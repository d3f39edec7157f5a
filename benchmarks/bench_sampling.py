"""Sampling throughput and where the time goes (issue 6 benchmark).

A class-conditional SiT (default SiT-S/2 on 32x32x4 latents, random weights: speed does not
depend on them) samples B latents (default 4) with classifier-free guidance (default 4, all
channels) through the public API: sit.network_sampler.build_sampler (the seam of sit sample).
For each sampler at equal NFE it reports the network calls and rows per call (counted at the
network), wall time (median of --repeats), images/s, time per network call and the share of
time spent outside the network (sampler arithmetic, guidance mixing, conversions).

Cases: Euler ODE (N steps), Heun ODE (N/2 steps, same NFE), Euler-Maruyama SDE (N steps, one
network call per step: the score comes from the same call by eq. 9), and the official SiT
structure for the same SDE, which evaluates the network twice per step (drift velocity, then
score): emulated here by a field that calls the network twice per step.

    python benchmarks/bench_sampling.py                       # SiT-S/2, 4 latents, cfg 4, 50 steps
    python benchmarks/bench_sampling.py --device cuda --precision bf16 --batch 64
    python benchmarks/bench_sampling.py --model SiT-XL/2 --device cuda --precision bf16 --batch 32 --compile
    python benchmarks/bench_sampling.py --precision bf16-weights --compile --nfe 10 --threads 2   # CPU, `sit sample`'s fastest

Each network call is also set against the bf16 matmul peak (one --peak-size^3 matmul probed right
before every timed run on CPUs; --gpu-peak on GPUs): the model's matmul FLOPs for the call's rows
(``forward_flops``) per second inside the network over that peak, and every sampler's cost per
step is given relative to the Euler ODE's (the SDE step's extra work is its noise and the
velocity-to-score conversion, eq. 9).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

from sit.config import model_preset
from sit.generate.glue import prepare_network
from sit.guidance import GuidanceConfig
from sit.models.sit import SiT, forward_flops
from sit.network_sampler import ModelInfo, build_sampler
from sit.samplers import SampleConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import peak_probe  # noqa: E402  (the matmul probe of bench_model.py and bench_train.py)


class TimedNet(torch.nn.Module):
    """Counts calls, rows and the time spent inside the network (synchronising CUDA)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.in_channels, self.out_channels = net.in_channels, net.out_channels
        self.config, self.num_classes = net.config, net.num_classes
        self.twice = False  # the official SDE step: drift (velocity) and score from two network calls
        self.reset()

    def reset(self):
        self.calls, self.rows, self.seconds = 0, 0, 0.0

    def forward(self, x, t, y=None):
        sync = x.device.type == "cuda"
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = self.net(x, t, y)
        if self.twice:
            self.net(x, t, y)
            self.calls += 1
            self.rows += x.shape[0]
        if sync:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.rows += x.shape[0]
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="SiT-S/2")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4, help="latents per sampling run")
    ap.add_argument("--nfe", type=int, default=50, help="network evaluations per sample (Euler / EM steps)")
    ap.add_argument("--cfg-scale", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16", "bf16-weights"], default="fp32",
                    help="as `sit sample --precision`: bf16 = autocast, bf16-weights = the weights cast to bfloat16")
    ap.add_argument("--peak-size", type=int, default=2048, help="n of the n^3 bf16 matmul probing the peak (CPU)")
    ap.add_argument("--gpu-peak", type=float, default=989.0, help="CUDA: the bf16 peak in TFLOP/s (datasheet)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    ap.add_argument("--compile", action="store_true", help="network through sit.models.sit.compile_for_inference")
    ap.add_argument("--only", nargs="*", help="sampler cases whose name starts with these words (default all)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cfg = model_preset(args.model, input_size=args.input_size)
    torch.manual_seed(0)
    sit_net = SiT(cfg).to(dev).eval().requires_grad_(False)
    with torch.no_grad():
        for p in sit_net.parameters():
            p.normal_(0, 0.02)
    net = TimedNet(prepare_network(sit_net, "bf16-weights" if args.precision == "bf16-weights" else "fp32", args.compile))
    precision = "bf16" if args.precision == "bf16" else "fp32"  # bf16-weights: cast above
    guidance = GuidanceConfig(scale=args.cfg_scale)
    B, N = args.batch, args.nfe
    y = torch.arange(B, device=dev) * 97 % cfg.num_classes
    shape = (B, cfg.in_channels, cfg.input_size, cfg.input_size)

    def sampler(scfg):  # the one seam of sit sample / sweep / previews / study
        return build_sampler(net, ModelInfo("linear", "velocity"), scfg, guidance, precision=precision)

    # (name, sampler config, official two-calls-per-step SDE)
    cases = [
        ("euler ODE", SampleConfig(method="euler", num_steps=N), False),
        ("heun ODE", SampleConfig(method="heun", num_steps=N // 2), False),
        ("dpmpp_2m ODE (logsnr grid)", SampleConfig(method="dpmpp_2m", num_steps=N, grid="logsnr"), False),
        ("euler_maruyama SDE (sit)", SampleConfig(method="euler_maruyama", num_steps=N, w="sigma"), False),
        ("euler_maruyama SDE, official 2 calls/step", SampleConfig(method="euler_maruyama", num_steps=N, w="sigma"),
         True),
    ]
    if args.only:
        cases = [c for c in cases if any(c[0].startswith(o) for o in args.only)]
    print(f"# torch {torch.__version__}, device {dev}, {args.precision}{'+compile' if args.compile else ''}, threads {torch.get_num_threads()}, "
          f"{args.model} on {cfg.in_channels}x{cfg.input_size}x{cfg.input_size}, batch {B}, cfg {args.cfg_scale}, "
          f"median of {args.repeats}")
    print("| sampler | steps | NFE (sampler) | network calls | rows/call | wall s | images/s | ms/network call | "
          "network % bf16 peak | ms/step | step vs Euler ODE | same, at the ODE's ms/call | outside network |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    gen = torch.Generator(dev).manual_seed(0)
    if dev.type == "cpu":
        cpu_probe = peak_probe(dev, args.peak_size)  # bench_model.py's: one n^3 matmul per dtype

        def probe():
            return cpu_probe()["bf16"]
    else:
        def probe():
            return args.gpu_peak * 1e12
    ode, peaks_all = None, []
    with torch.no_grad():  # first calls (compilation, oneDNN's weight packing) before any timed case
        for _ in range(3):
            sampler(SampleConfig(method="euler", num_steps=1))(torch.randn(shape, generator=gen, device=dev), y)
    for name, scfg, twice in cases:
        net.twice = twice
        x0 = torch.randn(shape, generator=gen, device=dev)
        with torch.no_grad():  # warm-up: one short run of the same sampler
            sampler(dataclasses.replace(scfg, num_steps=min(scfg.num_steps, 2)))(x0, y, generator=gen)
        run = sampler(scfg)
        walls, nets, shares = [], [], []
        for _ in range(args.repeats):
            peak = probe()
            peaks_all.append(peak)
            net.reset()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                _, info = run(x0, y, generator=gen)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            walls.append(time.perf_counter() - t0)
            nets.append(net.seconds)
            rows = net.rows / max(net.calls, 1)
            shares.append(net.calls * forward_flops(cfg, int(rows)) / net.seconds / peak)
        wall, inside = statistics.median(walls), statistics.median(nets)
        per_step, per_call = wall / scfg.num_steps, inside / max(net.calls, 1)
        outside_step, calls_step = (wall - inside) / scfg.num_steps, net.calls / scfg.num_steps
        if name == "euler ODE":
            ode = (per_step, per_call)
        # the raw ratio moves with the machine's load between runs; the second one prices this case's
        # network calls at the ODE run's ms per call (the same call on the same rows) plus its own
        # work outside the network: the sampler's own extra cost per step
        rel = f"{per_step / ode[0]:.3f}" if ode else "-"
        rel_same = f"{(calls_step * ode[1] + outside_step) / ode[0]:.4f}" if ode else "-"
        print(f"| {name} | {scfg.num_steps} | {info['nfe']} | {net.calls} | {net.rows / max(net.calls, 1):.0f} | "
              f"{wall:.3f} | {B / wall:.3f} | {1000 * per_call:.1f} | {100 * statistics.median(shares):.1f} % | "
              f"{1000 * per_step:.1f} | {rel} | {rel_same} | {100 * (wall - inside) / wall:.2f}% |", flush=True)
    print(f"bf16 matmul peak probed before each run ({args.peak_size}^3 on CPU): median {statistics.median(peaks_all) / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
