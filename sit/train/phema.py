"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", section 3 and appendix C; NVlabs/edm2 ``phema``): track a few power-function EMAs during
training, store snapshots of them, and afterwards reconstruct the EMA of any length.

Power-function EMA with exponent gamma: after t updates it averages the weights theta_tau with
density p_t(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t], kept by the update

    theta^_t = beta_t theta^_(t-1) + (1 - beta_t) theta_t,      beta_t = (1 - 1/t)^(gamma + 1)

(t = optimizer updates, 1-based; beta_1 = 0). Its length is given by sigma_rel, the standard
deviation of p_t relative to t: sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)), so gamma
is the largest real root of gamma^3 + 7 gamma^2 + (16 - sigma_rel^-2) gamma + 12 - sigma_rel^-2.

Reconstruction: snapshots i (profile p_i: length sigma_i at step t_i) and a target profile q are
functions of tau; the target weights are sum_i x_i theta^_i with x minimising ||sum_i x_i p_i - q||
in L2(0, inf): the normal equations A x = b, A_ij = <p_i, p_j>, b_i = <p_i, q>, with the closed
form (for t_a <= t_b)

    <p_a, p_b> = (gamma_a + 1)(gamma_b + 1) / (gamma_a + gamma_b + 1) * (t_a / t_b)^gamma_b / t_b.

In `sit train` (``phema_sigmas``, ``phema_every``) the tracked EMAs are saved in every checkpoint
(``phema.safetensors``, exact resume) and a snapshot of each is written every ``phema_every``
steps to RUN/phema/step-NNNNNNN-sigma-S.safetensors, listed with its sha256 in RUN/phema/index.json.
`sit ema --ckpt RUN --sigma-rel S` reconstructs from them. The network's ordinary EMA (``ema_decay``)
is unchanged.

Must not import: sit.generate, sit.commands.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sit.config import PHEMA_MAX_FIT_ERROR as MAX_FIT_ERROR
from sit.config import PHEMA_SIGMA_RANGE, field_error

INDEX = "index.json"


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma of the power-function profile of relative length ``sigma_rel``
    (`sit.config.PHEMA_SIGMA_RANGE`: 1e-4 <= s < 12^-1/2)."""
    lo, hi = PHEMA_SIGMA_RANGE
    s = float(sigma_rel)
    if not lo <= s < hi:
        raise field_error(ValueError, f"{{.sigma_rel}} must be in [{lo:g}, {hi:.4f}) (got {sigma_rel})")
    k = s ** -2
    return float(np.roots([1.0, 7.0, 16.0 - k, 12.0 - k]).real.max())


def gamma_to_sigma_rel(gamma: float) -> float:
    """sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))), the inverse of `sigma_rel_to_gamma`."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def beta(gamma: float, t: int) -> float:
    """The decay of the t-th update (1-based): (1 - 1/t)^(gamma + 1)."""
    return (1.0 - 1.0 / t) ** (gamma + 1.0)


def profile_inner(t_a, gamma_a, t_b, gamma_b) -> np.ndarray:
    """<p_a, p_b> of two power-function profiles (module docstring), broadcasting, float64."""
    t_a, g_a, t_b, g_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    lo_a = t_a <= t_b
    ratio = np.where(lo_a, (t_a / t_b) ** g_b, (t_b / t_a) ** g_a)
    return (g_a + 1) * (g_b + 1) / (g_a + g_b + 1) * ratio / np.maximum(t_a, t_b)


def solve_coefficients(steps, sigmas, step: float, sigma_rel: float) -> np.ndarray:
    """Weights x (n,) of snapshots (``steps[i]``, ``sigmas[i]``) whose combination best matches
    the profile of length ``sigma_rel`` at ``step`` (least squares in L2; normal equations),
    normalised to sum 1 as edm2's ``solve_posthoc_coefficients``: a profile is a density, so the
    combination of averages is an average (a constant network reconstructs to itself; without it
    every weight was scaled by the sum, 0.986 for sigma_rel 0.02 on the demo)."""
    A, b, _ = _normal_equations(steps, sigmas, step, sigma_rel)
    x = np.linalg.lstsq(A, b, rcond=None)[0]
    return x / x.sum()


