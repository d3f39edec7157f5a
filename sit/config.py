"""The config records (stdlib only): `ModelConfig` and its presets, `TrainConfig` (its fields, their
metadata `_f`, its records `TRAIN_GROUPS` / `TRAIN_RECORDS`, `TRAIN_CHOICES`), the paper's design
axes as choice types, `RESUME_OVERRIDES`.

Every resolved config is saved as JSON beside a checkpoint; ``from_dict`` refuses unknown keys
so a typo in a config file is an error, not a silently ignored field. The concerns around the
records live in torch-free modules this one re-exports (none imports it back): `sit.field_errors`
(`ConfigError`, field references in messages), `sit.stored_form` (JSON round trip, the one identity
rule `added_later`), `sit.bounds` (step, thread and latent-value bounds), `sit.config_rules`
(TrainConfig's validation, one module per feature).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, get_args, get_type_hints

from sit.bounds import (  # noqa: F401  (re-exported: `from sit.config import ...` keeps working)
    FLOAT32_MAX,
    FLOAT32_TINY,
    MAX_STEPS,
    MAX_THREADS_PER_CORE,
    check_steps,
    check_threads,
    latent_value_problem,
    max_threads,
    usable_cores,
)
from sit.config_rules import TRAIN_CHECKS
from sit.config_rules.basics import literal_choices
from sit.config_rules.phema import PHEMA_MAX_FIT_ERROR, PHEMA_SIGMA_RANGE  # noqa: F401
from sit.config_rules.preview import preview_methods as _preview_methods
from sit.config_rules.repa import REPA_MAX_PROJ_DIM
from sit.field_errors import ConfigError, field_error, field_name, render_fields  # noqa: F401
from sit.stored_form import (  # noqa: F401
    ADDED_LATER,
    added_later,
    from_dict,
    omitted_if_default,
    to_dict,
    to_json,
)

# The paper's design axes as choice types, defined once (the math core and the CLI import them).
PathName = Literal["linear", "gvp", "vp"]
Prediction = Literal["velocity", "score", "noise", "data"]
LossSpace = Literal[None, "velocity", "score", "noise", "data"]   # None: the prediction's own space
LossWeight = Literal[None, "velocity", "likelihood"]
TimeInput = Literal["continuous", "discrete"]
TimeDist = Literal["uniform", "logit_normal"]
ObjectiveName = Literal["sit", "meanflow"]
PATH_NAMES: tuple[str, ...] = get_args(PathName)
PREDICTIONS: tuple[str, ...] = get_args(Prediction)
LOSS_SPACES: tuple[str | None, ...] = get_args(LossSpace)
LOSS_WEIGHTS: tuple[str | None, ...] = get_args(LossWeight)
TIME_INPUTS: tuple[str, ...] = get_args(TimeInput)
TIME_DISTS: tuple[str, ...] = get_args(TimeDist)
OBJECTIVE_NAMES: tuple[str, ...] = get_args(ObjectiveName)

def _arch(default, help: str, metavar: str):
    """A ModelConfig field `sit train` sets by a flag whose default is the preset's or the demo's."""
    return dataclasses.field(default=default, metadata=dict(
        help=f"{help} (default: the preset's, or the demo's)", metavar=metavar))


@dataclass(frozen=True)
class ModelConfig:
    """The SiT / DiT backbone (paper section 2.5). Defaults: SiT-XL/2 on 32x32x4 SD-VAE latents."""

    # the fields with metadata "help" are `sit train`'s flags (sit.commands.flags); the network's
    # default there is the preset's or the demo's, not this record's (SiT-XL/2)
    input_size: int = 32          # latent height = width (pixels / 8 for the SD VAE)
    patch_size: int = _arch(2, "patch side p", "N")
    in_channels: int = 4
    hidden_size: int = _arch(1152, "transformer width D", "N")
    depth: int = _arch(28, "transformer blocks", "N")
    num_heads: int = _arch(16, "attention heads", "N")
    mlp_ratio: float = _arch(4.0, "MLP width / D", "X")
    class_dropout_prob: float = dataclasses.field(default=0.1, metadata=dict(   # label dropout for CFG
        flag="--label-dropout", help="label dropout for guidance", metavar="P"))
    num_classes: int = 1000           # the null (unconditional) label is index num_classes
    learn_sigma: bool = dataclasses.field(default=True, metadata=dict(   # official checkpoints: 2*in_channels outputs
        help="2C output channels like official checkpoints (default: on for presets, off for the demo)"))
    # options added later (`added_later`): left out of the stored form at their default (identities unchanged)
    second_time: bool = added_later(False)   # a second, zero-initialised time embedding (MeanFlow's t - r)
    # the modern block (LightningDiT; sit.models.modern): each independent, off = the official network.
    # `sit train` generates a --FIELD / --no-FIELD flag from each (metadata "help").
    swiglu: bool = added_later(False, help="SwiGLU MLP (width 2/3 of the GELU MLP's) instead of the tanh-GELU MLP "
                                           "(LightningDiT)")
    rmsnorm: bool = added_later(False, help="RMSNorm (learnable weight) instead of the affine-free LayerNorm in blocks "
                                            "and final layer")
    rope: bool = added_later(False, help="2-D rotary position embedding on q, k (beside the sin-cos table)")
    qk_norm: bool = added_later(False, help="normalise q and k per head (RMSNorm with rmsnorm on, else LayerNorm)")

    MODERN_FIELDS = ("swiglu", "rmsnorm", "rope", "qk_norm")

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
        if not isinstance(self.second_time, bool):
            raise ValueError(f"ModelConfig.second_time must be true or false (got {self.second_time!r})")
        for name in self.MODERN_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError("ModelConfig", name, f"must be true or false (got {getattr(self, name)!r})")
        if self.rope and (self.hidden_size // self.num_heads) % 4:
            raise ConfigError("ModelConfig", "rope", f"needs a head dimension (hidden_size / num_heads = "
                              f"{self.hidden_size}/{self.num_heads}) divisible by 4")

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
EmbeddedDataset = Literal["digits", "mnist_5k"]
OnError = Literal["raise", "skip"]
Precision = Literal["fp32", "bf16"]
RepaInit = Literal["torch", "xavier"]
TrainPreset = Literal[None, "repa-sit-xl2"]
RepaPosEmbed = Literal["runtime", "resample"]

# The records TrainConfig's fields belong to (each field's metadata "group"), in the order `sit train --help`
# lists them, each with what it holds. `TrainConfig.group(name)` gives one as a typed record.
TRAIN_GROUPS: dict[str, str] = {
    "data": "default: the embedded demo",
    "loss": "the paper's axes and extra loss terms",
    "alignment": "representation alignment, REPA: Yu et al. 2024; docs/training.md",
    "optimiser": "AdamW, EMA, and post-hoc EMA: Karras et al. 2024; `sit ema` reconstructs any length afterwards",
    "run": "run folder, logging, checkpoints, hardware",
    "preview": "EMA sample grids and numbers during and after training",
}


def _f(default, group: str, help: str, **extra):
    """A TrainConfig field: its default, its record (``group``, a TRAIN_GROUPS key) and its help text.
    ``help`` may name other fields in braces ({vae}); `sit train` writes their flags there. ``extra``:
    ``flag`` (when it is not --field-name; None: no flag, then ``internal`` says why), ``metavar``,
    ``choices`` (a function giving the allowed values, for a field whose values are a table's rows)."""
    if group not in TRAIN_GROUPS:
        raise ValueError(f"TrainConfig field group {group!r} is not one of {list(TRAIN_GROUPS)}")
    return dataclasses.field(default=default, metadata=MappingProxyType(dict(group=group, help=help, **extra)))



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
    ``global_batch`` is split over ``world size x grad_accum`` micro-batches of equal size.

    The stored form is flat (every run folder's config and identity); each field's metadata names
    its record (data, loss, alignment, optimiser, run, preview: `TRAIN_GROUPS`), its help text and,
    where it differs from the field name, its `sit train` flag, which is generated from the field
    (type from the annotation, choices from the ``Literal``). `group` / `records` give the records."""

    out: str = _f("runs/demo", "run", "run folder", metavar="DIR")
    # data
    dataset: EmbeddedDataset = _f("digits", "data", "embedded dataset, used without {data} / {latents}")
    data: str | None = _f(None, "data", "ImageFolder root (one folder per class), encoded by {vae}", metavar="DIR")
    latents: str | None = _f(None, "data", "pre-extracted latents (`sit extract`)", metavar="DIR")
    vae: str | None = _f(None, "data", "SD VAE folder or cached name (ema / mse) for {data} (and grids of {latents})",
                         metavar="PATH")
    image_size: int | None = _f(None, "data", "pixels", metavar="PX")   # None: 256 for `data`, the demo's for embedded
    on_error: OnError = _f("raise", "data", "unreadable image: stop or skip and count")
    num_workers: int = _f(4, "data", "DataLoader workers (at most the usable cores; no batch depends on it)", metavar="N")
    # objective
    path: PathName = _f("linear", "loss", "interpolant")
    prediction: Prediction = _f("velocity", "loss", "network output")
    loss_weight: LossWeight = _f(None, "loss", "score/noise loss weighting, official names")
    time_input: TimeInput = _f("continuous", "loss", "continuous (SiT) or discrete DDPM (DiT)", flag="--time")
    time_dist: TimeDist = _f("uniform", "loss", "training t distribution")
    t_min: float | None = _f(None, "loss", "smallest training t; without it the official range for the path and prediction")
    t_max: float | None = _f(None, "loss", "largest training t; without it the official range")
    # optimisation
    steps: int = _f(400_000, "optimiser", "optimizer steps", metavar="N")   # a skipped non-finite step counts
    global_batch: int = _f(256, "optimiser", "global batch over all ranks", flag="--batch", metavar="N")
    grad_accum: int = _f(1, "optimiser", "micro-batches per optimizer step on each rank", metavar="K")
    lr: float = _f(1e-4, "optimiser", "AdamW learning rate")
    weight_decay: float = _f(0.0, "optimiser", "AdamW weight decay")
    beta1: float = _f(0.9, "optimiser", "AdamW beta1", flag=None,
                      internal="the paper's AdamW betas; not a flag (library users and config files set them)")
    beta2: float = _f(0.999, "optimiser", "AdamW beta2", flag=None,
                      internal="the paper's AdamW betas; not a flag (library users and config files set them)")
    warmup_steps: int = _f(0, "optimiser", "linear lr warm-up from 0", flag="--warmup", metavar="STEPS")
    grad_clip: float = _f(0.0, "optimiser", "max global grad norm; 0 = off", metavar="NORM")
    ema_decay: float = _f(0.9999, "optimiser", "EMA decay", flag="--ema", metavar="DECAY")
    ema_warmup: bool = _f(False, "optimiser", "EMA decay ramps up over the first steps: min(decay, (1 + n) / (10 + n)) "
                                              "after n updates")
    precision: Precision = _f("fp32", "run", "network precision; bf16 autocasts the network to bfloat16")
    compile: bool = _f(False, "run", "torch.compile the network for training")
    tf32: bool = _f(True, "run", "CUDA: TF32 matmuls for fp32 work, as the official train.py")
    seed: int = _f(0, "run", "random seed")
    device: str | None = _f(None, "run", "cpu / cuda (default: cuda if available)")
    threads: int = _f(0, "run", "torch CPU threads (default: $SIT_THREADS, else the free cores: usable cores minus the "
                                "load average, at least 1; 0 = torch's own default)", metavar="N")
    # logging, checkpoints, samples
    log_every: int = _f(100, "run", "steps per metrics.jsonl record", metavar="STEPS")
    ckpt_every: int = _f(50_000, "run", "steps between checkpoints, and one at the end", metavar="STEPS")
    keep_last: int = _f(3, "run", "checkpoints kept on disk", metavar="K")
    sample_every: int = _f(0, "preview", "steps between EMA sample grids; 0 = only at the end", metavar="STEPS")
    cfg_scale: float = _f(4.0, "preview", "guidance scale zeta of sample grids, 1 = off")
    sample_method: str = _f("heun", "preview", "sampler of the preview grids: a continuous row of the sampler table "
                            "(sit.samplers.SAMPLERS)", metavar="NAME", choices=_preview_methods)
    sample_steps: int = _f(50, "preview", "sampler steps of the grids")
    samples_per_class: int = _f(8, "preview", "grid columns")
    max_nonfinite: int = _f(5, "run", "stop after K non-finite steps in a row", metavar="K")
    lt_table: bool = _f(False, "preview", "estimate L_t after training (sit.lt), stored with the checkpoint")
    quality: bool = _f(True, "preview", "quality number of EMA samples (embedded data; sit.evaluate.classifier)")
    quality_samples_per_class: int = _f(30, "preview", "samples per class for the quality number", metavar="N")
    progress: bool = _f(True, "run", "a progress bar on the terminal", flag="--no-progress")
    # representation alignment (REPA, Yu et al. 2024; sit.train.repa): an extra loss term
    repa_encoder: str | None = _f(None, "alignment", "frozen encoder whose patch features the network aligns with: "
                                  "digits-cnn (embedded, offline) or a local DINOv2 folder (transformers save_pretrained); "
                                  "default off", metavar="ENC", added_later=True)
    repa_depth: int | None = _f(None, "alignment", "align the output of block D (1-based; without it ceil(2 x depth / 7): "
                                "XL 8, B 4, demo 2)", metavar="D", added_later=True)
    repa_coeff: float = _f(0.5, "alignment", "lambda: weight of the alignment term", metavar="LAMBDA", added_later=True)
    repa_proj_dim: int = _f(2048, "alignment", f"projector MLP width (3 layers, SiLU; at most {REPA_MAX_PROJ_DIM})", metavar="N", added_later=True)
    repa_init: RepaInit = _f("torch", "alignment", "projector initialisation: torch (PyTorch's defaults) or xavier "
                             "(REPA: xavier-uniform weights, zero biases)", added_later=True)
    repa_pos_embed: RepaPosEmbed = _f("runtime", "alignment", "DINOv2 position embedding at the encoder's input grid: "
                                      "runtime (transformers interpolates it every call) or resample (once, antialiased "
                                      "bicubic, as REPA with timm)", added_later=True)
    flip: bool = _f(True, "data", "mirror each image / latent with probability 1/2 ({data}, {latents}; REPA: off; the "
                                  "embedded digits are never mirrored)", added_later=True)
    preset: TrainPreset = _f(None, "run", "named recipe (sit.train.recipes.TRAIN_PRESETS; other flags override its "
                                          "fields; recorded in the run): repa-sit-xl2 = REPA's SiT-XL/2 on ImageNet 256 "
                                          "(give {latents} and {repa_encoder})", added_later=True)
    # post-hoc EMA (Karras et al. 2024; sit.train.phema): power-function EMAs of these relative lengths,
    # a snapshot of each every phema_every steps (edm2: 0.05 and 0.10)
    phema_sigmas: tuple[float, ...] = _f((), "optimiser", "relative lengths of the tracked power-function EMAs for "
                                         "post-hoc EMA (edm2: 0.05 0.10); off without it", metavar="S", added_later=True)
    phema_every: int = _f(0, "optimiser", "steps between snapshots of them, 0 = off; needs {phema_sigmas}", metavar="STEPS", added_later=True)
    grad_checkpointing: bool = _f(False, "run", "recompute each block's activations in the backward pass: less memory, "
                                                "~1/3 more compute", added_later=True)
    cosine_coeff: float = _f(0.0, "loss", "weight of LightningDiT's velocity-direction term 1 - cos(v_theta, v*) per pixel "
                                          "over channels, sit.train.terms; LightningDiT uses 1, 0 = off", metavar="W", added_later=True)

    # the VAE latent space (sit.vae.LatentSpace): x = (z - vae_shift) * vae_scale; None = the VAE config's
    # scaling_factor / shift_factor ({data}), the latent index's ({latents})
    objective: ObjectiveName = _f("sit", "loss", "sit: the paper's loss on {path} / {prediction} / {time_input}; meanflow: "
                                  "the average velocity u(x_t, r, t) for 1-step sampling (Geng et al. 2025, sit.train.meanflow; "
                                  "velocity on a continuous path)", added_later=True)
    meanflow_ratio: float = _f(0.25, "loss", "MeanFlow: share of samples with r != t (the rest r = t: flow matching)",
                               metavar="P", added_later=True)
    meanflow_p_mean: float = _f(-0.4, "loss", "MeanFlow: logit-normal location of the (t, r) draw", metavar="MU", added_later=True)
    meanflow_p_std: float = _f(1.0, "loss", "MeanFlow: logit-normal scale of the (t, r) draw", metavar="S", added_later=True)
    meanflow_norm_p: float = _f(1.0, "loss", "MeanFlow: adaptive weight 1 / (||err||^2 + c)^p, p (0 = plain squared error)",
                                metavar="P", added_later=True)
    meanflow_norm_eps: float = _f(1e-3, "loss", "MeanFlow: c of the adaptive weight", metavar="C", added_later=True)
    meanflow_omega: float = _f(1.0, "loss", "MeanFlow: guidance scale folded into the target (1 = off; sample unguided then)",
                               metavar="W", added_later=True)
    meanflow_kappa: float = _f(0.0, "loss", "MeanFlow: kappa of the folded guidance (the conditional u's share)", metavar="K", added_later=True)

    vae_scale: float | None = _f(None, "data", "latent scale: the network sees (z - shift) * S (default: the VAE config's "
                                 "scaling_factor for {data}, the latent index's for {latents}; recorded in the run)", metavar="S", added_later=True)
    vae_shift: float | None = _f(None, "data", "latent shift (default: the VAE config's shift_factor, 0 when it has none; "
                                 "the index's for {latents})", metavar="B", added_later=True)

    # x-prediction (JiT, Li & He 2025): what space the loss is taken in
    loss_space: LossSpace = _f(None, "loss", "take the squared error in this prediction space (the prediction and its "
                                             "target both converted, sit.objectives.convert); JiT: prediction data, loss "
                                             "space velocity; default: the prediction's own space", added_later=True)

    def group(self, name: str):
        """The fields of record ``name`` (a `TRAIN_GROUPS` key) as a frozen, typed record
        (``cfg.group("optimiser").lr == cfg.lr``)."""
        if name not in TRAIN_RECORDS:
            raise ValueError(f"unknown TrainConfig record {name!r}; expected one of {list(TRAIN_RECORDS)}")
        cls = TRAIN_RECORDS[name]
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    def records(self) -> dict[str, Any]:
        """Every record of this config, in `TRAIN_GROUPS` order (each field in exactly one)."""
        return {name: self.group(name) for name in TRAIN_RECORDS}

    # legacy alias of the `ADDED_LATER` marker (`omitted_if_default` reads both): mark a new field with
    # ``_f(..., added_later=True)`` instead of listing it here
    OMIT_IF_DEFAULT = ()

    def __post_init__(self):
        """Each feature's rules (`sit.config_rules.TRAIN_CHECKS`, one module per feature), in order."""
        for check in TRAIN_CHECKS:
            check(self)


TRAIN_TYPES: dict[str, Any] = get_type_hints(TrainConfig)  # field -> its annotation, evaluated
# the allowed values of every choice field, read from its Literal annotation (the one place they are written)
TRAIN_CHOICES: dict[str, tuple] = literal_choices(TrainConfig)
# the records (TRAIN_GROUPS) as frozen dataclasses built from the field list: TrainData, TrainLoss, ...
def _record(name: str) -> type:
    cls = dataclasses.make_dataclass(
        f"Train{name.capitalize()}",
        [(f.name, TRAIN_TYPES[f.name], dataclasses.field(default=f.default, metadata=f.metadata))
         for f in dataclasses.fields(TrainConfig) if f.metadata["group"] == name],
        frozen=True)
    cls.__module__ = __name__
    cls.__doc__ = f"TrainConfig's {name} record: {TRAIN_GROUPS[name]}."
    return cls


TRAIN_RECORDS: dict[str, type] = {name: _record(name) for name in TRAIN_GROUPS}
