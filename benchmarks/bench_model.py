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
  +freeze    ``sit.models.sit.compile_for_inference``: torch.compile with inductor freezing (weights
             as constants, prepacked for oneDNN on CPUs); forward only (``--compile``)
  official-tf32, tf32   (CUDA) the official structure with SDPA attention (timm >= 0.9's fused
             attention) and sit's network, fp32 weights with TF32 matmuls, as the official
             train.py runs on GPUs (``allow_tf32 = True``): the GPU baseline
  +ckpt      a training step that ran out of device memory is retried with activation
             checkpointing (``SiT(grad_checkpointing=True)``) and labelled so
with the model FLOPs per pass (matmuls only, ``sit.models.sit.forward_flops``; a training step
counts 3x the forward), the achieved FLOP/s, and the ratio to the fp32 and bf16 matmul peaks
measured with large ``torch.matmul`` in the same run. Timings are medians over ``--repeats``.
On a shared machine the available compute changes from second to second, so on CPUs the peak is
also probed (one ``--probe-size``^3 matmul per dtype) right before every timed run, and the
%-of-peak columns are the median of the per-run ratios. On GPUs the peaks of the start are used
(fp32, TF32 and bf16), and ``--spec-tflops`` adds model FLOPs utilisation against a datasheet peak.
A short training run (``--loss-steps``) compares the bf16 loss curve with the fp32 one.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from sit.config import model_preset
from sit.models.sit import SiT, compile_for_inference, forward_flops

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from reference_forward import reference_forward  # noqa: E402  (the official forward, op by op: tests/reference_forward.py)


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


PEAK_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def peak_kinds(device) -> list[str]:
    return ["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]


def measure_peaks(device, n: int, repeats: int) -> dict:
    out = {}
    for k in peak_kinds(device):
        set_tf32(k == "tf32")
        out[k] = matmul_peak(PEAK_DTYPES[k], device, n, repeats)
    set_tf32(False)
    return out


def peak_probe(device, n: int):
    """A function measuring the fp32 and bf16 matmul FLOP/s now (one n^3 product each; CPU)."""
    mats = {k: (torch.randn(n, n, device=device, dtype=PEAK_DTYPES[k]), torch.randn(n, n, device=device, dtype=PEAK_DTYPES[k]))
            for k in ("fp32", "bf16")}

    def probe():
        out = {}
        for k, (a, b) in mats.items():
            sync(device)
            t0 = time.perf_counter()
            torch.matmul(a, b)
            sync(device)
            out[k] = 2 * n**3 / (time.perf_counter() - t0)
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


ALL_VARIANTS = ["official", "official-tf32", "fp32", "tf32", "fp32+mm", "bf16-auto", "bf16-w", "bf16-auto+mm",
                "bf16-w+mm", "bf16-auto+compile", "bf16-w+compile", "bf16-auto+mm+compile", "bf16-w+mm+freeze",
                "bf16-auto+mm+freeze", "bf16-w+freeze", "bf16-auto+freeze"]


def variants(args, device):
    if args.only:  # "--only none": no timings (e.g. only the loss tracking)
        unknown = [n for n in args.only if n not in ALL_VARIANTS + ["none"]]
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown}; choose from {ALL_VARIANTS}")
        return [n for n in args.only if n != "none"]
    if device.type == "cuda":
        names = ["official-tf32", "tf32", "bf16-auto", "bf16-w"]
        return names + (["bf16-auto+compile"] if args.compile else [])
    names = ["official", "fp32", "fp32+mm", "bf16-auto", "bf16-w", "bf16-auto+mm", "bf16-w+mm"]
    return names + (["bf16-auto+mm+compile", "bf16-w+mm+freeze"] if args.compile else [])


