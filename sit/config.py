"""Frozen dataclass configs, presets and their JSON round trip (stdlib only).

Every resolved config is saved as JSON beside a checkpoint; ``from_dict`` refuses unknown keys
so a typo in a config file is an error, not a silently ignored field.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import struct
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, get_args, get_origin, get_type_hints

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


# Bounds checked before anything is allocated (issue 22): a step count or thread count beyond them
# is a typo, and honouring it allocates a grid that OOM-kills the machine or crashes inside torch.
# the latent scale / shift must survive float32 (the latents' dtype): 1e-320 is a float64 > 0 that
# float32 rounds to 0, so every latent would be 0
FLOAT32_TINY = 1.1754943508222875e-38   # the smallest normal float32
FLOAT32_MAX = 3.4028234663852886e38


def latent_value_problem(name: str, v: Any) -> str | None:
    """What is wrong with a latent ``scale`` or ``shift`` value (None: fine): a finite number that
    float32 (the latents' dtype) holds; the scale > 0 and a normal float32, so it never rounds to 0."""
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and abs(v) <= FLOAT32_MAX
    if name == "scale":
        if ok and v >= FLOAT32_TINY:
            return None
        under = "" if not (ok and 0 < v < FLOAT32_TINY) else \
            ": float32 rounds it to 0" if struct.unpack("f", struct.pack("f", v))[0] == 0 else ": below float32's normal range"
        return f"must be a finite number > 0 that float32 holds, in [{FLOAT32_TINY:.4g}, {FLOAT32_MAX:.4g}] (got {v!r}{under})"
    return None if ok else f"must be a finite number that float32 holds, |{name}| <= {FLOAT32_MAX:.4g} (got {v!r})"


MAX_STEPS = 100_000          # sampler / likelihood / preview steps (the paper uses at most 1000)
MAX_THREADS_PER_CORE = 4     # torch CPU threads: at most this many per usable core
# post-hoc EMA lengths sigma_rel (sit.train.phema): below 1e-4 a power-function EMA averages less than
# 0.01 % of training (no averaging at all for runs under 10,000 steps) and sigma^-2 overflows below
# 1e-154; 12^-1/2 is gamma = 0, the uniform average of the whole run
PHEMA_SIGMA_RANGE = (1e-4, 12 ** -0.5)
# the largest relative L2 error of a reconstructed averaging profile `sit ema` accepts: 0.05, below the
# 0.067-0.085 that separates the profile of sigma_rel from that of 1.1 sigma_rel (sigma_rel 0.01-0.10),
# so an accepted reconstruction is nearer the requested EMA than a 10 % longer or shorter EMA is.
# Snapshots of sigma_rel 0.05 / 0.10 every 25 steps of 1,200 reach 0.014-0.26 within it; every 100
# steps of 600 only 0.04-0.14 (sit.train.phema.fit_error)
PHEMA_MAX_FIT_ERROR = 0.05


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


# One rule for identities (run configs, sample sets, studies): a field added after configs and
# identities were first stored carries ``ADDED_LATER`` in its metadata (`added_later(default)`;
# TrainConfig: ``_f(..., added_later=True)``) and is left out of `to_dict` -- every stored config,
# manifest and identity hashed from them -- while it holds its default, so what was written before
# the field existed stays byte-identical (``from_dict`` fills it back in). tests/data/identities.json
# holds today's default identities; tests/test_identities.py recomputes them.
ADDED_LATER = "added_later"


def added_later(default: Any, **metadata: Any):
    """A dataclass field added later (`ADDED_LATER`): omitted from identities while at ``default``."""
    return dataclasses.field(default=default, metadata=MappingProxyType({ADDED_LATER: True, **metadata}))


def omitted_if_default(cls) -> frozenset[str]:
    """The fields of dataclass ``cls`` that `to_dict` leaves out while they hold their default: those
    marked `ADDED_LATER`, and (a legacy alias, to be converted to the marker) any a class still lists
    in an ``OMIT_IF_DEFAULT`` tuple."""
    marked = {f.name for f in dataclasses.fields(cls) if f.metadata.get(ADDED_LATER)}
    return frozenset(marked | set(getattr(cls, "OMIT_IF_DEFAULT", ())))


def to_dict(cfg) -> dict[str, Any]:
    """The fields of dataclass ``cfg`` as a dict (nested dataclasses too, as ``dataclasses.asdict``),
    without the fields `omitted_if_default` while they hold their default, at every level."""
    omit = omitted_if_default(type(cfg))
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
            if not (f.name in omit and getattr(cfg, f.name) == f.default)}


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return to_dict(v)
    if isinstance(v, tuple) and hasattr(v, "_fields"):  # a namedtuple, as dataclasses.asdict
        return type(v)(*[_plain(x) for x in v])
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    if isinstance(v, dict):
        return type(v)((_plain(k), _plain(x)) for k, x in v.items())
    return copy.deepcopy(v)


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
    class_dropout_prob: float = dataclasses.field(default=0.1, metadata=dict(flag="--label-dropout"))  # label dropout for CFG
    num_classes: int = 1000           # the null (unconditional) label is index num_classes
    learn_sigma: bool = True          # official checkpoints carry 2*in_channels output channels
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
REPA_MAX_PROJ_DIM = 16384    # --repa-proj-dim bound (REPA: 2048; 16384 is a 0.3 GB projector on SiT-XL/2 in float32)

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


