"""`sit demo-gaussian`: sample a 2-D Gaussian mixture with its exact velocity field.

A self-contained check of the samplers: for x* ~ sum_k pi_k N(mu_k, diag c_k^2) the marginal p_t of
x_t = alpha_t x* + sigma_t eps is again a Gaussian mixture, so the score and velocity are exact
(math.md section 7). Each sampler is driven by that field and the mean / covariance of its samples
are compared with the target's; the table also prints the Monte-Carlo noise floor (the same
statistics of as many exact target samples). The mixture is `sit.toy.GaussianMixture`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sit.commands._args import add_command, at_least, option
from sit.commands.flags import add_record_arguments, given_values
from sit.config import PATH_NAMES

if TYPE_CHECKING:
    from torch import Tensor

DEMO_SAMPLERS = (
    ("euler", None),
    ("heun", None),
    ("dopri5", None),
    ("euler_maruyama", "sigma"),
    ("euler_maruyama", "kl"),
    ("sde_heun", "sigma"),
)


def run_demo(path_name="linear", num_samples=10000, num_steps=50, seed=0, out=None, progress=False):
    import torch

    from sit.paths import get_path
    from sit.samplers import SampleConfig, sample
    from sit.toy import default_mixture

    path = get_path(path_name)
    gm = default_mixture()
    m_true, c_true = gm.mean(), gm.cov()
    rows = []
    ref = gm.sample(num_samples, torch.Generator().manual_seed(seed + 1))
    rows.append(("target samples (MC floor)", "-", 0, *(_errors(ref, m_true, c_true)), 0.0))
    results = {}
    for method, w in DEMO_SAMPLERS:
        g = torch.Generator().manual_seed(seed)
        x0 = torch.randn(num_samples, 2, generator=g, dtype=torch.float64)
        if not path.alpha_1_zero:  # VP never reaches N(0, I): start from the exact p_1 (math.md section 7)
            x0 = gm.marginal(path, 1.0).sample(num_samples, g)
        cfg = SampleConfig(method=method, num_steps=num_steps, w=w or "sigma")
        t0 = time.perf_counter()
        x, info = sample(gm.field(path), x0, cfg, path, generator=g, progress=progress)
        dt = time.perf_counter() - t0
        label = method if w is None else f"{method} (w={w})"
        # compare with p_{t_end} (= the target when t_end = 0)
        tgt = gm.marginal(path, info["t_end"]) if info["t_end"] > 0 else gm
        rows.append((label, f"{info['t_start']:g}->{info['t_end']:g}", info["nfe"], *_errors(x, tgt.mean(), tgt.cov()), dt))
        results[label] = x
    print(f"sit demo-gaussian: path={path.name}, 2-D two-component Gaussian mixture, {num_samples} samples, "
          f"num_steps={num_steps}, seed={seed}")
    print("| sampler | t range | NFE | mean error | cov error | seconds |")
    print("|---|---|---|---|---|---|")
    for label, tr, nfe, me, ce, dt in rows:
        print(f"| {label} | {tr} | {nfe} | {me:.4f} | {ce:.4f} | {dt:.2f} |")
    if out:
        _scatter(ref, results, out)
        print(f"saved {out}")
    return rows


def _errors(x: Tensor, m: Tensor, c: Tensor) -> tuple[float, float]:
    import torch

    x = x.to(torch.float64)
    return float((x.mean(0) - m).norm()), float((torch.cov(x.T) - c).norm())


def _scatter(ref, results, out):
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results) + 1
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3), sharex=True, sharey=True)
    for ax, (name, x) in zip(axes, [("target", ref), *results.items()]):
        x = x[:3000].to(torch.float64).numpy()
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        ax.set_title(name, fontsize=8)
    fig.tight_layout()
    from sit.io import save_figure

    save_figure(fig, out, dpi=120)
    plt.close(fig)


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "demo-gaussian",
        help="sample a 2-D Gaussian mixture with its exact field (sampler check, seconds on a CPU)",
        description=(
            "Sample a 2-D two-component Gaussian mixture with its exact velocity field and print the\n"
            "mean / covariance error and NFE of each sampler.\n\nexamples:\n"
            "  sit demo-gaussian\n"
            "  sit demo-gaussian --path gvp --num-steps 100\n"
            "  sit demo-gaussian --num-samples 5000 --out demo.png\n"
        ),
    )
    add_record_arguments(p, GaussianDemo, keep_defaults=True)
    p.set_defaults(func=_main)


@dataclass(frozen=True, kw_only=True)
class GaussianDemo:
    """`sit demo-gaussian`'s options (its flags are these fields; `run_demo`'s arguments)."""

    path: str = option("linear", "interpolant", choices=lambda: PATH_NAMES)
    num_samples: int = option(10000, "samples per sampler", metavar="N")
    num_steps: int = option(50, "steps per sampler", metavar="STEPS")
    seed: int = option(0, "random seed")
    out: str | None = option(None, "save a scatter plot of the samples here", metavar="PNG")
    progress: bool = option(True, "show a progress bar per sampler", flag="--no-progress")

    def __post_init__(self):
        at_least(self, "num_samples", 2)
        at_least(self, "num_steps", 1)


def _main(args) -> int:
    demo = GaussianDemo(**given_values(args, GaussianDemo))
    # the tensors are tiny (N x 2): intra-op threads only add synchronisation cost (measured
    # 40x slower with 2 threads on a loaded 2-core machine), so the demo runs on one thread
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_demo(demo.path, demo.num_samples, demo.num_steps, demo.seed, demo.out, progress=demo.progress)
    finally:
        torch.set_num_threads(threads)
    return 0
