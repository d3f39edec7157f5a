"""Data and model loading shared by the measurement commands (`sit lt`, `sit likelihood`,
`sit pathlength`, `sit sweep`): embedded datasets or .npz files as [-1, 1] tensors, batches on
the device, and a continuous-time model as a prediction function in paper time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sit.config import ConfigError, field_error


def load_eval_data(spec: str, *, image_size: int | None = None, split: str = "heldout") -> tuple[Tensor, Tensor | None]:
    """Data for likelihood, L_t, path length and sweeps: (x (N, C, H, W) float32, labels or None).

    spec: an embedded dataset name ('digits', 'mnist_5k', optionally ':train', ':heldout',
    ':all'; images in [-1, 1] resized/padded to ``image_size``), or an .npz file with either
    uint8 images ``arr_0`` (N, H, W, C) (mapped to [-1, 1]) or float arrays (N, C, H, W)
    (used as they are, e.g. latents), and labels in ``arr_1`` or ``labels`` when present, or a
    ``sit extract`` folder (its scaled latents: one posterior draw per image, seed 0, no flip)."""
    name, _, sp = spec.partition(":")
    from sit.data.embedded import EMBEDDED_DATASETS, load_embedded

    if name in EMBEDDED_DATASETS:
        x, y = load_embedded(name, split=sp or split, image_size=image_size)
        return x.float(), y.long()
    p = Path(spec)
    if p.is_dir() and (p / "index.json").is_file():
        return load_extracted(p)
    if not p.exists():
        raise field_error(FileNotFoundError,
            f"{{.data}} {spec!r}: neither an embedded dataset {list(EMBEDDED_DATASETS)} nor an existing .npz file"
        )
    if p.suffix != ".npz":
        raise ValueError(f"unknown data file type {p.suffix!r}; expected one of ['.npz'] or {list(EMBEDDED_DATASETS)}")
    with np.load(p) as z:
        key = "arr_0" if "arr_0" in z else ("latents" if "latents" in z else None)
        if key is None:
            raise ValueError(f"{p} holds neither 'arr_0' nor 'latents' (keys: {sorted(z.keys())})")
        a = z[key]
        lab = z["arr_1"] if "arr_1" in z else (z["labels"] if "labels" in z else None)
    if a.ndim != 4:
        layout = "uint8 images must be (N, H, W, C)" if a.dtype == np.uint8 else "float data must be (N, C, H, W)"
        raise ValueError(f"{p}: {layout}; got shape {a.shape}")
    if a.dtype == np.uint8:
        x = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    else:
        x = torch.from_numpy(np.asarray(a, dtype=np.float32))
    y = torch.from_numpy(np.asarray(lab)).long() if lab is not None else None
    return x, y


def match_model_input(x: Tensor, net) -> Tensor:
    """Grey images for a grey model; RGB images of equal channels made grey for a 1-channel model."""
    C = int(net.in_channels)
    if x.shape[1] == C:
        return x
    if C == 1 and x.shape[1] == 3:
        return x.mean(1, keepdim=True)
    raise ValueError(f"data has {x.shape[1]} channels but the model expects {C}")


def default_data_spec(net, split: str = "heldout") -> str:
    """The embedded dataset a pixel-space demo model was trained on, guessed from its size."""
    C, H = int(net.in_channels), int(net.config.input_size)
    if C != 1:
        raise ConfigError("", "data", f"is needed for a {C}-channel model: an .npz file of the images or latents it was trained on")
    return ("digits" if H <= 8 else "mnist_5k") + f":{split}"


def load_eval_model(ckpt, *, weights: str = "ema", device: str | None = None, precision: str = "fp32"):
    """(net, meta (`sit.checkpoints.RunMeta`), model_fn (prediction in paper time), path, device) for
    evaluation commands; the checkpoint is read through `sit.checkpoints.load`."""
    from sit import checkpoints, dist
    from sit.generate.glue import default_device, prepare_network
    from sit.network_sampler import prediction_fn
    from sit.paths import get_path

    dev = dist.init(default_device(device))
    net, meta = checkpoints.load(ckpt, weights=weights, log=dist.eprint0)
    net = prepare_network(net, precision, device=dev)
    if meta.time_input != "continuous":
        raise ValueError(f"{ckpt} is a discrete-time (DiT/DDPM) checkpoint; this command needs a continuous-time SiT model")
    model_fn = prediction_fn(net, meta, precision)  # the seam's rule (sit.network_sampler)
    return net, meta, model_fn, get_path(meta.path), dev


def eval_batches(x: Tensor, y: Tensor | None, batch_size: int, device, conditional: bool = True) -> list:
    """(x*, y) pairs on the device; y is the null label (None) when unconditional or unlabelled."""
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i: i + batch_size].to(device)
        yb = y[i: i + batch_size].to(device) if (conditional and y is not None) else None
        out.append((xb, yb))
    return out


EXTRACT_MAX_ITEMS = 10_000   # latents read from a `sit extract` folder for a measurement, at most


def is_extract_folder(spec: str | None) -> bool:
    return spec is not None and Path(spec).is_dir() and (Path(spec) / "index.json").is_file()


def load_extracted(root, max_items: int = EXTRACT_MAX_ITEMS, space=None) -> tuple[Tensor, Tensor]:
    """Scaled latents (N, C, h, w) and labels of a `sit extract` folder: one posterior draw per
    image (seed 0, unflipped), evenly spaced over the folder when it holds more than ``max_items``;
    in the latent space ``space`` (`sit.vae.LatentSpace`; None: the folder's own)."""
    from sit.data.latents import LatentShardDataset

    ds = LatentShardDataset(root, flip=False, sample=True, seed=0, space=space)
    idx = np.unique(np.linspace(0, len(ds) - 1, min(max_items, len(ds))).round().astype(np.int64))
    items = [ds[int(i)] for i in idx]
    return torch.stack([a for a, _ in items]), torch.tensor([b for _, b in items], dtype=torch.long)
