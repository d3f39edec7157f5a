"""`sit lt`: the per-time loss L_t of a checkpoint (for w_KL,eta, eq. 14), stored with it, plotted
against the diffusion coefficients w_t."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sit.commands._args import add_command, at_least, finish_command, option
from sit.commands.flags import add_record_arguments, given_values
from sit.sampler_kinds import REDUCTIONS

EXAMPLES = """\
examples:
  # estimate L_t of the demo on held-out digits, store it beside the checkpoint, plot it
  sit lt --ckpt runs/demo

  # a latent model on held-out latents (float npz (N, 4, 32, 32) with labels in arr_1)
  sit lt --ckpt runs/xl2 --data heldout_latents.npz --t-points 101 --samples-per-t 2048 --etas 0.01,1,100

L_t = E|v_theta(x_t, t) - alpha_dot x* - sigma_dot eps|^2 per t (score/noise models converted to
velocity by eq. 9), reduced by the mean over the dimensions of a sample (the official mean_flat,
the training-loss scale; --reduction sum for the sum), with its Monte-Carlo standard error.
The table goes to DIR/lt_table.json for a checkpoint directory (NAME.lt.json beside a file), where
`sit sample --w kl_eta` finds it; lt.csv and lt.png show L_t with w_KL, w_KL,eta for --etas,
sigma_t and sin^2(pi t) on the same time axis.
"""


@dataclass(frozen=True, kw_only=True)
class LtOptions:
    """`sit lt`'s own options (its flags are these fields; the model flags are the shared ones):
    checked when built, before the model is read."""

    data: str | None = option(None, "held-out data: embedded name, .npz or a `sit extract` folder (default: the demo "
                              "dataset's held-out split)", metavar="NAME|NPZ|DIR")
    t_points: int = option(41, "times on an even grid over the training range", metavar="K")
    samples_per_t: int = option(512, "Monte-Carlo samples per time", metavar="N")
    reduction: str = option("mean", "per-sample reduction over dims", choices=lambda: REDUCTIONS)
    etas: str = option("0.01,1,100", "eta values of w_KL,eta to plot", metavar="LIST")
    unconditional: bool = option(False, "use the null label instead of the data's labels", switch=True)
    batch_size: int = option(256, "samples per batch", metavar="B")
    seed: int = option(0, "random seed")
    out: str | None = option(None, "where lt.csv / lt.png go (default: beside the stored table)", metavar="DIR")
    store: bool = option(True, "store the table with the checkpoint (else write {out} DIR/lt_table.json)",
                         flag="--no-store")

    def __post_init__(self):
        from sit.config import ConfigError

        at_least(self, "t_points", 2)
        at_least(self, "samples_per_t", 2)
        if not self.store and not self.out:
            raise ConfigError("LtOptions", "store", "needs {out} DIR")
        self.eta_values()

    def eta_values(self) -> list[float]:
        """The numbers of ``etas`` (ConfigError unless each is a number > 0)."""
        from sit.config import ConfigError

        try:
            etas = [float(v) for v in self.etas.split(",") if v.strip()]
        except ValueError:
            etas = [float("nan")]
        if any(not e > 0 for e in etas):
            raise ConfigError("LtOptions", "etas", f"must be numbers > 0 (got {self.etas!r})")
        return etas


def register(sub) -> None:
    p = add_command(sub, "lt", help="per-time loss L_t of a checkpoint (for w_KL,eta): table + CSV + plot",
                    description=EXAMPLES, model=True)
    add_record_arguments(p, LtOptions, keep_defaults=True)
    finish_command(p, run)


def _check_writable(table_path: Path) -> None:
    """The folder that will hold the L_t table exists (or is made) and can be written."""
    import os

    folder = table_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK) or (table_path.exists() and not os.access(table_path, os.W_OK)):
        raise PermissionError(f"cannot write the L_t table {str(table_path)!r} (read-only); nothing was computed: "
                              "make it writable, or pass --no-store --out DIR")


def run(args) -> int:
    import torch

    from sit import dist
    from sit import generate as S
    from sit.diffusion_coef import get_w
    from sit.evaluate.plots import plot_loss_and_w, write_csv
    from sit.io import write_text_atomic
    from sit.lt import estimate_loss_table

    opts = LtOptions(**given_values(args, LtOptions))   # its checks, before the model is read
    etas = opts.eta_values()
    table_path = S.loss_table_path(args.ckpt) if opts.store else Path(opts.out) / "lt_table.json"
    _check_writable(table_path)  # before the work, not after it
    net, meta, model_fn, path, dev = S.load_eval_model(args.ckpt, weights=args.weights, device=args.device,
                                                       precision=args.precision)
    spec = opts.data or S.default_data_spec(net, "heldout")
    x, y = S.load_eval_data(spec, image_size=int(net.config.input_size), split="heldout")
    x = S.match_model_input(x, net)
    batches = S.eval_batches(x, y, opts.batch_size, dev, conditional=not opts.unconditional)
    prediction = meta.prediction
    lo, hi = path.train_t_range(prediction)
    grid = torch.linspace(lo, hi, opts.t_points, dtype=torch.float64)
    gen = torch.Generator(dev).manual_seed(opts.seed)
    dist.print0(f"estimating L_t of {args.ckpt} on {spec} ({x.shape[0]} samples): {opts.t_points} times in "
                f"[{lo:g}, {hi:g}], {opts.samples_per_t} samples each")
    table = estimate_loss_table(model_fn, path, prediction, batches, grid, samples_per_t=opts.samples_per_t,
                                generator=gen, reduction=opts.reduction, batch_size=opts.batch_size,
                                progress=not args.no_progress and dist.is_main())
    write_text_atomic(table_path, table.to_json())
    out = Path(opts.out) if opts.out else table_path.parent
    t = torch.tensor(table.t, dtype=torch.float64)
    curves = {"w_KL": get_w("kl", path)(t)}
    for e in etas:
        curves[f"w_KL,eta (eta={e:g})"] = get_w("kl_eta", path, eta=e, table=table)(t)
    curves["sigma_t"] = get_w("sigma", path)(t)
    curves["sin^2(pi t)"] = get_w("sin2", path)(t)
    rows = []
    for i, tv in enumerate(table.t):
        r = {"t": tv, "L_t": table.loss[i], "stderr": table.stderr[i]}
        r.update({k: float(v[i]) for k, v in curves.items()})
        rows.append(r)
    write_csv(out / "lt.csv", rows)
    plot_loss_and_w(out / "lt.png", table.t, table.loss, {k: v.tolist() for k, v in curves.items()},
                    loss_err=table.stderr,
                    title=f"L_t ({table.reduction} over {table.dim} dims), {path.name}/{prediction}")
    dist.print0(f"L_t from {min(table.loss):.4g} to {max(table.loss):.4g}; stored {table_path}; wrote {out / 'lt.csv'}, {out / 'lt.png'}")
    return 0
