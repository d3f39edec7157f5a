"""Frozen dataclass configs, presets and their JSON round trip (stdlib only).

Every resolved config is saved as JSON beside a checkpoint; ``from_dict`` refuses unknown keys
so a typo in a config file is an error, not a silently ignored field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

# The paper's design axes as choice types, defined once (the math core and the CLI import them).
PathName = Literal["linear", "gvp", "vp"]
Prediction = Literal["velocity", "score", "noise"]
LossWeight = Literal[None, "velocity", "likelihood"]
TimeInput = Literal["continuous", "discrete"]
TimeDist = Literal["uniform", "logit_normal"]
PATH_NAMES: tuple[str, ...] = get_args(PathName)
PREDICTIONS: tuple[str, ...] = get_args(Prediction)
LOSS_WEIGHTS: tuple[str | None, ...] = get_args(LossWeight)
TIME_INPUTS: tuple[str, ...] = get_args(TimeInput)
TIME_DISTS: tuple[str, ...] = get_args(TimeDist)


# Bounds checked before anything is allocated (issue 22): a step count or thread count beyond them
# is a typo, and honouring it allocates a grid that OOM-kills the machine or crashes inside torch.
MAX_STEPS = 100_000          # sampler / likelihood / preview steps (the paper uses at most 1000)
MAX_THREADS_PER_CORE = 4     # torch CPU threads: at most this many per usable core


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_steps(n: Any, what: str) -> None:
    """ValueError '{what} must be an integer in [1, MAX_STEPS] (got n)' for anything else."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_STEPS:
        raise ValueError(f"{what} must be an integer in [1, {MAX_STEPS}] (got {n!r})")


def max_threads() -> int:
    """The most torch CPU threads sit sets: MAX_THREADS_PER_CORE x the usable cores."""
    return MAX_THREADS_PER_CORE * usable_cores()


def check_threads(n: Any, what: str) -> None:
    """ValueError unless ``n`` is 0 (torch's own default) or 1 .. MAX_THREADS_PER_CORE x usable cores."""
    top = max_threads()
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= top:
        raise ValueError(f"{what} must be 0 (torch's default) or 1 .. {top} ({MAX_THREADS_PER_CORE} x "
                         f"{usable_cores()} usable cores) (got {n!r})")


class ConfigError(ValueError):
    """A bad value of one config field: ``record`` (the dataclass name, or "" for a plain argument of
    a library function) and ``field`` name it, the message says what is allowed. Library code speaks
    in fields; only ``sit.commands`` turns a field into its command-line flag (`sit train`:
    ``--repa-depth`` for TrainConfig.repa_depth). ``problem`` may name other fields (`render_fields`)."""

    def __init__(self, record: str, field: str, problem: str):
        self.record, self.field, self.problem = record, field, problem
        super().__init__(self.render(field_name))

    def __reduce__(self):  # pickled across processes (study workers) with its fields, not its text
        return (type(self), (self.record, self.field, self.problem))

    def render(self, name) -> str:
        """The one-line message with each field written as ``name(record, field)``."""
        return f"{name(self.record, self.field)} {render_fields(self.problem, name, self.record)}"


# a field named inside a message: {field} (the error's own record), {Record.field}, or {.arg} (a plain
# argument of a library function)
_FIELD_REF = re.compile(r"\{((?:[A-Z][A-Za-z0-9]*)?\.)?([a-z_][a-z0-9_]*)\}")


def render_fields(text: str, name, record: str = "") -> str:
    """``text`` with each field reference written as ``name(record, field)``."""
    def ref(m: re.Match) -> str:
        rec = m.group(1)
        return name(record if rec is None else rec[:-1], m.group(2))

    return _FIELD_REF.sub(ref, text)


def field_error(cls: type[Exception], template: str) -> Exception:
    """An exception of ``cls`` whose message names fields (`render_fields`; a bare ``{arg}`` is a plain
    argument): its text in field names, and ``template`` kept for `sit.commands` to write flags."""
    e = cls(render_fields(template, field_name))
    e.template = template
    return e


def field_name(record: str, field: str) -> str:
    """A field as library messages write it: ``Record.field`` (a plain argument: its name)."""
    return f"{record}.{field}" if record else field


