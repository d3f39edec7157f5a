"""Training throughput of `sit train`'s step against the matmul peak, where the time goes, and the
embedded demo's wall time and quality.

One step = the loop's work (`sit.train`): t and eps drawn, x_t by eq. (1), the network
(ModelField, paper time), the velocity loss (7), backward, grad-norm clipping, AdamW
(``sit.train.make_adamw``: torch's fused kernel; ``sit.train.clip_grad_norm``) and the EMA update (``torch._foreach_lerp_``).
SiT presets on 32x32x4 latents (256x256 images), 1000 classes. Random weights: a fresh SiT is
all-zero in its adaLN layers (adaLN-Zero), so every weight gets a small random value first.

The variants of one (model, batch) are timed in interleaved rounds (one step of each per round)
with an fp32 and a bf16 ``--peak-size``^3 matmul probed at the start of every round, so a
shared machine's load changes hit every variant alike; "% bf16 peak" is the model's matmul
FLOPs (``forward_flops``, a step counts 3x the forward) per second over the bf16 probe of the
same round, median over rounds. Each step is also split into its phases (forward+backward,
clipping, AdamW, EMA: CPU work is synchronous, so wall clocks between phases are exact).

    python benchmarks/bench_train.py --models SiT-S/2 SiT-B/2 --batches 8 --precisions fp32 bf16
    python benchmarks/bench_train.py --models SiT-S/2 --precisions bf16 --optimizers fused loop --profile
    python benchmarks/bench_train.py --models SiT-S/2 --precisions bf16 --compile --rounds 8
    python benchmarks/bench_train.py --loss-track 200 --models SiT-S/2   # bf16 loss vs fp32 over 200 steps
    python benchmarks/bench_train.py --demo --skip-steps                 # `sit train --out <tmp>`, quality.json
    python benchmarks/bench_train.py --device cuda --models SiT-XL/2 --batches 32 --precisions bf16 fp32 --compile

``--profile`` adds, per variant, torch.profiler's self time of one forward+backward grouped into
matmuls (linear, attention, conv), the attention softmax, GELU, LayerNorm, other elementwise
passes (modulation, residuals, scaling, reductions), casts and copies, and inductor's fused
kernels under ``--compile`` (clipping, AdamW and EMA are the timed phases of the table).
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
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

import torch

from sit import dist
from sit.config import model_preset
from sit.models.field import ModelField
from sit.models.sit import SiT, forward_flops
from sit.objectives import LossConfig, training_losses
from sit.paths import get_path
from sit.train import clip_grad_norm, ema_update, make_adamw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import peak_probe, randomise, sync  # noqa: E402  (the same matmul probe as bench_model.py)

PHASES = ("fwd+bwd", "clip", "adamw", "ema")


def make_optimizer(kind: str, params: list):
    if kind == "fused":
        return make_adamw(params, 1e-4)
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0, foreach=(kind == "foreach"))


class Case:
    """One variant's model, optimizer and step, with its inputs (fixed: speed does not depend on them)."""

    def __init__(self, name: str, batch: int, precision: str, optimizer: str, device: torch.device, compile: bool):
        torch.manual_seed(0)
        cfg = model_preset(name, input_size=32, in_channels=4, num_classes=1000)
        with torch.device(device):
            self.net = randomise(SiT(cfg))
            self.ema = SiT(cfg).requires_grad_(False)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = make_optimizer(optimizer, self.params)
        self.fn = ModelField(torch.compile(self.net) if compile else self.net, "velocity", "continuous")
        self.path, self.lc = get_path("linear"), LossConfig()
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(batch, 4, 32, 32, generator=g).to(device)
        self.y = torch.randint(0, 1000, (batch,), generator=g).to(device)
        self.device = device
        self.autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
        self.label = f"{precision}{'+compile' if compile else ''}, AdamW {optimizer}"
        self.flops = 3 * forward_flops(cfg, batch)
        self.batch = batch

    def fwd_bwd(self) -> float:
        with self.autocast():
            loss = training_losses(self.fn, self.path, self.x, self.lc, y=self.y)["loss"].float().mean()
        loss.backward()
        sync(self.device)
        return loss.item()

    def step(self) -> dict:
        """One training step; seconds per phase."""
        dev, out = self.device, {}
        t0 = time.perf_counter()
        loss = self.fwd_bwd()
        t1 = time.perf_counter()
        clip_grad_norm(self.params, float("inf"))  # sit train's default: --grad-clip 0 (off), the norm is still logged
        sync(dev)
        t2 = time.perf_counter()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sync(dev)
        t3 = time.perf_counter()
        ema_update(self.ema, self.net, 0.9999)
        sync(dev)
        t4 = time.perf_counter()
        out.update(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)))
        out["step"] = t4 - t0
        out["loss"] = loss
        return out


