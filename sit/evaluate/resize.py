"""The input pipeline of the TensorFlow Inception graph that the ADM evaluator runs.

ADM feeds raw float pixels 0..255 (N, H, W, 3) into the 2015 Inception graph at ``ExpandDims``;
the graph then applies ``ResizeBilinear`` to 299x299 and ``(x - 128) / 128``. That op is TF1's
``tf.image.resize_bilinear`` with ``align_corners=False`` and the legacy pixel mapping
(``half_pixel_centers=False``): output pixel i reads source coordinate

    src = i * (in_size / out_size),   lower = floor(src),   upper = min(lower + 1, in_size - 1),

interpolated linearly with weight ``src - lower``, no antialiasing even when shrinking, and the
last row/column is clamped (not mirrored). ``torch.nn.functional.interpolate(align_corners=False)``
uses half-pixel centres instead (src = (i + 0.5) * scale - 0.5), so it differs by up to a third of
a pixel and changes FID noticeably; this module reproduces the TF1 mapping in float32 with TF's
order of operations (rows interpolated along x first, then along y).
"""

from __future__ import annotations

import numpy as np
import torch

INCEPTION_SIZE = 299


def _tf1_axis(in_size: int, out_size: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lower (out,), upper (out,), lerp (out,) float32) for one axis, TF1 legacy mapping."""
    scale = np.float32(in_size / out_size)  # TF: CalculateResizeScale, a float
    src = torch.arange(out_size, dtype=torch.float32, device=device) * torch.tensor(scale, device=device)
    lower_f = torch.floor(src)
    lower = lower_f.to(torch.int64).clamp_(max=in_size - 1)
    upper = (lower + 1).clamp_(max=in_size - 1)
    return lower, upper, src - lower_f


def tf1_resize_bilinear(x: torch.Tensor, size: tuple[int, int] | int = INCEPTION_SIZE) -> torch.Tensor:
    """TF1 ``tf.image.resize_bilinear(x, size, align_corners=False)`` (half_pixel_centers=False).

    x: (N, C, H, W) floating tensor; returns (N, C, out_h, out_w) in float32 (as TF computes)."""
    if x.ndim != 4:
        raise ValueError(f"expected a (N, C, H, W) tensor; got shape {tuple(x.shape)}")
    out_h, out_w = (size, size) if isinstance(size, int) else size
    x = x.to(torch.float32)
    _, _, h, w = x.shape
    if (h, w) == (out_h, out_w):
        return x.clone()
    y0, y1, dy = _tf1_axis(h, out_h, x.device)
    x0, x1, dx = _tf1_axis(w, out_w, x.device)
    top, bottom = x[:, :, y0, :], x[:, :, y1, :]  # (N, C, out_h, W)
    top_left, top_right = top[..., x0], top[..., x1]
    bottom_left, bottom_right = bottom[..., x0], bottom[..., x1]
    top = top_left + (top_right - top_left) * dx
    bottom = bottom_left + (bottom_right - bottom_left) * dx
    return top + (bottom - top) * dy[:, None]


def to_uint8_nhwc(images) -> torch.Tensor:
    """Bring an image batch to uint8 (N, H, W, 3):

    - uint8 arrays/tensors: (N, H, W, C) (or (N, C, H, W) when C in {1, 3} is in axis 1 and not last);
    - floating tensors/arrays: sit's convention, (N, C, H, W) in [-1, 1], quantised as the
      ADM / DiT samplers do before saving: clamp(127.5 x + 128, 0, 255) truncated to uint8;
    - one grey channel is repeated to three."""
    t = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
    if t.ndim == 3:
        t = t.unsqueeze(-1 if t.dtype == torch.uint8 else 1)
    if t.ndim != 4:
        raise ValueError(f"expected a batch of images (N, H, W, C) uint8 or (N, C, H, W) float; got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        if t.shape[-1] not in (1, 3) and t.shape[1] in (1, 3):
            t = t.permute(0, 2, 3, 1)
    elif t.is_floating_point():
        t = torch.clamp(127.5 * t.float() + 128.0, 0, 255).permute(0, 2, 3, 1).to(torch.uint8)
    else:
        raise ValueError(f"unknown image dtype {t.dtype}; expected one of ['uint8', a floating dtype in [-1, 1]]")
    if t.shape[-1] == 1:
        t = t.expand(-1, -1, -1, 3)
    if t.shape[-1] != 3:
        raise ValueError(f"expected 1 or 3 channels; got images of shape {tuple(t.shape)}")
    return t


def inception_input(images, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """The tensor the Inception layers see: uint8 (N, H, W, 3) (or see ``to_uint8_nhwc``) ->
    TF1 bilinear resize to size x size -> (x - 128) / 128, float32 (N, 3, size, size) in
    [-1, 127/128]."""
    u8 = to_uint8_nhwc(images)
    x = u8.permute(0, 3, 1, 2).to(torch.float32)
    x = tf1_resize_bilinear(x, size)
    return (x - 128.0) / 128.0
