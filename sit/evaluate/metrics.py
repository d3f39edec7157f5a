"""Sample-quality metrics with the definitions of the ADM evaluator (Dhariwal & Nichol 2021).

The SiT paper's FID / sFID / IS / precision / recall (Table 4, Fig. 5) come from the ADM
TensorFlow evaluator; this module re-implements its arithmetic on feature arrays, independent of
which network produced the features (Inception-v3 in ``sit.evaluate.inception``, a small
classifier in ``sit.evaluate.classifier``):

- FID: Fréchet distance between Gaussians fitted to pool3 features (2048-d), mean and covariance
  in float64, matrix square root by ``scipy.linalg.sqrtm``; a non-finite square root is retried
  with 1e-6 added to both covariance diagonals, and a complex result is accepted (real part
  taken) only when the imaginary part of its diagonal is below 1e-3, as ADM does.
- sFID: the same distance on spatial features (first 7 channels of ``mixed_6/conv``, 17x17x7
  flattened in H, W, C order, 2023-d).
- IS: exp(E_x KL(p(y|x) || p(y))) from softmax over the 1008-way logits (pool3 times the
  softmax weight, without bias), on consecutive splits of 5,000 samples, mean over splits.
- Improved precision / recall (Kynkäänniemi et al. 2019): a point is inside a set's manifold if
  its squared distance to some member is <= that member's squared distance to its k-th (k = 3)
  nearest neighbour in its own set. Precision = share of samples inside the reference manifold,
  recall = share of reference points inside the sample manifold.

Also: readers for ADM reference batches (``.npz`` with ``arr_0`` and optionally ``mu``, ``sigma``,
``mu_s``, ``sigma_s``) and for image sets (npz ``arr_0`` uint8 NxHxWx3, or a folder of PNG/JPG).
"""

from __future__ import annotations

import math
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


# --------------------------------------------------------------------------------------------
# Fréchet distance (FID, sFID)


