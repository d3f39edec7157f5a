"""Training presets: the embedded demo's defaults and the paper runs' model choice, read by
`sit train` (`sit.commands.train`, whose --help shows them), the study and the benchmarks, so none
of them imports the CLI. Read-only mappings of `sit.config.TrainConfig` / `ModelConfig` fields;
`demo_configs` builds the typed records.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from sit.config import ModelConfig, TrainConfig

# the embedded demo's defaults (measured in docs/training.md; `sit train --help` shows them); a flag given on the
# command line wins
DEMO_TRAIN: Mapping[str, Any] = MappingProxyType(dict(
    dataset="digits",
    image_size=8,
    steps=600,                # 600 steps at lr 2e-3 with logit-normal t: half the CPU time of the
    global_batch=128,         # former 1200 at 1e-3 (uniform t), better samples (docs/training.md)
    lr=2e-3,
    time_dist="logit_normal",
    warmup_steps=100,
    grad_clip=1.0,
    ema_decay=0.999,
    ema_warmup=True,
    log_every=20,
    ckpt_every=500,
    keep_last=2,
    cfg_scale=2.0,
    sample_method="heun",
    sample_steps=20,
    samples_per_class=10,
    num_workers=0,
    threads=0,                # keep `sit`'s choice: the free cores (sit.cli.default_threads)
))
DEMO_REPA_PROJ_DIM = 256   # --repa-encoder on the embedded demo: projector width (REPA's 2048 would be ~4x the network)
DEMO_MNIST: Mapping[str, Any] = MappingProxyType(dict(image_size=32, steps=600, global_batch=64, lr=1e-3))  # --dataset mnist_5k on top of DEMO_TRAIN
DATA_IMAGE_SIZE = 256       # --data default pixels
DEFAULT_PRESET = "SiT-XL/2"  # the model without --model (paper runs)
DEMO_MODEL: Mapping[str, Any] = MappingProxyType(dict(depth=4, hidden_size=128, num_heads=4, patch_size=2, learn_sigma=False, class_dropout_prob=0.1))
DEMO_MODEL_MNIST: Mapping[str, Any] = MappingProxyType(dict(depth=4, hidden_size=128, num_heads=4, patch_size=4, learn_sigma=False, class_dropout_prob=0.1))


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