def _normal_equations(steps, sigmas, step: float, sigma_rel: float) -> tuple[np.ndarray, np.ndarray, float]:
    t = np.asarray(steps, dtype=np.float64)
    g = np.array([sigma_rel_to_gamma(s) for s in sigmas])
    gq = sigma_rel_to_gamma(sigma_rel)
    A = profile_inner(t[:, None], g[:, None], t[None, :], g[None, :])
    return A, profile_inner(t, g, float(step), gq), float(profile_inner(step, gq, step, gq))


def fit_error(steps, sigmas, step: float, sigma_rel: float, x=None) -> float:
    """||sum_i x_i p_i - q|| / ||q|| (L2 on [0, inf)): how far the snapshots' combination ``x``
    (default `solve_coefficients`) is from the requested profile q, in closed form."""
    A, b, qq = _normal_equations(steps, sigmas, step, sigma_rel)
    x = solve_coefficients(steps, sigmas, step, sigma_rel) if x is None else np.asarray(x, dtype=np.float64)
    return math.sqrt(max(0.0, qq - 2.0 * float(x @ b) + float(x @ A @ x)) / qq)



def sigma_range(steps, sigmas, step: float, max_error: float = MAX_FIT_ERROR) -> tuple[float, float] | None:
    """(smallest, largest) sigma_rel the snapshots reconstruct at ``step`` within ``max_error``
    (on a grid of 200 lengths over `PHEMA_SIGMA_RANGE`; None when none)."""
    lo, hi = PHEMA_SIGMA_RANGE
    ok = [float(s) for s in np.geomspace(max(lo, 1e-3), hi * 0.9999, 200)
          if fit_error(steps, sigmas, step, float(s)) <= max_error]
    return (min(ok), max(ok)) if ok else None


# fields left out of `run_tag`: the run folder (a moved run keeps its snapshots) and the fields a resume
# may change (`sit.config.RESUME_OVERRIDES` when the tag was introduced; frozen here, so a later addition
# there does not change the tags already written)
_UNTAGGED = ("out", "steps", "lr", "warmup_steps", "grad_clip", "max_nonfinite", "log_every", "ckpt_every",
             "sample_every", "keep_last", "progress", "threads", "num_workers", "device", "cfg_scale",
             "sample_method", "sample_steps", "samples_per_class", "quality", "quality_samples_per_class", "lt_table")


def run_tag(train: dict, model: dict) -> str:
    """A short sha256 naming the run that snapshots belong to: its model and training config, less
    `_UNTAGGED`. Written into each index.json entry; `reconstruct` refuses other runs' snapshots."""
    import hashlib

    train = {k: v for k, v in dict(train).items() if k not in _UNTAGGED}
    text = json.dumps({"model": dict(model), "train": train}, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class PowerEMA(nn.Module):
    """Power-function EMA copies of a network, one per sigma_rel; ``update(net, t)`` after the t-th
    optimizer update. Its state dict ("0.<key>", "1.<key>", ...) is what checkpoints save."""

    def __init__(self, net: nn.Module, sigmas: tuple[float, ...]):
        super().__init__()
        import copy

        self.sigmas = tuple(float(s) for s in sigmas)
        self.gammas = tuple(sigma_rel_to_gamma(s) for s in self.sigmas)
        self.copies = nn.ModuleList([copy.deepcopy(net).requires_grad_(False).eval() for _ in self.sigmas])

    @torch.no_grad()
    def update(self, net: nn.Module, t: int) -> None:
        src = [p.detach() for p in net.parameters()]
        for gamma, ema in zip(self.gammas, self.copies):
            torch._foreach_lerp_(list(ema.parameters()), src, 1.0 - beta(gamma, t))


def snapshot_name(step: int, sigma: float) -> str:
    return f"step-{step:07d}-sigma-{sigma:.4f}.safetensors"


def write_snapshots(run_dir: Path, pema: PowerEMA, step: int, run: str | None = None) -> None:
    """RUN/phema/<snapshot_name> for each tracked EMA at ``step`` (atomic), then index.json; each
    entry records ``run`` (`run_tag`) when given."""
    from safetensors.torch import save_file

    from sit.io import atomic_path, sha256_file, write_text_atomic

    folder = Path(run_dir) / "phema"
    folder.mkdir(parents=True, exist_ok=True)
    index = read_index(folder) if (folder / INDEX).is_file() else []
    index = [e for e in index if e["step"] != step]
    for sigma, ema in zip(pema.sigmas, pema.copies):
        name = snapshot_name(step, sigma)
        sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in ema.state_dict().items()}
        with atomic_path(folder / name) as tmp:
            save_file(sd, str(tmp))
        entry = {"step": step, "sigma_rel": sigma, "file": name, "sha256": sha256_file(folder / name)}
        index.append(entry if run is None else dict(entry, run=run))
    index.sort(key=lambda e: (e["step"], e["sigma_rel"]))
    write_text_atomic(folder / INDEX, json.dumps(index, indent=1) + "\n")


