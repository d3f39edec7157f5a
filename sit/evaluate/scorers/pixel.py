"""Pixel-space Fréchet distance: the features of an image are its pixel values in [0, 1].

Meaningful only for tiny images (the 8x8 digits: 64-d), where it is the metric of the fidelity
check against the official code (benchmarks/bench_fidelity.py). Images: uint8 (N, H, W, C)
(value / 255) or float tensors (N, C, H, W) in [-1, 1] ((x + 1) / 2, clamped to [0, 1]).
"""

from __future__ import annotations

import numpy as np
import torch

from sit.evaluate.scorer import Scores, fd_of

VERSION = "pixel-v1"


class PixelScorer:
    name = "pixel"
    fd_key = "pixels"

    def identity(self) -> str:
        return VERSION

    def feature_dims(self, images) -> dict:
        return {"pixels": int(np.prod(np.shape(images)[1:]))}

    def features(self, images) -> dict:
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            f = ((images.detach().cpu().double() + 1) / 2).clamp(0, 1)
        else:
            a = np.asarray(images)
            if a.dtype != np.uint8:
                raise ValueError(f"pixel features need uint8 images or float tensors in [-1, 1]; got {a.dtype}")
            f = torch.from_numpy(a.astype(np.float64) / 255.0)
        return {"pixels": f.reshape(f.shape[0], -1).numpy()}

    def scores(self, real: dict, fake: dict, **kw) -> Scores:
        return Scores("pixel", fd=fd_of(real["pixels"], fake["pixels"]), num_real=len(real["pixels"]),
                      num_fake=len(fake["pixels"]))