def _preview_methods() -> tuple[str, ...]:
    """The samplers a preview may use: every continuous row of `sit.samplers.SAMPLERS` (names and
    kinds from the torch-free `sit.sampler_kinds`)."""
    from sit.sampler_kinds import continuous_names

    return continuous_names()


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
        """Each feature's rules (`_TRAIN_CHECKS`, one `_check_<feature>` function each), in order."""
        for check in _TRAIN_CHECKS:
            check(self)


# TrainConfig's validation: each feature owns its rules, run in this order by `TrainConfig.__post_init__`
# (the first broken rule is the one reported)
def _check_choices(cfg: "TrainConfig") -> None:
    """Every choice field is one of its Literal values; one data source (images or latents)."""
    for name, allowed in TRAIN_CHOICES.items():
        v = getattr(cfg, name)
        if v not in allowed:
            raise ValueError(f"TrainConfig.{name}: unknown value {v!r}; expected one of {list(allowed)}")
    if cfg.data is not None and cfg.latents is not None:
        raise ValueError("TrainConfig: give either data (images) or latents (pre-extracted), not both")


def _check_preview(cfg: "TrainConfig") -> None:
    """The preview sampler is a continuous row of the table; an average-velocity row needs MeanFlow."""
    _check_preview_method(cfg.sample_method)
    if cfg.objective != "meanflow" and _sampler_kind(cfg.sample_method) == "average":
        raise ConfigError("TrainConfig", "sample_method", f"{cfg.sample_method!r} jumps with an average velocity: "
                          "it needs {objective} 'meanflow'")


def _check_counts(cfg: "TrainConfig") -> None:
    """Step, batch and cadence counts, thread and worker numbers, the image size."""
    for name in ("steps", "global_batch", "grad_accum", "log_every", "ckpt_every", "keep_last",
                 "sample_steps", "samples_per_class", "max_nonfinite", "quality_samples_per_class"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"TrainConfig.{name} must be a positive integer (got {v!r})")
    check_steps(cfg.sample_steps, "TrainConfig.sample_steps")
    for name in ("warmup_steps", "sample_every", "num_workers", "seed", "threads"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"TrainConfig.{name} must be an integer >= 0 (got {v!r})")
    if cfg.image_size is not None and (not isinstance(cfg.image_size, int) or cfg.image_size < 1):
        raise ValueError(f"TrainConfig.image_size must be a positive integer or None (got {cfg.image_size!r})")


