"""Official diffusers DiT folders (the ``facebook/DiT-XL-2-256`` layout) read as DiT.

The layout (no ``sit_diffusers.json``: not a sit export)::

    FOLDER/model_index.json                 "DiTPipeline", its transformer / scheduler / vae
    FOLDER/transformer/config.json          ``DiTTransformer2DModel`` (older: ``Transformer2DModel``
                                            with norm_type "ada_norm_zero")
    FOLDER/transformer/diffusion_pytorch_model.safetensors (or .bin)
    FOLDER/scheduler/scheduler_config.json  DiT's DDPM: 1000 steps, linear betas 1e-4 .. 0.02
    FOLDER/vae/                             the SD VAE its latents decode with

The transformer is DiT's network under diffusers' key names (`sit.models.diffusers_format`
maps them back); it predicts the noise of the discrete DDPM with a learned variance (8 output
channels for 4 latent ones), so sit reads it as an official DiT file: path "ddpm", prediction
"noise", time input "discrete", and samples it with sit's own DDPM / DDIM (`sit.discrete`).
What sit computes is DiT's network as DiT defines it; two details of diffusers' ``DiTPipeline``
differ from that: its time embedding uses frequencies 10000^(-k/127) (DiT: k/128;
`sit.models.diffusers_pipeline.fix_time_embedding` makes them agree), and its LayerNorm eps is
the config's ``norm_eps`` (diffusers' default 1e-5; DiT 1e-6). Its ``DDIMScheduler`` keeps the
steps k = j * (1000 // N) where DiT keeps round(linspace(0, 999, N)); with N = 1000 both are
every step. Nothing in such a folder carries a hash: the reader checks that the configs describe
DiT's DDPM and a network sit can build, and the weights key by key and shape by shape.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from sit.config import ModelConfig, to_dict
from sit.models.diffusers_format import DiffusersFormatError, from_diffusers
from sit.models.sit import SiT

MODEL_INDEX = "model_index.json"
TRANSFORMER_CONFIG = "transformer/config.json"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
WEIGHT_FILES = ("transformer/diffusion_pytorch_model.safetensors", "transformer/diffusion_pytorch_model.bin")
CLASSES = ("DiTTransformer2DModel", "Transformer2DModel")
# DiT's DDPM (`sit.discrete.DiscreteDiffusion` defaults); a scheduler config must not contradict it
DDPM = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
        "prediction_type": "epsilon"}


def is_dit_folder(path: str | os.PathLike) -> bool:
    """A diffusers pipeline folder with a DiT transformer and no sit_diffusers.json."""
    p = Path(path)
    return (p.is_dir() and (p / MODEL_INDEX).is_file() and (p / TRANSFORMER_CONFIG).is_file()
            and not (p / "sit_diffusers.json").exists())


def _json(folder: Path, name: str) -> dict[str, Any]:
    try:
        d = json.loads((folder / name).read_text())
    except (OSError, ValueError) as e:
        raise DiffusersFormatError(f"{str(folder / name)!r} cannot be read ({type(e).__name__})") from None
    if not isinstance(d, dict):
        raise DiffusersFormatError(f"{str(folder / name)!r} is not a JSON object")
    return d


def dit_config(folder: str | os.PathLike) -> ModelConfig:
    """The ModelConfig of the folder's transformer (refuses what is not DiT's architecture)."""
    folder = Path(folder)
    c = _json(folder, TRANSFORMER_CONFIG)
    where = str(folder / TRANSFORMER_CONFIG)
    if c.get("_class_name") not in CLASSES or c.get("norm_type") != "ada_norm_zero":
        raise DiffusersFormatError(f"{where!r}: a {c.get('_class_name')} with norm_type {c.get('norm_type')!r} is not "
                                   f"DiT's transformer ({' / '.join(CLASSES)} with ada_norm_zero)")
    need = {"activation_fn": "gelu-approximate", "attention_bias": True, "norm_elementwise_affine": False}
    wrong = {k: c.get(k) for k, v in need.items() if c.get(k, v) != v}
    if c.get("patch_size") is None or c.get("num_embeds_ada_norm") is None:
        wrong.update(patch_size=c.get("patch_size"), num_embeds_ada_norm=c.get("num_embeds_ada_norm"))
    if wrong:
        raise DiffusersFormatError(f"{where!r}: {wrong} differ from DiT's architecture ({need}, a patch size, classes)")
    heads, dim, cin = int(c["num_attention_heads"]), int(c["attention_head_dim"]), int(c["in_channels"])
    cout = int(c.get("out_channels") or cin)
    if cout not in (cin, 2 * cin):
        raise DiffusersFormatError(f"{where!r}: out_channels {cout} is neither in_channels {cin} nor twice it")
    return ModelConfig(input_size=int(c["sample_size"]), patch_size=int(c["patch_size"]), in_channels=cin,
                       hidden_size=heads * dim, depth=int(c["num_layers"]), num_heads=heads, mlp_ratio=4.0,
                       class_dropout_prob=0.1,  # diffusers' label table always holds the null row
                       num_classes=int(c["num_embeds_ada_norm"]), learn_sigma=cout == 2 * cin)


def check_scheduler(folder: Path) -> dict[str, Any]:
    if not (folder / SCHEDULER_CONFIG).is_file():
        return {}
    s = _json(folder, SCHEDULER_CONFIG)
    wrong = {k: s[k] for k, v in DDPM.items() if k in s and s[k] != v}
    if wrong:
        raise DiffusersFormatError(f"{str(folder / SCHEDULER_CONFIG)!r}: {wrong} differ from DiT's DDPM {DDPM}; sit samples "
                                   "DiT's discrete process only")
    return s


def _weights(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    for name in WEIGHT_FILES:
        p = folder / name
        if p.is_file():
            if p.suffix == ".safetensors":
                from sit.models.checkpoint import load_safetensors

                return p, load_safetensors(p)
            from sit.models.checkpoint import safe_torch_load

            return p, safe_torch_load(p)
    raise DiffusersFormatError(f"{str(folder)!r}: no {' or '.join(WEIGHT_FILES)}")


def identity_files(folder: str | os.PathLike) -> list[Path]:
    """The files that make the model: the transformer's config and weights, the scheduler config."""
    folder = Path(folder)
    return [p for p in (folder / TRANSFORMER_CONFIG, *(folder / n for n in WEIGHT_FILES), folder / SCHEDULER_CONFIG)
            if p.is_file()]


