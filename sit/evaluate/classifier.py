"""Quick quality numbers for small grey-scale datasets (the embedded digits / MNIST demo).

Inception-v3 features mean little on 8x8 or 28x28 grey digits, so the demo measures samples in the
feature space of a small CNN classifier that sit trains itself on the real data: deterministic
(fixed seed, fixed number of epochs, single pass order from a seeded generator), a few seconds on
CPU, and cached on disk keyed by a hash of the training data, the architecture version and the
seed (a safetensors file carrying the sha256 of its weights, verified on every read; a corrupt
entry is retrained with a message). Metrics, with the ADM definitions of ``sit.evaluate.metrics``:

- ``fid``: Fréchet distance between Gaussians fitted to penultimate-layer features (64-d) of the
  real and the generated images;
- ``precision`` / ``recall``: improved precision and recall (k = 3) in the same space;
- ``accuracy``: the share of class-conditional samples the classifier assigns to the class they
  were generated for (rises with the guidance scale);
- ``classifier_test_accuracy``: the classifier's accuracy on a held-out part of the real data
  (how far its other numbers can be trusted).

These numbers are comparable only between runs that use the same classifier (same real data and
seed); they are not Inception FIDs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from sit.evaluate.metrics import fid_from_features, precision_recall

ARCH_VERSION = "cnn-v1"  # bump when the network or its training changes (invalidates caches)
FEATURE_DIM = 64


class DigitClassifier(nn.Module):
    """Small CNN for (B, 1, H, W) images in [-1, 1], any H, W >= 4. ``features`` gives the
    penultimate (FEATURE_DIM) activations used for FID / precision / recall."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8, width: int = 16):
        super().__init__()
        self.num_classes = num_classes
        # 28x28 / 32x32 inputs start with a stride-2 conv so training stays a few seconds on a CPU
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=2 if image_size >= 16 else 1, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * width * 4, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h))
        h = F.relu(self.conv3(h))
        h = F.adaptive_avg_pool2d(h, 2).flatten(1)  # (B, 4 * width * 4): size-independent
        return F.relu(self.fc(h))  # (B, FEATURE_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_classes) logits