def to_dict(cfg) -> dict[str, Any]:
    """The fields of ``cfg`` as a dict; fields a class lists in ``OMIT_IF_DEFAULT`` are left out
    while they hold their default (options added later, so the configs written before them, and
    every identity hashed from them, stay byte-identical; ``from_dict`` fills them back in)."""
    d = dataclasses.asdict(cfg)
    for name in getattr(type(cfg), "OMIT_IF_DEFAULT", ()):
        f = next(f for f in dataclasses.fields(cfg) if f.name == name)
        if d.get(name) == f.default:
            d.pop(name)
    return d


def from_dict(cls, d: dict[str, Any]):
    """Build dataclass ``cls`` from a dict, naming any unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected some of {sorted(names)}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
    return cls(**kwargs)


def to_json(cfg) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


@dataclass(frozen=True)
class ModelConfig:
    """The SiT / DiT backbone (paper section 2.5). Defaults: SiT-XL/2 on 32x32x4 SD-VAE latents."""

    input_size: int = 32          # latent height = width (pixels / 8 for the SD VAE)
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1   # label dropout for classifier-free guidance
    num_classes: int = 1000           # the null (unconditional) label is index num_classes
    learn_sigma: bool = True          # official checkpoints carry 2*in_channels output channels

    def __post_init__(self):
        for name in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "num_classes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer (got {v!r})")
        if self.input_size % self.patch_size:
            raise ValueError(
                f"ModelConfig.input_size ({self.input_size}) must be divisible by patch_size ({self.patch_size})"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"ModelConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if not 0.0 <= self.class_dropout_prob < 1.0:
            raise ValueError(f"ModelConfig.class_dropout_prob must be in [0, 1) (got {self.class_dropout_prob})")
        if not self.mlp_ratio > 0:
            raise ValueError(f"ModelConfig.mlp_ratio must be > 0 (got {self.mlp_ratio})")

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels


# (depth, hidden_size, num_heads) of the paper's sizes (Table in section 2.5; same as DiT)
MODEL_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}

MODEL_PRESETS: dict[str, ModelConfig] = {
    f"SiT-{size}/{p}": ModelConfig(patch_size=p, depth=d, hidden_size=h, num_heads=nh)
    for size, (d, h, nh) in MODEL_SIZES.items()
    for p in (2, 4, 8)
}


def model_preset(name: str, **overrides) -> ModelConfig:
    """A named preset ('SiT-XL/2', 'SiT-S/4', ...; 'DiT-' is accepted as an alias, '-' for '/'),
    with field overrides (e.g. input_size=64, num_classes=10)."""
    key = name.replace("DiT-", "SiT-")
    if key.count("-") == 2:  # SiT-XL-2
        head, _, p = key.rpartition("-")
        key = f"{head}/{p}"
    if key not in MODEL_PRESETS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODEL_PRESETS)}")
    return dataclasses.replace(MODEL_PRESETS[key], **overrides)


# ------------------------------------------------------------------------------------------------
# training (sit/train.py, `sit train`)
# ------------------------------------------------------------------------------------------------
TRAIN_CHOICES: dict[str, tuple] = {
    "dataset": ("digits", "mnist_5k"),
    "path": PATH_NAMES,
    "prediction": PREDICTIONS,
    "loss_weight": LOSS_WEIGHTS,
    "time_input": TIME_INPUTS,
    "time_dist": TIME_DISTS,
    "precision": ("fp32", "bf16"),
    "on_error": ("raise", "skip"),
    "sample_method": ("euler", "heun", "euler_maruyama", "sde_heun", "dopri5"),
}


# TrainConfig fields `sit train --resume` may change: they alter neither the data order nor the model,
# so the run stays one run (learning-rate schedule, clipping, stopping, cadence, previews, report)
RESUME_OVERRIDES = ("steps", "lr", "warmup_steps", "grad_clip", "max_nonfinite", "log_every", "ckpt_every",
                    "sample_every", "keep_last", "progress", "threads", "num_workers", "device", "cfg_scale",
                    "sample_method", "sample_steps", "samples_per_class", "quality", "quality_samples_per_class",
                    "lt_table")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `sit train` needs besides the network (ModelConfig). Defaults are the paper's
    ImageNet recipe (AdamW lr 1e-4, no weight decay, EMA 0.9999, batch 256, 400K steps); the
    embedded demo overrides some of them (see docs/training.md).

    Data: ``latents`` (pre-extracted shards, `sit extract`) or ``data`` (an ImageFolder encoded by
    the VAE ``vae`` at ``image_size`` pixels) or, when both are None, the embedded ``dataset``
    (pixel space, 1 channel). Time: ``time_input`` "continuous" trains SiT (paper time t on
    ``path`` with ``prediction``/``loss_weight``/``time_dist``); "discrete" trains the DDPM of DiT
    (sit.discrete; the path/prediction fields are then ignored: noise prediction, hybrid loss).
    ``global_batch`` is split over ``world size x grad_accum`` micro-batches of equal size."""

    out: str = "runs/demo"
    # data
    dataset: str = "digits"              # embedded dataset (data = latents = None)
    data: str | None = None              # ImageFolder root (class per folder)
    latents: str | None = None           # `sit extract` output folder
    vae: str | None = None               # VAE folder / name for `data` (and decoding sample grids)
    image_size: int | None = None        # pixels; None: 256 for `data`, the demo's size for embedded
    on_error: str = "raise"              # unreadable image: stop ("raise") or skip and count
    num_workers: int = 4                 # DataLoader workers (data / latents)
    # objective
    path: str = "linear"
    prediction: str = "velocity"
    loss_weight: str | None = None       # official names; only for score / noise prediction
    time_input: str = "continuous"
    time_dist: str = "uniform"
    t_min: float | None = None           # None: official range for the path and prediction
    t_max: float | None = None
    # optimisation
    steps: int = 400_000                 # optimizer steps (a skipped non-finite step counts)
    global_batch: int = 256              # images per optimizer step, all ranks together
    grad_accum: int = 1                  # micro-batches per step on each rank
    lr: float = 1e-4
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 0                # linear learning-rate warm-up from 0
    grad_clip: float = 0.0               # max global grad norm; 0 = off
    ema_decay: float = 0.9999
    ema_warmup: bool = False             # decay min(ema_decay, (1 + n) / (10 + n)) after n updates
    precision: str = "fp32"              # "bf16": autocast the network to bfloat16
    compile: bool = False                # torch.compile the network for training
    tf32: bool = True                    # CUDA: TF32 matmuls for fp32 work (as the official train.py)
    seed: int = 0
    device: str | None = None            # None: cuda if available, else cpu
    threads: int = 0                     # torch CPU threads per process; 0 = torch's default
    # logging, checkpoints, samples
    log_every: int = 100                 # steps per metrics.jsonl record
    ckpt_every: int = 50_000             # steps between checkpoints (and one at the end)
    keep_last: int = 3                   # checkpoints kept on disk
    sample_every: int = 0                # steps between EMA sample grids; 0 = only at the end
    cfg_scale: float = 4.0               # guidance scale zeta of sample grids (1 = off)
    sample_method: str = "heun"
    sample_steps: int = 50
    samples_per_class: int = 8           # grid columns
    max_nonfinite: int = 5               # stop after this many non-finite steps in a row
    lt_table: bool = False               # estimate L_t (sit.lt) after training, store with the checkpoint
    quality: bool = True                 # embedded data: quality number of EMA samples (sit.evaluate.classifier)
    quality_samples_per_class: int = 30
    progress: bool = True
    # representation alignment (REPA, Yu et al. 2024; sit.train.repa): an extra loss term
    repa_encoder: str | None = None      # "digits-cnn" (embedded) or a local DINOv2 folder; None = off
    repa_depth: int | None = None        # align the output of this block (1-based); None: ceil(2 depth / 7)
    repa_coeff: float = 0.5              # lambda: weight of the alignment term
    repa_proj_dim: int = 2048            # width of the projector MLP (3 layers, SiLU)
    # post-hoc EMA (Karras et al. 2024; sit.train.phema): power-function EMAs of these relative lengths,
    # a snapshot of each every phema_every steps (edm2: 0.05 and 0.10)
    phema_sigmas: tuple[float, ...] = ()
    phema_every: int = 0
    grad_checkpointing: bool = False     # recompute each block's activations in the backward pass (memory for time)
    cosine_coeff: float = 0.0            # LightningDiT's velocity-direction term 1 - cos(v_theta, v*) (sit.train.terms); 0 = off
    # the VAE latent space (sit.vae.LatentSpace): x = (z - vae_shift) * vae_scale; None = the VAE config's
    # scaling_factor / shift_factor (data), the latent index's (latents)
    vae_scale: float | None = None
    vae_shift: float | None = None

    OMIT_IF_DEFAULT = ("repa_encoder", "repa_depth", "repa_coeff", "repa_proj_dim", "phema_sigmas", "phema_every",
                       "grad_checkpointing", "cosine_coeff", "vae_scale", "vae_shift")

    def __post_init__(self):
        for name, allowed in TRAIN_CHOICES.items():
            v = getattr(self, name)
            if v not in allowed:
                raise ValueError(f"TrainConfig.{name}: unknown value {v!r}; expected one of {list(allowed)}")
        if self.data is not None and self.latents is not None:
            raise ValueError("TrainConfig: give either data (images) or latents (pre-extracted), not both")
        for name in ("steps", "global_batch", "grad_accum", "log_every", "ckpt_every", "keep_last",
                     "sample_steps", "samples_per_class", "max_nonfinite", "quality_samples_per_class"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer (got {v!r})")
        check_steps(self.sample_steps, "TrainConfig.sample_steps")
        for name in ("warmup_steps", "sample_every", "num_workers", "seed", "threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 0 (got {v!r})")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 1):
            raise ValueError(f"TrainConfig.image_size must be a positive integer or None (got {self.image_size!r})")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0 (got {self.lr})")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"TrainConfig.weight_decay and grad_clip must be >= 0 (got {self.weight_decay}, {self.grad_clip})")
        for name in ("beta1", "beta2", "ema_decay"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1) (got {v})")
        if self.prediction == "velocity" and self.loss_weight is not None and self.time_input == "continuous":
            raise ValueError(
                f"TrainConfig.loss_weight={self.loss_weight!r} needs prediction 'score' or 'noise'; the velocity loss (7) is unweighted"
            )
        if self.global_batch % self.grad_accum:
            raise ValueError(
                f"TrainConfig.global_batch ({self.global_batch}) must be divisible by grad_accum ({self.grad_accum})"
            )
        if not self.cfg_scale >= 0:
            raise ValueError(f"TrainConfig.cfg_scale must be >= 0 (got {self.cfg_scale})")
        if self.repa_depth is not None and (not isinstance(self.repa_depth, int) or isinstance(self.repa_depth, bool)
                                            or self.repa_depth < 1):
            raise ConfigError("TrainConfig", "repa_depth", f"must be a positive integer or None (got {self.repa_depth!r})")
        if not isinstance(self.repa_proj_dim, int) or isinstance(self.repa_proj_dim, bool) or self.repa_proj_dim < 1:
            raise ConfigError("TrainConfig", "repa_proj_dim", f"must be a positive integer (got {self.repa_proj_dim!r})")
        if not (isinstance(self.repa_coeff, (int, float)) and self.repa_coeff >= 0):
            raise ConfigError("TrainConfig", "repa_coeff", f"must be >= 0 (got {self.repa_coeff!r})")
        if bool(self.phema_sigmas) != (self.phema_every > 0) or self.phema_every < 0:
            raise ConfigError("TrainConfig", "phema_every", f"goes with phema_sigmas: sigmas {list(self.phema_sigmas)}, "
                              f"every {self.phema_every} (give both, every >= 1, or neither)")
        for s in self.phema_sigmas:
            if not 0 < s < 12 ** -0.5:
                raise ConfigError("TrainConfig", "phema_sigmas", f"value {s} is outside (0, {12 ** -0.5:.4f})")
        if not (isinstance(self.cosine_coeff, (int, float)) and self.cosine_coeff >= 0):
            raise ConfigError("TrainConfig", "cosine_coeff", f"must be >= 0 (got {self.cosine_coeff!r})")
        if self.cosine_coeff and (self.prediction != "velocity" or self.time_input != "continuous"):
            raise ConfigError("TrainConfig", "cosine_coeff", "needs prediction 'velocity' in continuous time (it compares velocities)")
        for name in ("vae_scale", "vae_shift"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                  or (name == "vae_scale" and not v > 0)):
                raise ConfigError("TrainConfig", name, f"must be a finite number{' > 0' if name == 'vae_scale' else ''} or None (got {v!r})")
            if v is not None and self.data is None and self.latents is None:
                raise ConfigError("TrainConfig", name, "applies to VAE latents (data or latents), not the embedded pixels")
        if self.repa_encoder is not None and self.latents is not None:
            raise ConfigError("TrainConfig", "repa_encoder", "needs the training images, which latent shards do not hold; "
                              "train REPA from the images (data + vae) instead of latents")
