"""Training throughput of `sit train`'s step (images/s), and the embedded demo's wall time and quality.

One step = the loop's work: t and eps drawn, x_t by eq. (1), the network (ModelField, paper time),
the velocity loss (7), backward, AdamW, EMA. SiT presets on 32x32x4 latents (256x256 images), 1000
classes, label dropout 0.1. Median of --repeats timed steps after one warm-up step.

    python benchmarks/bench_train.py --models SiT-S/2 SiT-B/2 --batches 8 32 --precisions fp32 bf16
    python benchmarks/bench_train.py --demo            # also runs `sit train --out <tmp>` and reads quality.json
    python benchmarks/bench_train.py --device cuda --models SiT-XL/2 --batches 32 --precisions bf16 fp32 --compile
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from sit import dist
from sit.config import model_preset
from sit.models.field import ModelField
from sit.models.sit import SiT
from sit.objectives import LossConfig, training_losses
from sit.paths import get_path
from sit.train import ema_update


def bench_step(name: str, batch: int, precision: str, device: str, repeats: int, compile: bool = False) -> dict:
    torch.manual_seed(0)
    cfg = model_preset(name, input_size=32, in_channels=4, num_classes=1000)
    with torch.device(device):
        net = SiT(cfg)
        ema = SiT(cfg).requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0)
    fn = ModelField(torch.compile(net) if compile else net, "velocity", "continuous")
    path, lc = get_path("linear"), LossConfig()
    x = torch.randn(batch, 4, 32, 32, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    ac = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def step():
        with ac:
            loss = training_losses(fn, path, x, lc, y=y)["loss"].float().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema_update(ema, net, 0.9999)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()  # warm-up (and compilation)
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"model": name, "batch": batch, "precision": precision + ("+compile" if compile else ""), "s_per_step": med, "img_per_s": batch / med,
            "params_M": sum(p.numel() for p in net.parameters()) / 1e6}


def bench_demo(extra: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix="sit-demo-")) / "demo"
    cmd = [sys.executable, "-m", "sit.cli", "train", "--out", str(out), "--no-progress", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    q = json.loads((out / "quality.json").read_text()) if (out / "quality.json").is_file() else {}
    return {"cmd": " ".join(cmd[1:]), "wall_s": wall, "run": str(out), **{k: q.get(k) for k in ("accuracy", "fid", "precision", "recall")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["SiT-S/2", "SiT-B/2"])
    ap.add_argument("--batches", nargs="+", type=int, default=[8, 32])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--compile", action="store_true", help="also time each case with torch.compile (as `sit train --compile`)")
    ap.add_argument("--no-tf32", action="store_true", help="CUDA: fp32 without TF32 (sit train's default, like the official code, is TF32)")
    ap.add_argument("--demo", action="store_true", help="also time the embedded demo (`sit train`)")
    ap.add_argument("--demo-args", nargs=argparse.REMAINDER, default=[], help="extra flags for the demo run")
    ap.add_argument("--skip-steps", action="store_true", help="only the demo")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}", flush=True)
    if not args.skip_steps:
        print("| model | batch | precision | s/step | img/s |\n|---|---|---|---|---|", flush=True)
        with dist.tf32(not args.no_tf32):
            for name in args.models:
                for b in args.batches:
                    for prec in args.precisions:
                        for comp in ([False, True] if args.compile else [False]):
                            r = bench_step(name, b, prec, args.device, args.repeats, comp)
                            print(f"| {name} | {b} | {r['precision']} | {r['s_per_step']:.3f} | {r['img_per_s']:.2f} |", flush=True)
    if args.demo:
        print(json.dumps(bench_demo(args.demo_args), indent=1), flush=True)


if __name__ == "__main__":
    main()
