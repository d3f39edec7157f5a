"""Training presets: the embedded demo's defaults and the paper runs' model choice, read by
`sit train` (`sit.commands.train`, whose --help shows them), the study and the benchmarks, so none
of them imports the CLI. Read-only mappings of `sit.config.TrainConfig` / `ModelConfig` fields;
`demo_configs` builds the typed records.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from sit.config import ConfigError, ModelConfig, TrainConfig, model_preset

# the embedded demo's defaults (measured in docs/training.md; `sit train --help` shows them); a flag given on the
# command line wins
DEMO_TRAIN: Mapping[str, Any] = MappingProxyType(dict(
    dataset="digits",
    image_size=8,
    steps=800,                # 800 steps of 48 at lr 2e-3 with logit-normal t, Euler 10-step previews: about
    global_batch=48,          # 58 CPU-s in all (the 600 x 128 with Heun 20 before: 112), 97.6 % of unguided samples
    lr=2e-3,                  # recognised by an independent classifier (96.3 % before) (docs/training.md)
    time_dist="logit_normal",
    warmup_steps=100,
    grad_clip=1.0,
    ema_decay=0.999,
    ema_warmup=True,
    log_every=20,
    ckpt_every=500,
    keep_last=2,
    cfg_scale=2.0,
    sample_method="euler",
    sample_steps=10,
    samples_per_class=10,
    num_workers=0,
    threads=0,                # keep `sit`'s choice: the free cores (sit.cli.default_threads)
))
# the demo's recipe of 2026-12-01 .. 2026-12-07 (600 steps of 128, Heun 20 previews): the benchmarks whose
# documented figures were measured on it (bench_repa, bench_phema) keep training it
DEMO_TRAIN_600x128: Mapping[str, Any] = MappingProxyType(dict(DEMO_TRAIN, steps=600, global_batch=128,
                                                               sample_method="heun", sample_steps=20))
DEMO_REPA_PROJ_DIM = 256   # --repa-encoder on the embedded demo: projector width (REPA's 2048 would be ~4x the network)
DEMO_MNIST: Mapping[str, Any] = MappingProxyType(dict(image_size=32, steps=600, global_batch=64, lr=1e-3))  # --dataset mnist_5k on top of DEMO_TRAIN
DATA_IMAGE_SIZE = 256       # --data default pixels
DEFAULT_PRESET = "SiT-XL/2"  # the model without --model (paper runs)
DEMO_MODEL: Mapping[str, Any] = MappingProxyType(dict(depth=4, hidden_size=128, num_heads=4, patch_size=2, learn_sigma=False, class_dropout_prob=0.1))
DEMO_MODEL_MNIST: Mapping[str, Any] = MappingProxyType(dict(depth=4, hidden_size=128, num_heads=4, patch_size=4, learn_sigma=False, class_dropout_prob=0.1))


# named training recipes (`sit train --preset NAME`, TrainConfig.preset, recorded in the run): TrainConfig fields, the
# model, and the `sit sample --preset` of the paper's published samples; flags given on the command line win.
# repa-sit-xl2: REPA (Yu et al. 2024, sihyun-yu/REPA train.py + README) SiT-XL/2 on ImageNet 256: DINOv2-B targets
# at block 8, lambda 0.5, projector width 2048 (xavier-uniform, zero biases), the encoder's position embedding
# resampled once (timm), no flips, AdamW lr 1e-4 batch 256, no weight decay, gradient clipping 1.0, EMA 0.9999,
# uniform t on the linear path, label dropout 0.1, 4M steps (the paper's FID 1.42 run); REPA trains in fp16 mixed
# precision, sit's nearest is bf16.
TRAIN_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "repa-sit-xl2": MappingProxyType(dict(
        model="SiT-XL/2",
        sample_preset="repa-sit-xl2",
        needs=("repa_encoder",),
        train=MappingProxyType(dict(
            repa_depth=8, repa_coeff=0.5, repa_proj_dim=2048, repa_init="xavier", repa_pos_embed="resample",
            flip=False, lr=1e-4, global_batch=256, weight_decay=0.0, grad_clip=1.0, ema_decay=0.9999, warmup_steps=0,
            path="linear", prediction="velocity", time_dist="uniform", steps=4_000_000, ckpt_every=50_000,
            precision="bf16")),
    )),
})


def demo_configs(dataset: str = "digits", **train_overrides) -> tuple[TrainConfig, ModelConfig]:
    """(TrainConfig, ModelConfig) of the embedded demo on ``dataset`` with TrainConfig field overrides,
    as `sit train` without --data / --latents resolves them (before flags touch the model)."""
    base = dict(DEMO_TRAIN, dataset=dataset)
    if dataset == "mnist_5k":
        base.update(DEMO_MNIST)
    if train_overrides.get("repa_encoder") is not None:
        base["repa_proj_dim"] = DEMO_REPA_PROJ_DIM
    cfg = TrainConfig(**{**base, **train_overrides})
    dm = DEMO_MODEL_MNIST if dataset == "mnist_5k" else DEMO_MODEL
    return cfg, ModelConfig(**dm, input_size=cfg.image_size, in_channels=1, num_classes=10)


def resolve_configs(train: Mapping[str, Any], arch: Mapping[str, Any] | None = None,
                    model: str | None = None) -> tuple[TrainConfig, ModelConfig]:
    """(TrainConfig, ModelConfig) from given TrainConfig fields ``train`` and ModelConfig fields
    ``arch`` (depth, class_dropout_prob, ...), as `sit train` resolves its flags: the embedded demo's
    defaults (DEMO_TRAIN, DEMO_MODEL) without ``data`` / ``latents``, the paper's otherwise (the
    ``model`` preset, default DEFAULT_PRESET); the data shape from the latent index or the VAE's
    config; given fields always win. A discrete-time run learns the variance unless ``arch`` says."""
    given, arch = dict(train), dict(arch or {})
    demo = given.get("data") is None and given.get("latents") is None
    base: dict[str, Any] = {}
    preset = TRAIN_PRESETS.get(given.get("preset")) if given.get("preset") is not None else None
    if preset is not None:
        if demo:
            raise ConfigError("TrainConfig", "preset", f"{given['preset']} trains on image data: give {{latents}} "
                              "(extracted with {ExtractOptions.pixels}) or {data}")
        for need in preset["needs"]:
            if given.get(need) is None:
                raise ConfigError("TrainConfig", "preset", f"{given['preset']} needs {{{need}}} (a local DINOv2-B folder, "
                                  "transformers save_pretrained)")
        base.update(preset["train"])
        model = model or preset["model"]
    if demo:
        base = dict(DEMO_TRAIN)
        if given.get("dataset") == "mnist_5k":
            base.update(DEMO_MNIST)
        if given.get("repa_encoder") is not None:
            base["repa_proj_dim"] = DEMO_REPA_PROJ_DIM
    elif given.get("data") is not None:
        base["image_size"] = DATA_IMAGE_SIZE
    cfg = TrainConfig(**{**base, **given})

    if demo:
        channels, size, classes = 1, cfg.image_size, 10
    elif cfg.latents is not None:
        channels, size, classes = latent_shape(cfg.latents)
    else:
        channels, down = vae_geometry(cfg.vae)
        if cfg.image_size % down:
            raise ConfigError("TrainConfig", "image_size",
                              f"{cfg.image_size} must be divisible by the VAE's downsampling factor {down}")
        from sit.data.imagefolder import find_classes

        size, classes = cfg.image_size // down, len(find_classes(cfg.data))
    common = dict(input_size=size, in_channels=channels, num_classes=classes)
    if model:
        mc = model_preset(model, **common, **arch)
    elif demo:
        dm = DEMO_MODEL_MNIST if cfg.dataset == "mnist_5k" else DEMO_MODEL
        mc = ModelConfig(**{**dm, **common, **arch})
    else:
        mc = model_preset(DEFAULT_PRESET, **common, **arch)
    if cfg.time_input == "discrete" and "learn_sigma" not in arch and not mc.learn_sigma:
        mc = dataclasses.replace(mc, learn_sigma=True)  # DiT learns the variance (hybrid loss)
    return cfg, mc


def latent_shape(root: str) -> tuple[int, int, int]:
    """(channels, size, classes) of a `sit extract` folder, from its verified index."""
    from sit.data.latents import read_index

    idx = read_index(root)
    c, h, w = idx["latent_shape"]
    return int(c), int(h), int(idx["num_classes"])


def vae_geometry(vae: str | None) -> tuple[int, int]:
    """(latent channels, downsampling factor) from a VAE folder's config.json; the SD VAE's (4, 8)
    for names and folders without one."""
    cfg = Path(vae).expanduser() / "config.json" if vae else None
    if cfg is not None and cfg.is_file():
        d = json.loads(cfg.read_text())
        return int(d.get("latent_channels", 4)), 2 ** (len(d.get("block_out_channels", [0, 0, 0, 0])) - 1)
    return 4, 8