def read_index(folder: Path) -> list[dict]:
    """The entries of RUN/phema/index.json, each checked to hold an integer step >= 1, a sigma_rel in
    range, a file name inside the folder and a sha256 (one-line error naming the entry otherwise)."""
    where = str(Path(folder) / INDEX)
    try:
        index = json.loads((Path(folder) / INDEX).read_text())
    except (OSError, ValueError) as e:
        raise field_error(FileNotFoundError, f"no readable post-hoc EMA index {where!r} ({e}); "
                          "train with {TrainConfig.phema_sigmas} and {TrainConfig.phema_every}") from None
    if not isinstance(index, list):
        raise ValueError(f"post-hoc EMA index {where!r} is not a list of snapshots")
    for n, e in enumerate(index):
        problem = _entry_problem(e)
        if problem:
            raise ValueError(f"post-hoc EMA index {where!r}: entry {n} {problem}; the index is written by training "
                             "(damaged): restore it, or remove the entry")
    return index


_ENTRY = {"step": int, "sigma_rel": (int, float), "file": str, "sha256": str}


def _entry_problem(e) -> str | None:
    """What is wrong with one index entry (None when it is a snapshot's step >= 1, sigma_rel in range,
    a file name inside the folder and a sha256)."""
    if not isinstance(e, dict):
        return f"is not an object (got {e!r:.60})"
    for key, typ in _ENTRY.items():
        v = e.get(key)
        if v is None or isinstance(v, bool) or not isinstance(v, typ):
            return f"({e.get('file', '?')}) has " + (f"no {key!r}" if v is None else f"a bad {key!r} ({v!r:.60})")
    lo, hi = PHEMA_SIGMA_RANGE
    if e["step"] < 1 or not lo <= e["sigma_rel"] < hi or Path(e["file"]).name != e["file"]:
        return f"({str(e)[:120]}) has a step < 1, a sigma_rel outside [{lo}, {hi}) or a file outside the folder"
    return None


def _steps_text(steps: list[int]) -> str:
    if len(steps) <= 4:
        return ", ".join(map(str, steps))
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    every = f" every {gaps.pop()}" if len(gaps) == 1 else ""
    return f"{steps[0]}, {steps[1]}, ..., {steps[-1]}{every}"


