"""FD-DINOv2 (Stein et al. 2023, "Exposing flaws of generative model evaluation metrics"; the
protocol edm2 reports): the Fréchet distance between Gaussians fitted to DINOv2 ViT features.

Features: the images (uint8, grey replicated to RGB) are resized to 224 x 224 (bicubic, with
antialiasing), scaled to [0, 1], normalised with the ImageNet mean / std, and passed through a
transformers ``Dinov2Model``; the feature of an image is its final-layer class token after the
last layer norm (``pooler_output``; 1024-d for ViT-L/14, the model of the protocol), float64.

The weights are read only from a local folder (``Dinov2Model.save_pretrained`` layout:
config.json + model.safetensors), never downloaded: e.g. ``facebook/dinov2-large`` saved with
``save_pretrained``. Values from another DINOv2 size compare only among themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sit.evaluate.scorer import Scores, fd_of

VERSION = "dinov2-bicubic224-cls-v1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESOLUTION = 224


def load_dinov2(folder: str | Path):
    """A ``transformers.Dinov2Model`` from a local folder; FileNotFoundError naming what to put where."""
    p = Path(folder)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"DINOv2 weights not found: {str(p)!r} has no config.json; save facebook/dinov2-large there with "
            "Dinov2Model.from_pretrained(...).save_pretrained(DIR) on a machine with network access")
    from transformers import Dinov2Model

    return Dinov2Model.from_pretrained(str(p), local_files_only=True)


class Dinov2Scorer:
    name = "dinov2"
    fd_key = "cls"

    def __init__(self, folder: str | Path, *, device=None, batch_size: int = 64):
        self.folder = Path(folder)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = load_dinov2(self.folder).to(self.device).eval()
        self.batch_size = int(batch_size)
        self._id = None

    @classmethod
    def from_request(cls, request) -> "Dinov2Scorer":
        """The scorer of `sit eval --metrics dinov2 --dinov2 DIR` (``sit.evaluate.scorers.EvalRequest``)."""
        if request.dinov2 is None:
            from sit.config import ConfigError

            raise ConfigError("EvalRequest", "dinov2", "is needed by {metrics} dinov2: the DINOv2 weights, a local "
                              "Dinov2Model.save_pretrained folder (e.g. facebook/dinov2-large)")
        return cls(request.dinov2, device=request.device, batch_size=request.batch_size)

    def identity(self) -> str:
        from sit.io import sha256_file

        if self._id is None:
            files = sorted(f for f in self.folder.iterdir() if f.suffix in (".safetensors", ".bin", ".json"))
            self._id = VERSION + "|" + ",".join(f"{f.name}:{sha256_file(f)}" for f in files)
        return self._id

    def preprocess(self, batch) -> torch.Tensor:
        """uint8 (B, H, W, C) (or float (B, C, H, W) in [-1, 1]) -> normalised (B, 3, 224, 224)."""
        if isinstance(batch, torch.Tensor) and batch.is_floating_point():
            from sit.io import to_uint8

            batch = to_uint8(batch)
        x = torch.as_tensor(np.array(batch)).to(self.device)  # a copy: lazy npz slices are read-only
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"DINOv2 features need uint8 (N, H, W, 1|3) images; got {x.dtype} {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x.clamp(0, 1) - mean) / std

    def feature_dims(self, images) -> dict:
        return {"cls": int(self.net.config.hidden_size)}

    @torch.no_grad()
    def features(self, images) -> dict:
        out = []
        for i in range(0, len(images), self.batch_size):
            x = self.preprocess(images[i : i + self.batch_size])
            out.append(self.net(pixel_values=x).pooler_output.double().cpu().numpy())
        return {"cls": np.concatenate(out)}

    def scores(self, real: dict, fake: dict, **kw) -> Scores:
        return Scores("dinov2", fd=fd_of(real["cls"], fake["cls"]), num_real=len(real["cls"]), num_fake=len(fake["cls"]))
