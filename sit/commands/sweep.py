"""`sit sweep`: quality against NFE for several samplers (paper Fig. 5), as CSV and PNG."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sit.commands._args import add_command, add_vae_space_arguments, at_least, finish_command, option
from sit.commands.flags import add_record_arguments, given_values

if TYPE_CHECKING:
    from sit.guidance import GuidanceConfig

EXAMPLES = """\
examples:
  # the demo checkpoint: classifier-feature FID (sit.evaluate.classifier) vs NFE, 4 samplers
  sit sweep --ckpt runs/demo --samplers euler,heun,euler_maruyama:w=sigma,euler_maruyama:w=sin2 \\
      --nfe 4,8,16,32,64,128,250 --num-samples 1000 --out sweeps/demo

  # a latent model: Inception FID against an ADM reference batch (needs sit's Inception weights)
  sit sweep --ckpt SiT-XL-2-256x256.pt --vae /models/sd-vae-ft-ema --ref VIRTUAL_imagenet256_labeled.npz \\
      --samplers heun,euler_maruyama:w=sigma --nfe 50,100,250 --num-samples 10000 --cfg-scale 1.5 --out sweeps/xl2

  # the official adaptive solver: one point per tolerance (atol = rtol = TOL), plotted at its real NFE
  sit sweep --ckpt runs/demo --samplers heun,dopri5 --nfe 8,16,32,64 --tolerances 1e-2,1e-3,1e-4 --out sweeps/ode