def _data_hash(x: torch.Tensor, y: torch.Tensor, seed: int, extra: str = "") -> str:
    h = hashlib.sha256()
    h.update(f"{ARCH_VERSION}|{seed}|{tuple(x.shape)}|{extra}".encode())
    h.update(x.detach().cpu().to(torch.float32).contiguous().numpy().tobytes())
    h.update(y.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$SIT_CACHE/classifier`` or ``~/.cache/sit/classifier``."""
    root = os.environ.get("SIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sit")
    return Path(root) / "classifier"


def train_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 3e-3,
    progress: bool = False,
) -> DigitClassifier:
    """Train a DigitClassifier on x (N, 1, H, W) in [-1, 1], y (N,) int. Deterministic given the
    data and seed (seeded init and shuffling, no dropout, one CPU thread so the float summation
    order does not depend on the thread count). Default epochs: enough for about 300 optimizer
    steps, at least 3 and at most 20 epochs (a few seconds for 8x8 digits or 5,000 28x28 MNIST)."""
    x = x.detach().cpu().float()
    y = y.detach().cpu().long()
    k = int(num_classes if num_classes is not None else int(y.max()) + 1)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitClassifier(num_classes=k, in_channels=x.shape[1], image_size=min(x.shape[-2:]))
    n = x.shape[0]
    steps_per_epoch = max(1, -(-n // batch_size))
    if epochs is None:
        epochs = int(min(20, max(3, round(300 / steps_per_epoch))))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    net.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from tqdm.auto import tqdm

        for _ in tqdm(range(epochs), desc="classifier", unit="epoch", disable=not progress):
            perm = torch.randperm(n, generator=g)
            for i in range(0, n, batch_size):
                idx = perm[i : i + batch_size]
                loss = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def _weights_digest(state: dict) -> str:
    """sha256 of every tensor of a state dict (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


def read_cached_classifier(path: Path, key: str, net: DigitClassifier) -> DigitClassifier:
    """Load the cache entry ``path`` into ``net`` after verifying it: its stored key must be
    ``key`` and the sha256 of its weights the one stored with them (a flipped bit in the weights
    would otherwise silently change every classifier FID). ValueError saying what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        data = path.read_bytes()
        state = load(data)
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError, ValueError, RuntimeError) as e:
        raise ValueError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if meta.get("key") != key:
        raise ValueError(f"key {meta.get('key')!r} instead of {key!r}")
    if _weights_digest(state) != meta.get("sha256"):
        raise ValueError("sha256 of the weights does not match the one stored with them")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"weights do not fit the network ({str(e).splitlines()[0]})") from e
    return net.eval()


def get_classifier(
    x: torch.Tensor, y: torch.Tensor, *, num_classes: int | None = None, seed: int = 0, cache_dir=None, progress: bool = False,
    log=_stderr,
) -> DigitClassifier:
    """The classifier trained on (x, y) with ``seed``: loaded from the cache when a verified entry
    is there, otherwise trained and saved there (``cache_dir`` default: ``default_cache_dir()``;
    ``cache_dir=False`` disables caching). An entry is a safetensors file
    ``<ARCH_VERSION>-<key>.safetensors`` whose metadata holds the key and the sha256 of the
    weights; one that fails the check is retrained and rewritten, with a message to ``log``."""
    k = int(num_classes if num_classes is not None else int(y.max()) + 1)
    key = _data_hash(x, y, seed, extra=f"k={k}")
    path = None
    if cache_dir is not False:
        path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = path / f"{ARCH_VERSION}-{key}.safetensors"
        if path.is_file():
            with torch.random.fork_rng(devices=[]):  # a cached read leaves the global RNG as training would
                net = DigitClassifier(num_classes=k, in_channels=x.shape[1], image_size=min(x.shape[-2:]))
            try:
                return read_cached_classifier(path, key, net)
            except ValueError as e:
                log(f"classifier cache entry {path} is corrupt ({e}); retraining it")
    net = train_classifier(x, y, num_classes=k, seed=seed, progress=progress)
    if path is not None:
        from safetensors.torch import save

        from sit.io import write_bytes_atomic

        state = {n: v.detach().cpu().contiguous() for n, v in net.state_dict().items()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, save(state, metadata={"key": key, "sha256": _weights_digest(state),
                                                           "arch": ARCH_VERSION}))
        except OSError as e:
            log(f"could not write the classifier cache {path} ({e}); it will be retrained next time")
    return net


@torch.no_grad()
def _predict(net: DigitClassifier, x: torch.Tensor, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    feats, logits = [], []
    for i in range(0, x.shape[0], batch_size):
        f = net.features(x[i : i + batch_size].detach().cpu().float())
        feats.append(f)
        logits.append(net.head(f))
    return torch.cat(feats).double(), torch.cat(logits)


def _checked_inputs(real_x, real_y, fake_x, fake_y, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`quick_quality`'s inputs checked (one ValueError naming the problem): (N, C, H, W) images of one
    shape, labels of their lengths, more than ``k`` of each, finite samples; the labels as long tensors."""
    for name, t in (("real_x", real_x), ("fake_x", fake_x)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            raise ValueError(f"{name} must be a (N, C, H, W) tensor; got {getattr(t, 'shape', type(t))}")
    if real_x.shape[1:] != fake_x.shape[1:]:
        raise ValueError(f"real and generated images differ in shape: {tuple(real_x.shape[1:])} vs {tuple(fake_x.shape[1:])}")
    real_y = torch.as_tensor(real_y).long().cpu()
    if real_y.shape != (real_x.shape[0],):
        raise ValueError(f"real_y must have shape ({real_x.shape[0]},); got {tuple(real_y.shape)}")
    if fake_y is not None:
        fake_y = torch.as_tensor(fake_y).long().cpu()
        if fake_y.shape != (fake_x.shape[0],):
            raise ValueError(f"fake_y must have shape ({fake_x.shape[0]},); got {tuple(fake_y.shape)}")
    if fake_x.shape[0] <= k or real_x.shape[0] <= k:
        raise ValueError(f"need more than k={k} real and generated images; got {real_x.shape[0]} and {fake_x.shape[0]}")
    bad = int((~torch.isfinite(fake_x.reshape(fake_x.shape[0], -1))).any(dim=1).sum())
    if bad:
        raise ValueError(f"{bad} of {fake_x.shape[0]} generated images contain NaN or inf (a diverged model or sampler?)")
    return real_y, fake_y


def quick_quality(
    real_x: torch.Tensor,
    real_y: torch.Tensor,
    fake_x: torch.Tensor,
    fake_y: torch.Tensor | None,
    *,
    seed: int = 0,
    cache_dir=None,
    heldout_fraction: float = 0.2,
    k: int = 3,
    progress: bool = False,
) -> dict:
    """Quality of generated images ``fake_x`` against real ones, in a small classifier's feature
    space (see the module docstring).

    real_x, fake_x: float (N, 1, H, W) in [-1, 1] with the same H, W (e.g. 8, 28, 32);
    real_y (N_real,) int labels; fake_y (N_fake,) the classes the samples were generated for, or
    None (unconditional: ``accuracy`` is None). The classifier is trained (or loaded from the
    cache) on a seeded ``1 - heldout_fraction`` share of the real set and tested on the rest.
    FID / precision / recall compare all real images with all samples.

    ``progress``: a tqdm bar over the classifier's training epochs (when it is not cached).

    Returns dict(accuracy, fid, precision, recall, classifier_test_accuracy, num_real, num_fake)."""
    real_y, fake_y = _checked_inputs(real_x, real_y, fake_x, fake_y, k)
    num_classes = int(max(int(real_y.max()), int(fake_y.max()) if fake_y is not None else 0)) + 1
    real_x = real_x.detach().cpu().float()
    fake_x = fake_x.detach().cpu().float()

    # deterministic train / held-out split of the real set for the classifier
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(real_x.shape[0], generator=g)
    n_held = int(round(heldout_fraction * real_x.shape[0]))
    train_idx, held_idx = perm[n_held:], perm[:n_held]
    net = get_classifier(real_x[train_idx], real_y[train_idx], num_classes=num_classes, seed=seed, cache_dir=cache_dir,
                         progress=progress)

    real_f, real_logits = _predict(net, real_x)
    fake_f, fake_logits = _predict(net, fake_x)
    test_acc = None
    if n_held > 0:
        test_acc = float((real_logits[held_idx].argmax(1) == real_y[held_idx]).float().mean())
    acc = None if fake_y is None else float((fake_logits.argmax(1) == fake_y).float().mean())
    precision, recall = precision_recall(real_f, fake_f, k=k, dtype=torch.float64)
    return dict(
        accuracy=acc,
        fid=fid_from_features(real_f, fake_f),
        precision=precision,
        recall=recall,
        classifier_test_accuracy=test_acc,
        num_real=int(real_x.shape[0]),
        num_fake=int(fake_x.shape[0]),
    )