def feature_statistics(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), both float64 (as ADM).

    N >= 2 is needed for a covariance."""
    f = _as_numpy64(feats)
    if f.ndim != 2:
        raise ValueError(f"features must have shape (N, D); got {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance; got {f.shape[0]}")
    mu = f.mean(axis=0)
    sigma = np.cov(f, rowvar=False)
    return mu, np.atleast_2d(sigma)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet (2-Wasserstein) distance² between N(mu1, sigma1) and N(mu2, sigma2):

        d² = |mu1 - mu2|² + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})

    Shapes: mu (D,), sigma (D, D); computed in float64. As the ADM evaluator: if the square root
    is not finite (near-singular product), ``eps`` is added to both diagonals and it is recomputed
    (with a warning); a complex square root is accepted only if the imaginary part of its
    diagonal is <= 1e-3 (then its real part is used), otherwise ValueError."""
    mu1 = np.atleast_1d(_as_numpy64(mu1))
    mu2 = np.atleast_1d(_as_numpy64(mu2))
    sigma1 = np.atleast_2d(_as_numpy64(sigma1))
    sigma2 = np.atleast_2d(_as_numpy64(sigma2))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different shapes {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be ({d}, {d}); got {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # ADM calls sqrtm(..., disp=False): no singularity message
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"Fréchet distance: singular covariance product; adding {eps} to the diagonal of both covariances",
            stacklevel=2,
        )
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"Fréchet distance: imaginary component {m} in the covariance square root")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(feats1, feats2, method: str = "auto") -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (N1, D) and (N2, D).

    ``method``: ``"sqrtm"`` (``feature_statistics`` + ``frechet_distance``, the ADM route),
    ``"svd"``, or ``"auto"`` (``"svd"`` when a covariance is singular, min(N1, N2) <= D, else
    ``"sqrtm"``). The svd route is exact for any N: with centred features A (N1, D), B (N2, D),
    S1 = AᵀA/(N1-1), S2 = BᵀB/(N2-1), the nonzero eigenvalues of S1 S2 are the squared singular
    values of A Bᵀ / sqrt((N1-1)(N2-1)), so tr (S1 S2)^{1/2} = ||A Bᵀ||_* / sqrt((N1-1)(N2-1)).
    It avoids the ill-conditioned square root of a singular product (no eps offset) and costs
    O(N1 N2 D) instead of O(D³), so small sets (tests, quick checks) are fast."""
    if method not in ("auto", "sqrtm", "svd"):
        raise ValueError(f"unknown method {method!r}; expected one of ['auto', 'sqrtm', 'svd']")
    f1, f2 = _as_numpy64(feats1), _as_numpy64(feats2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must be (N1, D) and (N2, D); got {f1.shape} and {f2.shape}")
    n1, n2, d = f1.shape[0], f2.shape[0], f1.shape[1]
    if method == "auto":
        method = "svd" if min(n1, n2) <= d else "sqrtm"
    if method == "sqrtm":
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    if min(n1, n2) < 2:
        raise ValueError(f"need at least 2 feature vectors per set for a covariance; got {n1} and {n2}")
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a, b = f1 - mu1, f2 - mu2
    tr1 = np.sum(a * a) / (n1 - 1)
    tr2 = np.sum(b * b) / (n2 - 1)
    tr_covmean = np.linalg.svd(a @ b.T, compute_uv=False).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + tr1 + tr2 - 2.0 * tr_covmean)


RECOMMENDED_FID_SAMPLES = 10_000   # below this an Inception FID is noticeably biased
PAPER_FID_SAMPLES = 50_000         # what the SiT / ADM tables use
RECOMMENDED_CLASSIFIER_SAMPLES = 1_000  # the 64-d classifier space of sit.evaluate.classifier


def fid_sample_note(n: int, dim: int, *, recommended: int, paper: int | None = None, name: str = "FID") -> str | None:
    """How far a Fréchet distance on ``n`` samples (the smaller set) in ``dim`` dimensions can be
    trusted: None when n >= ``recommended``; otherwise one line saying why it is unreliable. n < 2 is
    refused (no covariance). With n <= dim the covariance has rank <= n - 1 < dim; in any case the
    estimate is biased upward, roughly like 1/n (Chong & Forsyth 2020), so FIDs on different n do
    not compare."""
    if n < 2:
        raise ValueError(f"{name} needs at least 2 images per set for a covariance; got {n}")
    if n >= recommended:
        return None
    rank = f"the covariance is rank-deficient (N = {n} <= feature dimension {dim}, rank <= {n - 1}) and " if n <= dim else ""
    target = f"use >= {recommended:,} samples" + (f" ({paper:,} for paper numbers)" if paper else "")
    return (f"{name} on {n} images is unreliable: {rank}it is biased upward roughly like 1/N, so it only compares "
            f"with {name}s on the same N; {target}")


# --------------------------------------------------------------------------------------------
# Inception Score


def inception_score(logits, split_size: int = 5000) -> float:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) of logits (N, K), as the ADM evaluator:
    p(y|x) = softmax(logits) (for Inception: pool3 @ W_softmax, no bias, K = 1008), consecutive
    splits of ``split_size`` rows (the last one may be shorter), p(y) the mean within a split,
    the score the mean over splits. With N <= split_size there is a single split (warned when
    N < split_size, since the paper's numbers use 10 splits of 5,000).

    Range [1, K]: 1 for identical predictions, K for confident predictions spread evenly over K
    classes. Computed in float64 with log-softmax, so exactly-zero probabilities are finite."""
    z = torch.as_tensor(_as_numpy64(logits))
    if z.ndim != 2 or z.shape[0] < 1:
        raise ValueError(f"logits must have shape (N, K) with N >= 1; got {tuple(z.shape)}")
    if split_size < 1:
        raise ValueError(f"split_size must be >= 1 (got {split_size})")
    n = z.shape[0]
    if n < split_size:
        warnings.warn(
            f"Inception Score on {n} samples: one split of {n} instead of splits of {split_size}",
            stacklevel=2,
        )
    logp = torch.log_softmax(z, dim=1)
    scores = []
    for i in range(0, n, split_size):
        lp = logp[i : i + split_size]  # (n_split, K)
        p = lp.exp()
        log_py = torch.logsumexp(lp, dim=0) - math.log(lp.shape[0])  # log mean_x p(y|x)
        kl = (p * (lp - log_py)).sum(dim=1).mean()
        scores.append(math.exp(float(kl)))
    return float(np.mean(scores))


def inception_score_splits(n: int, split_size: int = 5000) -> int:
    """Number of splits ``inception_score`` uses for n samples."""
    return max(1, math.ceil(n / split_size))


# --------------------------------------------------------------------------------------------
# Improved precision / recall (ADM's ManifoldEstimator)


def _pairwise_sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """max(|a_i|² - 2 a_i·b_j + |b_j|², 0), shape (len(a), len(b)) (same form as ADM)."""
    na = (a * a).sum(dim=1, keepdim=True)
    nb = (b * b).sum(dim=1, keepdim=True).T
    return (na - 2.0 * (a @ b.T) + nb).clamp_min_(0.0)


def _bar(it, desc: str, progress: bool):
    """tqdm (rate, ETA) over ``it`` when ``progress`` and more than one step, else ``it``."""
    it = list(it)
    if not progress or len(it) < 2:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit="block")


