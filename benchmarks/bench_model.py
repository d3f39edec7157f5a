"""Network speed: forward and forward+backward+AdamW step of SiT in fp32 and bf16, vs matmul peak.

    python benchmarks/bench_model.py                       # SiT-S/2 and SiT-B/2, 32x32x4, batch 8 (CPU)
    python benchmarks/bench_model.py --models SiT-XL/2 --batch 32 256 --device cuda
    python benchmarks/bench_model.py --quick               # fewer repeats, no loss-tracking run

For each model it prints the time of a forward pass (no grad) and of a training step (forward,
MSE loss against a fixed target, backward, AdamW) for these variants:
  official   the official forward structure, op by op (``reference_forward``: unfused modulate,
             explicit softmax attention, einsum unpatchify), fp32 -- the baseline
  fp32       sit's fused forward (SDPA, addcmul modulation, one SiLU for all adaLN layers)
  bf16-auto  fp32 weights under torch.autocast(bfloat16)
  bf16-w     bf16 weights (forward); training with fp32 master weights in AdamW (``MasterAdamW``)
  +mm        attention as two explicit matmuls (``attn_impl="matmul"``) instead of SDPA
  +compile   the same under torch.compile (``--compile``)
with the model FLOPs per pass (matmuls only, ``sit.models.sit.forward_flops``; a training step
counts 3x the forward), the achieved FLOP/s, and the ratio to the fp32 and bf16 matmul peaks
measured with large ``torch.matmul`` in the same run. Timings are medians over ``--repeats``.
On a shared machine the available compute changes from second to second, so the peak is also
probed (one ``--probe-size``^3 matmul per dtype) right before every timed run, and the %-of-peak
columns are the median of the per-run ratios.
A short training run (``--loss-steps``) compares the bf16 loss curve with the fp32 one.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from sit.config import model_preset
from sit.models.sit import SiT, forward_flops, reference_forward


# ------------------------------------------------------------------------------------------------
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, repeats: int, warmup: int = 1, probe=None) -> tuple[float, list]:
    """Median wall time of fn() over ``repeats`` runs after ``warmup`` runs (seconds), and the
    list of ``probe()`` results taken right before each timed run (the matmul peak of that moment:
    on a shared machine the load changes from second to second)."""
    for _ in range(warmup):
        fn()
    sync(device)
    ts, probes = [], []
    for _ in range(repeats):
        if probe is not None:
            probes.append(probe())
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), [(t, p) for t, p in zip(ts, probes)]


def matmul_peak(dtype, device, n: int, repeats: int) -> float:
    """FLOP/s of an n x n x n torch.matmul (median)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t, _ = timeit(lambda: torch.matmul(a, b), device, repeats, warmup=2)
    return 2 * n**3 / t


def peak_probe(device, n: int):
    """A function measuring the fp32 and bf16 matmul FLOP/s now (one n^3 product each)."""
    mats = {dt: (torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt))
            for dt in (torch.float32, torch.bfloat16)}

    def probe():
        out = {}
        for dt, (a, b) in mats.items():
            sync(device)
            t0 = time.perf_counter()
            torch.matmul(a, b)
            sync(device)
            out[dt] = 2 * n**3 / (time.perf_counter() - t0)
        return out

    return probe


class MasterAdamW:
    """AdamW on fp32 master copies of bf16 model weights: grads (bf16) are copied into the masters'
    .grad, the step runs in fp32, and the masters are cast back into the bf16 weights."""

    def __init__(self, params, **kw):
        self.params = [p for p in params if p.requires_grad]
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        self.opt = torch.optim.AdamW(self.master, **kw)

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p, m in zip(self.params, self.master):
            m.grad = p.grad.float() if p.grad is not None else None
        self.opt.step()
        torch._foreach_copy_(self.params, self.master)


# ------------------------------------------------------------------------------------------------
def make_inputs(cfg, batch, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g).to(device)
    t = torch.rand(batch, generator=g).to(device)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g).to(device)
    target = torch.randn(batch, cfg.out_channels, cfg.input_size, cfg.input_size, generator=g).to(device)
    return x, t, y, target