A sampler is METHOD[:FIELD=VALUE...] with SampleConfig fields (w, w_scale, eta, last_step, grid, ...).
Each NFE budget is turned into steps by sit.samplers.steps_for_nfe (heun, midpoint: 2 per step;
sde_heun: 2 per step but 1 for the last; rk4: 4; euler, euler_maruyama, ddpm, ddim: 1). Adaptive
solvers (dopri5, ...) choose their own steps: they ignore --nfe and run once per --tolerances
value instead. The NFE actually spent is what the CSV reports and the plot uses. The summary says,
for each sampler, the fewest NFE that come within --tolerance of the reference quality (the
reference sampler's value at its largest NFE).
"""


def _samplers_help() -> str:
    from sit.commands.flags import flag_fields
    from sit.sampler_config import SampleConfig

    options = [f for f in flag_fields(SampleConfig) if f not in ("method", "num_steps", "atol", "rtol")]
    return ("comma-separated METHOD[:FIELD=VALUE...], FIELD a field of the sampler record (as `sit sample`'s flags): "
            + ", ".join(options))


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """`sit sweep`'s own options (its flags are these fields; the model, guidance and latent decoding
    flags are the shared ones): checked when built, before anything is loaded."""

    samplers: str = option("euler,heun,euler_maruyama:w=sigma", _samplers_help, metavar="LIST")
    nfe: str = option("4,8,16,32,64,128,250", "NFE budgets", metavar="LIST")
    tolerances: str = option("1e-2,1e-3,1e-4", "adaptive solvers (dopri5, ...): one point per tolerance, atol = rtol "
                             "= TOL", metavar="LIST")
    num_samples: int = option(1000, "samples per point", metavar="N")
    batch_size: int = option(250, "samples per batch", metavar="B")
    seed: int = option(0, "sample i uses seed SEED + i for every sampler (common random numbers)")
    repeats: int = option(1, "K disjoint sample sets per point (seeds SEED + r * N): the plot shows their mean with "
                          "error bars (standard deviation over the K sets)", metavar="K")
    labels: str = option("random", "'random' or class indices", metavar="LIST")
    data: str | None = option(None, "real data for the embedded classifier metrics (default: digits for 8x8, "
                              "mnist_5k for 28/32)", metavar="NAME|NPZ")
    ref: str | None = option(None, "ADM reference batch (images or mu/sigma), or a `sit extract` folder (its latents "
                             "decoded by {SampleSpec.vae}), for Inception FID of latent models", metavar="NPZ|DIR")
    lt_table: str | None = option(None, "L_t table for w=kl_eta (default: stored with the checkpoint)", metavar="JSON")
    reference: str | None = option(None, "sampler whose largest-NFE value is the target (default: the first)",
                                   metavar="SAMPLER")
    tolerance: float = option(0.05, "relative tolerance on the target")
    compile: bool = option(False, "network through sit.models.sit.compile_for_inference (one compile per batch "
                           "shape, then faster)", switch=True)
    out: str = option(help="writes sweep.csv, sweep.png, summary.csv", metavar="DIR")

    def __post_init__(self):
        at_least(self, "num_samples", 4)
        at_least(self, "repeats", 1)


def register(sub) -> None:
    p = add_command(sub, "sweep", help="quality vs NFE for several samplers (Fig. 5): CSV + PNG",
                    description=EXAMPLES, model=True)
    add_record_arguments(p, SweepOptions, ("samplers", "nfe", "tolerances", "num_samples", "batch_size", "seed",
                                           "repeats", "labels"), keep_defaults=True)
    from sit.commands._guidance_flags import add_guidance_arguments

    add_guidance_arguments(p)  # --cfg-scale, --cfg-channels, --cfg-interval, --guide-ckpt, from the records
    add_record_arguments(p, SweepOptions, ("data", "ref", "lt_table", "reference", "tolerance", "compile", "out"),
                         keep_defaults=True)
    add_vae_space_arguments(p)
    finish_command(p, run)


def parse_sampler(spec: str) -> tuple[str, dict]:
    """'euler_maruyama:w=sigma:eta=0.5' -> ('euler_maruyama', {'w': 'sigma', 'eta': 0.5})."""
    parts = [s for s in spec.strip().split(":") if s]
    if not parts:
        raise ValueError("empty sampler in --samplers")
    method, opts = parts[0], {}
    for kv in parts[1:]:
        if "=" not in kv:
            raise ValueError(f"sampler option {kv!r} in {spec!r} must be FIELD=VALUE")
        k, v = kv.split("=", 1)
        k = k.replace("-", "_")
        if v.lower() == "none":
            opts[k] = None
            continue
        try:
            opts[k] = int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            opts[k] = v
    return method, opts


def sweep_points(method: str, opts: dict, nfes: list[int], tolerances: list[float]) -> list[tuple[int, dict]]:
    """(num_steps, extra SampleConfig options) for each point of one sampler: one per NFE budget
    (steps from `sit.samplers.steps_for_nfe`; budgets below one step are skipped), or for an
    adaptive solver one per tolerance (atol = rtol = tol; num_steps is then irrelevant)."""
    from sit.sampler_kinds import is_adaptive
    from sit.samplers import SampleConfig, nfe_per_step, steps_for_nfe

    if is_adaptive(method):   # the row says so (SamplerRow.adaptive)
        return [(1, {"atol": tol, "rtol": tol}) for tol in tolerances]
    if nfe_per_step(method) is None:  # Adams: about 1 per step (the row's NFE per step, else)
        steps = list(nfes)
    else:
        last = opts.get("last_step", SampleConfig.last_step)
        steps = [steps_for_nfe(method, n, last_step=last) for n in nfes]
    return [(n, {}) for n in dict.fromkeys(steps) if n >= 1]


def check_sampler_options(name: str, method: str, opts: dict) -> None:
    """The rule of `sit sample` (`sit.samplers.check_method_fields`) for one --samplers entry:
    options the method would ignore are refused, never run and written into a row's name; the
    points' own steps (--nfe) and tolerances (--tolerances) are not options."""
    from sit.config import ConfigError
    from sit.sampler_config import ADAPTIVE_FIELDS, check_method_fields
    from sit.sampler_kinds import SAMPLERS, is_adaptive

    if "num_steps" in opts:
        raise ValueError(f"--samplers {name!r}: num_steps is set by --nfe, not per sampler")
    if is_adaptive(method) and any(k in opts for k in ADAPTIVE_FIELDS):
        raise ValueError(f"--samplers {name!r}: atol / rtol of {method} are set by --tolerances, not per sampler")
    if method not in SAMPLERS or SAMPLERS[method].kind == "discrete":
        return  # named by the sampler config of each point
    try:
        check_method_fields(method, opts)
    except ConfigError as e:  # the options are written as FIELD=VALUE: name them so
        raise ValueError(f"--samplers {name!r}: " + e.render(lambda record, field: field)) from None


def check_grids(points, meta, table) -> None:
    """Every point's time grid on this model's path, before the first point runs: a grid float64
    cannot keep strictly decreasing is refused naming the sampler, its steps and the options."""
    from sit.config import ConfigError
    from sit.generate.glue import sample_config
    from sit.samplers import SampleConfig

    if getattr(meta, "discrete", False):
        return
    from sit.paths import get_path

    path = get_path(meta.path)
    for name, method, opts, steps, extra in points:
        cfg = sample_config(method, {**opts, **extra, "num_steps": steps})
        if not isinstance(cfg, SampleConfig):
            continue
        try:
            cfg.make_grid(path, meta.prediction, table)
        except ConfigError as e:
            raise ValueError(f"--samplers {name!r} at {steps} steps: " + e.render(lambda record, field: field)) from None


