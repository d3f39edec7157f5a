"""`sit pathlength`: the path length C(v) = int_0^1 E|v(x_t, t)|^2 dt over a series of checkpoints
(paper Fig. 4), as CSV and PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """\
examples:
  # every checkpoint of a training run (RUN/checkpoints/step-*), 10,000 points each as in the paper
  sit pathlength --ckpts runs/demo --out runs/demo/pathlength

  # two runs' final checkpoints side by side (e.g. Linear vs GVP)
  sit pathlength --ckpts runs/linear/checkpoints/step-0002000 runs/gvp/checkpoints/step-0002000 --num-points 2000 --out pl/

|v|^2 is summed over the dimensions of a sample (the paper's |.|^2). Every checkpoint sees the
same (t, x*, eps) draws (common random numbers), so differences between checkpoints are not
Monte-Carlo noise; the standard error of each estimate is reported too.
"""


def register(sub) -> None:
    p = sub.add_parser("pathlength", help="path length C(v) over checkpoints (Fig. 4): CSV + PNG",
                       description=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpts", nargs="+", required=True, metavar="PATH",
                   help="checkpoints, or run directories (all their checkpoints, by step)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default=None)
    p.add_argument("--data", metavar="NAME|NPZ", help="x* data (default: the demo dataset's training split)")
    p.add_argument("--num-points", type=int, default=10_000, metavar="N", help="Monte-Carlo points (default 10,000 as the paper)")
    p.add_argument("--reduction", choices=["sum", "mean"], default="sum", help="|v|^2 summed (paper) or averaged over dims")
    p.add_argument("--unconditional", action="store_true", help="use the null label instead of the data's labels")
    p.add_argument("--batch-size", type=int, default=256, metavar="B")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR", help="writes pathlength.csv and pathlength.png")
    p.set_defaults(func=run)


def expand_checkpoints(specs: list[str]) -> list[Path]:
    """Run directories become all their checkpoints (ordered by step); others are kept as given."""
    from sit.models.checkpoint import _step_from_name

    out: list[Path] = []
    for s in specs:
        p = Path(s)
        if not p.exists():
            raise FileNotFoundError(f"no checkpoint at {s!r}")
        if p.is_dir() and not (p / "config.json").is_file() and (p / "checkpoints").is_dir():
            cands = [c for c in (p / "checkpoints").iterdir()
                     if (c.is_dir() and (c / "config.json").is_file()) or c.suffix in (".pt", ".safetensors")]
            if not cands:
                raise FileNotFoundError(f"no checkpoint under {str(p / 'checkpoints')!r}")
            out.extend(sorted(cands, key=lambda c: (_step_from_name(c.name) or -1, c.name)))
        else:
            out.append(p)
    return out


def run(args) -> int:
    import torch

    from sit import dist
    from sit import generate as S
    from sit.evaluate.plots import plot_lines, write_csv
    from sit.likelihood import path_length
    from sit.objectives import default_t_range, to_velocity

    if args.num_points < 2:
        raise ValueError(f"--num-points must be >= 2 (got {args.num_points})")
    ckpts = expand_checkpoints(args.ckpts)
    rows = []
    out = Path(args.out)
    data_cache: dict = {}
    for ck in ckpts:
        net, meta, model_fn, path, dev = S.load_eval_model(ck, weights=args.weights, device=args.device,
                                                           precision=args.precision)
        spec = args.data or S.default_data_spec(net, "train")
        key = (spec, int(net.config.input_size))
        if key not in data_cache:
            x, y = S.load_eval_data(spec, image_size=key[1], split="train")
            data_cache[key] = (S.match_model_input(x, net), y)
        x, y = data_cache[key]
        prediction = meta.get("prediction", "velocity")

        def field(xx, tt, yy=None, _fn=model_fn, _path=path, _pred=prediction):
            return to_velocity(_path, _pred, _fn(xx, tt, yy), xx, tt)

        batches = S.eval_batches(x, y, args.batch_size, dev, conditional=not args.unconditional)
        if batches[0][1] is None:
            batches = [b for b, _ in batches]
        lo, hi = default_t_range(path, prediction)
        c, se = path_length(field, path, batches, num_points=args.num_points,
                            generator=torch.Generator(dev).manual_seed(args.seed), t_min=lo, t_max=hi,
                            reduction=args.reduction, batch_size=args.batch_size)
        step = meta.get("step")
        rows.append({"checkpoint": str(ck), "step": step if step is not None else "", "path": path.name,
                     "prediction": prediction, "path_length": c, "stderr": se, "num_points": args.num_points,
                     "reduction": args.reduction, "t_min": lo, "t_max": hi})
        dist.print0(f"{ck}: step {step}  C(v) = {c:.5g} +- {se:.2g}")
        write_csv(out / "pathlength.csv", rows)
    have_steps = all(r["step"] != "" for r in rows) and len({r["step"] for r in rows}) == len(rows)
    xs = [float(r["step"]) if have_steps else i for i, r in enumerate(rows)]
    plot_lines(out / "pathlength.png", {"C(v)": (xs, [r["path_length"] for r in rows])},
               errors={"C(v)": [r["stderr"] for r in rows]},
               xlabel="training step" if have_steps else "checkpoint #",
               ylabel=f"path length C(v) ({args.reduction} over dims)", title="Path length over training (Fig. 4)")
    dist.print0(f"wrote {out / 'pathlength.csv'}, {out / 'pathlength.png'}")
    return 0
