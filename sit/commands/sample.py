"""`sit sample`: images (and latents) from a checkpoint, for looking or for evaluation.

Flags are generated from the fields of the typed records (`sit.sampler_config.SampleConfig` and
`DiscreteSampleConfig`, `sit.generate.spec.SampleSpec`; `sit.commands.flags`), the guidance flags
map onto `sit.guidance.GuidanceConfig`; the records are built and validated before anything is
loaded, and the help shows the defaults read from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

from sit.commands._args import (
    add_model_arguments,
    add_vae_space_arguments,
    at_least,
    check_vae_space_args,
    option,
)
from sit.commands.flags import add_record_arguments, given_values
from sit.generate.outputs import Outputs

EXAMPLES = """\
examples:
  # a grid of 8 digits from the demo run (pixel-space model, no VAE), Heun 25 steps
  sit sample --ckpt runs/demo --labels 0,1,2,3,4,5,6,7 --method heun --num-steps 25 --grid-png --out samples/demo

  # the paper's SiT-XL/2 setting (Heun ODE, 250 NFE, cfg 1.5): 50K images for FID, resumable;
  # on 8 GPUs: torchrun --nproc-per-node 8 -m sit.cli sample ...
  sit sample --ckpt SiT-XL-2-256x256.pt --vae /models/sd-vae-ft-ema --preset sit-xl2-ode --out samples/xl2-ode

  # SDE with w_KL,eta (needs `sit lt` run on the checkpoint first), explicit classes, bf16
  sit sample --ckpt runs/xl2 --vae /models/sd-vae-ft-ema --method euler_maruyama --num-steps 250 \\
      --w kl_eta --eta 1 --t-start 0.999 --labels 207,360,387,974 --cfg-scale 4 --precision bf16 --grid-png --out samples/x