def manifold_radii(feats, k: int = 3, *, batch_size: int = 10000, dtype=torch.float32, device=None,
                   progress: bool = False) -> torch.Tensor:
    """Squared distance of each point (N, D) to its k-th nearest neighbour within the set,
    self excluded (index k of the sorted row, whose index 0 is the point itself). Shape (N,)."""
    f = torch.as_tensor(np.asarray(feats) if not isinstance(feats, torch.Tensor) else feats)
    f = f.to(device=device, dtype=dtype)
    n = f.shape[0]
    if n <= k:
        raise ValueError(f"need more than k={k} points for k-nearest-neighbour radii; got {n}")
    radii = torch.empty(n, dtype=dtype, device=f.device)
    for i in _bar(range(0, n, batch_size), "P/R radii", progress):
        rows = f[i : i + batch_size]
        d = torch.cat([_pairwise_sq_dists(rows, f[j : j + batch_size]) for j in range(0, n, batch_size)], dim=1)
        radii[i : i + batch_size] = torch.kthvalue(d, k + 1, dim=1).values
    return radii


def precision_recall(
    real_feats, fake_feats, k: int = 3, *, batch_size: int = 10000, dtype=torch.float32, device=None, progress: bool = False
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN radii, as ADM.

    real_feats (N1, D) are the reference, fake_feats (N2, D) the samples. Returns
    (precision, recall): precision = share of samples within the reference manifold, recall =
    share of reference points within the sample manifold. Distances are computed in batches of
    ``batch_size`` rows (torch, ``dtype`` float32 as ADM by default) on ``device``; ``progress``
    shows tqdm bars (rate, ETA) over the row blocks."""
    r = torch.as_tensor(np.asarray(real_feats) if not isinstance(real_feats, torch.Tensor) else real_feats)
    g = torch.as_tensor(np.asarray(fake_feats) if not isinstance(fake_feats, torch.Tensor) else fake_feats)
    r = r.to(device=device, dtype=dtype)
    g = g.to(device=device, dtype=dtype)
    if r.ndim != 2 or g.ndim != 2 or r.shape[1] != g.shape[1]:
        raise ValueError(f"features must be (N1, D) and (N2, D); got {tuple(r.shape)} and {tuple(g.shape)}")
    radii_r = manifold_radii(r, k, batch_size=batch_size, dtype=dtype, device=device, progress=progress)
    radii_g = manifold_radii(g, k, batch_size=batch_size, dtype=dtype, device=device, progress=progress)
    real_in_fake = torch.zeros(r.shape[0], dtype=torch.bool, device=r.device)
    fake_in_real = torch.zeros(g.shape[0], dtype=torch.bool, device=r.device)
    for i in _bar(range(0, r.shape[0], batch_size), "P/R", progress):
        for j in range(0, g.shape[0], batch_size):
            d = _pairwise_sq_dists(r[i : i + batch_size], g[j : j + batch_size])  # (bi, bj)
            real_in_fake[i : i + batch_size] |= (d <= radii_g[j : j + batch_size][None, :]).any(dim=1)
            fake_in_real[j : j + batch_size] |= (d <= radii_r[i : i + batch_size][:, None]).any(dim=0)
    return float(fake_in_real.float().mean()), float(real_in_fake.float().mean())


# --------------------------------------------------------------------------------------------
# Reading image sets and ADM reference batches


@dataclass
class ImageSet:
    """Images uint8 (N, H, W, C) with optional labels (N,) and, for an ADM reference batch, its
    precomputed Inception statistics (``mu``/``sigma`` pool3, ``mu_s``/``sigma_s`` spatial)."""

    images: np.ndarray | None
    labels: np.ndarray | None = None
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    source: str = ""

    def __len__(self) -> int:
        return 0 if self.images is None else len(self.images)


class NpzImages:
    """``arr_0`` of an uncompressed or compressed ``.npz``, read in slices without loading the
    whole array (a 50K x 256 x 256 x 3 batch is 9.8 GB), as ADM's ``NpzArrayReader`` does.
    Supports ``len``, ``shape``, ``dtype``, ``x[a:b]`` (sequential slices are cheapest: the
    member stream is kept open between calls) and ``np.asarray(x)``."""

    def __init__(self, path, key: str = "arr_0"):
        self.path, self.key = str(path), key
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = zf.namelist()
            if f"{key}.npy" not in names:
                raise ImageSetError(f"{self.path!r} has no {key!r} (members {names})")
            self._open()
        except ImageSetError:
            raise
        except _READ_ERRORS as e:
            raise npz_error(self.path, e) from e
        self.shape, self.dtype = self._shape, self._dtype

    def _open(self):
        self._zf = zipfile.ZipFile(self.path)
        self._f = self._zf.open(f"{self.key}.npy")
        version = np.lib.format.read_magic(self._f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(self._f)
        if fortran:
            raise ImageSetError(f"{self.path!r}: Fortran-ordered {self.key} is not supported")
        self._shape, self._dtype, self._pos = tuple(shape), np.dtype(dtype), 0
        self._row = int(np.prod(shape[1:], dtype=np.int64)) * self._dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx):
        if not isinstance(idx, slice) or idx.step not in (None, 1):
            return np.asarray(self)[idx]
        start, stop, _ = idx.indices(len(self))
        stop = max(start, stop)
        try:
            if start < self._pos:
                self.close()
                self._open()
            if start > self._pos:
                self._f.read((start - self._pos) * self._row)
            buf = self._f.read((stop - start) * self._row)
        except ImageSetError:
            raise
        except _READ_ERRORS as e:  # e.g. "Bad CRC-32" at the end of a bit-flipped member
            raise npz_error(self.path, e) from e
        if len(buf) != (stop - start) * self._row:
            raise npz_error(self.path, EOFError(f"{self.key} ends after {self._pos + len(buf) // max(1, self._row)} of {len(self)} rows"))
        self._pos = stop
        return np.frombuffer(buf, dtype=self.dtype).reshape((stop - start,) + self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        a = self[0 : len(self)]
        return a if dtype is None else a.astype(dtype)

    def close(self):
        self._f.close()
        self._zf.close()


def load_image_set(path, *, with_images: bool = True, lazy: bool = False) -> ImageSet:
    """Read an image set: an ``.npz`` (ADM format: ``arr_0`` uint8 (N, H, W, 3), optional
    ``arr_1`` labels, optional reference statistics ``mu``, ``sigma``, ``mu_s``, ``sigma_s``)
    or a folder of PNG/JPG files (sorted by name, converted to RGB). ``with_images=False`` skips
    loading ``arr_0`` when precomputed statistics are enough; ``lazy=True`` returns an npz's
    ``arr_0`` as an ``NpzImages`` reader (sliced on demand) instead of an array."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"image set {str(p)!r} does not exist (expected an .npz file or an image folder)")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise ValueError(f"folder {str(p)!r} has no images with extensions {list(IMAGE_EXTS)}")
        from PIL import Image

        imgs = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        shapes = {im.shape for im in imgs}
        if len(shapes) != 1:
            raise ValueError(f"images in {str(p)!r} have different shapes {sorted(shapes)}; resize them first")
        return ImageSet(images=np.stack(imgs), source=str(p))
    if p.suffix != ".npz":
        raise ValueError(f"unknown image set format {p.suffix!r} for {str(p)!r}; expected one of ['.npz', a folder]")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            stats = {k: (z[k].astype(np.float64) if k in keys else None) for k in ("mu", "sigma", "mu_s", "sigma_s")}
            images = labels = None
            if with_images or stats["mu"] is None:
                if "arr_0" not in keys:
                    raise ImageSetError(f"{str(p)!r} has no 'arr_0' (keys {sorted(keys)}); expected ADM npz with arr_0 uint8 NxHxWx3")
                images = _check_images(NpzImages(p) if lazy else z["arr_0"], str(p))
            if "arr_1" in keys:
                labels = z["arr_1"]
    except ImageSetError:
        raise
    except _READ_ERRORS as e:
        raise npz_error(p, e) from e
    return ImageSet(images=images, labels=labels, source=str(p), **stats)


class ImageSetError(ValueError):
    """An image set that was read but is not what is expected (already a full message)."""


# what numpy / zipfile raise on an empty, truncated or corrupt .npz (ValueError: bad .npy header,
# "pickled data" for a file that is not a zip; EOFError: empty; BadZipFile: no zip directory, bad CRC)
_READ_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError, KeyError)