def _check_optimiser(cfg: "TrainConfig") -> None:
    """AdamW (lr, weight decay, betas), gradient clipping and the EMA decay."""
    if not cfg.lr > 0:
        raise ValueError(f"TrainConfig.lr must be > 0 (got {cfg.lr})")
    if cfg.weight_decay < 0 or cfg.grad_clip < 0:
        raise ValueError(f"TrainConfig.weight_decay and grad_clip must be >= 0 (got {cfg.weight_decay}, {cfg.grad_clip})")
    for name in ("beta1", "beta2", "ema_decay"):
        v = getattr(cfg, name)
        if not 0.0 <= v < 1.0:
            raise ValueError(f"TrainConfig.{name} must be in [0, 1) (got {v})")


def _check_loss_weight(cfg: "TrainConfig") -> None:
    """The loss weight weights the score / noise residual only."""
    if cfg.prediction == "velocity" and cfg.loss_weight is not None and cfg.time_input == "continuous":
        raise ValueError(
            f"TrainConfig.loss_weight={cfg.loss_weight!r} needs prediction 'score' or 'noise'; the velocity loss (7) is unweighted"
        )
    if cfg.loss_weight is not None and cfg.time_input == "continuous" and (
            cfg.prediction == "data" or cfg.loss_space is not None):
        raise ConfigError("TrainConfig", "loss_weight", "weights the score/noise residual; it does not combine with "
                          "prediction 'data' or a {loss_space} (the space's squared error is unweighted)")


def _check_batch_and_cfg(cfg: "TrainConfig") -> None:
    """Gradient accumulation divides the batch; the preview CFG scale is >= 0."""
    if cfg.global_batch % cfg.grad_accum:
        raise ValueError(
            f"TrainConfig.global_batch ({cfg.global_batch}) must be divisible by grad_accum ({cfg.grad_accum})"
        )
    if not cfg.cfg_scale >= 0:
        raise ValueError(f"TrainConfig.cfg_scale must be >= 0 (got {cfg.cfg_scale})")


def _check_repa(cfg: "TrainConfig") -> None:
    """REPA (representation alignment): depth, projector width, coefficient, encoder names."""
    if cfg.repa_depth is not None and (not isinstance(cfg.repa_depth, int) or isinstance(cfg.repa_depth, bool)
                                        or cfg.repa_depth < 1):
        raise ConfigError("TrainConfig", "repa_depth", f"must be a positive integer or None (got {cfg.repa_depth!r})")
    if (not isinstance(cfg.repa_proj_dim, int) or isinstance(cfg.repa_proj_dim, bool)
            or not 1 <= cfg.repa_proj_dim <= REPA_MAX_PROJ_DIM):
        raise ConfigError("TrainConfig", "repa_proj_dim", f"must be an integer in [1, {REPA_MAX_PROJ_DIM}] "
                          f"(got {cfg.repa_proj_dim!r})")
    if not (isinstance(cfg.repa_coeff, (int, float)) and not isinstance(cfg.repa_coeff, bool)
            and math.isfinite(cfg.repa_coeff) and cfg.repa_coeff >= 0):
        raise ConfigError("TrainConfig", "repa_coeff", f"must be a finite number >= 0 (got {cfg.repa_coeff!r})")
    if cfg.repa_encoder is not None and not all(e.strip() for e in cfg.repa_encoder.split(",")):
        raise ConfigError("TrainConfig", "repa_encoder", f"names an empty encoder in {cfg.repa_encoder!r} "
                          "(one encoder, or several separated by commas)")


def _check_phema(cfg: "TrainConfig") -> None:
    """Post-hoc EMA: sigmas and cadence given together, every sigma in range."""
    if bool(cfg.phema_sigmas) != (cfg.phema_every > 0) or cfg.phema_every < 0:
        raise ConfigError("TrainConfig", "phema_every", f"goes with phema_sigmas: sigmas {list(cfg.phema_sigmas)}, "
                          f"every {cfg.phema_every} (give both, every >= 1, or neither)")
    lo, hi = PHEMA_SIGMA_RANGE
    for s in cfg.phema_sigmas:
        if not lo <= s < hi:
            raise ConfigError("TrainConfig", "phema_sigmas", f"value {s} is outside [{lo:g}, {hi:.4f})")


