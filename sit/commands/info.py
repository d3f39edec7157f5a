"""`sit info CHECKPOINT`: model size, classes, parameter count, training step, config."""

from __future__ import annotations

import argparse
import json
import textwrap
from dataclasses import dataclass
from typing import Literal

from sit.commands._args import kind_option, num_heads_option
from sit.commands.flags import add_record_arguments, given_values, option

EXAMPLES = """examples:
  sit info SiT-XL-2-256x256.pt
  sit info runs/s2                      # newest checkpoint of a run
  sit info weights/sit-xl2.safetensors --json
"""


@dataclass(frozen=True)
class InfoOptions:
    """The options of `sit info` (its flags are these fields): which weights `describe` reads, and how."""

    checkpoint: str = option(help="official .pt, sit .safetensors, checkpoint dir or run dir", metavar="CHECKPOINT",
                             positional=True)
    prefer: Literal["ema", "model"] = option("ema", "weights to describe when both exist")
    kind: str | None = kind_option()
    num_heads: int | None = num_heads_option()
    json: bool = option(False, "print one JSON object instead of text", switch=True)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe a checkpoint (size, classes, parameters, step, config)",
        description=EXAMPLES + "\nPrint what a checkpoint holds without running it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_record_arguments(p, InfoOptions)
    p.set_defaults(func=run)


def describe(path, prefer: str = "ema", kind: str | None = None, num_heads: int | None = None) -> dict:
    """Summary dict of a checkpoint: preset, params, classes, step, config, meta."""
    from sit import checkpoints as store
    from sit.config import ModelConfig, from_dict, to_dict
    from sit.models.checkpoint import infer_config, preset_name
    from sit.models.sit import param_count

    ck = store.resolve(path)  # verifies; a run folder: its newest valid checkpoint (refusals named)
    sd, meta = _read(ck, prefer, kind)
    if isinstance(meta.get("model"), dict):
        cfg = from_dict(ModelConfig, meta["model"])
    else:
        cfg = infer_config(sd, meta.get("official_args"), num_heads)
    rm = store.RunMeta.from_dict(dict(meta, model=cfg), source=ck)  # what every loader will use
    info = {
        "checkpoint": str(ck),
        "model": preset_name(cfg) or "custom",
        "params": sum(v.numel() for v in sd.values()),
        "params_expected": param_count(cfg),
        "num_classes": cfg.num_classes,
        "input": [cfg.in_channels, cfg.input_size, cfg.input_size],
        "learn_sigma": cfg.learn_sigma,
        "step": meta.get("step", 0),
        "weights": meta.get("weights"),
        "path": rm.path,
        "prediction": rm.prediction,
        "time_input": rm.time_input,
        "config": to_dict(cfg),
    }
    info.update(_training_extras(meta, cfg))
    extra = {k: v for k, v in meta.items() if k not in info and k != "model"}
    if extra:
        info["meta"] = extra
    return info


def _read(ck, prefer: str, kind: str | None):
    """(state dict, meta) of a resolved checkpoint: a `sit convert --to diffusers` export (read back and
    verified as sit weights), an official diffusers DiT folder, or a file / checkpoint folder."""
    from sit import checkpoints as store
    from sit.models.checkpoint import read_checkpoint

    if store.is_diffusers_folder(ck):
        from sit.models.diffusers_format import load_diffusers

        net, meta = load_diffusers(ck)
        return net.state_dict(), meta
    if store.is_dit_folder(ck):  # the facebook/DiT-XL-2-256 layout: DiT
        from sit.models.diffusers_dit import load_dit_folder

        net, meta = load_dit_folder(ck)
        return net.state_dict(), meta
    sd, meta = read_checkpoint(ck, prefer=prefer, kind=kind)
    return sd, store.recorded_meta(meta, kind, ck)  # as `store.load` reads it


