"""What a sample set is: the typed `SampleSpec` whose every field is part of the set's identity.

A set on disk (``OUT/manifest.json`` + ``OUT/parts/`` + ``OUT/samples.npz``) belongs to exactly
one spec: the manifest stores ``spec.to_json()`` and its sha256, every part file stores that
sha256, and resuming with a spec that differs in any field is refused naming the fields.
Records are built and validated before anything is loaded (`sit.commands.sample`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from types import MappingProxyType
from typing import Any, Literal, Mapping

from sit.config import ConfigError, added_later, to_dict
from sit.guidance import GuidanceConfig, parse_channels, parse_interval  # noqa: F401  (re-exported)
from sit.sampler_config import DISCRETE_METHODS, PRECISIONS, DiscreteSampleConfig, SampleConfig

WEIGHTS = ("ema", "model")
LATENT_FORMATS = (None, "npy", "safetensors")
Weights = Literal["ema", "model"]
PrecisionName = Literal[PRECISIONS]
LatentFormat = Literal[LATENT_FORMATS]


AnySampleConfig = SampleConfig | DiscreteSampleConfig


def _flag(default, help: str, **extra):
    """A SampleSpec field that one flag sets (`sit.commands.flags`: help, metavar, ...)."""
    return dataclasses.field(default=default, metadata=MappingProxyType(dict(help=help, **extra)))


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """Everything that determines the samples of a set (each field maps onto one `sit sample` flag
    or onto what the CLI derives before sampling). Batch size, world size, device, ``--compile``
    and the output extras (PNGs, grid, kept parts) are not part of it: they change samples only
    by floating-point reordering (~1e-7) or not at all."""

    checkpoint: str = ""                      # sit.checkpoints.identity of the checkpoint ("" = not resolved yet)
    weights: Weights = _flag("ema", "EMA or raw weights where both exist")
    sample: AnySampleConfig = SampleConfig()  # --method, --num-steps, ..., --ddim-eta
    guidance: GuidanceConfig = GuidanceConfig()  # --cfg-scale, --cfg-channels, --cfg-interval, --guide-ckpt (the guide's identity is stored)
    labels: str | tuple[int, ...] = _flag("random", "'random' (default random; per-sample seeded), 'null' "
                                          "(unconditional) or class indices 207,360 (cycled)", metavar="LIST")
    seed: int = _flag(0, "sample i uses seed SEED + i")
    num_samples: int = _flag(16, "samples to make: the number of {labels} when given, else the preset's, else this",
                             metavar="N")
    precision: PrecisionName = _flag("fp32", "network precision: bf16 = autocast, bf16-weights = weights and "
                                     "activations in bf16 (fastest, more rounding); the sampler math stays fp32")
    tf32: bool = False                        # --tf32 as in effect (CUDA only; False on CPU)
    vae: str | None = _flag(None, "SD VAE folder (config.json + weights) to decode latent models; pixel-space models "
                            "need none", metavar="PATH")   # the folder given
    vae_sha256: str | None = added_later(None)  # sha256 of that VAE's weights (filled in when it is loaded)
    vae_scale: float | None = added_later(None, help=(   # decode scale override (None: the run's recorded one)
        "decode z = x / S + shift (default: the scale recorded with the run, 0.18215 for official checkpoints; a "
        "{vae} whose config scaling_factor differs is refused unless this is given)"), metavar="S")
    vae_shift: float | None = added_later(None, help="decode shift (default: the run's recorded shift, 0 when none is "
                                                     "recorded)", metavar="B")   # decode shift override
    initial_noise_sha256: str | None = None   # sha256 of the --noise tensor (float32 bytes)
    loss_table_sha256: str | None = None      # sha256 of the L_t table used by w = kl_eta
    latent_shape: tuple[int, ...] | None = None  # (C, H, W) the sampler works in (from the model)
    save_latents: str | None = _flag(None, "also write the sampled latents", choices=lambda: LATENT_FORMATS[1:])

    def __post_init__(self):
        if not isinstance(self.sample, (SampleConfig, DiscreteSampleConfig)):
            raise TypeError(f"SampleSpec.sample must be a SampleConfig or DiscreteSampleConfig (got {type(self.sample).__name__})")
        if not isinstance(self.guidance, GuidanceConfig):
            raise TypeError(f"SampleSpec.guidance must be a GuidanceConfig (got {type(self.guidance).__name__})")
        if self.weights not in WEIGHTS:
            raise ValueError(f"SampleSpec.weights: unknown weights {self.weights!r}; expected one of {list(WEIGHTS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {list(PRECISIONS)}")
        if self.save_latents not in LATENT_FORMATS:
            raise ValueError(f"unknown latent format {self.save_latents!r}; expected one of {list(LATENT_FORMATS[1:])}")
        if not isinstance(self.num_samples, int) or isinstance(self.num_samples, bool) or self.num_samples < 1:
            raise ConfigError("SampleSpec", "num_samples", f"must be >= 1 (got {self.num_samples})")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError("SampleSpec", "seed", f"must be an integer >= 0 (got {self.seed!r})")
        if not (self.labels in ("random", "null") or (isinstance(self.labels, tuple) and self.labels
                                                       and all(isinstance(v, int) for v in self.labels))):
            raise ValueError(f"SampleSpec.labels must be 'random', 'null' or a tuple of class indices (got {self.labels!r})")
        if self.latent_shape is not None:
            object.__setattr__(self, "latent_shape", tuple(int(v) for v in self.latent_shape))

    @property
    def discrete(self) -> bool:
        return isinstance(self.sample, DiscreteSampleConfig)

    def to_json(self) -> dict[str, Any]:
        """The identity as JSON (tuples as lists), as stored in the manifest's ``settings``: every
        field, less those added later while at their default (`sit.config.to_dict`, the one rule)."""
        d = to_dict(self)
        d["sample"] = {"kind": "discrete" if self.discrete else "continuous", **d["sample"]}
        return json.loads(json.dumps(d, sort_keys=True))

    def sha256(self) -> str:
        return settings_sha256(self.to_json())


def settings_sha256(settings: Mapping[str, Any]) -> str:
    """sha256 of the canonical (sorted, compact) JSON of a set's identity."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def noise_sha256(noise) -> str:
    """sha256 of an initial-noise tensor's float32 bytes (the whole file's tensor)."""
    return hashlib.sha256(noise.float().contiguous().numpy().tobytes()).hexdigest()


# values of flags as typed values (used by `sit sample` and `sit sweep`): `parse_interval`,
# `parse_channels` live with the guidance record (`sit.guidance`), re-exported here


def check_against_model(spec: SampleSpec, in_channels: int, num_classes: int | None, time_input: str) -> None:
    """Errors for a spec that the loaded model cannot run (sampler kind, guided channels, classes)."""
    from sit.generate.noise import check_labels

    method = spec.sample.method
    if time_input == "discrete" and not spec.discrete:
        raise ConfigError("SampleConfig", "method", f"must be one of {list(DISCRETE_METHODS)} for this checkpoint, a "
                          f"discrete-time DDPM model (DiT) (got {method!r})")
    if time_input != "discrete" and spec.discrete:
        raise ConfigError("DiscreteSampleConfig", "method", f"{method} needs a discrete-time (DiT) checkpoint; this one is {time_input!r}")
    spec.guidance.check_model(discrete=spec.discrete, in_channels=in_channels, has_classes=num_classes is not None)
    check_labels(spec.labels, num_classes)