# ------------------------------------------------------------------------------------------------
CATEGORIES = [  # (category, op-name predicate), first match wins
    ("inductor fused kernels", lambda n: "CompiledFxGraph" in n or n.startswith("cpp_fused") or n.startswith("triton_")),
    ("matmul: linear", lambda n: n in ("aten::mm", "aten::addmm", "mkldnn::_linear_pointwise", "aten::_addmm_activation")),
    ("matmul: attention", lambda n: n in ("aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
                                          "aten::_scaled_dot_product_flash_attention_for_cpu_backward")),
    ("matmul: conv (patch embed)", lambda n: "convolution" in n),
    ("attention softmax", lambda n: "softmax" in n),
    ("GELU", lambda n: "gelu" in n),
    ("LayerNorm", lambda n: "layer_norm" in n),
    ("casts and copies", lambda n: n in ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous")),
    ("elementwise (modulate, residual, scale, reductions)", lambda n: n.startswith("aten::") and any(
        k in n for k in ("add", "mul", "sub", "div", "sum", "silu", "sigmoid", "where", "neg", "exp", "sin", "cos", "pow", "mean",
                         "fill", "zero", "cat", "embedding", "rand", "normal", "lt", "abs", "sqrt", "index", "stack", "tanh"))),
]


def categorise(name: str) -> str:
    for cat, pred in CATEGORIES:
        if pred(name):
            return cat
    return "other (allocation, views, dispatch)"


def profile_step(case: Case, top: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if case.device.type == "cuda" else [])
    case.step()
    with profile(activities=acts) as prof:  # forward + backward only: the other phases are timed by bench_cases
        t0 = time.perf_counter()
        case.fwd_bwd()
        wall = time.perf_counter() - t0
    case.opt.zero_grad(set_to_none=True)
    events = [e for e in prof.key_averages() if not e.key.startswith(("autograd::", "Optimizer.", "Torch-Compiled", "TorchDynamo"))]
    use_dev = case.device.type == "cuda"
    self_t = (lambda e: e.self_device_time_total) if use_dev else (lambda e: e.self_cpu_time_total)
    by_cat, total = defaultdict(float), 0.0
    for e in events:
        by_cat[categorise(e.key)] += self_t(e)
        total += self_t(e)
    print(f"\nprofile of forward+backward: {case.label}, batch {case.batch}: {wall * 1e3:.0f} ms wall under the profiler; "
          f"self {'device' if use_dev else 'CPU'} time {total / 1e3:.0f} ms (the profiler's overhead included)")
    print("| category | ms | share |\n|---|---|---|")
    for cat, us in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        print(f"| {cat} | {us / 1e3:.1f} | {100 * us / total:.1f} % |")
    print(f"\ntop {top} ops by self time:\n| op | calls | ms | share | category |\n|---|---|---|---|---|")
    for e in sorted(events, key=lambda e: -self_t(e))[:top]:
        print(f"| {e.key} | {e.count} | {self_t(e) / 1e3:.1f} | {100 * self_t(e) / total:.1f} % | {categorise(e.key)} |")


# ------------------------------------------------------------------------------------------------
def bench_cases(name: str, batch: int, args, device) -> None:
    cases = [Case(name, batch, prec, opt, device, comp) for prec in args.precisions for opt in args.optimizers
             for comp in ([False, True] if args.compile else [False])]
    for c in cases:  # warm-up (and compilation)
        for _ in range(args.warmup):
            c.step()
    probe = peak_probe(device, args.peak_size) if device.type == "cpu" else None
    rows = defaultdict(list)
    for _ in range(args.rounds):
        pk = probe() if probe else {"bf16": args.gpu_peak * 1e12, "fp32": float("nan")}
        for c in cases:
            r = c.step()
            r["pk_bf16"], r["pk_fp32"] = pk["bf16"], pk["fp32"]
            rows[c.label].append(r)
    print(f"\n{name}, batch {batch}: {cases[0].flops / 1e9:.1f} GFLOP per step (matmuls, 3x forward); "
          f"median of {args.rounds} interleaved rounds; bf16 / fp32 matmul peak probed each round "
          f"({args.peak_size}^3): {statistics.median(r['pk_bf16'] for r in rows[cases[0].label]) / 1e9:.0f} / "
          f"{statistics.median(r['pk_fp32'] for r in rows[cases[0].label]) / 1e9:.0f} GFLOP/s")
    print("| variant | ms / step | img/s | TFLOP/s | % bf16 peak | % fp32 peak | " + " | ".join(f"{p} ms" for p in PHASES) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(PHASES))
    for c in cases:
        rs = rows[c.label]
        med = statistics.median(r["step"] for r in rs)
        share = statistics.median(c.flops / r["step"] / r["pk_bf16"] for r in rs)
        share32 = statistics.median(c.flops / r["step"] / r["pk_fp32"] for r in rs)
        phases = " | ".join(f"{1e3 * statistics.median(r[p] for r in rs):.1f}" for p in PHASES)
        print(f"| {c.label} | {med * 1e3:.1f} | {batch / med:.2f} | {c.flops / med / 1e12:.3f} | {100 * share:.1f} % | "
              f"{100 * share32:.0f} % | {phases} |", flush=True)
    if args.profile:
        for c in cases:
            profile_step(c, args.top)


def loss_track(name: str, steps: int, device, lr: float) -> None:
    """fp32 vs bf16 autocast from the same weights on the same batches, t and eps (the loop's step
    with fused AdamW): the loss per step, its gap measured against how far training moved it, and
    how far the bf16 weights end from the fp32 ones against how far training moved those."""
    torch.manual_seed(0)
    cfg = model_preset(name, input_size=32, in_channels=4, num_classes=1000)
    base = randomise(SiT(cfg)).state_dict()
    g = torch.Generator().manual_seed(2)
    data = torch.randn(64, 4, 32, 32, generator=g)
    labels = torch.randint(0, 1000, (64,), generator=g)
    curves, weights = {}, {}
    for prec in ("fp32", "bf16"):
        net = SiT(cfg).to(device)
        net.load_state_dict(base)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = make_adamw(params, lr)
        fn = ModelField(net, "velocity", "continuous")
        ac = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if prec == "bf16" else nullcontext
        torch.manual_seed(3)  # the same t and eps draws in both runs
        curve = []
        for s in range(steps):
            idx = torch.arange(s * 8, s * 8 + 8) % 64
            with ac():
                loss = training_losses(fn, get_path("linear"), data[idx].to(device), LossConfig(), y=labels[idx].to(device))["loss"].float().mean()
            loss.backward()
            clip_grad_norm(params, float("inf"))
            opt.step()
            opt.zero_grad(set_to_none=True)
            curve.append(loss.item())
        curves[prec] = curve
        weights[prec] = torch.cat([p.detach().float().flatten().cpu() for p in params])
        print(f"# {prec}: {steps} steps done", flush=True)
    a, b = curves["fp32"], curves["bf16"]
    w0 = torch.cat([base[k].float().flatten() for k, p in SiT(cfg).named_parameters() if p.requires_grad])
    drop = max(a[0] - min(a), 1e-12)
    marks = sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps - 1})
    print(f"\nloss tracking, {name} batch 8, AdamW lr {lr:g}, 64 fixed latents, the same t/eps draws:")
    print("| step | " + " | ".join(str(m) for m in marks) + " | mean of last 20 |")
    print("|---|" + "---|" * (len(marks) + 1))
    for prec, c in curves.items():
        print(f"| {prec} | " + " | ".join(f"{c[m]:.5f}" for m in marks) + f" | {statistics.mean(c[-20:]):.5f} |")
    gaps = [abs(x - y) for x, y in zip(a, b)]
    print(f"loss gap |bf16 - fp32|: largest {max(gaps):.2e} ({100 * max(gaps) / a[0]:.3f} % of the loss, "
          f"{100 * max(gaps) / drop:.2f} % of fp32's drop {drop:.4f}); median {statistics.median(gaps):.2e}")
    moved = float((weights["fp32"] - w0).norm())
    print(f"weights after {steps} steps: |w_bf16 - w_fp32| / |w_fp32 - w_0| = {float((weights['bf16'] - weights['fp32']).norm()) / moved:.4f}")


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
    ap.add_argument("--batches", nargs="+", type=int, default=[8])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--optimizers", nargs="+", default=["fused"], choices=["fused", "foreach", "loop"],
                    help="AdamW implementation: fused (sit train's), foreach, or the per-tensor loop (torch's CPU default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", "--repeats", type=int, default=5, help="interleaved timed rounds")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    ap.add_argument("--peak-size", type=int, default=2048, help="n of the n^3 matmul probing the peak (CPU)")
    ap.add_argument("--gpu-peak", type=float, default=989.0, help="CUDA: the bf16 peak (TFLOP/s) the share is taken against")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--compile", action="store_true", help="also time each case with torch.compile (as `sit train --compile`)")
    ap.add_argument("--no-tf32", action="store_true", help="CUDA: fp32 without TF32 (sit train's default, like the official code, is TF32)")
    ap.add_argument("--profile", action="store_true", help="profile one step per variant, grouped by kind of op")
    ap.add_argument("--top", type=int, default=15, help="ops listed in the profile")
    ap.add_argument("--loss-track", type=int, default=0, metavar="N", help="also compare bf16's loss with fp32's over N steps")
    ap.add_argument("--loss-lr", type=float, default=1e-4, help="learning rate of the --loss-track runs (the ImageNet recipe's)")
    ap.add_argument("--demo", action="store_true", help="also time the embedded demo (`sit train`)")
    ap.add_argument("--demo-args", nargs=argparse.REMAINDER, default=[], help="extra flags for the demo run")
    ap.add_argument("--skip-steps", action="store_true", help="no step timings (only --loss-track / --demo)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}", flush=True)
    with dist.tf32(not args.no_tf32):
        if not args.skip_steps:
            for name in args.models:
                for b in args.batches:
                    bench_cases(name, b, args, device)
        if args.loss_track:
            for name in args.models:
                loss_track(name, args.loss_track, device, args.loss_lr)
    if args.demo:
        print(json.dumps(bench_demo(args.demo_args), indent=1), flush=True)


if __name__ == "__main__":
    main()