def parse_float_list(text: str, name: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers (got {text!r})") from None
    if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"{name} must hold numbers > 0 (got {text!r})")
    return sorted(set(vals), reverse=True)


def parse_int_list(text: str, name: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers (got {text!r})") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"{name} must hold integers >= 1 (got {text!r})")
    return sorted(set(vals))


def _quality_fn(args, net, labels, dev, meta=None):
    """(quality(x, y) -> dict with 'fid', metric name, decode_fn) for a pixel or a latent model."""
    from sit import generate as S

    C, H = int(net.in_channels), int(net.config.input_size)
    if C in (1, 3):
        data = args.data or ("digits" if H <= 8 else "mnist_5k")
        real_x, real_y = S.load_eval_data(data, image_size=H, split="all")
        real_x = S.match_model_input(real_x, net)

        from sit.evaluate.scorers import make_scorer

        scorer = make_scorer("classifier", real_x, real_y)

        def quality(fake_x, fake_y):
            q = scorer.score_images(fake_x.clamp(-1, 1), fake_y if labels != "null" else None)
            return {"fid": q.fd, "accuracy": q.accuracy, "precision": q.precision, "recall": q.recall}

        return quality, f"classifier FID vs {data}", None
    if not args.vae or not args.ref:
        raise ValueError("a latent model needs --vae PATH (to decode) and --ref NPZ (reference batch) for Inception FID")
    from sit.generate.run import load_decoder

    vae = load_decoder(args.vae, dev, meta, args.vae_scale, args.vae_shift)  # the run's latent space
    return (_inception_quality(args.ref, dev, vae.decode, space=vae.space), f"Inception FID vs {Path(args.ref).name}",
            vae.decode)


def _loss_table(args, samplers, meta):
    from sit import generate as S
    from sit.diffusion_coef import canonical_w

    if not any(o.get("w") is not None and canonical_w(o["w"]) == "kl_eta" for _, _, o in samplers):
        return None
    from sit.diffusion_coef import LossTable

    table = LossTable.load(args.lt_table) if args.lt_table else S.find_loss_table(args.ckpt, meta)
    if table is None:
        raise FileNotFoundError(f"w=kl_eta needs the L_t table: run `sit lt --ckpt {args.ckpt}` or pass --lt-table")
    return table


def _parse_plan(args) -> tuple[list[tuple[str, str, dict]], list[tuple[str, str, dict, int, dict]], "GuidanceConfig"]:
    """The samplers (name, method, options) of --samplers, the sweep points
    (name, method, options, num_steps, extra options) over --nfe / --tolerances, and the guidance
    record of the guidance flags (its guide not loaded yet)."""
    options = SweepOptions(**given_values(args, SweepOptions))   # its checks, before anything is loaded
    nfes = parse_int_list(options.nfe, "--nfe")
    tolerances = parse_float_list(options.tolerances, "--tolerances")
    samplers = [(s, *parse_sampler(s)) for s in options.samplers.split(",") if s.strip()]
    from sit.commands._args import check_vae_space_args

    check_vae_space_args(args)
    from sit.commands.sample import guidance_from_args
    from sit.guidance import GuidanceConfig

    guidance = guidance_from_args(args, GuidanceConfig())
    if options.reference and options.reference not in [s for s, _, _ in samplers]:
        raise ValueError(f"--reference {options.reference!r} is not one of --samplers {[s for s, _, _ in samplers]}")
    for name, method, opts in samplers:
        check_sampler_options(name, method, opts)
    points = [(name, method, opts, steps, extra) for name, method, opts in samplers
              for steps, extra in sweep_points(method, opts, nfes, tolerances)]
    from sit.generate.glue import sample_config

    for name, method, opts, steps, extra in points:  # every point's config checked before any is run
        try:
            sample_config(method, {**opts, **extra, "num_steps": steps})
        except (ValueError, TypeError) as e:  # the fields as the FIELD=VALUE options name them
            import re

            text = re.sub(r"\b(?:Discrete)?SampleConfig\.(\w+)", r"\1", str(e))
            raise ValueError(f"--samplers {name!r} at {steps} steps: {text}") from None
    return samplers, points, guidance


def _point_runner(args, net, meta, table, labels, dev, guidance):
    """run_point(method, opts, steps, decode=None) -> (x, y, nfe per batch) for one sweep point."""
    from sit import generate as S

    num_classes = S.model_num_classes(net)
    C, H = int(net.in_channels), int(net.config.input_size)

    def run_point(method: str, opts: dict, steps: int, decode=None, seed: int | None = None):
        sampler_fn, _ = S.build_latent_sampler(
            net, meta, method=method, sample_options=dict(opts, num_steps=steps), guidance=guidance,
            precision=args.precision, table=table,
        )
        return S.sample_images(
            sampler_fn, num_samples=args.num_samples, batch_size=args.batch_size,
            seed=args.seed if seed is None else seed,
            latent_shape=(C, H, H), labels=labels, num_classes=num_classes, device=dev, decode_fn=decode,
        )

    return run_point


def _sweep_rows(args, points, run_point, quality, decode_fn, out: Path) -> list[dict]:
    """One CSV row per point (rewriting out/sweep.csv after each), with a progress bar."""
    from tqdm.auto import tqdm

    from sit import dist
    from sit.evaluate.plots import write_csv

    rows = []
    plan = [(p, r) for p in points for r in range(args.repeats)]
    bar = tqdm(plan, desc="sweep", unit="point", disable=args.no_progress or not dist.is_main())
    for (name, method, opts, steps, extra), rep in bar:
        t0 = time.perf_counter()
        seed = args.seed + rep * args.num_samples
        x, y, spent = run_point(method, {**opts, **extra}, steps, decode_fn, seed)
        secs = time.perf_counter() - t0
        q = quality(x, y)
        row = {"sampler": name, "method": method, "num_steps": steps, "tol": extra.get("rtol", ""),
               "nfe": spent[-1] if spent else steps, "seed": seed, **q, "seconds": round(secs, 3)}
        rows.append(row)
        what = f"tol {extra['rtol']:g}" if extra else f"steps {steps:4d}"
        bar.write(f"{name:<32s} {what}  seed {seed:6d}  NFE {row['nfe']:5}  FID {q['fid']:.4g}  ({secs:.1f} s)")
        write_csv(out / "sweep.csv", rows)
    return rows


def mean_rows(rows: list[dict]) -> tuple[list[dict], dict[str, list[float]]]:
    """Rows averaged over the repeats of each (sampler, num_steps, tol) point: every numeric metric's
    mean, plus '<metric>_std' (sample standard deviation, 0 for one repeat) and 'repeats'; and
    the FID standard deviations per sampler in plotting order (for error bars)."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["sampler"], r["num_steps"], r["tol"]), []).append(r)
    out = []
    for (name, steps, tol), rs in groups.items():
        m = {"sampler": name, "method": rs[0]["method"], "num_steps": steps, "tol": tol, "repeats": len(rs)}
        for k, v in rs[0].items():
            if k in m or k == "seed" or not isinstance(v, (int, float)):
                continue
            vals = [float(r[k]) for r in rs]
            m[k] = rs[0][k] if k == "nfe" and len(set(vals)) == 1 else statistics.fmean(vals)
            if k not in ("nfe", "seconds"):
                m[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(m)
    errors: dict[str, list[float]] = {}
    for name in dict.fromkeys(r["sampler"] for r in out):
        rs = sorted((r for r in out if r["sampler"] == name), key=lambda r: r["nfe"])
        errors[name] = [r["fid_std"] for r in rs]
    return out, errors


def run(args) -> int:
    from sit import checkpoints, dist
    from sit import generate as S
    from sit.evaluate.plots import plot_lines, plot_quality_vs_nfe, write_csv

    samplers, points, guidance = _parse_plan(args)
    from sit.folders import require_reachable

    require_reachable(args.out)
    dev = dist.init(S.default_device(args.device))
    net, meta = checkpoints.load(args.ckpt, weights=args.weights, log=dist.eprint0)
    net = S.prepare_network(net, args.precision, args.compile, dev)
    labels = S.parse_labels(args.labels, S.model_num_classes(net))
    table = _loss_table(args, samplers, meta)
    check_grids(points, meta, table)
    guidance = S.load_guide(guidance, meta, weights=args.weights, precision=args.precision, compile=args.compile,
                            device=dev, log=dist.eprint0)  # before the quality function reads data or a VAE
    quality, metric_name, decode_fn = _quality_fn(args, net, labels, dev, meta)
    out = Path(args.out)
    run_point = _point_runner(args, net, meta, table, labels, dev, guidance)
    if args.compile:  # compile every batch shape now, so no point's "seconds" includes compilation
        t0 = time.perf_counter()
        run_point(samplers[0][1], samplers[0][2], 1)
        dist.print0(f"compiled the network in {time.perf_counter() - t0:.1f} s (not counted in the points)")
    rows = _sweep_rows(args, points, run_point, quality, decode_fn, out)
    title = f"{metric_name}, {args.num_samples} samples"
    if args.repeats > 1:
        rows, errors = mean_rows(rows)
        write_csv(out / "sweep_mean.csv", rows)
        series = {}
        for r in sorted(rows, key=lambda r: r["nfe"]):
            xs, ys = series.setdefault(r["sampler"], ([], []))
            xs.append(r["nfe"])
            ys.append(r["fid"])
        plot_lines(out / "sweep.png", series, xlabel="NFE (network evaluations per sample)", ylabel="fid",
                   title=f"{title}, mean +- sd over {args.repeats} sample sets", logx=True, errors=errors,
                   xticks=[r["nfe"] for r in rows])
    else:
        plot_quality_vs_nfe(out / "sweep.png", rows, metric="fid", title=title)
    summary = summarize(rows, args.reference or samplers[0][0], args.tolerance)
    write_csv(out / "summary.csv", summary)
    for r in summary:
        dist.print0(summary_line(r, args.tolerance))
    extra = f", {out / 'sweep_mean.csv'}" if args.repeats > 1 else ""
    dist.print0(f"wrote {out / 'sweep.csv'}{extra}, {out / 'sweep.png'}, {out / 'summary.csv'}")
    return 0


def summary_line(r: dict, tolerance: float) -> str:
    """One line of the summary, e.g. 'heun  reaches FID <= 22.4 (within 5% of euler's 21.3 at NFE 250)
    at NFE 32' or '... never comes within 5% of ... at the NFEs tried (best 30.1 at NFE 64)'."""
    ref = f"within {tolerance:.0%} of {r['reference']}'s {r['reference_value']:.4g} at NFE {r['reference_nfe']}"
    if r["nfe_to_target"] == "not reached":
        return (f"{r['sampler']:<32s} never comes {ref} at the NFEs tried "
                f"(best FID {r['best_fid']:.4g} at NFE {r['best_at_nfe']})")
    return f"{r['sampler']:<32s} reaches FID <= {r['target']:.4g} ({ref}) at NFE {r['nfe_to_target']}"


