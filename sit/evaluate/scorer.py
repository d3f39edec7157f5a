"""The evaluation seam: a ``Scorer`` turns images into features, and features into typed ``Scores``.

Every quality number of sit (``sit eval``, ``sit sweep``, ``sit study``, the quality report of
``sit train``) goes through one of the scorers in ``sit.evaluate.scorers`` (one module each):

  ``inception``   Inception-v3 (ADM evaluator): FID, sFID, IS, precision / recall
  ``classifier``  the small digit CNN of ``sit.evaluate.classifier``: classifier FD, P/R, accuracy
  ``dinov2``      FD-DINOv2 (Stein et al. 2023) from a local ``Dinov2Model`` folder
  ``pixel``       the Fréchet distance of raw pixel values in [0, 1] (tiny images only)

A scorer has a ``name``, an ``identity()`` (what its features depend on: the sha256 of its weights
and the version of its preprocessing), ``features(images)`` -> dict of float64 arrays (N, D), and
``scores(real, fake, ...)`` -> ``Scores``. Its ``fd_key`` names the feature array whose Fréchet
distance is its headline number.

The features of a reference set are computed once per (images, scorer identity) and cached by
``reference_features`` (``sit.evaluate.refstats``: sha256-verified on read, rebuilt with a message
when an entry is corrupt).

Must not import: ``sit.evaluate.scorers`` (the table imports this seam), ``sit.train``,
``sit.generate``, ``sit.commands``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np


@dataclass(frozen=True)
class Scores:
    """What a scorer measured. ``fd`` is the Fréchet distance in the scorer's feature space (eq. of
    ``sit.evaluate.metrics.frechet_distance``); the others are None where the scorer (or the
    metrics asked for) does not give them. ``extra`` holds scorer-specific numbers and notes."""

    scorer: str
    fd: float | None = None
    sfd: float | None = None                 # Inception: sFID (spatial features)
    inception_score: float | None = None
    precision: float | None = None
    recall: float | None = None
    accuracy: float | None = None            # share of samples classified as their label
    num_real: int | None = None
    num_fake: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("fd", "sfd", "inception_score", "precision", "recall", "accuracy"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, float):
                object.__setattr__(self, name, float(v))

    def as_dict(self) -> dict:
        """Plain JSON-able dict (None kept), ``extra`` merged at the top level."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return d | dict(self.extra)


class Scorer(Protocol):
    """What every scorer offers (see the module docstring)."""

    name: str
    fd_key: str

    def identity(self) -> str:
        """A string that changes whenever the features of the same images would change."""

    def features(self, images) -> dict:
        """dict name -> float64 array (N, D) of uint8 (N, H, W, C) images (or float (N, C, H, W)
        in [-1, 1], quantised first)."""

    def scores(self, real: dict, fake: dict, **kw) -> Scores:
        """Scores of the ``fake`` features against the ``real`` ones."""

    # optional: ``feature_dims(images) -> {name: D}``, the width of the features ``images`` get,
    # which a cached reference entry must have (else it is rebuilt); ``reference(name, images,
    # cache_dir=, log=)``, the scorer's own cached entry (used by ``reference_features`` instead)


def fd_of(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N1, D), (N2, D) (ADM's
    arithmetic; ``sit.evaluate.metrics.fid_from_features``)."""
    from sit.evaluate.metrics import fid_from_features

    return fid_from_features(real, fake)


def shifted_fd(feats: np.ndarray, shift: np.ndarray) -> float:
    """Closed form of the Fréchet distance between a feature set and the same set shifted by the
    vector ``shift``: the covariances are equal, so d^2 = |shift|^2 (a check of any scorer's
    Fréchet arithmetic)."""
    del feats
    s = np.asarray(shift, dtype=np.float64)
    return float(s @ s)


def reference_features(scorer: Scorer, name: str, images, *, cache_dir=None,
                       log: Callable[[str], None] = print) -> dict:
    """The ``scorer`` features of the reference ``images`` (uint8 (N, H, W, C)), computed once and
    cached under ``$SIT_CACHE/refstats`` keyed by the images and ``scorer.identity()``; an entry
    is verified (sha256 of its arrays) on read and rebuilt with a message when it is corrupt.
    ``cache_dir=False``: no cache. A scorer whose entries have a layout of their own (Inception's
    ``reference``, the layout `sit eval` has always written) is asked for that entry, so one
    reference set has one entry whichever caller asks."""
    from sit.evaluate.refstats import cached_features

    images = np.asarray(images)
    if hasattr(scorer, "reference"):
        return scorer.reference(name, images, cache_dir=cache_dir, log=log)
    dims = scorer.feature_dims(images) if hasattr(scorer, "feature_dims") else None
    return cached_features(f"{scorer.name}-{name}", images, scorer.identity(), scorer.features,
                           cache_dir=cache_dir, log=log, dims=dims)


def finite_or_none(v) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def evaluate_fd(name: str, cls, request) -> dict:
    """`sit eval`'s part for a scorer row without its own ``evaluate`` (``sit.evaluate.scorers``
    hands it the row's name and Scorer class ``cls``): the Fréchet distance of the scorer's
    ``fd_key`` features of the samples against REF's images (an embedded REF's features cached by
    ``reference_features``), as ``fd_<name>``."""
    scorer = cls.from_request(request) if hasattr(cls, "from_request") else cls()
    ref_set = request.ref_set(True)
    if ref_set.images is None:
        raise ValueError(f"the {name} scorer needs reference images, but REF {request.ref!r} holds only statistics")
    if request.ref_embedded:
        real = reference_features(scorer, request.ref_embedded, ref_set.images, log=request.log)
    else:
        real = scorer.features(ref_set.images)
    fake = scorer.features(request.sample_set.images)
    k = scorer.fd_key
    if real[k].shape[1:] != fake[k].shape[1:]:
        raise ValueError(f"the {name} features of REF and SAMPLES differ in shape: {real[k].shape[1:]} and "
                         f"{fake[k].shape[1:]} (images of different sizes?)")
    s = scorer.scores(real, fake)
    return {f"fd_{name}": s.fd, f"{name}_num_samples": s.num_fake, f"{name}_num_reference": s.num_real}