def randomise(net, seed=0, scale=0.02):
    """Fresh SiTs output zeros (adaLN-Zero); give every weight a small random value so the timing
    and the loss comparison exercise a non-trivial network."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net


def variants(args):
    names = ["official", "fp32", "fp32+mm", "bf16-auto", "bf16-w", "bf16-auto+mm", "bf16-w+mm"]
    if args.compile:
        names += ["bf16-auto+mm+compile"]
    return [n for n in names if not args.only or n in args.only]


def build(variant, cfg, device, base_state):
    net = SiT(cfg).to(device)
    net.load_state_dict(base_state)
    net.set_attn_impl("matmul" if "+mm" in variant else "sdpa")  # explicit, whatever the default
    ctx = contextlib.nullcontext
    if variant.startswith("bf16-w"):
        net = net.to(torch.bfloat16)
    if variant.startswith("bf16-auto"):
        ctx = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    fwd = (lambda x, t, y: reference_forward(net, x, t, y)) if variant == "official" else net
    if variant.endswith("+compile"):
        fwd = torch.compile(net)
    if variant.startswith("bf16-w"):
        opt = MasterAdamW(net.parameters(), lr=1e-4, weight_decay=0)
    else:
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4, weight_decay=0)
    return net, fwd, ctx, opt


def train_step(net, fwd, ctx, opt, x, t, y, target):
    with ctx():
        out = fwd(x, t, y)
    loss = F.mse_loss(out.float(), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def bench_model(name, batch, args, device, peaks):
    cfg = model_preset(name)
    base = randomise(SiT(cfg)).state_dict()
    x, t, y, target = make_inputs(cfg, batch, device)
    fl_fwd = forward_flops(cfg, batch)
    probe = peak_probe(device, args.probe_size)
    probe()
    rows = []
    for v in variants(args):
        net, fwd, ctx, opt = build(v, cfg, device, base)

        def forward():
            with torch.no_grad(), ctx():
                return fwd(x, t, y)

        net.eval()
        tf, pf = timeit(forward, device, args.repeats, warmup=args.warmup, probe=probe)
        net.train()
        tt, pt = timeit(lambda: train_step(net, fwd, ctx, opt, x, t, y, target), device, args.repeats, args.warmup, probe)
        for kind, sec, fl, pairs in (("forward", tf, fl_fwd, pf), ("train step", tt, 3 * fl_fwd, pt)):
            # utilisation against the peak probed right before each run, median over runs
            rel = {dt: statistics.median(fl / s / p[dt] for s, p in pairs) for dt in (torch.float32, torch.bfloat16)}
            rows.append((name, batch, v, kind, sec, fl, rel))
        del net, fwd, opt
        print(f"  {name} {v}: forward {tf * 1e3:.0f} ms, train step {tt * 1e3:.0f} ms", flush=True)
    print(f"\n{name}  batch {batch}  input {cfg.in_channels}x{cfg.input_size}x{cfg.input_size}  "
          f"forward {fl_fwd / 1e9:.1f} GFLOP, train step {3 * fl_fwd / 1e9:.1f} GFLOP (matmul FLOPs)")
    print(f"{'variant':<20}{'pass':<12}{'ms':>9}{'img/s':>9}{'TFLOP/s':>9}{'%fp32pk':>9}{'%bf16pk':>9}{'vs official':>12}")
    base_t = {k: s for (_, _, v, k, s, _, _) in rows if v == "official"}
    for (_, _, v, kind, sec, fl, rel) in rows:
        ratio = f"{base_t[kind] / sec:.2f}x" if kind in base_t else "-"
        print(f"{v:<20}{kind:<12}{sec * 1e3:9.1f}{batch / sec:9.1f}{fl / sec / 1e12:9.3f}"
              f"{100 * rel[torch.float32]:8.0f}%{100 * rel[torch.bfloat16]:8.0f}%{ratio:>12}")
    print("(%pk: achieved FLOP/s over the matmul FLOP/s probed just before each timed run, median over runs)")
    return rows


def loss_tracking(name, args, device):
    """Train the same init on the same batches in fp32 and in bf16: the loss curves should agree."""
    cfg = model_preset(name)
    base = randomise(SiT(cfg)).state_dict()
    curves = {}
    for v in ("fp32", "bf16-auto+mm", "bf16-w+mm"):
        net, fwd, ctx, opt = build(v, cfg, device, base)
        for g in (opt.opt if isinstance(opt, MasterAdamW) else opt).param_groups:
            g["lr"] = 3e-4
        torch.manual_seed(0)
        net.train()
        losses = []
        for i in range(args.loss_steps):
            x, t, y, _ = make_inputs(cfg, args.loss_batch, device, seed=100 + i)
            target = -x.repeat(1, 2, 1, 1)  # a learnable map: output = -input (both halves)
            losses.append(train_step(net, fwd, ctx, opt, x, t, y, target).item())
        curves[v] = losses
    print(f"\nloss tracking ({name}, batch {args.loss_batch}, AdamW lr 3e-4, same init and batches):")
    print("step  " + "  ".join(f"{v:>10}" for v in curves))
    for i in range(0, args.loss_steps, max(1, args.loss_steps // 8)):
        print(f"{i:4d}  " + "  ".join(f"{curves[v][i]:10.5f}" for v in curves))
    last = {v: statistics.mean(c[-5:]) for v, c in curves.items()}
    print("mean of last 5: " + ", ".join(f"{v} {l:.5f}" for v, l in last.items()))
    return curves


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["SiT-S/2", "SiT-B/2"])
    ap.add_argument("--batch", nargs="+", type=int, default=[8])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    ap.add_argument("--only", nargs="*", help="variants to run (default all)")
    ap.add_argument("--peak-size", type=int, default=4096, help="n of the n^3 matmul for the peak at start and end")
    ap.add_argument("--probe-size", type=int, default=2048, help="n of the n^3 matmul probed before each timed run")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--loss-steps", type=int, default=40)
    ap.add_argument("--loss-batch", type=int, default=8)
    ap.add_argument("--loss-model", default="SiT-S/2")
    ap.add_argument("--quick", action="store_true", help="repeats 3, warmup 1, no loss tracking")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.warmup, args.loss_steps = 3, 1, 0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"))
    peaks = {dt: matmul_peak(dt, device, args.peak_size, args.repeats) for dt in (torch.float32, torch.bfloat16)}
    print(f"matmul peak ({args.peak_size}^3, median of {args.repeats}): fp32 {peaks[torch.float32] / 1e12:.3f} TFLOP/s, "
          f"bf16 {peaks[torch.bfloat16] / 1e12:.3f} TFLOP/s (x{peaks[torch.bfloat16] / peaks[torch.float32]:.2f})")
    for name in args.models:
        for b in args.batch:
            bench_model(name, b, args, device, peaks)
    peaks2 = {dt: matmul_peak(dt, device, args.peak_size, args.repeats) for dt in (torch.float32, torch.bfloat16)}
    print(f"\nmatmul peak again at the end: fp32 {peaks2[torch.float32] / 1e12:.3f}, bf16 {peaks2[torch.bfloat16] / 1e12:.3f} TFLOP/s")
    if args.loss_steps:
        loss_tracking(args.loss_model, args, device)


if __name__ == "__main__":
    main()
