"""`sit pathlength`: the path length C(v) = int_0^1 E|v(x_t, t)|^2 dt over a series of checkpoints
(paper Fig. 4), as CSV and PNG."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sit.commands._args import add_command, at_least, finish_command, option
from sit.commands.flags import add_record_arguments, flag_fields, given_values
from sit.generate.spec import SampleSpec

EXAMPLES = """\
examples:
  # every checkpoint of a training run (RUN/checkpoints/step-*), 10,000 points each as in the paper
  sit pathlength --ckpts runs/demo --out runs/demo/pathlength

  # two runs, one curve each against training step (Linear vs GVP, as Fig. 4)
  sit train --path linear --ckpt-every 200 --keep-last 6 --out runs/linear
  sit train --path gvp --ckpt-every 200 --keep-last 6 --out runs/gvp
  sit pathlength --ckpts runs/linear runs/gvp --num-points 2000 --out pl/

|v|^2 is summed over the dimensions of a sample (the paper's |.|^2). Every checkpoint sees the
same (t, x*, eps) draws (common random numbers), so differences between checkpoints are not
Monte-Carlo noise; the standard error of each estimate is reported too. The plot draws one
curve per run (a run directory, or RUN for RUN/checkpoints/step-N) against training step.
"""


@dataclass(frozen=True, kw_only=True)
class PathLengthOptions:
    """`sit pathlength`'s options besides --weights (`SampleSpec.weights`): its flags are these fields,
    checked when built, before a checkpoint is read."""

    ckpts: tuple[str, ...] = option(help="checkpoints, or run directories (all their checkpoints, by step)",
                                    metavar="PATH")
    precision: Literal["fp32", "bf16"] = option("fp32", "network precision")
    device: str | None = option(None, "cpu, cuda, cuda:1 ... (default: cuda if available)", metavar="DEVICE")
    data: str | None = option(None, "x* data: embedded name, .npz or a `sit extract` folder (default: the demo "
                              "dataset's training split)", metavar="NAME|NPZ|DIR")
    num_points: int = option(10_000, "Monte-Carlo points (default 10000 as the paper)", metavar="N")
    reduction: Literal["sum", "mean"] = option("sum", "|v|^2 summed (paper) or averaged over dims")
    unconditional: bool = option(False, "use the null label instead of the data's labels", switch=True)
    batch_size: int = option(256, "samples per batch", metavar="B")
    seed: int = option(0, "random seed")
    out: str = option(help="writes pathlength.csv and pathlength.png", metavar="DIR")

    def __post_init__(self):
        at_least(self, "num_points", 2)


def register(sub) -> None:
    p = add_command(sub, "pathlength", help="path length C(v) over checkpoints (Fig. 4): CSV + PNG", description=EXAMPLES)
    add_record_arguments(p, PathLengthOptions, ("ckpts",), keep_defaults=True)
    add_record_arguments(p, SampleSpec, ("weights",), keep_defaults=True)
    fields = tuple(f for f in flag_fields(PathLengthOptions) if f != "ckpts")
    add_record_arguments(p, PathLengthOptions, fields, keep_defaults=True)
    finish_command(p, run)


def expand_checkpoints(specs: list[str]) -> list[tuple[str, Path]]:
    """(run label, checkpoint) pairs: a run directory becomes all its checkpoints (ordered by step),
    labelled by the directory; a checkpoint given directly is labelled by its run directory
    (RUN/checkpoints/step-N -> RUN) or, outside a run, by its own name."""
    from sit import checkpoints

    out: list[tuple[str, Path]] = []
    for s in specs:
        p = Path(s)
        if not p.exists():
            raise FileNotFoundError(f"no checkpoint at {s!r}")
        if p.is_dir() and not (p / "config.json").is_file() and (p / "checkpoints").is_dir():
            cands = checkpoints.run_checkpoints(p)
            if not cands:
                raise FileNotFoundError(f"no checkpoint under {str(p / 'checkpoints')!r}")
            out.extend((str(p), c) for c in cands)
        else:
            out.append((str(checkpoints.run_dir_of(p)), p))
    return out


def _measure(opts: PathLengthOptions, weights: str, ck: Path, data_cache: dict) -> dict:
    """C(v) of one checkpoint (its ``weights``) as a CSV row."""
    import torch

    from sit import generate as S
    from sit.likelihood import path_length
    from sit.objectives import to_velocity

    net, meta, model_fn, path, dev = S.load_eval_model(ck, weights=weights, device=opts.device,
                                                       precision=opts.precision)
    spec = opts.data or S.default_data_spec(net, "train")
    key = (spec, int(net.config.input_size))
    if key not in data_cache:
        x, y = S.load_eval_data(spec, image_size=key[1], split="train")
        data_cache[key] = (S.match_model_input(x, net), y)
    x, y = data_cache[key]
    prediction = meta.prediction

    def field(xx, tt, yy=None):
        return to_velocity(path, prediction, model_fn(xx, tt, yy), xx, tt)

    batches = S.eval_batches(x, y, opts.batch_size, dev, conditional=not opts.unconditional)
    if batches[0][1] is None:
        batches = [b for b, _ in batches]
    lo, hi = path.train_t_range(prediction)
    c, se = path_length(field, path, batches, num_points=opts.num_points,
                        generator=torch.Generator(dev).manual_seed(opts.seed), t_min=lo, t_max=hi,
                        reduction=opts.reduction, batch_size=opts.batch_size)
    step = meta.step
    return {"checkpoint": str(ck), "step": step if step is not None else "", "path": path.name,
            "prediction": prediction, "path_length": c, "stderr": se, "num_points": opts.num_points,
            "reduction": opts.reduction, "t_min": lo, "t_max": hi}


def curves(rows: list[dict]) -> tuple[dict, dict, str]:
    """One (xs, ys) series per run (Fig. 4): x = training step when every checkpoint of every run
    has a distinct step within its run, else the checkpoint's position in its run."""
    runs = list(dict.fromkeys(r["run"] for r in rows))
    have_steps = all(r["step"] != "" for r in rows) and all(
        len({r["step"] for r in rows if r["run"] == run}) == sum(r["run"] == run for r in rows) for run in runs)
    series, errors = {}, {}
    for run in runs:
        rs = [r for r in rows if r["run"] == run]
        xs = [float(r["step"]) if have_steps else i for i, r in enumerate(rs)]
        series[run] = (xs, [r["path_length"] for r in rs])
        errors[run] = [r["stderr"] for r in rs]
    return series, errors, "training step" if have_steps else "checkpoint # (within its run)"


def run(args) -> int:
    from tqdm.auto import tqdm

    from sit import dist
    from sit.evaluate.plots import plot_lines, write_csv

    opts = PathLengthOptions(**given_values(args, PathLengthOptions))   # its checks, before a checkpoint is read
    ckpts = expand_checkpoints(list(opts.ckpts))
    rows, out, data_cache = [], Path(opts.out), {}
    bar = tqdm(ckpts, desc="path length", unit="ckpt", disable=args.no_progress or not dist.is_main())
    for run_label, ck in bar:
        row = {"run": run_label, **_measure(opts, args.weights, ck, data_cache)}
        rows.append(row)
        bar.write(f"{ck}: step {row['step']}  C(v) = {row['path_length']:.5g} +- {row['stderr']:.2g}")
        write_csv(out / "pathlength.csv", rows)
    series, errors, xlabel = curves(rows)
    plot_lines(out / "pathlength.png", series, errors=errors, xlabel=xlabel,
               ylabel=f"path length C(v) ({opts.reduction} over dims)", title="Path length over training (Fig. 4)")
    dist.print0(f"wrote {out / 'pathlength.csv'}, {out / 'pathlength.png'} ({len(series)} run(s))")
    return 0