def plan(run_dir, sigma_rel: float, step: int | None = None, max_error: float = MAX_FIT_ERROR,
         run: dict | None = None) -> dict:
    """What `reconstruct` will combine, checked before any weight is read: the run's snapshots up
    to ``step`` (default: the newest snapshot step), their coefficients (`solve_coefficients`, sum
    1) and the fit's error (`fit_error`). Refused in one line: a ``step`` that is no snapshot step
    (the snapshots say nothing about the weights after the last one before it: --step 550 between
    snapshots every 100 combined to 0.18 of a network), a ``sigma_rel`` the snapshots reconstruct
    with an error above ``max_error`` (the range that can is named), and snapshots of another run
    (``run``: the run's config.json, {"train": ..., "model": ...}; entries record their `run_tag`)."""
    sigma_rel_to_gamma(sigma_rel)
    folder = Path(run_dir) / "phema"
    index = read_index(folder)
    if not index:
        raise FileNotFoundError(f"{str(folder)!r} lists no snapshots")
    if run is not None:
        _check_run(index, run, folder)
    steps = sorted({e["step"] for e in index})
    step = int(step if step is not None else steps[-1])
    if step not in steps:
        where = "after the last snapshot" if step > steps[-1] else "before the first" if step < steps[0] else "between snapshots"
        raise field_error(ValueError, f"{{.step}} {step} is {where}: the snapshots in {str(folder)!r} are at steps "
                          f"{_steps_text(steps)}; the EMA can be reconstructed at those steps only")
    use = [e for e in index if e["step"] <= step]
    t, s = [e["step"] for e in use], [e["sigma_rel"] for e in use]
    x = solve_coefficients(t, s, step, sigma_rel)
    err = fit_error(t, s, step, sigma_rel, x)
    if not err <= max_error:
        can = sigma_range(t, s, step, max_error)
        can = f"from {can[0]:.3g} to {can[1]:.3g}" if can else "none"
        raise field_error(ValueError, f"{{.sigma_rel}} {sigma_rel:g} at step {step}: the snapshots (sigma_rel "
                          f"{', '.join(f'{v:g}' for v in sorted(set(s)))}, steps {_steps_text(sorted(set(t)))}) reconstruct "
                          f"its averaging profile with a relative error of {err:.3f}, above {max_error:g} (lengths within it: "
                          f"{can}); choose one of those, or snapshot more often")
    return {"sigma_rel": float(sigma_rel), "step": step, "snapshots": len(use), "fit_error": err,
            "coefficients": [{"step": e["step"], "sigma_rel": e["sigma_rel"], "weight": float(w), "file": e["file"],
                              "sha256": e["sha256"]} for e, w in zip(use, x)]}


def _check_run(index: list[dict], run: dict, folder: Path) -> None:
    """Refuse snapshots that are not the run's: an entry recording another `run_tag`, a length the
    run does not track, or a step off its snapshot cadence."""
    train = run.get("train") or {}
    tag = run_tag(train, run.get("model") or {})
    sigmas, every = [float(v) for v in train.get("phema_sigmas") or ()], int(train.get("phema_every") or 0)
    for e in index:
        if e.get("run", tag) != tag or float(e["sigma_rel"]) not in sigmas or not every or e["step"] % every:
            why = ("it records another run" if e.get("run", tag) != tag else
                   f"the run tracks sigma_rel {sigmas} every {every} steps")
            raise ValueError(f"post-hoc EMA snapshot {e['file']!r} in {str(folder)!r} is not this run's ({why}); "
                             "snapshots are only combined with the run that wrote them")


def reconstruct(run_dir, sigma_rel: float, step: int | None = None, max_error: float = MAX_FIT_ERROR,
                run: dict | None = None) -> tuple[dict, dict]:
    """(state dict, info) of the EMA of length ``sigma_rel`` at ``step`` (`plan`: default the newest
    snapshot step; refusals there), every snapshot read checked against its sha256 in index.json;
    info is the plan (coefficients, fit error)."""
    info = plan(run_dir, sigma_rel, step, max_error, run)
    return combine(Path(run_dir) / "phema", info["coefficients"]), info


def combine(folder: Path, coefficients: list[dict]) -> dict:
    """sum_i weight_i x snapshot_i (float64 accumulation, the snapshots' dtype out), each snapshot
    verified against its sha256 first."""
    from safetensors.torch import load_file

    from sit.io import sha256_file

    out: dict[str, torch.Tensor] = {}
    ref = None
    for c in coefficients:
        f = Path(folder) / c["file"]
        if not f.is_file() or sha256_file(f) != c["sha256"]:
            raise ValueError(f"post-hoc EMA snapshot {str(f)!r} is missing or corrupt (sha256 mismatch)")
        ref = load_file(str(f))
        if out and set(ref) != set(out):
            raise ValueError(f"post-hoc EMA snapshot {str(f)!r} holds other tensors than the others")
        for k, v in ref.items():
            acc = out.get(k)
            out[k] = v.double() * float(c["weight"]) if acc is None else acc + v.double() * float(c["weight"])
    return {k: v.to(ref[k].dtype) for k, v in out.items()}