def load_dit_folder(folder: str | os.PathLike) -> tuple[SiT, dict[str, Any]]:
    """(SiT in eval mode, float32, sit's meta dict of an official DiT) from a diffusers DiT folder."""
    folder = Path(folder)
    config = dit_config(folder)
    sched = check_scheduler(folder)
    wpath, sd = _weights(folder)
    sd = {k: v for k, v in sd.items() if k != "pos_embed.pos_embed"}  # the fixed table, rebuilt by SiT
    sd = from_diffusers(sd, config, source=str(wpath))
    net = SiT(config)
    sd["pos_embed"] = net.pos_embed.detach().clone()
    net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    meta: dict[str, Any] = {
        "model": to_dict(config), "path": "ddpm", "prediction": "noise", "time_input": "discrete", "loss_weight": None,
        "step": 0, "weights": "state_dict", "kind": "dit", "source": "diffusers DiT folder",
        "diffusers_dit": {"transformer": _json(folder, TRANSFORMER_CONFIG).get("_class_name"),
                          "scheduler": sched.get("_class_name"), "vae": str(folder / "vae") if (folder / "vae").is_dir() else None},
    }
    vae_cfg = folder / "vae" / "config.json"
    if config.in_channels not in (1, 3) and vae_cfg.is_file():  # the latent space the folder's VAE states
        v = _json(folder, "vae/config.json")
        meta["data"] = {"scale_factor": float(v.get("scaling_factor") or 0.18215),
                        **({"shift_factor": float(v["shift_factor"])} if v.get("shift_factor") else {})}
    return net.eval(), meta
