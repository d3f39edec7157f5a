"""Per-sample random streams, class labels and explicit initial-noise files.

Sample i (0-based index in the set) draws everything random from its own
``torch.Generator('cpu').manual_seed(seed + i)``: first its initial noise x0 (C, H, W) in float32,
then (with random labels) its class label, then, for SDE or ancestral samplers, the noise of each
step in order. Noise is drawn on the CPU row by row (`RowNoise`) and then moved to the device, so a
set is the same whatever the batch size, the number of processes or the device's RNG.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from sit.config import ConfigError

SEED_RULE = (
    "sample i draws x0 (then its random label, then per-step noise) from "
    "torch.Generator('cpu').manual_seed(seed + i), row by row"
)


class RowNoise:
    """Per-row random streams: row j of every draw comes from the generator seeded with seeds[j].

    ``noise(x)`` (or ``noise.randn_like(x)``) returns a standard normal tensor shaped like x
    (B, ...), drawn in float32 on the CPU one row at a time, then cast to x's dtype and device.
    Pass it as the ``noise_fn`` of the SDE / ancestral samplers so that step noise, too, depends
    only on the sample's seed.
    """

    def __init__(self, seeds: Sequence[int]):
        self.seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, row_shape: Sequence[int], dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        rows = [torch.randn(tuple(row_shape), generator=g, dtype=torch.float32) for g in self.generators]
        out = torch.stack(rows) if rows else torch.empty((0, *row_shape))
        return out.to(device=device, dtype=dtype)

    def randn_like(self, x: Tensor) -> Tensor:
        if x.shape[0] != len(self):
            raise ValueError(f"RowNoise holds {len(self)} streams but the tensor has batch {x.shape[0]}")
        return self.randn(x.shape[1:], dtype=x.dtype, device=x.device)

    __call__ = randn_like

    def randint(self, high: int) -> Tensor:
        """One integer in [0, high) per row (int64, CPU)."""
        return torch.stack([torch.randint(high, (), generator=g) for g in self.generators]).long()


def parse_labels(spec: str | Sequence[int] | None, num_classes: int | None = None, *,
                 check: bool = True) -> str | tuple[int, ...]:
    """'random' (per-sample seeded), 'null' (the unconditional label num_classes), or a list of
    class indices ('207,360' or a sequence), cycled over the sample indices. ``check=False``
    parses only (before the model is known; `check_labels` checks the classes later)."""
    if spec is None:
        spec = "random"
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in ("random", "null"):
            return check_labels(s, num_classes) if check else s
        try:
            spec = [int(v) for v in s.replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise ConfigError("SampleSpec", "labels", f"must be 'random', 'null' or comma-separated class indices (got {spec!r})") from None
    labels = tuple(int(v) for v in spec)
    if not labels:
        raise ConfigError("SampleSpec", "labels", "is empty; give 'random', 'null' or class indices such as 207,360")
    return check_labels(labels, num_classes) if check else labels


def check_labels(labels: str | tuple[int, ...], num_classes: int | None) -> str | tuple[int, ...]:
    """The parsed ``labels`` checked against a model with ``num_classes`` classes (None: unconditional)."""
    if labels == "null" and num_classes is None:
        raise ConfigError("SampleSpec", "labels", "null needs a class-conditional model (num_classes unknown)")
    if isinstance(labels, tuple) and num_classes is not None:
        bad = [v for v in labels if not 0 <= v < num_classes]
        if bad:
            raise ConfigError("SampleSpec", "labels", f"{bad} outside the model's classes [0, {num_classes - 1}]")
    return labels


def labels_for(indices: Sequence[int], spec: str | tuple[int, ...], num_classes: int | None, noise: RowNoise) -> Tensor:
    """Class labels of the samples ``indices`` (drawn from ``noise`` when spec is 'random', so
    call it right after drawing x0)."""
    if spec == "random":
        if num_classes is None:
            return torch.zeros(len(indices), dtype=torch.long)
        return noise.randint(num_classes)
    if spec == "null":
        return torch.full((len(indices),), int(num_classes), dtype=torch.long)
    return torch.tensor([spec[i % len(spec)] for i in indices], dtype=torch.long)


def load_noise(path: str | os.PathLike) -> Tensor:
    """Explicit initial noise from .npy or .safetensors (the tensor named 'noise', else the first),
    shape (N, C, H, W), as float32. An empty, truncated or corrupt file, or one holding NaN/inf,
    is a one-line ValueError naming the file (and the non-finite sample indices)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError("", "noise", f"file {path} does not exist")
    if path.suffix not in (".npy", ".safetensors"):
        raise ConfigError("", "noise", f"file {path}: unknown type {path.suffix!r}; expected one of ['.npy', '.safetensors']")
    if path.stat().st_size == 0:
        raise ConfigError("", "noise", f"file {path} is empty (0 bytes)")
    try:
        if path.suffix == ".npy":
            x = torch.from_numpy(np.asarray(np.load(path, allow_pickle=False), dtype=np.float32))
        else:
            from safetensors.torch import load_file

            d = load_file(str(path))
            if not d:
                raise ConfigError("", "noise", f"file {path} holds no tensor")
            x = d.get("noise", next(iter(d.values()))).float()
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ConfigError("", "noise", f"file {path} is truncated or corrupt ({_first_line(e)})") from None
    except Exception as e:  # EOFError, OSError, SafetensorError, ...: one line, never a traceback
        raise ConfigError("", "noise", f"file {path} is truncated or corrupt ({type(e).__name__}: {_first_line(e)})") from None
    if x.ndim < 1 or x.shape[0] == 0:
        raise ConfigError("", "noise", f"file {path} holds no samples (shape {tuple(x.shape)})")
    bad = nonfinite_rows(x)
    if bad:
        raise ConfigError("", "noise", f"file {path} holds NaN/inf in samples {format_indices(bad)}")
    return x


def nonfinite_rows(x: Tensor, offset: int = 0) -> list[int]:
    """Indices (+ ``offset``) of the rows of x (B, ...) holding any NaN or inf."""
    if x.ndim == 0 or x.shape[0] == 0:
        return []
    ok = torch.isfinite(x.reshape(x.shape[0], -1).float()).all(dim=1)
    return [offset + int(i) for i in (~ok).nonzero().flatten().tolist()]


def format_indices(idx: Sequence[int], limit: int = 10) -> str:
    head = ", ".join(str(i) for i in idx[:limit])
    return f"[{head}{', ...' if len(idx) > limit else ''}] ({len(idx)} in all)"


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__
