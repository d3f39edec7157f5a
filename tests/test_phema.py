"""Post-hoc EMA (sit.train.phema): sigma_rel <-> gamma, the profiles' inner product against
quadrature, reconstruction of an untracked length against a directly tracked power-function EMA,
and the run-level snapshots (sit train --phema-*, sit ema, exact resume)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from sit.cli import main
from sit.train.phema import (
    PowerEMA,
    gamma_to_sigma_rel,
    profile_inner,
    sigma_rel_to_gamma,
    solve_coefficients,
)


def test_sigma_rel_and_gamma():
    # Karras et al. 2024, section 3.1: sigma_rel 0.10 and 0.05 are gamma 6.94 and 16.97
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    for s in (0.01, 0.05, 0.2, 0.28):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(s)) == pytest.approx(s, rel=1e-9)
    with pytest.raises(ValueError, match="sigma_rel must be in"):
        sigma_rel_to_gamma(0.3)


def test_profile_inner_product_is_the_integral():
    def p(tau, t, g):
        return np.where(tau <= t, (g + 1) * tau ** g / t ** (g + 1), 0.0)

    tau = np.linspace(0, 300, 3_000_001)
    for (ta, ga, tb, gb) in [(100, 6.94, 250, 16.97), (250, 3.0, 100, 10.0), (200, 5.0, 200, 5.0)]:
        num = np.trapezoid(p(tau, ta, ga) * p(tau, tb, gb), tau)
        assert profile_inner(ta, ga, tb, gb) == pytest.approx(num, rel=1e-4)


def _trajectory(T: int, seed: int = 0):
    """A network whose parameters drift smoothly with noise: theta_t for t = 1..T."""
    g = torch.Generator().manual_seed(seed)
    a, b, c = (torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    for t in range(1, T + 1):
        yield a * np.sin(t / 70) + b * t / T + 0.05 * c * torch.randn(3, 5, generator=g, dtype=torch.float64)


def test_reconstruction_matches_a_directly_tracked_ema():
    T, every = 600, 20
    net = nn.Linear(5, 3, bias=False).double()
    stored = PowerEMA(net, (0.05, 0.10))
    direct = PowerEMA(net, (0.075, 0.05))  # the target, and a stored length as a yardstick
    snaps, steps, sigmas = [], [], []
    for t, theta in enumerate(_trajectory(T), start=1):
        with torch.no_grad():
            net.weight.copy_(theta)
        stored.update(net, t)
        direct.update(net, t)
        if t % every == 0:
            for s, ema in zip(stored.sigmas, stored.copies):
                snaps.append(ema.weight.detach().clone())
                steps.append(t)
                sigmas.append(s)
    x = solve_coefficients(steps, sigmas, T, 0.075)
    recon = sum(float(w) * s for w, s in zip(x, snaps))
    target, other = direct.copies[0].weight, direct.copies[1].weight
    err = float((recon - target).norm())
    assert err < 1e-3 * float((other - target).norm()), err  # (measured: 2.6e-5 against 0.23)
    # a stored (step, length) is reconstructed by itself
    x = solve_coefficients(steps, sigmas, T, 0.05)
    assert x[-2] == pytest.approx(1.0, abs=1e-6) and np.abs(np.delete(x, -2)).max() < 1e-6


FLAGS = ["--depth", "2", "--hidden-size", "32", "--num-heads", "2", "--patch-size", "2", "--batch", "16",
         "--lr", "3e-3", "--warmup", "0", "--log-every", "5", "--keep-last", "5", "--no-quality",
         "--samples-per-class", "2", "--sample-steps", "2", "--no-progress", "--threads", "1",
         "--phema-sigmas", "0.05", "0.1", "--phema-every", "5"]


def test_run_snapshots_resume_and_sit_ema(tmp_path, capsys):
    ref, part = tmp_path / "ref", tmp_path / "part"
    assert main(["train", "--out", str(ref), "--steps", "20", "--ckpt-every", "10", *FLAGS]) == 0
    assert main(["train", "--out", str(part), "--steps", "10", "--ckpt-every", "10", *FLAGS]) == 0
    assert main(["train", "--resume", str(part), "--steps", "20", "--no-progress"]) == 0
    for name in ("step-0000020-sigma-0.0500.safetensors", "step-0000020-sigma-0.1000.safetensors"):
        a, b = load_file(str(ref / "phema" / name)), load_file(str(part / "phema" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name  # exact resume of the tracked EMAs
    index = json.loads((ref / "phema" / "index.json").read_text())
    assert [(e["step"], e["sigma_rel"]) for e in index][:3] == [(5, 0.05), (5, 0.1), (10, 0.05)]
    assert "phema.safetensors" in json.loads((ref / "checkpoints" / "step-0000020" / "manifest.json").read_text())["files"]

    out = tmp_path / "ema-0.05"
    assert main(["ema", "--ckpt", str(ref), "--sigma-rel", "0.05", "--out", str(out)]) == 0
    got, want = load_file(str(out / "ema.safetensors")), load_file(str(ref / "phema" / "step-0000020-sigma-0.0500.safetensors"))
    assert max(float((got[k] - want[k]).abs().max()) for k in want) < 1e-5
    from sit import checkpoints

    net, meta = checkpoints.load(out)  # an ordinary checkpoint folder for every reader
    assert meta.step == 20
    capsys.readouterr()
    assert main(["ema", "--ckpt", str(tmp_path / "nothing"), "--sigma-rel", "0.05", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--phema-sigmas" in err
