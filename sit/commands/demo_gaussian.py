"""`sit demo-gaussian`: sample a 2-D Gaussian mixture with its exact velocity field.

A self-contained check of the samplers: for x* ~ sum_k pi_k N(mu_k, diag c_k^2) the marginal p_t of
x_t = alpha_t x* + sigma_t eps is again a Gaussian mixture, so the score and velocity are exact
(math.md section 7). Each sampler is driven by that field and the mean / covariance of its samples
are compared with the target's; the table also prints the Monte-Carlo noise floor (the same
statistics of as many exact target samples). `GaussianMixture` is also what the tests use.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import Tensor

from sit.paths import Path, get_path


class GaussianMixture:
    """x* ~ sum_k weights_k N(means_k, diag(stds_k^2)) in D dimensions; exact fields for any path.

    weights (K,), means (K, D), stds (K, D); all math in float64, results in the dtype of x."""

    def __init__(self, weights, means, stds):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        if self.means.ndim != 2 or self.stds.shape != self.means.shape or self.weights.shape != self.means.shape[:1]:
            raise ValueError("GaussianMixture needs weights (K,), means (K, D) and stds (K, D)")
        if not bool((self.weights > 0).all()) or not bool((self.stds > 0).all()):
            raise ValueError("GaussianMixture weights and stds must be > 0")
        self.weights = self.weights / self.weights.sum()

    @classmethod
    def gaussian(cls, mean, std) -> "GaussianMixture":
        """A single Gaussian N(mean, diag std^2)."""
        mean = torch.as_tensor(mean, dtype=torch.float64)
        return cls([1.0], mean[None], torch.as_tensor(std, dtype=torch.float64).expand_as(mean)[None])

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def mean(self) -> Tensor:
        return self.weights @ self.means

    def cov(self) -> Tensor:
        m = self.mean()
        second = sum(w * (torch.diag(s**2) + torch.outer(mu, mu)) for w, mu, s in zip(self.weights, self.means, self.stds))
        return second - torch.outer(m, m)

    def marginal(self, path: Path, t: float) -> "GaussianMixture":
        """p_t as a GaussianMixture (means alpha_t mu_k, variances alpha_t^2 c_k^2 + sigma_t^2)."""
        tt = torch.tensor([float(t)], dtype=torch.float64)
        a, s = float(path.alpha(tt)[0]), float(path.sigma(tt)[0])
        return GaussianMixture(self.weights, a * self.means, torch.sqrt(a * a * self.stds**2 + s * s))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k] * z

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) of the data distribution (t = 0); x (B, D) -> (B,)."""
        x = x.to(torch.float64)
        lp = _component_log_prob(x, self.means, self.stds**2)
        return torch.logsumexp(lp + self.weights.log(), dim=1)

    def _posterior(self, path: Path, x: Tensor, t: Tensor):
        x = x.to(torch.float64)
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        a, s, da, ds = (c[:, None, None] for c in path.coefficients(t))  # (B, 1, 1)
        var = a * a * self.stds**2 + s * s  # (B, K, D)
        diff = x[:, None, :] - a * self.means  # (B, K, D)
        lp = -0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1) + self.weights.log()
        r = torch.softmax(lp, dim=1)[:, :, None]  # (B, K, 1) responsibilities
        return x, a, s, da, ds, var, diff, r

    def score(self, path: Path, x: Tensor, t: Tensor) -> Tensor:
        """grad log p_t(x) = sum_k r_k(x) (-(x - alpha mu_k) / (alpha^2 c_k^2 + sigma^2)). x (B, D); t (B,)."""
        xx, a, s, da, ds, var, diff, r = self._posterior(path, x, t)
        return (r * (-diff / var)).sum(1).to(x.dtype)

    def velocity(self, path: Path, x: Tensor, t: Tensor) -> Tensor:
        """v = E[alpha_dot x* + sigma_dot eps | x_t = x] (eq. 3), from the per-component posterior
        means x_hat*_k = mu_k + alpha c_k^2 (x - alpha mu_k)/var_k and eps_hat_k = sigma (x - alpha mu_k)/var_k.
        Finite on [0, 1] for Linear/GVP (no division by alpha); on (0, 1] for VP."""
        xx, a, s, da, ds, var, diff, r = self._posterior(path, x, t)
        x_star = self.means + a * self.stds**2 * diff / var
        eps = s * diff / var
        return (r * (da * x_star + ds * eps)).sum(1).to(x.dtype)

    def field(self, path: Path):
        """The exact velocity field (x, t) -> v for the samplers."""
        return lambda x, t: self.velocity(path, x, t)


def _component_log_prob(x: Tensor, means: Tensor, var: Tensor) -> Tensor:
    diff = x[:, None, :] - means
    return -0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1)


def default_mixture() -> GaussianMixture:
    return GaussianMixture([0.3, 0.7], [[-2.0, 0.5], [1.5, -1.0]], [[0.5, 0.8], [0.7, 0.4]])


DEMO_SAMPLERS = (
    ("euler", None),
    ("heun", None),
    ("dopri5", None),
    ("euler_maruyama", "sigma"),
    ("euler_maruyama", "kl"),
    ("sde_heun", "sigma"),
)


def run_demo(path_name="linear", num_samples=10000, num_steps=50, seed=0, out=None, progress=False):
    from sit.samplers import SampleConfig, sample

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
        if path.name == "vp":  # VP never reaches N(0, I): start from the exact p_1 (math.md section 7)
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
    x = x.to(torch.float64)
    return float((x.mean(0) - m).norm()), float((torch.cov(x.T) - c).norm())


def _scatter(ref, results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results) + 1
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3), sharex=True, sharey=True)
    for ax, (name, x) in zip(axes, [("target", ref), *results.items()]):
        x = x[:3000].to(torch.float64).numpy()
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        ax.set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo-gaussian",
        help="sample a 2-D Gaussian mixture with its exact field (sampler check, seconds on a CPU)",
        description=(
            "Sample a 2-D two-component Gaussian mixture with its exact velocity field and print the\n"
            "mean / covariance error and NFE of each sampler.\n\nexamples:\n"
            "  sit demo-gaussian\n"
            "  sit demo-gaussian --path gvp --num-steps 100\n"
            "  sit demo-gaussian --num-samples 5000 --out demo.png\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--path", default="linear", choices=["linear", "gvp", "vp"], help="interpolant (default: linear)")
    p.add_argument("--num-samples", type=int, default=10000, metavar="N", help="samples per sampler (default: 10000)")
    p.add_argument("--num-steps", type=int, default=50, metavar="STEPS", help="steps per sampler (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", default=None, metavar="PNG", help="save a scatter plot of the samples here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_main)


def _main(args) -> int:
    if args.num_samples < 2:
        raise ValueError(f"--num-samples must be >= 2 (got {args.num_samples})")
    if args.num_steps < 1:
        raise ValueError(f"--num-steps must be >= 1 (got {args.num_steps})")
    # the tensors are tiny (N x 2): intra-op threads only add synchronisation cost (measured
    # 40x slower with 2 threads on a loaded 2-core machine), so the demo runs on one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_demo(args.path, args.num_samples, args.num_steps, args.seed, args.out, progress=not args.no_progress)
    finally:
        torch.set_num_threads(threads)
    return 0
