"""Images <-> latents through the Stable Diffusion VAE (diffusers ``AutoencoderKL``).

SiT (like DiT) is trained on the latents of the SD VAE ``stabilityai/sd-vae-ft-ema`` (or ``-mse``):
an image x in [-1, 1] of shape (B, 3, H, W) is encoded to a diagonal Gaussian posterior
q(z | x) = N(mean, std^2) of shape (B, 4, H/8, W/8); the network sees z * 0.18215 (the SD scale
factor, which brings the latents to roughly unit variance). Decoding divides by the same factor.

diffusers is an optional dependency (``pip install "sit[vae]"``) imported only when a VAE is
built. Weights are never downloaded: they come from a local folder or the local Hugging Face
cache (``local_files_only=True``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

SCALE_FACTOR = 0.18215  # SD VAE latent scale (DiT / SiT: x = vae.encode(img).sample() * 0.18215)

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
    msg = (f"VAE {spec!r} not found locally (sit never downloads weights at run time). Pass --vae "
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


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[dtype]


class VAE:
    """A frozen SD-style ``AutoencoderKL`` with the SiT latent scale.

    Images are float tensors in [-1, 1] of shape (B, 3, H, W), H and W divisible by
    ``downsample`` (8 for the SD VAE); latents are (B, latent_channels, H/8, W/8) and already
    multiplied by ``scale_factor``. Every method runs under ``torch.no_grad`` in the VAE's dtype
    on its device, in chunks of ``batch_size``, and returns float32 tensors on the input's device.
    """

    def __init__(self, model, *, scale_factor: float = SCALE_FACTOR, device: str | torch.device | None = None,
                 dtype: str | torch.dtype = torch.float32, batch_size: int = 64, name: str = "custom"):
        if batch_size < 1:
            raise ValueError(f"VAE batch_size must be >= 1 (got {batch_size})")
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        model = model.to(self.device)
        if model.dtype != self.dtype:  # (diffusers warns on every dtype cast, even a no-op one)
            model = model.to(self.dtype)
        self.model = model.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor)
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
            return cls(model, name=str(path), **kwargs)
        if path.exists():
            raise NotADirectoryError(
                f"--vae {spec!r} is a file; pass the folder holding config.json and "
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
        """Latents scale_factor * z with z = mean + std * N(0, I) drawn from the posterior
        (``sample=False``: z = mean). images in [-1, 1] (B, 3, H, W) -> float32 (B, C, H/f, W/f).
        The noise is drawn on the generator's device (default: the images' device)."""
        mean, std = self.encode_moments(images)
        if not sample:
            return mean * self.scale_factor
        gen_device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, device=gen_device, dtype=torch.float32).to(mean.device)
        return (mean + std * noise) * self.scale_factor

    @torch.no_grad()
    def decode(self, latents: Tensor, clamp: bool = True) -> Tensor:
        """Images from scaled latents (B, C, h, w) -> float32 (B, 3, h*f, w*f), clamped to [-1, 1]
        unless ``clamp=False`` (the raw decoder output slightly overshoots)."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must have shape (B, {self.latent_channels}, h, w); got {tuple(latents.shape)}"
            )
        out = []
        for chunk in latents.split(self.batch_size):
            x = self.model.decode(chunk.to(self.device, self.dtype) / self.scale_factor).sample.float()
            out.append((x.clamp(-1, 1) if clamp else x).to(latents.device))
        return torch.cat(out)

    def __repr__(self) -> str:
        return (f"VAE({self.name!r}, latent_channels={self.latent_channels}, downsample={self.downsample}, "
                f"scale_factor={self.scale_factor}, device={self.device}, dtype={self.dtype})")
