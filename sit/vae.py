"""Images <-> latents through the Stable Diffusion VAE (diffusers ``AutoencoderKL``).

SiT (like DiT) is trained on the latents of the SD VAE ``stabilityai/sd-vae-ft-ema`` (or ``-mse``):
an image x in [-1, 1] of shape (B, 3, H, W) is encoded to a diagonal Gaussian posterior
q(z | x) = N(mean, std^2) of shape (B, 4, H/8, W/8); the network sees x = (z - shift) * scale
(`LatentSpace`): the VAE's own ``scaling_factor`` and ``shift_factor`` from its diffusers config
(SD VAE: 0.18215 and none, which brings the latents to roughly unit variance; SD3 / FLUX VAEs
state a shift), unless overridden, optionally followed by a per-channel normalisation computed
at extraction (`sit extract --latent-norm channel`, LightningDiT). Decoding inverts both.

diffusers is an optional dependency (``pip install "sit[vae]"``) imported only when a VAE is
built. Weights are never downloaded: they come from a local folder or the local Hugging Face
cache (``local_files_only=True``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from sit.config import ConfigError, latent_value_problem

SCALE_FACTOR = 0.18215  # SD VAE latent scale (DiT / SiT: x = vae.encode(img).sample() * 0.18215)
# What a record without the fields means: latent folders (index.json) and runs (config.json "data")
# written before scale / shift were recorded used the SD VAE's 0.18215 and no shift (sit then
# hard-coded them), and no per-channel normalisation.
DEFAULT_SHIFT = 0.0
# the config.json key `sit tiny-vae` (sit.vae_tiny) marks its random-weight VAE folders with; loading one warns
RANDOM_MARK = "_sit_random_weights"


def _finite(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number (got {v!r})")
    return float(v)


@dataclasses.dataclass(frozen=True)
class LatentSpace:
    """How a VAE latent z becomes the network's input x, and back.

    x = ((z - shift) * scale - mean_c) / std_c    (``to_network``)
    z = (x * std_c + mean_c) / scale + shift      (``to_vae``)

    ``scale`` and ``shift`` are the VAE's ``scaling_factor`` / ``shift_factor`` (or overrides);
    ``mean`` / ``std`` the optional per-channel normalisation (LightningDiT), already in the
    scaled space (None: off). With the defaults the arithmetic is exactly sit's historic
    ``z * 0.18215`` and ``x / 0.18215`` (a zero shift and an absent normalisation are skipped, not
    applied), so every earlier result stays bit-identical.
    """

    scale: float = SCALE_FACTOR
    shift: float = DEFAULT_SHIFT
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        scale = _finite(self.scale, "latent scale_factor")
        problem = latent_value_problem("scale", scale)
        if problem:
            raise ValueError(f"latent scale_factor {problem}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "shift", _finite(self.shift, "latent shift_factor"))
        if (self.mean is None) != (self.std is None):
            raise ValueError("latent normalisation needs both mean and std (or neither)")
        if self.mean is not None:
            mean = tuple(_finite(v, "latent_norm mean") for v in self.mean)
            std = tuple(_finite(v, "latent_norm std") for v in self.std)
            if len(mean) != len(std) or not mean:
                raise ValueError(f"latent_norm mean and std need one value per channel (got {len(mean)} and {len(std)})")
            if not all(v > 0 for v in std):
                raise ValueError(f"latent_norm std must be > 0 in every channel (got {list(std)})")
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)

    @property
    def normalised(self) -> bool:
        return self.mean is not None

    def _check_channels(self, x) -> None:
        if self.normalised and (x.ndim < 3 or x.shape[-3] != len(self.mean)):
            raise ValueError(f"latents of shape {tuple(x.shape)} do not have the {len(self.mean)} channels "
                             "the latent normalisation was computed for")

    def _per_channel(self, x, values):
        if isinstance(x, np.ndarray):
            return np.asarray(values, dtype=x.dtype).reshape(-1, 1, 1)
        return torch.tensor(values, dtype=x.dtype, device=x.device).view(-1, 1, 1)

    def to_network(self, z):
        """x = ((z - shift) * scale - mean_c) / std_c for z of shape (..., C, h, w), a float32
        tensor or numpy array (numpy constants in float32, so the result stays float32)."""
        c = np.float32 if isinstance(z, np.ndarray) else float
        if self.shift:
            z = z - c(self.shift)
        x = z * c(self.scale)
        if self.normalised:
            self._check_channels(x)
            x = (x - self._per_channel(x, self.mean)) / self._per_channel(x, self.std)
        return x

    def to_vae(self, x):
        """The inverse of `to_network`: z = (x * std_c + mean_c) / scale + shift."""
        c = np.float32 if isinstance(x, np.ndarray) else float
        if self.normalised:
            self._check_channels(x)
            x = x * self._per_channel(x, self.std) + self._per_channel(x, self.mean)
        z = x / c(self.scale)
        if self.shift:
            z = z + c(self.shift)
        return z

    def record(self) -> dict[str, Any]:
        """The fields a run's data record (config.json) stores: ``scale_factor`` always,
        ``shift_factor`` and ``latent_norm`` only when set (so records of the defaults are the
        ones sit wrote before they existed)."""
        d: dict[str, Any] = {"scale_factor": self.scale}
        if self.shift:
            d["shift_factor"] = self.shift
        if self.normalised:
            d["latent_norm"] = {"kind": "channel", "mean": list(self.mean), "std": list(self.std)}
        return d

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> "LatentSpace":
        """From a run's data record (or None: an official checkpoint); absent fields mean the
        pre-recording defaults (0.18215, shift 0, no normalisation)."""
        record = record or {}
        norm = record.get("latent_norm")
        if norm is not None and (not isinstance(norm, Mapping) or norm.get("kind") != "channel"):
            raise ValueError(f"unknown latent_norm record {norm!r}; expected kind 'channel' with mean and std")
        scale = record.get("scale_factor")
        shift = record.get("shift_factor")
        return cls(scale=SCALE_FACTOR if scale is None else scale, shift=DEFAULT_SHIFT if shift is None else shift,
                   mean=None if norm is None else tuple(norm["mean"]), std=None if norm is None else tuple(norm["std"]))

    def override(self, scale: float | None = None, shift: float | None = None) -> "LatentSpace":
        """This space with ``scale`` / ``shift`` replaced where given (the normalisation kept)."""
        return dataclasses.replace(self, scale=self.scale if scale is None else scale,
                                   shift=self.shift if shift is None else shift)


def config_space(model) -> LatentSpace:
    """The latent scale and shift a diffusers ``AutoencoderKL`` states in its config
    (``scaling_factor``; ``shift_factor``, None or absent meaning 0)."""
    cfg = model.config
    scale = getattr(cfg, "scaling_factor", None) if not isinstance(cfg, Mapping) else cfg.get("scaling_factor")
    shift = getattr(cfg, "shift_factor", None) if not isinstance(cfg, Mapping) else cfg.get("shift_factor")
    return LatentSpace(scale=SCALE_FACTOR if scale is None else scale, shift=DEFAULT_SHIFT if shift is None else shift)


def vae_config_record(config: LatentSpace, used: LatentSpace) -> dict[str, Any]:
    """``{"vae_config": {scaling_factor, shift_factor}}``: what the VAE's own config says, recorded
    beside the values used only when an override made them differ (else ``{}``, so records of
    runs without overrides stay as they were)."""
    if (config.scale, config.shift) == (used.scale, used.shift):
        return {}
    return {"vae_config": {"scaling_factor": config.scale, "shift_factor": config.shift}}


def recorded_vae_config(record: Mapping[str, Any] | None) -> LatentSpace:
    """The config (scale, shift) of the VAE a record's latents came from: its ``vae_config`` when
    an override was used, else the recorded values themselves."""
    record = record or {}
    cfg = record.get("vae_config")
    if isinstance(cfg, Mapping):
        return LatentSpace.from_record({"scale_factor": cfg.get("scaling_factor"), "shift_factor": cfg.get("shift_factor")})
    return LatentSpace.from_record({"scale_factor": record.get("scale_factor"), "shift_factor": record.get("shift_factor")})


def decode_space(vae_space: LatentSpace, recorded: LatentSpace, scale: float | None = None,
                 shift: float | None = None, *, expected: LatentSpace | None = None, vae_name: str = "VAE",
                 source: str = "the run") -> LatentSpace:
    """The latent space a decode uses: the one ``recorded`` with the samples' model (its
    normalisation included), not the decode VAE's defaults. ``scale`` / ``shift`` (vae_scale /
    vae_shift) override; without them a VAE whose own config (``vae_space``) contradicts the
    config of the VAE the record came from (``expected``; default: the recorded values) is
    refused in one line (the wrong VAE, or one that needs the override)."""
    expected = recorded if expected is None else expected
    for field, own, rec, given in (("scaling_factor", vae_space.scale, expected.scale, scale),
                                   ("shift_factor", vae_space.shift, expected.shift, shift)):
        if given is None and own != rec:
            over = "vae_scale" if field == "scaling_factor" else "vae_shift"
            used = recorded.scale if field == "scaling_factor" else recorded.shift
            raise ConfigError("", over, f"not given, and VAE {vae_name}: its config {field} {own:g} contradicts {source}'s "
                              f"recorded {rec:g}; use the VAE the latents came from, or give {{.{over}}} {used:g} to "
                              f"decode with {source}'s value")
    return recorded.override(scale, shift)

# short names accepted by --vae, as in the official SiT/DiT scripts (--vae ema|mse)
VAE_NAMES = {
    "ema": "stabilityai/sd-vae-ft-ema",
    "mse": "stabilityai/sd-vae-ft-mse",
}

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def _import_autoencoder_kl():
    try:
        from diffusers import AutoencoderKL
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the VAE needs diffusers, which is not installed ({e}); install it with: pip install \"sit[vae]\""
        ) from e
    return AutoencoderKL


def hf_cache_dir() -> Path:
    """The local Hugging Face hub cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _missing_vae_message(spec: str, repo_id: str | None) -> str:
    msg = (f"VAE {spec!r} not found locally (sit never downloads weights at run time). Give the VAE as "
           "/path/to/sd-vae-ft-ema, a folder holding config.json and diffusion_pytorch_model.safetensors "
           "(or .bin), i.e. the files of https://huggingface.co/stabilityai/sd-vae-ft-ema")
    if repo_id is not None:
        cache = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
        msg += (f", or put {repo_id!r} into the Hugging Face cache at {cache} (on a machine with network: "
                f"`huggingface-cli download {repo_id}`, then copy {hf_cache_dir()} here)")
    return msg + f". Short names: {VAE_NAMES}."