def _check_cosine_coeff(cfg: "TrainConfig") -> None:
    """The cosine velocity term (LightningDiT): its coefficient is a number >= 0."""
    if not (isinstance(cfg.cosine_coeff, (int, float)) and cfg.cosine_coeff >= 0):
        raise ConfigError("TrainConfig", "cosine_coeff", f"must be >= 0 (got {cfg.cosine_coeff!r})")


def _check_meanflow(cfg: "TrainConfig") -> None:
    """MeanFlow: its numbers are finite and in range; the objective needs continuous-time velocity."""
    for name in ("meanflow_ratio", "meanflow_p_mean", "meanflow_p_std", "meanflow_norm_p", "meanflow_norm_eps",
                 "meanflow_omega", "meanflow_kappa"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            raise ConfigError("TrainConfig", name, f"must be a finite number (got {v!r})")
    if not 0.0 <= cfg.meanflow_ratio <= 1.0:
        raise ConfigError("TrainConfig", "meanflow_ratio", f"must lie in [0, 1] (got {cfg.meanflow_ratio})")
    for name in ("meanflow_p_std", "meanflow_norm_eps"):
        if not getattr(cfg, name) > 0:
            raise ConfigError("TrainConfig", name, f"must be > 0 (got {getattr(cfg, name)})")
    if cfg.meanflow_norm_p < 0:
        raise ConfigError("TrainConfig", "meanflow_norm_p", f"must be >= 0 (got {cfg.meanflow_norm_p})")
    if cfg.objective == "meanflow":
        if cfg.time_input != "continuous" or cfg.prediction != "velocity":
            raise ConfigError("TrainConfig", "objective", "'meanflow' learns an average velocity: it needs "
                              "{prediction} 'velocity' and {time_input} 'continuous'")


def _check_cosine_needs_velocity(cfg: "TrainConfig") -> None:
    """The cosine velocity term compares velocities: velocity prediction in continuous time."""
    if cfg.cosine_coeff and (cfg.prediction != "velocity" or cfg.time_input != "continuous"):
        raise ConfigError("TrainConfig", "cosine_coeff", "needs prediction 'velocity' in continuous time (it compares velocities)")


def _check_vae(cfg: "TrainConfig") -> None:
    """The VAE latent scale / shift: valid values, and only with VAE latents (data or latents)."""
    for name in ("vae_scale", "vae_shift"):
        v = getattr(cfg, name)
        problem = None if v is None else latent_value_problem(name[4:], v)
        if problem:
            raise ConfigError("TrainConfig", name, problem)
        if v is not None and cfg.data is None and cfg.latents is None:
            raise ConfigError("TrainConfig", name, "applies to VAE latents (data or latents), not the embedded pixels")


_TRAIN_CHECKS = (_check_choices, _check_preview, _check_counts, _check_optimiser, _check_loss_weight, _check_batch_and_cfg,
                 _check_repa, _check_phema, _check_cosine_coeff, _check_meanflow, _check_cosine_needs_velocity, _check_vae)


def _sampler_kind(name: str) -> str | None:
    from sit.sampler_kinds import kind_of

    return kind_of(name)


def _check_preview_method(name: Any) -> None:
    """ConfigError unless ``name`` is a continuous row of the sampler table (`sit.sampler_kinds`:
    torch-free for the built-in rows)."""
    from sit.sampler_kinds import kind_of

    kind = kind_of(name) if isinstance(name, str) else None
    if kind is None or kind == "discrete":
        what = "is a discrete-time (DiT) sampler" if kind else "is not a row of the sampler table"
        raise ConfigError("TrainConfig", "sample_method", f"{name!r} {what}; expected one of {list(_preview_methods())}")


TRAIN_TYPES: dict[str, Any] = get_type_hints(TrainConfig)  # field -> its annotation, evaluated
# the allowed values of every choice field, read from its Literal annotation (the one place they are written)
TRAIN_CHOICES: dict[str, tuple] = {f.name: get_args(TRAIN_TYPES[f.name]) for f in dataclasses.fields(TrainConfig)
                                   if get_origin(TRAIN_TYPES[f.name]) is Literal}
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