presets: {presets}
"""

def register(sub) -> None:
    from sit.generate.presets import PRESETS

    p = sub.add_parser(
        "sample",
        help="sample images/latents from a checkpoint (grids, 50K npz for FID)",
        description=EXAMPLES.format(presets=", ".join(sorted(PRESETS))),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(p, overrides=True)
    add_vae_space_arguments(p)
    add_record_arguments(p, SampleOptions, ("compile", "tf32"), keep_defaults=True)
    add_sampler_arguments(p)
    add_set_arguments(p)
    p.set_defaults(func=run)


def add_sampler_arguments(p) -> None:
    """The sampler's flags, generated from `SampleConfig`'s fields (defaults: `sit sample`'s default
    sampler) and `DiscreteSampleConfig.eta` (--ddim-eta); --lt-table and the guidance flags."""
    from sit.generate.presets import DEFAULT_SAMPLE
    from sit.sampler_config import DiscreteSampleConfig, SampleConfig

    g = p.add_argument_group("sampler (defaults: shown, or the preset's values)")
    add_record_arguments(g, SampleConfig, defaults=DEFAULT_SAMPLE)
    add_record_arguments(g, DiscreteSampleConfig, ("eta",))
    add_record_arguments(g, SampleOptions, ("lt_table",), keep_defaults=True)
    from sit.commands._guidance_flags import add_guidance_arguments

    add_guidance_arguments(g)  # --cfg-scale, --cfg-channels, --cfg-interval, --guide-ckpt, from the records


def add_set_arguments(p) -> None:
    """What to sample (--labels, --num-samples, --seed generated from `SampleSpec`'s fields) and the
    output options."""
    from sit.generate.spec import SampleSpec

    g = p.add_argument_group("what to sample")
    add_record_arguments(g, SampleOptions, ("preset",), keep_defaults=True)
    add_record_arguments(g, SampleSpec, ("labels", "num_samples"))
    add_record_arguments(g, SampleSpec, ("seed",), keep_defaults=True)
    add_record_arguments(g, SampleOptions, ("noise", "batch_size"), keep_defaults=True)
    o = p.add_argument_group("output")
    add_record_arguments(o, SampleOptions, ("out",), keep_defaults=True)
    add_record_arguments(o, Outputs, ("grid_png", "png_folder"), keep_defaults=True)
    add_record_arguments(o, SampleSpec, ("save_latents",))
    add_record_arguments(o, Outputs, ("keep_parts", "progress"), keep_defaults=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleOptions:
    """`sit sample`'s options that are `sample_set`'s arguments, not fields of the sample set's records
    (SampleSpec, the sampler and guidance records, Outputs): their flags are these fields."""

    compile: bool = option(False, "torch.compile the network for inference with frozen weights "
                           "(sit.models.sit.compile_for_inference): faster sampling after a one-off compile of about "
                           "20-60 s per batch shape", switch=True)
    tf32: bool = option(True, "CUDA: TF32 matmuls for fp32 networks, as the official sample.py")
    lt_table: str | None = option(None, "L_t table for w_KL,eta (default: the one stored with the checkpoint by `sit "
                                  "lt`)", metavar="JSON")
    preset: str | None = option(None, "named paper setting (listed above); explicit options override it",
                                metavar="NAME")
    noise: str | None = option(None, "explicit initial noise (N, C, H, W) as .npy or .safetensors", metavar="FILE")
    batch_size: int = option(32, "samples per batch and process", metavar="B")
    out: str = option(help="output folder: samples.npz (ADM layout), manifest.json, ...", metavar="DIR")

    def __post_init__(self):
        at_least(self, "batch_size", 1)


def check_args(args) -> None:
    """One-line errors for values argparse cannot check."""
    if args.num_steps is not None and args.num_steps < 1:
        raise ValueError(f"--num-steps must be >= 1 (got {args.num_steps})")
    if args.num_samples is not None and args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1 (got {args.num_samples})")
    SampleOptions(**given_values(args, SampleOptions))   # --batch-size >= 1
    if args.cfg_scale is not None and not math.isfinite(args.cfg_scale):
        raise ValueError(f"--cfg-scale must be a finite number (got {args.cfg_scale})")
    check_vae_space_args(args)
    for name in ("eta", "ddim_eta", "atol", "rtol", "last_step_size", "w_scale"):
        v = getattr(args, name, None)
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0 (got {v})")


MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes seeds up to this


def check_seed(seed: int, num_samples: int) -> None:
    """Sample i uses seed + i: all of them must be seeds torch takes, checked before any part is written."""
    if seed < 0 or seed + num_samples - 1 > MAX_SEED:
        raise ValueError(f"--seed {seed}: samples use seeds SEED .. SEED + {num_samples - 1}, which must lie in "
                         f"[0, {MAX_SEED}]; give --seed in [0, {MAX_SEED - num_samples + 1}]")


def _flag_error(e: ValueError) -> ValueError:
    """A record's error with its field named as the flag (SampleConfig.num_steps -> --num-steps)."""
    from sit.commands._errors import fields_as_flags

    return ValueError(fields_as_flags(str(e), ("SampleConfig", "DiscreteSampleConfig")))


def check_method_flags(method: str, given: dict) -> None:
    """Refuse flags that the method would ignore (`sit.sampler_config.check_method_fields`, the rule
    `sit sweep` applies to its METHOD:FIELD=VALUE options too)."""
    from sit.sampler_config import check_method_fields
    from sit.sampler_kinds import SAMPLERS

    if method in SAMPLERS:  # an unknown method is named by SampleConfig
        check_method_fields(method, given)


def sample_config_from_args(args, base):
    """Explicit sampler flags over ``base`` (the preset's or the default config), as a typed record."""
    from sit.sampler_config import DISCRETE_METHODS, DiscreteSampleConfig, SampleConfig

    given = given_values(args, SampleConfig)   # last_step "none": no last step (the grid runs to t_end)
    method = given.get("method", base.method)
    try:
        if method in DISCRETE_METHODS:
            if "eta" in given:
                raise ValueError("--eta is w_KL,eta's eta; for --method ddim give --ddim-eta")
            extra = sorted(k for k in given if k not in ("method", "num_steps"))
            if extra:
                raise ValueError(f"--{extra[0].replace('_', '-')} does not apply to --method {method}")
            eta = args.ddim_eta if args.ddim_eta is not None else getattr(base, "eta", 0.0) if base.method == method else 0.0
            return DiscreteSampleConfig(method=method, num_steps=given.get("num_steps", base.num_steps), eta=eta)
        if args.ddim_eta is not None:
            raise ValueError(f"--ddim-eta applies to --method ddim only (got --method {method})")
        check_method_flags(method, given)
        fields = dataclasses.asdict(base) if isinstance(base, SampleConfig) else {"num_steps": base.num_steps}
        return SampleConfig(**{**fields, **given, "method": method})
    except ValueError as e:
        raise _flag_error(e) from None


def guidance_from_args(args, base):
    """The guidance record from its flags over ``base`` (`sit.guidance.guidance_from_flags`: the
    record's own fields and a strategy's record, e.g. `Guide` from --guide-ckpt)."""
    from sit.guidance import guidance_from_flags

    return guidance_from_flags(base, vars(args))


def _folder_vae(args) -> None:
    """A diffusers folder given as --ckpt (a sit export or an official DiT folder) brings its VAE:
    its ``vae/`` is the default --vae (named, so it is part of the sample set's identity)."""
    from pathlib import Path

    from sit import folders

    ck = Path(args.ckpt or "")
    if args.vae is None and args.ckpt and ck.is_dir() and folders.EXPORT in folders.marks(ck) and (ck / "vae" / "config.json").is_file():
        args.vae = str(ck / "vae")
        print(f"sit: decoding with the folder's own VAE (--vae {args.vae})", file=sys.stderr)


def build_spec(args):
    """(SampleSpec without the checkpoint's fields, preset name): explicit flags > preset > defaults."""
    from sit.generate.noise import parse_labels
    from sit.generate.presets import DEFAULT_SAMPLE, Preset, get_preset
    from sit.generate.spec import SampleSpec

    preset = get_preset(args.preset) if args.preset else Preset(DEFAULT_SAMPLE)
    sample = sample_config_from_args(args, preset.sample)
    guidance = guidance_from_args(args, preset.guidance)
    labels = parse_labels(args.labels if args.labels is not None else preset.labels, check=False)
    num_samples = args.num_samples or (len(labels) if isinstance(labels, tuple) else None) \
        or preset.num_samples or SampleSpec().num_samples
    spec = SampleSpec(weights=args.weights, sample=sample, guidance=guidance, labels=labels, seed=args.seed,
                      num_samples=int(num_samples), precision=args.precision, vae=args.vae,
                      vae_scale=args.vae_scale, vae_shift=args.vae_shift, save_latents=args.save_latents)
    return spec, args.preset


def run(args) -> int:
    from sit import dist
    from sit.generate.noise import load_noise
    from sit.generate.run import sample_set
    from sit.generate.spec import noise_sha256

    check_args(args)
    _folder_vae(args)
    spec, preset = build_spec(args)  # every flag checked: nothing is loaded yet
    check_seed(spec.seed, spec.num_samples)
    noise = None
    if args.noise:
        noise = load_noise(args.noise)
        spec = dataclasses.replace(spec, initial_noise_sha256=noise_sha256(noise))
    t0 = time.perf_counter()
    res = sample_set(
        args.ckpt, Path(args.out), spec, batch_size=args.batch_size, device=args.device, initial_noise=noise,
        noise_file=args.noise, lt_table=args.lt_table, kind=args.kind, num_heads=args.num_heads,
        compile=args.compile, tf32=args.tf32, preset=preset,
        outputs=Outputs(**given_values(args, Outputs)),
    )
    dist.print0(
        f"{res.npz}: {res.num_generated} samples generated now; NFE per sample actually spent: "
        f"{', '.join(str(v) for v in res.nfe) or 'n/a'}; {time.perf_counter() - t0:.1f} s; manifest {res.manifest}"
    )
    return 0