def summarize(rows: list[dict], reference: str, tolerance: float) -> list[dict]:
    """For each sampler: its best value, and the fewest NFE reaching the reference target
    (= the reference sampler's value at its largest NFE, times 1 + tolerance)."""
    ref_rows = [r for r in rows if r["sampler"] == reference]
    if not ref_rows:
        return []
    ref_row = max(ref_rows, key=lambda r: r["nfe"])
    target_raw = ref_row["fid"]
    target = target_raw * (1 + tolerance)
    out = []
    for name in dict.fromkeys(r["sampler"] for r in rows):
        rs = sorted((r for r in rows if r["sampler"] == name), key=lambda r: r["nfe"])
        hit = next((r["nfe"] for r in rs if math.isfinite(r["fid"]) and r["fid"] <= target), None)
        out.append({"sampler": name, "reference": reference, "reference_value": target_raw,
                    "reference_nfe": ref_row["nfe"], "target": target,
                    "nfe_to_target": hit if hit is not None else "not reached",
                    "best_fid": min(r["fid"] for r in rs), "best_at_nfe": min(rs, key=lambda r: r["fid"])["nfe"]})
    return out


def _inception_quality(ref: str, device, decode_fn=None, space=None):
    """Inception FID of uint8-quantised samples against an ADM reference batch (sit.evaluate); a
    `sit extract` folder's latents are read in ``space`` (the one ``decode_fn`` inverts)."""
    import numpy as np

    from sit.evaluate import metrics
    from sit.evaluate.scorers import make_scorer
    from sit.generate.evaldata import is_extract_folder, load_extracted
    from sit.io import to_uint8

    scorer = make_scorer("inception", device=device, progress=False, spatial=False)
    if is_extract_folder(ref):   # the training latents, decoded: the reference images
        lat, _ = load_extracted(ref, space=space)
        pool = np.concatenate([scorer.features(to_uint8(decode_fn(lat[i : i + 256]).cpu()))["pool"]
                               for i in range(0, len(lat), 256)])
        mu_r, sig_r = metrics.feature_statistics(pool)
    else:
        with np.load(ref) as z:
            if "mu" in z and "sigma" in z:
                mu_r, sig_r = z["mu"], z["sigma"]
            else:
                mu_r, sig_r = metrics.feature_statistics(scorer.features(z["arr_0"])["pool"])

    def quality(fake_x, fake_y):
        pool = scorer.features(to_uint8(fake_x.clamp(-1, 1)))["pool"]
        mu, sig = metrics.feature_statistics(pool)
        return {"fid": metrics.frechet_distance(mu, sig, mu_r, sig_r)}

    return quality