def _load(AutoencoderKL, where: str, dtype):
    # low_cpu_mem_usage=False: no `accelerate` needed (and no warning about it)
    return AutoencoderKL.from_pretrained(where, local_files_only=True, low_cpu_mem_usage=False,
                                         torch_dtype=resolve_dtype(dtype))


def _warn_if_random(folder: Path) -> None:
    """Log a warning when ``folder`` is a random-weight VAE made by `sit tiny-vae`."""
    import json
    import logging

    try:
        random_weights = json.loads((folder / "config.json").read_text()).get(RANDOM_MARK) is True
    except (OSError, ValueError, AttributeError):
        return
    if random_weights:
        logging.getLogger("sit.vae").warning(
            f"VAE {str(folder)!r} has RANDOM weights (made by `sit tiny-vae`): its latents mean nothing; "
            "use it to try the commands, not for results")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[dtype]


class VAE:
    """A frozen SD-style ``AutoencoderKL`` with its latent space (`LatentSpace`).

    Images are float tensors in [-1, 1] of shape (B, 3, H, W), H and W divisible by
    ``downsample`` (8 for the SD VAE); latents are (B, latent_channels, H/8, W/8) in the network's
    space ``space.to_network(z)``: (z - shift_factor) * scale_factor (the config's values unless
    overridden), normalised per channel when ``space`` says so. Every method runs under ``torch.no_grad`` in the VAE's dtype
    on its device, in chunks of ``batch_size``, and returns float32 tensors on the input's device.
    """

    def __init__(self, model, *, scale_factor: float | None = None, shift_factor: float | None = None,
                 device: str | torch.device | None = None, dtype: str | torch.dtype = torch.float32,
                 batch_size: int = 64, name: str = "custom"):
        if batch_size < 1:
            raise ValueError(f"VAE batch_size must be >= 1 (got {batch_size})")
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        model = model.to(self.device)
        if model.dtype != self.dtype:  # (diffusers warns on every dtype cast, even a no-op one)
            model = model.to(self.dtype)
        self.model = model.eval().requires_grad_(False)
        # the VAE's own latent scale / shift (its config), and the space encode / decode use:
        # those, with scale_factor / shift_factor overriding (set `space` to decode a run's latents)
        self.config_space = config_space(model)
        self.space = self.config_space.override(scale_factor, shift_factor)
        self.batch_size = int(batch_size)
        self.name = name

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, spec: str = "ema", **kwargs) -> "VAE":
        """Load ``spec``: a local folder (config.json + diffusion_pytorch_model.safetensors), a short
        name ("ema", "mse") or a Hub id ("stabilityai/sd-vae-ft-ema") that must already be in the
        local Hugging Face cache. A missing model raises FileNotFoundError saying where to put it."""
        AutoencoderKL = _import_autoencoder_kl()
        path = Path(spec).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"VAE folder {str(path)!r} has no config.json; " + _missing_vae_message(spec, None)
                )
            model = _load(AutoencoderKL, str(path), kwargs.get("dtype", torch.float32))
            _warn_if_random(path)
            return cls(model, name=str(path), **kwargs)
        if path.exists():
            raise NotADirectoryError(
                f"VAE {spec!r} is a file; give the folder holding config.json and "
                "diffusion_pytorch_model.safetensors"
            )
        repo_id = VAE_NAMES.get(spec, spec)
        if repo_id.count("/") != 1 or spec.startswith((".", "/", "~")):
            raise FileNotFoundError(_missing_vae_message(spec, None))
        if not (hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))).is_dir():
            raise FileNotFoundError(_missing_vae_message(spec, repo_id))
        try:
            model = _load(AutoencoderKL, repo_id, kwargs.get("dtype", torch.float32))
        except (OSError, ValueError) as e:  # diffusers raises EnvironmentError when not cached
            raise FileNotFoundError(_missing_vae_message(spec, repo_id)) from e
        return cls(model, name=repo_id, **kwargs)

    @classmethod
    def tiny_random(cls, seed: int = 0, *, block_out_channels: tuple[int, ...] = (8, 16), latent_channels: int = 4,
                    sample_size: int = 16, **kwargs) -> "VAE":
        """A tiny randomly initialised AutoencoderKL for tests (downsample = 2^(len(blocks) - 1),
        2 for the default (8, 16)); same code path as the real VAE."""
        AutoencoderKL = _import_autoencoder_kl()
        n = len(block_out_channels)
        groups = min(block_out_channels)
        while groups > 1 and any(c % groups for c in block_out_channels):
            groups //= 2
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoencoderKL(
                in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(block_out_channels),
                layers_per_block=1, latent_channels=latent_channels, norm_num_groups=groups,
                sample_size=sample_size,
            )
        return cls(model, name=f"tiny-random-{seed}", **kwargs)

    # ---------------------------------------------------------------- properties
    @property
    def scale_factor(self) -> float:
        return self.space.scale

    @property
    def shift_factor(self) -> float:
        return self.space.shift

    @property
    def weights_sha256(self) -> str:
        """sha256 of the VAE's weights (every state-dict tensor: name, dtype, shape, bytes, in name
        order): what a latent index and a sample set record, so a swapped VAE behind the same
        path is noticed. Computed once per instance."""
        if getattr(self, "_weights_sha256", None) is None:
            import hashlib

            h = hashlib.sha256()
            state = self.model.state_dict()
            for k in sorted(state):
                v = state[k].detach().to("cpu").contiguous()
                h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
                h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
            self._weights_sha256 = h.hexdigest()
        return self._weights_sha256

    @property
    def latent_channels(self) -> int:
        return int(self.model.config.latent_channels)

    @property
    def downsample(self) -> int:
        """Spatial factor between images and latents (8 for the SD VAE)."""
        return 2 ** (len(self.model.config.block_out_channels) - 1)

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        if image_size % self.downsample:
            raise ValueError(f"image size {image_size} is not divisible by the VAE downsampling factor {self.downsample}")
        s = image_size // self.downsample
        return (self.latent_channels, s, s)

    def to(self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> "VAE":
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = resolve_dtype(dtype)
        self.model.to(self.device)
        if self.model.dtype != self.dtype:
            self.model.to(self.dtype)
        return self

    # ---------------------------------------------------------------- encode / decode
    def _check_images(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W); got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % self.downsample or w % self.downsample:
            raise ValueError(f"image size {h}x{w} is not divisible by the VAE downsampling factor {self.downsample}")

    @torch.no_grad()
    def encode_moments(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior q(z | x) = N(mean, std^2) of images in [-1, 1] (B, 3, H, W), *unscaled*
        (no 0.18215). Returns (mean, std), each float32 (B, C, H/f, W/f); std > 0 (diffusers clamps
        the log-variance to [-30, 20])."""
        self._check_images(images)
        means, stds = [], []
        for chunk in images.split(self.batch_size):
            dist = self.model.encode(chunk.to(self.device, self.dtype)).latent_dist
            means.append(dist.mean.float().to(images.device))
            stds.append(dist.std.float().to(images.device))
        return torch.cat(means), torch.cat(stds)

    @torch.no_grad()
    def encode(self, images: Tensor, generator: torch.Generator | None = None, sample: bool = True) -> Tensor:
        """Latents ``space.to_network(z)`` ((z - shift) * scale) with z = mean + std * N(0, I) drawn from the posterior
        (``sample=False``: z = mean). images in [-1, 1] (B, 3, H, W) -> float32 (B, C, H/f, W/f).
        The noise is drawn on the generator's device (default: the images' device)."""
        mean, std = self.encode_moments(images)
        if not sample:
            return self.space.to_network(mean)
        gen_device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, device=gen_device, dtype=torch.float32).to(mean.device)
        return self.space.to_network(mean + std * noise)

    @torch.no_grad()
    def decode(self, latents: Tensor, clamp: bool = True) -> Tensor:
        """Images from network-space latents (B, C, h, w) (``space.to_vae`` first) -> float32 (B, 3, h*f, w*f), clamped to [-1, 1]
        unless ``clamp=False`` (the raw decoder output slightly overshoots)."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must have shape (B, {self.latent_channels}, h, w); got {tuple(latents.shape)}"
            )
        out = []
        for chunk in latents.split(self.batch_size):
            x = self.model.decode(self.space.to_vae(chunk.to(self.device, self.dtype))).sample.float()
            out.append((x.clamp(-1, 1) if clamp else x).to(latents.device))
        return torch.cat(out)

    def __repr__(self) -> str:
        return (f"VAE({self.name!r}, latent_channels={self.latent_channels}, downsample={self.downsample}, "
                f"scale_factor={self.scale_factor}, shift_factor={self.shift_factor}, device={self.device}, dtype={self.dtype})")