def npz_error(path, e: BaseException) -> ImageSetError:
    """One line saying whether ``path`` is empty, truncated or corrupt (and what it should be)."""
    if isinstance(e, ImageSetError):
        return e
    size = Path(path).stat().st_size if Path(path).exists() else 0
    if size == 0:
        what = "is empty (0 bytes)"
    elif isinstance(e, zipfile.BadZipFile) and "not a zip file" in str(e):
        what = f"is truncated or not an .npz at all ({size} bytes, no zip directory)"
    else:
        what = f"is corrupt or truncated ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return ImageSetError(f"image set {str(path)!r} {what}; expected an ADM .npz (arr_0 uint8 NxHxWx3): write or copy it again")


def _check_images(a, where: str):
    if len(a.shape) == 3:
        if isinstance(a, NpzImages):
            raise ImageSetError(f"{where}: lazily read images must be (N, H, W, C); got {a.shape}")
        a = a[..., None]
    if len(a.shape) != 4 or a.shape[-1] not in (1, 3):
        raise ImageSetError(f"{where}: images must be (N, H, W, 3) or (N, H, W, 1); got {a.shape}")
    if a.dtype != np.uint8:
        raise ImageSetError(f"{where}: images must be uint8 (0..255); got {a.dtype}")
    return a


def _as_numpy64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)
