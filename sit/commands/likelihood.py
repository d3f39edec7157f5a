"""`sit likelihood`: bits/dim of a dataset under a checkpoint, via the probability-flow ODE."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sit.bounds import check_steps
from sit.commands._args import add_command, at_least, checked, finish_command, option
from sit.commands.flags import add_record_arguments, given_values
from sit.sampler_kinds import DIVERGENCES

DEFAULT_PROBES = 4  # Hutchinson probes per sample: the probe noise is then small against the spread of log p

EXAMPLES = f"""\
examples:
  # the demo model on its held-out digits (179 of them): Hutchinson divergence, {DEFAULT_PROBES} probes, dopri5
  sit likelihood --ckpt runs/demo --num-samples 256

  # the same with the exact divergence (D = 64 backward passes per evaluation: about 10x slower)
  sit likelihood --ckpt runs/demo --num-samples 64 --divergence exact

  # 8-bit images from an ADM-style npz, 8 probes, uniform dequantisation, per-sample CSV
  sit likelihood --ckpt runs/cifar --data test_images.npz --probes 8 --out bpd.csv

log p_0(x) = log N(X_1; 0, I) + int_0^1 div v(X_t, t) dt (sit.likelihood). bits/dim = -log p / (D ln 2)
for continuous data; uint8 images (npz) are uniformly dequantised onto [-1, 1] and reported with
the +7 bits/dim of the 8-bit likelihood bound. The embedded datasets are not 8-bit (digits have
17 grey levels), so their number is the continuous density of the [-1, 1] data. The divergence is
a Hutchinson estimate z^T (dv/dx) z with --probes Rademacher probes (one backward pass each per
evaluation, unbiased) unless --divergence exact (D backward passes). The reported +- is the
standard error of the mean over samples (it includes the probe noise, which is also shown alone).
"""


@dataclass(frozen=True, kw_only=True)
class LikelihoodOptions:
    """`sit likelihood`'s own options (its flags are these fields; the model flags are the shared
    ones): checked when built, before the model is read."""

    data: str | None = option(None, "data: embedded name, .npz, or a `sit extract` folder (latents; reported as latent "
                              "bits/dim) (default: the demo dataset's held-out split)", metavar="NAME|NPZ|DIR")
    num_samples: int = option(256, "data points to evaluate", metavar="N")
    divergence: str = option("hutchinson", "hutchinson ({probes} backward passes per evaluation) or exact (D of them)",
                             choices=lambda: DIVERGENCES)
    probes: int = option(DEFAULT_PROBES, "Hutchinson probes per sample", metavar="P")
    method: str = option("dopri5", "torchdiffeq method (fixed-step ones need {num_steps})", metavar="NAME")
    num_steps: int | None = option(None, "steps of a fixed-step method", metavar="N")
    atol: float = option(1e-6, "adaptive methods")
    rtol: float = option(1e-3, "adaptive methods")
    unconditional: bool = option(False, "use the null label instead of the data's labels", switch=True)
    batch_size: int = option(256, "samples per ODE solve", metavar="B")
    seed: int = option(0, "random seed (dequantisation and probes)")
    out: str | None = option(None, "also write per-sample nats and bits/dim", metavar="CSV")

    def __post_init__(self):
        at_least(self, "num_samples", 2)
        at_least(self, "probes", 1)
        checked(self, "num_steps", check_steps)


def register(sub) -> None:
    p = add_command(sub, "likelihood", help="bits/dim of a dataset under a checkpoint (probability-flow ODE)",
                    description=EXAMPLES, model=True)
    add_record_arguments(p, LikelihoodOptions, keep_defaults=True)
    finish_command(p, run)


def _load(opts: LikelihoodOptions, net):
    """(x, y, spec, eight_bit) for --data/--num-samples, saying so when fewer points exist."""
    import torch

    from sit import dist
    from sit import generate as S
    from sit.likelihood import uniform_dequantize

    spec = opts.data or S.default_data_spec(net, "heldout")
    eight_bit = False
    if spec.endswith(".npz"):
        import numpy as np

        with np.load(spec) as z:
            eight_bit = "arr_0" in z and z["arr_0"].dtype == np.uint8
    x, y = S.load_eval_data(spec, image_size=int(net.config.input_size), split="heldout")
    if x.shape[0] < opts.num_samples:
        dist.print0(f"note: {spec} holds {x.shape[0]} points; using all {x.shape[0]} (--num-samples {opts.num_samples} asked)")
    x = S.match_model_input(x, net)[: opts.num_samples]
    y = y[: opts.num_samples] if y is not None else None
    if eight_bit:  # back to the integers, then x = -1 + 2 (pixel + u) / 256
        pixels = torch.round((x + 1) * 127.5)
        x = uniform_dequantize(pixels, -1.0, 1.0, generator=torch.Generator("cpu").manual_seed(opts.seed))
    return x, y, spec, eight_bit


def unit_words(eight_bit: bool, channels: int, spec: str) -> str:
    """What the reported number is: 8-bit image bits/dim, continuous [-1, 1] data, or latents
    (the density of the scaled VAE latents only: no decoder / VAE term, not comparable with
    pixel bits/dim)."""
    from sit.generate.evaldata import is_extract_folder

    if eight_bit:
        return "bits/dim (8-bit, dequantised)"
    if channels not in (1, 3) or is_extract_folder(spec):
        return "latent bits/dim (density of the scaled VAE latents; no VAE term, not pixel bits/dim)"
    return "bits/dim (continuous, data in [-1, 1])"


def run(args) -> int:
    import torch

    from sit import dist
    from sit import generate as S
    from sit.evaluate.plots import write_csv

    opts = LikelihoodOptions(**given_values(args, LikelihoodOptions))   # its checks, before the model is read
    net, meta, model_fn, path, dev = S.load_eval_model(args.ckpt, weights=args.weights, device=args.device,
                                                       precision=args.precision)
    x, y, spec, eight_bit = _load(opts, net)
    prediction = meta.prediction
    lo, hi = path.train_t_range(prediction)  # avoid t where the field is singular (VP at 0, score at 0 and 1)
    how = f"Hutchinson, {opts.probes} Rademacher probe(s) per sample" if opts.divergence == "hutchinson" else "exact"
    dist.print0(f"log-likelihood of {x.shape[0]} points of {spec}: {opts.method}, t in [{lo:g}, {hi:g}], divergence {how}")
    logps, bpds, probe_se, rows, nfe = _solve(opts, not args.no_progress, x, y, model_fn, path, prediction, (lo, hi),
                                              dev, eight_bit)
    _report(opts, spec, eight_bit, torch.cat(bpds), torch.cat(logps), torch.cat(probe_se), nfe, x[0].numel(),
            int(x.shape[1]))
    if opts.out:
        write_csv(Path(opts.out), rows)
        dist.print0(f"wrote {opts.out}")
    return 0


def _solve(opts: LikelihoodOptions, progress: bool, x, y, model_fn, path, prediction, t_range, dev, eight_bit):
    """Integrate every batch's probability-flow ODE (`sit.likelihood.log_likelihood`) under one progress
    bar; (log p, bits/dim, probe standard errors, per-sample rows, NFE)."""
    import torch
    from tqdm.auto import tqdm

    from sit import dist
    from sit import generate as S
    from sit.likelihood import log_likelihood
    from sit.objectives import to_velocity

    lo, hi = t_range
    logps, bpds, probe_se, rows, nfe = [], [], [], [], 0
    # the ETA appears once 5% is done, from the average rate so far (smoothing=0): the solver's first
    # tiny steps near the data gave rates that promised thousands of hours
    with_eta = "{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
    bar = tqdm(total=x.shape[0], unit="sample", desc="likelihood", disable=not progress or not dist.is_main(),
               smoothing=0, bar_format=with_eta.replace("<{remaining}", ""))
    for i, (xb, yb) in enumerate(S.eval_batches(x, y, opts.batch_size, dev, conditional=not opts.unconditional)):
        def field(xx, tt, _y=yb):
            return to_velocity(path, prediction, model_fn(xx, tt, _y), xx, tt)

        def tick(t, n, _done=bar.n, _b=xb.shape[0]):
            # the bar moves with t inside a batch (data t_data -> noise t_noise), so rate and ETA show early
            bar.n = _done + _b * min(max((t - lo) / (hi - lo), 0.0), 1.0)
            if bar.n >= 0.05 * bar.total:
                bar.bar_format = with_eta
            bar.set_postfix_str(f"batch {i}: t={t:.3f}, {n} NFE", refresh=n % 4 == 0)

        res = log_likelihood(field, xb, t_data=lo, t_noise=hi, method=opts.method, num_steps=opts.num_steps,
                             divergence=opts.divergence, num_probes=opts.probes,
                             generator=torch.Generator(dev).manual_seed(opts.seed + 1 + i), atol=opts.atol,
                             rtol=opts.rtol, interval_width=2.0 if eight_bit else None, callback=tick)
        b = res.bpd_dequantized if eight_bit else res.bpd
        logps.append(res.logp.double().cpu())
        bpds.append(b.double().cpu())
        probe_se.append(res.logp_stderr.double().cpu())
        nfe += res.nfe
        first = len(rows)  # the index of this batch's first sample (not len(rows) while rows grows)
        rows.extend({"index": first + k, "nats": float(res.logp[k]), "bpd": float(b[k]),
                     "nats_probe_stderr": float(res.logp_stderr[k])} for k in range(xb.shape[0]))
        bar.n = sum(t.numel() for t in bpds)
        bar.refresh()
    bar.close()
    return logps, bpds, probe_se, rows, nfe


def _report(opts, spec, eight_bit, bpd, logp, probe_se, nfe, dim, channels: int = 1) -> None:
    from sit import dist

    n = bpd.numel()
    se = float(bpd.std() / math.sqrt(n)) if n > 1 else float("nan")
    what = unit_words(eight_bit, channels, spec)
    dist.print0(f"{spec}: {float(bpd.mean()):.4f} +- {se:.4f} {what} over {n} samples; "
                f"nats {float(logp.mean()):.3f}; divergence {opts.divergence}, {opts.method}, {nfe} NFE total")
    if opts.divergence == "hutchinson":
        # standard error of the mean due to the probes alone: sqrt(sum_i se_i^2) / n, in bits/dim
        pse = float(probe_se.pow(2).sum().sqrt() / n) / (dim * math.log(2.0))
        extra = "" if opts.probes > 1 else " (needs --probes >= 2)"
        dist.print0(f"Hutchinson probe noise alone: +- {pse:.4f} bits/dim{extra} ({opts.probes} probe(s) per sample)")