def _training_extras(meta: dict, cfg) -> dict:
    """What the run's training recorded beyond the network: its alignment (REPA), its named recipe
    and the sampling that recipe publishes, and the latent space of a latent model."""
    out: dict = {}
    train = meta.get("train") if isinstance(meta.get("train"), dict) else {}
    if train.get("repa_encoder") is not None:
        from sit.config import TrainConfig
        from sit.train.repa import default_depth

        D = TrainConfig()
        out["alignment"] = {"method": "repa", "encoder": train["repa_encoder"],
                            "depth": train.get("repa_depth") or default_depth(cfg.depth),
                            "coeff": train.get("repa_coeff", D.repa_coeff), "proj_dim": train.get("repa_proj_dim", D.repa_proj_dim)}
    if train.get("preset") is not None:
        from sit.train.recipes import TRAIN_PRESETS

        out["preset"] = {"train": train["preset"], "sample": TRAIN_PRESETS.get(train["preset"], {}).get("sample_preset")}
    if cfg.in_channels not in (1, 3):  # a latent model: the space its samples are decoded from
        from sit.vae import LatentSpace

        data = meta.get("data") if isinstance(meta.get("data"), dict) else None
        out["latent_space"] = {"recorded": bool(data and "scale_factor" in data), **LatentSpace.from_record(data).record()}
    return out


def run(args) -> int:
    opts = InfoOptions(**given_values(args, InfoOptions))
    info = describe(opts.checkpoint, opts.prefer, opts.kind, opts.num_heads)
    if opts.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    c = info["config"]
    print(f"checkpoint   {info['checkpoint']}")
    print(f"model        {info['model']}  (depth {c['depth']}, hidden {c['hidden_size']}, heads {c['num_heads']}, patch {c['patch_size']})")
    print(f"parameters   {info['params']:,}")
    print(f"input        {c['in_channels']}x{c['input_size']}x{c['input_size']}, learn_sigma={c['learn_sigma']}")
    print(f"classes      {c['num_classes']} (+ null label: {c['class_dropout_prob'] > 0}, dropout {c['class_dropout_prob']})")
    print(f"step         {info['step']}  (weights: {info['weights'] or 'state_dict'})")
    print(f"field        prediction={info['prediction']}, path={info['path']}, time_input={info['time_input']}")
    if "alignment" in info:
        a = info["alignment"]
        print(f"alignment    REPA: encoder {a['encoder']}, block {a['depth']} of {c['depth']}, lambda {a['coeff']:g}, "
              f"projector MLP width {a['proj_dim']} (training only: not in the weights above)")
    if "preset" in info:
        pr = info["preset"]
        print(f"preset       {pr['train']}" + (f" (its published samples: sit sample --preset {pr['sample']})" if pr["sample"] else ""))
    if "latent_space" in info:
        sp = info["latent_space"]
        norm = sp.get("latent_norm")
        norm_text = ("per-channel normalisation mean " + _floats(norm["mean"]) + ", std " + _floats(norm["std"])
                     if norm else "no normalisation")
        print(f"latents      x = (z - {sp.get('shift_factor', 0.0):g}) * {sp['scale_factor']:g}, {norm_text}"
              + ("" if sp["recorded"] else "  (not recorded: sit's defaults for official / older checkpoints)"))
    meta = dict(info.get("meta", {}))
    train = meta.pop("train") if isinstance(meta.get("train"), dict) else None
    for k, v in sorted(meta.items()):
        _print_wrapped(f"meta.{k}", v)
    if train is not None:   # the training config, one line per record of TrainConfig (sit.config.TRAIN_GROUPS)
        for name, values in train_records(train).items():
            _print_wrapped(f"train.{name}", values)
    return 0


def train_records(train: dict) -> dict[str, dict]:
    """A stored TrainConfig dict split into its records (data, loss, ..., `sit.config.TRAIN_GROUPS` order);
    keys no record holds (a config from another version) under "other"."""
    import dataclasses

    from sit.config import TRAIN_RECORDS

    out = {name: {f.name: train[f.name] for f in dataclasses.fields(cls) if f.name in train}
           for name, cls in TRAIN_RECORDS.items()}
    known = {k for values in out.values() for k in values}
    out["other"] = {k: v for k, v in train.items() if k not in known}
    return {name: values for name, values in out.items() if values}


def _print_wrapped(label: str, v) -> None:
    lines = textwrap.wrap(json.dumps(v), width=100, break_long_words=False, break_on_hyphens=False) or [""]
    print(f"{label:<12} {lines[0]}")
    for line in lines[1:]:
        print(" " * 13 + line)


def _floats(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
