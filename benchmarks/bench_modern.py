"""The modern block's cost per training step: SiT with each of SwiGLU, RMSNorm, 2-D RoPE,
QK-norm alone and all four, against the official block, on the same inputs.

    python benchmarks/bench_modern.py                          # the digits demo network, batch 128
    python benchmarks/bench_modern.py --model SiT-S/2 --batch 8   # 32x32x4 latents

A step is forward, MSE against a fixed target, backward and AdamW (fp32). The variants run in
interleaved rounds (one step of each per round, after warm-up) so a change of machine load hits
them alike; reported per variant: parameters, and the median over rounds of the step's CPU seconds
(``time.process_time``: what the step cost, whatever else the machine ran) and wall seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

VARIANTS = {"official": {}, "swiglu": {"swiglu": True}, "rmsnorm": {"rmsnorm": True}, "rope": {"rope": True},
            "qk_norm": {"qk_norm": True}, "all four": {"swiglu": True, "rmsnorm": True, "rope": True, "qk_norm": True}}


def main() -> int:
    from sit.config import ModelConfig, model_preset
    from sit.models.sit import SiT
    from sit.train.recipes import DEMO_MODEL

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="demo (digits 8x8, d4 h128 p2) or a preset name (32x32x4)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="append one JSON line per variant")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.model == "demo":
        base = ModelConfig(**DEMO_MODEL, input_size=8, in_channels=1, num_classes=10)
    else:
        base = model_preset(args.model, learn_sigma=False)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, base.in_channels, base.input_size, base.input_size, generator=g)
    target = torch.randn(x.shape, generator=g)
    t = torch.rand(args.batch, generator=g)
    y = torch.randint(0, base.num_classes, (args.batch,), generator=g)
    runs = {}
    for name, opts in VARIANTS.items():
        torch.manual_seed(0)
        net = SiT(dataclasses.replace(base, **opts)).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        runs[name] = (net, opt, [], [])

    def step(net, opt):
        loss = ((net(x, t, y) - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for r in range(args.warmup + args.rounds):
        for name, (net, opt, cpu, wall) in runs.items():
            c0, w0 = time.process_time(), time.perf_counter()
            step(net, opt)
            if r >= args.warmup:
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
    base_cpu = statistics.median(runs["official"][2])
    for name, (net, _, cpu, wall) in runs.items():
        row = {"model": args.model, "batch": args.batch, "variant": name, "params": net.num_params(),
               "step_cpu_s": round(statistics.median(cpu), 4), "step_wall_s": round(statistics.median(wall), 4),
               "cpu_vs_official": round(statistics.median(cpu) / base_cpu, 3), "threads": args.threads}
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
