"""`sit likelihood`: bits/dim of a dataset under a checkpoint, via the probability-flow ODE."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

EXAMPLES = """\
examples:
  # the demo model on 256 held-out digits (exact divergence: 64 dims), dopri5 atol 1e-6 rtol 1e-3
  sit likelihood --ckpt runs/demo --num-samples 256

  # 8-bit images from an ADM-style npz, Hutchinson divergence with 4 probes, uniform dequantisation
  sit likelihood --ckpt runs/cifar --data test_images.npz --divergence hutchinson --probes 4 --out bpd.csv

log p_0(x) = log N(X_1; 0, I) + int_0^1 div v(X_t, t) dt (sit.likelihood). bits/dim = -log p / (D ln 2)
for continuous data; uint8 images (npz) are uniformly dequantised onto [-1, 1] and reported with
the +7 bits/dim of the 8-bit likelihood bound. The embedded datasets are not 8-bit (digits have
17 grey levels), so their number is the continuous density of the [-1, 1] data. The reported
error is the standard error of the mean over samples (it includes the Hutchinson probe noise).
"""


def register(sub) -> None:
    from sit.commands.sample import add_model_arguments

    p = sub.add_parser("likelihood", help="bits/dim of a dataset under a checkpoint (probability-flow ODE)",
                       description=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--data", metavar="NAME|NPZ", help="data (default: the demo dataset's held-out split)")
    p.add_argument("--num-samples", type=int, default=256, metavar="N", help="data points to evaluate (default 256)")
    p.add_argument("--divergence", choices=["auto", "exact", "hutchinson"], default="auto",
                   help="exact (D backward passes), hutchinson, or auto: exact up to 256 dims (default)")
    p.add_argument("--probes", type=int, default=1, metavar="P", help="Hutchinson probes per sample (default 1)")
    p.add_argument("--method", default="dopri5", help="torchdiffeq method (default dopri5; fixed-step ones need --num-steps)")
    p.add_argument("--num-steps", type=int, metavar="N")
    p.add_argument("--atol", type=float, default=1e-6)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--unconditional", action="store_true", help="use the null label instead of the data's labels")
    p.add_argument("--batch-size", type=int, default=64, metavar="B")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="CSV", help="also write per-sample nats and bits/dim")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from sit import dist
    from sit import generate as S
    from sit.evaluate.plots import write_csv
    from sit.likelihood import log_likelihood, uniform_dequantize
    from sit.objectives import default_t_range, to_velocity

    if args.num_samples < 2:
        raise ValueError(f"--num-samples must be >= 2 (got {args.num_samples})")
    if args.probes < 1:
        raise ValueError(f"--probes must be >= 1 (got {args.probes})")
    net, meta, model_fn, path, dev = S.load_eval_model(args.ckpt, weights=args.weights, device=args.device,
                                                       precision=args.precision)
    spec = args.data or S.default_data_spec(net, "heldout")
    eight_bit = False
    if spec.endswith(".npz"):
        import numpy as np

        with np.load(spec) as z:
            eight_bit = "arr_0" in z and z["arr_0"].dtype == np.uint8
    x, y = S.load_eval_data(spec, image_size=int(net.config.input_size), split="heldout")
    x = S.match_model_input(x, net)[: args.num_samples]
    y = y[: args.num_samples] if y is not None else None
    gen = torch.Generator("cpu").manual_seed(args.seed)
    if eight_bit:  # back to the integers, then x = -1 + 2 (pixel + u) / 256
        pixels = torch.round((x + 1) * 127.5)
        x = uniform_dequantize(pixels, -1.0, 1.0, generator=gen)
    D = x[0].numel()
    divergence = args.divergence if args.divergence != "auto" else ("exact" if D <= 256 else "hutchinson")
    prediction = meta.get("prediction", "velocity")
    lo, hi = default_t_range(path, prediction)  # avoid t where the field is singular (VP at 0, score at 0 and 1)
    logps, bpds, rows = [], [], []
    nfe = 0
    for i, (xb, yb) in enumerate(S.eval_batches(x, y, args.batch_size, dev, conditional=not args.unconditional)):
        def field(xx, tt, _y=yb):
            return to_velocity(path, prediction, model_fn(xx, tt, _y), xx, tt)

        res = log_likelihood(field, xb, t_start=lo, t_end=hi, method=args.method, num_steps=args.num_steps,
                             divergence=divergence, num_probes=args.probes,
                             generator=torch.Generator(dev).manual_seed(args.seed + 1 + i), atol=args.atol,
                             rtol=args.rtol, interval_width=2.0 if eight_bit else None)
        b = res.bpd_dequantized if eight_bit else res.bpd
        logps.append(res.logp.double().cpu())
        bpds.append(b.double().cpu())
        nfe += res.nfe
        for k in range(xb.shape[0]):
            rows.append({"index": len(rows), "nats": float(res.logp[k]), "bpd": float(b[k])})
        dist.print0(f"batch {i}: {float(b.double().mean()):.4f} bits/dim ({res.nfe} NFE)")
    bpd = torch.cat(bpds)
    n = bpd.numel()
    se = float(bpd.std() / math.sqrt(n)) if n > 1 else float("nan")
    what = "bits/dim (8-bit, dequantised)" if eight_bit else "bits/dim (continuous, data in [-1, 1])"
    dist.print0(f"{spec}: {float(bpd.mean()):.4f} +- {se:.4f} {what} over {n} samples; "
                f"nats {float(torch.cat(logps).mean()):.3f}; divergence {divergence}, {args.method}, {nfe} NFE total")
    if args.out:
        write_csv(Path(args.out), rows)
        dist.print0(f"wrote {args.out}")
    return 0
