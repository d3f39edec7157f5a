"""`sit convert IN OUT`: official .pt <-> sit safetensors (+ JSON), direction by extension;
`--to diffusers`: OUT is a diffusers folder (`sit.models.diffusers_format`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sit.commands._args import kind_option, num_heads_option
from sit.commands.flags import add_record_arguments, given_values, option

EXAMPLES = """examples:
  sit convert SiT-XL-2-256x256.pt weights/sit-xl2.safetensors
  sit convert DiT-XL-2-512x512.pt weights/dit-xl2-512.safetensors --kind dit
  sit convert runs/s2/checkpoints/step-0050000 exported.pt --train-format
  sit convert runs/s2 exported.safetensors       # the run's newest checkpoint that verifies
  sit convert runs/s2 --to diffusers exported-diffusers   # a folder diffusers loads (docs/sampling.md)
  sit convert --from repa last.pt weights/repa-xl2.safetensors   # a REPA checkpoint, convention mapped
"""


@dataclass(frozen=True)
class ConvertOptions:
    """The options of `sit convert` (its flags are these fields; library messages name them as
    ``{ConvertOptions.to}``, written as the flag). Their combinations are checked here."""

    input: str = option(help="official .pt, sit .safetensors, checkpoint dir or run dir", metavar="IN", positional=True)
    output: str = option(help="output path ending in .safetensors or .pt (a new folder with {to} diffusers)",
                         metavar="OUT", positional=True)
    to: str | None = option(None, "write OUT as a diffusers folder (DiTTransformer2DModel, scheduler, pipeline_sit.py, "
                            "sit_diffusers.json)", choices=lambda: ("diffusers",))
    from_format: str | None = option(None, "IN is a checkpoint of another code base: repa = sihyun-yu/REPA's SiT "
                                     "(t = 0 data, output eps - x, projector keys), mapped to sit's convention "
                                     "(docs/network.md)", flag="--from", choices=lambda: ("repa",))
    keep_projector: bool = option(False, "with {from_format} repa: keep REPA's projector(s) in "
                                  "OUT.projector.safetensors (default: dropped)", switch=True)
    vae: str | None = option(None, "with {to} diffusers: the VAE folder to put in the export (default: the one the "
                             "run recorded, when it is a local folder; latent models only)", metavar="PATH")
    prefer: Literal["ema", "model"] = option("ema", "weights to take when both exist")
    kind: str | None = kind_option()
    num_heads: int | None = num_heads_option()
    train_format: bool = option(False, "with OUT .pt: write a train.py-style dict (model: raw weights, ema: EMA "
                                "weights, opt: a fresh AdamW state, args: the run's settings and num_heads) instead "
                                "of a plain state_dict", switch=True)

    def __post_init__(self):
        from sit.config import ConfigError

        if self.keep_projector and self.from_format != "repa":
            raise ConfigError("ConvertOptions", "keep_projector", "goes with {from_format} repa")
        if self.from_format == "repa" and (self.to is not None or self.train_format or self.kind is not None):
            raise ConfigError("ConvertOptions", "from_format", "repa writes a sit .safetensors; {to} / {train_format} / "
                              "{kind} do not apply")
        if self.to == "diffusers" and self.train_format:
            raise ConfigError("ConvertOptions", "train_format", "is for .pt output, not {to} diffusers")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert checkpoints between the official .pt format and sit safetensors",
        description=EXAMPLES + "\nConvert a checkpoint; the output format follows OUT's extension "
        "(.safetensors: sit weights + a .json of the config beside; .pt: the official format).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_record_arguments(p, ConvertOptions)
    p.set_defaults(func=run)


def run(args) -> int:
    from sit import checkpoints as store
    from sit.models.checkpoint import export_official, official_args, preset_name, save_model

    opts = ConvertOptions(**given_values(args, ConvertOptions))
    src, out = opts.input, Path(opts.output)
    if opts.from_format == "repa":
        return _from_repa(opts, src, out)
    if opts.to == "diffusers":
        return _to_diffusers(opts, src, out)
    if out.suffix not in (".safetensors", ".pt"):
        raise ValueError(f"unknown output type {out.suffix!r} for {str(out)!r}; expected one of ['.pt', '.safetensors']")
    net, meta = store.load(src, weights=opts.prefer, kind=opts.kind, num_heads=opts.num_heads)
    d = meta.to_dict()
    if out.suffix == ".safetensors":
        written = save_model(net, out, dict(d, converted_from=str(src)))
        print(f"wrote {written} and {written.with_suffix('.json')}")
    else:
        oargs = official_args(net.config, meta) if opts.train_format else None
        ema = None
        if oargs is not None:  # "model" holds the raw weights and "ema" the EMA, each where the source has it
            raw, raw_meta = store.load(src, weights="model", kind=opts.kind, num_heads=opts.num_heads)
            ema, ema_meta = store.load(src, weights="ema", kind=opts.kind, num_heads=opts.num_heads)
            net = raw
            if raw_meta.weights != "model" or ema_meta.weights != "ema":
                oargs["sit_note"] = "the source holds one set of weights: model and ema are the same"
                print(f"note: {src} holds one set of weights ({ema_meta.weights}); 'model' and 'ema' are both it")
            oargs["sit_opt"] = "fresh AdamW state (sit's optimizer state is not in the official layout)"
        written = export_official(net, out, args=oargs, ema=ema)
        print(f"wrote {written} ({'train.py dict' if oargs else 'plain state_dict'})")
    name = preset_name(net.config) or "custom"
    print(f"model {name}, {net.num_params():,} parameters, step {meta.step}, {meta.prediction}/{meta.path}/{meta.time_input}")
    return 0


def _to_diffusers(args: ConvertOptions, src: str, out: Path) -> int:
    from sit import checkpoints as store
    from sit import folders
    from sit.models.diffusers_format import export_diffusers

    folders.require_standalone(out, folders.EXPORT, "OUT")  # never inside a run / checkpoint / export folder
    if out.exists():
        raise ValueError(f"{str(out)!r} exists; --to diffusers writes a new folder")
    net, meta = store.load(src, weights=args.prefer, kind=args.kind, num_heads=args.num_heads)
    if meta.discrete:
        raise ValueError("--to diffusers exports continuous-time SiT models (this one takes DDPM steps: use diffusers' DiTPipeline)")
    vae, space = _run_vae(args.vae, net, meta)
    export_diffusers(net, dict(meta.to_dict(), converted_from=str(src)), out, source_sha256=store.identity(meta.source),
                     vae=None if vae is None else vae.model, latent_space=space)
    print(f"wrote {out} (transformer/, scheduler/, {'vae/, ' if vae is not None else ''}pipeline_sit.py, sit_diffusers.json)")
    if vae is None and space is not None:
        print("note: no VAE in the export (the run names none that is a local folder): the pipeline gives latents "
              "(output_type='latent'); add one with --vae PATH")
    if (meta.path, meta.prediction) != ("linear", "velocity"):
        print(f"note: pipeline_sit.py samples Linear velocity models; this {meta.path}/{meta.prediction} model samples with `sit sample --ckpt {out}`")
    print(f"model {net.num_params():,} parameters, step {meta.step}, {meta.prediction}/{meta.path}/{meta.time_input}")
    return 0


def _from_repa(args: ConvertOptions, src: str, out: Path) -> int:
    from sit.io import atomic_path
    from sit.models.checkpoint import save_model
    from sit.models.repa_format import read_repa

    if out.suffix != ".safetensors":
        raise ValueError(f"--from repa writes a sit .safetensors (+ .json); OUT {str(out)!r} should end in .safetensors")
    net, proj, meta = read_repa(src, prefer=args.prefer, num_heads=args.num_heads)
    meta["converted_from"] = str(src)
    if args.keep_projector:
        from safetensors.torch import save_file

        if not proj:
            raise ValueError(f"--keep-projector: {src} holds no projector (projectors.* keys)")
        ppath = out.with_suffix(".projector.safetensors")
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(ppath, durable=True) as w:
            save_file({k: v.contiguous() for k, v in proj.items()}, str(w), metadata={"format": "pt", "source": "repa"})
        meta["repa"]["projector_file"] = ppath.name
    written = save_model(net, out, meta)
    r = meta["repa"]
    kept = f"kept in {out.with_suffix('.projector.safetensors').name}" if args.keep_projector else "dropped"
    print(f"wrote {written} and {written.with_suffix('.json')}: REPA {r['repa_path_type']} path"
          f"{' (assumed: REPA default)' if r['path_assumed'] else ''} -> sit {r['path']}/velocity, t -> 1 - t and the "
          f"output sign folded into the weights; projector(s) {r['projectors']} {kept}")
    print(f"model {net.num_params():,} parameters, step {meta['step']}, weights {meta['weights']}")
    return 0


def _run_vae(given: str | None, net, meta):
    """(sit.vae.VAE or None, latent-space record or None) for the export of a latent model: ``given``
    (``--vae``), else the VAE the run recorded (its data record, or its latent folder's index) when
    it loads from a local folder; set to decode in the run's recorded latent space."""
    import json

    from sit.vae import LatentSpace

    if int(net.in_channels) in (1, 3):
        if given is not None:
            raise ValueError("--vae: this is a pixel-space model; its export has no VAE")
        return None, None
    data = dict(meta.data or {})
    space = LatentSpace.from_record(data).record()
    name = given or data.get("vae")
    if name is None and isinstance(data.get("root"), str) and data.get("kind") == "latents":
        try:
            name = json.loads((Path(data["root"]) / "index.json").read_text()).get("vae")
        except (OSError, ValueError):
            name = None
    if name is None:
        return None, space
    from sit.generate.run import load_decoder

    try:
        v = load_decoder(str(name), "cpu", meta)
    except (OSError, ValueError) as e:
        if given is not None:
            raise
        print(f"note: the run's VAE {name!r} cannot be loaded here ({str(e).splitlines()[0][:120]})")
        return None, space
    return v, v.space.record()
