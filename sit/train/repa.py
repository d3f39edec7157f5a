"""Representation alignment (REPA, Yu et al. 2024, "Representation Alignment for Generation"): a
`sit.train.seam.LossTerm` that aligns the hidden states of one SiT block with the patch
features of a frozen pretrained vision encoder.

With h_n (n = 1..N) the tokens after block ``repa_depth`` of the network on x_t, h_phi a projector
(3-layer MLP with SiLU, width ``repa_proj_dim``) and y*_n the encoder's patch features of the
clean image x*, the term is (REPA eq. 8, per sample, averaged over the batch by the loop)

    L_REPA = -(1/N) sum_n cos(y*_n, h_phi(h_n)),      cos(a, b) = <a, b> / (|a| |b|)

and the step minimises L_denoise + lambda L_REPA (lambda = ``repa_coeff``, 0.5 as REPA).

Depth rule: REPA aligns block 8 of SiT-XL/2 (28 blocks) and block 4 of SiT-B/2 (12 blocks);
without ``repa_depth`` sit takes ceil(2 depth / 7): XL 8, L 7, B and S 4, the 4-block demo 2.

Encoders (`load_encoder`):
  * a local DINOv2 folder (``transformers`` ``Dinov2Model.from_pretrained(PATH)``, never a
    download): images in [-1, 1] are mapped to [0, 1], resized (bicubic) to 224 px per 256 px of
    training resolution (REPA's 224 for 256, 448 for 512), normalised with the ImageNet mean and
    std; the patch tokens (the CLS token dropped) are the targets.
  * ``digits-cnn``: offline, for the embedded demo: the spatial feature map after the second
    convolution of a `sit.evaluate.classifier.DigitClassifier` trained on the run's embedded
    training split with seed 1 (the quality number's classifier uses seed 0 on another split;
    both are the same small CNN, so read the demo's REPA quality numbers with that in mind).
Token grids: when the encoder's grid (g_e x g_e) differs from SiT's (input_size / patch_size),
the feature map is average-pooled (g_e > g) or bilinearly interpolated (g_e < g) to SiT's grid.

The encoder needs pixels: the embedded data is pixels; an ImageFolder (``data`` + ``vae``) gives
the loaded image beside its latent; pre-extracted latents hold no pixels and are refused
(`sit.config.TrainConfig`).

Must not import: sit.generate, sit.commands.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sit.config import ConfigError, ModelConfig, TrainConfig
from sit.train.seam import LossTerm, Outputs

EMBEDDED_ENCODERS = ("digits-cnn",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_depth(depth: int) -> int:
    """The block REPA aligns without ``repa_depth``: ceil(2 depth / 7) (XL 28 -> 8, B 12 -> 4)."""
    return max(1, min(depth, math.ceil(2 * depth / 7)))


def repa_loss(z_tilde: Tensor, z: Tensor) -> Tensor:
    """-(1/N) sum_n cos(z_n, z~_n) per sample: z_tilde (B, N, C) projected hidden states, z (B, N, C)
    encoder features -> (B,), computed in float32."""
    if z_tilde.shape != z.shape:
        raise ValueError(f"REPA: projected tokens {tuple(z_tilde.shape)} and encoder tokens {tuple(z.shape)} differ")
    a = F.normalize(z_tilde.float(), dim=-1)
    b = F.normalize(z.float(), dim=-1)
    return -(a * b).sum(-1).mean(-1)


def match_grid(z: Tensor, grid: int) -> Tensor:
    """Patch tokens (B, N, C) on a square g x g grid -> (B, grid^2, C): average-pooled when g > grid,
    bilinearly interpolated when g < grid, unchanged when equal."""
    B, N, C = z.shape
    g = math.isqrt(N)
    if g * g != N:
        raise ValueError(f"REPA: the encoder gives {N} patch tokens, not a square grid")
    if g == grid:
        return z
    m = z.transpose(1, 2).reshape(B, C, g, g)
    m = F.adaptive_avg_pool2d(m, grid) if g > grid else F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False)
    return m.flatten(2).transpose(1, 2)


class Encoder:
    """A frozen feature extractor: pixels (B, C, H, W) in [-1, 1] -> patch tokens (B, N, dim).
    Not an nn.Module attribute of the term, so it is neither trained nor saved."""

    name: str
    dim: int

    def __call__(self, pixels: Tensor) -> Tensor:
        raise NotImplementedError


class DigitsEncoder(Encoder):
    """``digits-cnn``: see the module docstring."""

    SEED = 1

    def __init__(self, dataset: str, image_size: int, device: torch.device):
        from sit.data.embedded import load_embedded
        from sit.evaluate.classifier import get_classifier

        x, y = load_embedded(dataset, "train", image_size=image_size)
        self.net = get_classifier(x, y, num_classes=10, seed=self.SEED).to(device).requires_grad_(False).eval()
        self.name, self.dim = "digits-cnn", self.net.conv2.out_channels

    @torch.no_grad()
    def __call__(self, pixels):
        n = self.net
        h = F.relu(n.conv2(F.relu(n.conv1(pixels.to(n.conv1.weight.dtype)))))  # (B, dim, g, g)
        return h.flatten(2).transpose(1, 2)


class Dinov2Encoder(Encoder):
    """A DINOv2 (``transformers`` Dinov2Model) from a local folder; see the module docstring."""

    def __init__(self, folder: str, image_size: int, device: torch.device):
        try:
            from transformers import Dinov2Model
        except ImportError:
            raise ImportError("TrainConfig.repa_encoder: a DINOv2 encoder needs transformers (pip install 'sit[repa]')") from None
        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"TrainConfig.repa_encoder: no DINOv2 folder at {str(path)!r} (config.json + weights); save one there with "
                f"transformers.Dinov2Model.from_pretrained('facebook/dinov2-base').save_pretrained({str(path)!r}) on a "
                f"machine with network, or name an embedded encoder {list(EMBEDDED_ENCODERS)}"
            )
        try:
            model = Dinov2Model.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise ValueError(f"TrainConfig.repa_encoder: {str(path)!r} is not a loadable Dinov2Model ({str(e).splitlines()[0]})") from None
        self.model = model.to(device).requires_grad_(False).eval()
        p = int(model.config.patch_size)
        self.resolution = max(p, round(224 * image_size / 256 / p) * p)
        self.name, self.dim = str(path), int(model.config.hidden_size)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, pixels):
        x = (pixels.float() + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bicubic", align_corners=False)
        x = (x - self.mean) / self.std
        return self.model(pixel_values=x).last_hidden_state[:, 1:]  # (B, N, dim), CLS dropped


def load_encoder(name: str, cfg: TrainConfig, image_size: int, device: torch.device) -> Encoder:
    """The encoder ``name`` (an embedded one or a local DINOv2 folder) for images of ``image_size`` px."""
    if name == "digits-cnn":
        if cfg.data is not None or cfg.latents is not None:
            raise ValueError("TrainConfig.repa_encoder 'digits-cnn' is for the embedded datasets; give a DINOv2 folder for image data")
        return DigitsEncoder(cfg.dataset, image_size, device)
    return Dinov2Encoder(name, image_size, device)


class RepaTerm(LossTerm):
    """REPA's alignment term (module docstring); owns the projector, reads block ``depth``'s output
    from the objective's outputs (``Outputs.hidden``)."""

    name = "repa"
    needs_pixels = True

    def __init__(self, encoder: Encoder, hidden_size: int, depth: int, coeff: float, proj_dim: int, grid: int):
        super().__init__()
        self.depth, self.coeff, self.grid = depth, float(coeff), grid
        self.hidden_blocks = (depth,)
        self.projector = nn.Sequential(
            nn.Linear(hidden_size, proj_dim), nn.SiLU(),
            nn.Linear(proj_dim, proj_dim), nn.SiLU(),
            nn.Linear(proj_dim, encoder.dim),
        )
        self.encoder = encoder  # not a Module: frozen, not in state_dict / parameters()

    def forward(self, out: Outputs) -> Tensor:
        h, pixels = out.hidden.get(self.depth), out.pixels
        if h is None:
            raise RuntimeError(f"REPA: the objective did not hand over block {self.depth}'s output")
        if pixels is None:
            raise ValueError("REPA: the data source gave no pixels for the encoder")
        with torch.no_grad():
            z = match_grid(self.encoder(pixels), self.grid)  # (B, N, dim)
        return repa_loss(self.projector(h), z)


def build_repa(cfg: TrainConfig, model_cfg: ModelConfig, device: torch.device) -> RepaTerm:
    """The REPA term of ``cfg`` with its encoder on ``device`` (projector initialised from the
    caller's RNG state)."""
    depth = cfg.repa_depth if cfg.repa_depth is not None else default_depth(model_cfg.depth)
    if depth > model_cfg.depth:
        raise ConfigError("TrainConfig", "repa_depth", f"{depth} exceeds the network's {model_cfg.depth} blocks")
    embedded = cfg.data is None and cfg.latents is None
    image_size = model_cfg.input_size if embedded else (cfg.image_size or 256)
    encoder = load_encoder(cfg.repa_encoder, cfg, image_size, device)
    grid = model_cfg.input_size // model_cfg.patch_size
    return RepaTerm(encoder, model_cfg.hidden_size, depth, cfg.repa_coeff, cfg.repa_proj_dim, grid)
