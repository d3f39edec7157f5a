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

from sit.config import field_error

INDEX = "index.json"


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma of the power-function profile of relative length ``sigma_rel`` (0 < s < 12^-1/2)."""
    s = float(sigma_rel)
    if not 0 < s < 12 ** -0.5:
        raise ValueError(f"sigma_rel must be in (0, {12 ** -0.5:.4f}) (got {sigma_rel})")
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
    the profile of length ``sigma_rel`` at ``step`` (least squares in L2; normal equations)."""
    t = np.asarray(steps, dtype=np.float64)
    g = np.array([sigma_rel_to_gamma(s) for s in sigmas])
    A = profile_inner(t[:, None], g[:, None], t[None, :], g[None, :])
    b = profile_inner(t, g, float(step), sigma_rel_to_gamma(sigma_rel))
    return np.linalg.lstsq(A, b, rcond=None)[0]


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


def write_snapshots(run_dir: Path, pema: PowerEMA, step: int) -> None:
    """RUN/phema/<snapshot_name> for each tracked EMA at ``step`` (atomic), then index.json."""
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
        index.append({"step": step, "sigma_rel": sigma, "file": name, "sha256": sha256_file(folder / name)})
    index.sort(key=lambda e: (e["step"], e["sigma_rel"]))
    write_text_atomic(folder / INDEX, json.dumps(index, indent=1) + "\n")


def read_index(folder: Path) -> list[dict]:
    try:
        index = json.loads((Path(folder) / INDEX).read_text())
    except (OSError, ValueError) as e:
        raise field_error(FileNotFoundError, f"no readable post-hoc EMA index {str(Path(folder) / INDEX)!r} ({e}); "
                          "train with {TrainConfig.phema_sigmas} and {TrainConfig.phema_every}") from None
    check_index(index, Path(folder) / INDEX)
    return index


_ENTRY = {"step": int, "sigma_rel": (int, float), "file": str, "sha256": str}


def check_index(index, path: Path) -> None:
    """Every entry of a post-hoc EMA index is a snapshot's step, sigma_rel, file and sha256: an
    entry that is not says so in one line (which entry, which field), never a KeyError later."""
    if not isinstance(index, list):
        raise ValueError(f"post-hoc EMA index {str(path)!r} is not a list of snapshots (got {type(index).__name__})")
    for i, e in enumerate(index):
        if not isinstance(e, dict):
            raise ValueError(f"post-hoc EMA index {str(path)!r}: entry {i} is not an object (got {e!r:.60})")
        for key, typ in _ENTRY.items():
            v = e.get(key)
            if v is None or isinstance(v, bool) or not isinstance(v, typ):
                raise ValueError(f"post-hoc EMA index {str(path)!r}: entry {i} ({e.get('file', '?')}) has "
                                 + (f"no {key!r}" if v is None else f"a bad {key!r} ({v!r:.60})")
                                 + "; the index is written by training: restore it, or remove the entry")


def reconstruct(run_dir, sigma_rel: float, step: int | None = None, max_step: int | None = None) -> tuple[dict, dict]:
    """(state dict, info) of the EMA of length ``sigma_rel`` at ``step`` (default: the newest
    snapshot step), from the run's snapshots up to ``max_step`` (default ``step``); every snapshot
    read is checked against its sha256 in index.json."""
    from safetensors.torch import load_file

    from sit.io import sha256_file

    folder = Path(run_dir) / "phema"
    index = read_index(folder)
    if not index:
        raise FileNotFoundError(f"{str(folder)!r} lists no snapshots")
    step = int(step if step is not None else max(e["step"] for e in index))
    use = [e for e in index if e["step"] <= (max_step if max_step is not None else step)]
    if not use:
        raise ValueError(f"no post-hoc EMA snapshot at or before step {step} in {str(folder)!r}")
    x = solve_coefficients([e["step"] for e in use], [e["sigma_rel"] for e in use], step, sigma_rel)
    out: dict[str, torch.Tensor] = {}
    for e, w in zip(use, x):
        f = folder / e["file"]
        if not f.is_file() or sha256_file(f) != e["sha256"]:
            raise ValueError(f"post-hoc EMA snapshot {str(f)!r} is missing or corrupt (sha256 mismatch)")
        sd = load_file(str(f))
        for k, v in sd.items():
            acc = out.get(k)
            out[k] = v.double() * float(w) if acc is None else acc + v.double() * float(w)
    ref = load_file(str(folder / use[-1]["file"]))
    out = {k: v.to(ref[k].dtype) for k, v in out.items()}
    info = {"sigma_rel": float(sigma_rel), "step": step, "snapshots": len(use),
            "coefficients": [{"step": e["step"], "sigma_rel": e["sigma_rel"], "weight": float(w)} for e, w in zip(use, x)]}
    return out, info


def export_reconstruction(run_dir, sigma_rel: float, out, step: int | None = None) -> Path:
    """Write the reconstruction as a checkpoint folder ``out`` (config.json + ema.safetensors,
    readable by every sit reader), with the run's config and the reconstruction's coefficients."""
    from safetensors.torch import save_file

    from sit.checkpoints import resolve
    from sit.io import atomic_path, write_text_atomic

    sd, info = reconstruct(run_dir, sigma_rel, step)
    ck = resolve(run_dir)
    config = json.loads((ck / "config.json").read_text())
    config["step"] = info["step"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "ema.safetensors") as tmp:
        save_file(sd, str(tmp))
    write_text_atomic(out / "phema.json", json.dumps(info, indent=1) + "\n")
    write_text_atomic(out / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out