def build(variant, cfg, device, base_state, grad_checkpointing=False):
    with torch.device(device):  # initialise on the device (fast for XL on GPUs), then load the weights
        net = SiT(cfg, grad_checkpointing=grad_checkpointing)
    net.load_state_dict(base_state)
    net.set_attn_impl("matmul" if "+mm" in variant else "sdpa")  # explicit, whatever the default
    set_tf32("tf32" in variant)
    ctx = contextlib.nullcontext
    if variant.startswith("bf16-w"):
        net = net.to(torch.bfloat16)
    if variant.startswith("bf16-auto"):
        ctx = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    fwd = net
    if variant.startswith("official"):
        attn = "sdpa" if variant == "official-tf32" else "explicit"
        fwd = lambda x, t, y: reference_forward(net, x, t, y, attn=attn)  # noqa: E731
    if variant.endswith("+compile"):
        fwd = torch.compile(net)
    if variant.endswith("+freeze"):  # inference only: weights become constants (no train step)
        fwd = compile_for_inference(net)
    if variant.endswith("+freeze"):
        opt = None
    elif variant.startswith("bf16-w"):
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


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def free(device):
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_model(name, batch, args, device, peaks):
    cfg = model_preset(name)
    base = randomise(SiT(cfg)).state_dict()
    x, t, y, target = make_inputs(cfg, batch, device)
    fl_fwd = forward_flops(cfg, batch)
    probe = peak_probe(device, args.probe_size) if device.type == "cpu" else None
    if probe:
        probe()
    kinds = peak_kinds(device)
    rows = []

    def record(v, kind, sec, fl, pairs):
        if probe:  # utilisation against the peak probed right before each run, median over runs
            rel = {k: statistics.median(fl / s / p[k] for s, p in pairs) for k in kinds}
        else:
            rel = {k: fl / sec / peaks[k] for k in kinds}
        rows.append(dict(model=name, batch=batch, variant=v, kind=kind, sec=sec, flops=fl, rel=rel,
                         img_per_s=batch / sec, tflops=fl / sec / 1e12))

    for v in variants(args, device):
        net, fwd, ctx, opt = build(v, cfg, device, base)

        def forward():
            with torch.no_grad(), ctx():
                return fwd(x, t, y)

        msg = f"  {name} b{batch} {v}:"
        net.eval()
        try:
            tf, pf = timeit(forward, device, args.repeats, warmup=args.warmup, probe=probe)
            record(v, "forward", tf, fl_fwd, pf)
            msg += f" forward {tf * 1e3:.1f} ms"
        except RuntimeError as e:
            if not is_oom(e):
                raise
            msg += " forward OOM"
        if not args.no_train and not v.endswith("+freeze"):
            label, tt = v, None
            try:
                net.train()
                tt, pt = timeit(lambda: train_step(net, fwd, ctx, opt, x, t, y, target), device, args.repeats, args.warmup, probe)
            except RuntimeError as e:
                if not is_oom(e):
                    raise
            if tt is None:  # out of memory: retry with activation checkpointing (outside the except, so the
                del net, fwd, opt  # failed step's tensors held by the traceback are freed first)
                free(device)
                label = v + "+ckpt"
                net, fwd, ctx, opt = build(v, cfg, device, base, grad_checkpointing=True)
                net.train()
                try:
                    tt, pt = timeit(lambda: train_step(net, fwd, ctx, opt, x, t, y, target), device, args.repeats, args.warmup, probe)
                except RuntimeError as e2:
                    if not is_oom(e2):
                        raise
            if tt is None:
                msg += ", train step OOM (also with activation checkpointing)"
            else:
                record(label, "train step", tt, 3 * fl_fwd, pt)
                msg += f", train step ({label}) {tt * 1e3:.1f} ms"
        if device.type == "cuda":
            msg += f", max memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
            torch.cuda.reset_peak_memory_stats()
        del net, fwd, opt
        free(device)
        print(msg, flush=True)
    set_tf32(False)
    print_table(name, batch, cfg, fl_fwd, rows, kinds, args, device, probe)
    return rows


def print_table(name, batch, cfg, fl_fwd, rows, kinds, args, device, probe):
    print(f"\n{name}  batch {batch}  input {cfg.in_channels}x{cfg.input_size}x{cfg.input_size}  "
          f"forward {fl_fwd / 1e9:.1f} GFLOP, train step {3 * fl_fwd / 1e9:.1f} GFLOP (matmul FLOPs)")
    spec = f"{'MFU(spec)':>10}" if args.spec_tflops else ""
    print(f"{'variant':<22}{'pass':<12}{'ms':>9}{'img/s':>9}{'TFLOP/s':>9}" + "".join(f"{'%' + k + 'pk':>9}" for k in kinds)
          + spec + f"{'vs official':>12}")
    base_v = "official-tf32" if device.type == "cuda" else "official"
    base_t = {}
    for r in rows:
        if r["variant"].split("+ckpt")[0] == base_v:
            base_t.setdefault(r["kind"], r["sec"])
    for r in rows:
        ratio = f"{base_t[r['kind']] / r['sec']:.2f}x" if r["kind"] in base_t else "-"
        mfu = f"{100 * r['tflops'] / args.spec_tflops:9.1f}%" if args.spec_tflops else ""
        print(f"{r['variant']:<22}{r['kind']:<12}{r['sec'] * 1e3:9.1f}{r['img_per_s']:9.1f}{r['tflops']:9.3f}"
              + "".join(f"{100 * r['rel'][k]:8.0f}%" for k in kinds) + mfu + f"{ratio:>12}")
    if probe:
        print("(%pk: achieved FLOP/s over the matmul FLOP/s probed just before each timed run, median over runs)")
    else:
        print("(%pk: achieved model FLOP/s over the matmul peaks measured at the start"
              + (f"; MFU(spec): over {args.spec_tflops:.0f} TFLOP/s)" if args.spec_tflops else ")"))


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
    ap.add_argument("--no-train", action="store_true", help="forward passes only")
    ap.add_argument("--spec-tflops", type=float, default=0.0,
                    help="datasheet bf16 dense peak in TFLOP/s for an MFU column (H100 SXM: 989)")
    ap.add_argument("--json", help="also write every row to this JSON file")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.warmup, args.loss_steps = 3, 1, 0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    set_tf32(False)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"))
    peaks = measure_peaks(device, args.peak_size, args.repeats)
    print(f"matmul peak ({args.peak_size}^3, median of {args.repeats}): "
          + ", ".join(f"{k} {v / 1e12:.3f} TFLOP/s" for k, v in peaks.items())
          + f" (bf16 x{peaks['bf16'] / peaks['fp32']:.2f} fp32)", flush=True)
    rows = []
    for name in args.models:
        for b in args.batch:
            rows += bench_model(name, b, args, device, peaks)
    peaks2 = measure_peaks(device, args.peak_size, args.repeats)
    print("\nmatmul peak again at the end: " + ", ".join(f"{k} {v / 1e12:.3f}" for k, v in peaks2.items()) + " TFLOP/s")
    curves = loss_tracking(args.loss_model, args, device) if args.loss_steps else {}
    if args.json:
        import json

        info = {"torch": torch.__version__, "device": str(device),
                "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
                "threads": torch.get_num_threads(), "peaks_start": peaks, "peaks_end": peaks2, "rows": rows,
                "loss_curves": curves, "argv": sys.argv}
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
