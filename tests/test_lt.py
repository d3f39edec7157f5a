"""Per-time loss L_t (sit.lt) against the Gaussian closed form: the irreducible conditional variance."""


import pytest
import torch
from tiny_cli import one_line

from sit.cli import main
from sit.diffusion_coef import LossTable
from sit.lt import estimate_loss_table
from sit.paths import GVP, VP, Linear

D64 = torch.float64
MU = torch.tensor([1.0, -0.5, 0.0], dtype=D64)
C = torch.tensor([0.5, 1.5, 1.0], dtype=D64)  # x* ~ N(MU, diag(C^2)), shaped (B, 3, 1, 1) below


def _dss(path, t):
    """sigma_dot sigma, finite at t = 0 also for VP."""
    if isinstance(path, VP):
        return 0.5 * path.beta(t) * torch.exp(-path.B(t))
    return path.d_sigma(t) * path.sigma(t)


def _coefs(path, t):
    a, s, da, _ = (c.to(D64) for c in path.coefficients(t.to(D64)))
    return a, s, da, _dss(path, t.to(D64))


def exact_prediction(path, prediction):
    """E[alpha_dot x* + sigma_dot eps | x_t] (velocity) or E[eps | x_t] (noise) for the diagonal Gaussian."""
    shape = (1, 3, 1, 1)
    mu, c2 = MU.reshape(shape), (C**2).reshape(shape)

    def fn(x, t, y=None):
        a, s, da, dss = (v.reshape(-1, 1, 1, 1) for v in _coefs(path, t))
        var = a * a * c2 + s * s
        if prediction == "noise":
            return s * (x - a * mu) / var
        return da * mu + (da * a * c2 + dss) / var * (x - a * mu)

    return fn


def closed_form_lt(path, t):
    """Per-dimension mean of Var(alpha_dot x* + sigma_dot eps | x_t):
    (1/D) sum_d [alpha_dot^2 c_d^2 + sigma_dot^2 - (alpha_dot alpha c_d^2 + sigma_dot sigma)^2 / (alpha^2 c_d^2 + sigma^2)]."""
    tt = torch.tensor([t], dtype=D64)
    a, s, da, dss = (float(v) for v in _coefs(path, tt))
    ds2 = float(path.d_sigma(tt)) ** 2
    c2 = C**2
    var = a * a * c2 + s * s
    return float((da * da * c2 + ds2 - (da * a * c2 + dss) ** 2 / var).mean())


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return (MU + C * torch.randn(n, 3, dtype=D64, generator=g)).reshape(n, 3, 1, 1)


@pytest.mark.parametrize("path", [Linear(), GVP(), VP()], ids=["linear", "gvp", "vp"])
def test_loss_table_matches_the_closed_form(path):
    grid = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0] if not isinstance(path, VP) else [0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    table = estimate_loss_table(
        exact_prediction(path, "velocity"), path, "velocity", data(2000, 0), grid,
        samples_per_t=2000, generator=torch.Generator().manual_seed(1),
    )
    assert isinstance(table, LossTable)
    assert table.reduction == "mean" and table.dim == 3 and table.num_samples == 2000
    assert table.prediction == "velocity" and table.path == path.name
    for t, L, se in zip(table.t, table.loss, table.stderr):
        exact = closed_form_lt(path, t)
        assert se > 0 and abs(L - exact) < 4 * se, (t, L, se, exact)
    # JSON round trip keeps everything
    assert LossTable.from_json(table.to_json()) == table


def test_noise_model_is_converted_to_velocity_and_sum_reduction():
    path = Linear()
    grid = [0.1, 0.5, 0.9]
    kw = dict(samples_per_t=500)
    ref = estimate_loss_table(exact_prediction(path, "velocity"), path, "velocity", data(500, 2), grid,
                              generator=torch.Generator().manual_seed(3), **kw)
    noise = estimate_loss_table(exact_prediction(path, "noise"), path, "noise", data(500, 2), grid,
                                generator=torch.Generator().manual_seed(3), **kw)
    # same samples, exact fields: identical up to rounding
    assert noise.loss == pytest.approx(ref.loss, rel=1e-9) and noise.prediction == "noise"
    summed = estimate_loss_table(exact_prediction(path, "velocity"), path, "velocity", data(500, 2), grid,
                                 generator=torch.Generator().manual_seed(3), reduction="sum", **kw)
    assert summed.loss == pytest.approx([3 * v for v in ref.loss], rel=1e-12)
    assert summed.with_reduction("mean").loss == pytest.approx(ref.loss, rel=1e-12)


def test_standard_error_shrinks_with_more_samples():
    path = GVP()
    fn = exact_prediction(path, "velocity")
    small = estimate_loss_table(fn, path, "velocity", data(256, 4), [0.5], samples_per_t=250,
                                generator=torch.Generator().manual_seed(5))
    big = estimate_loss_table(fn, path, "velocity", data(256, 4), [0.5], samples_per_t=4000,
                              generator=torch.Generator().manual_seed(5))
    ratio = small.stderr[0] / big.stderr[0]
    assert 3.0 < ratio < 5.0  # sqrt(4000 / 250) = 4


def test_labelled_batches_and_bad_inputs():
    path = Linear()
    seen = []

    def fn(x, t, y):
        seen.append(y)
        return exact_prediction(path, "velocity")(x, t)

    batches = [(data(100, 6), torch.zeros(100, dtype=torch.long))]
    estimate_loss_table(fn, path, "velocity", batches, [0.5], samples_per_t=150)
    assert len(seen) == 2 and seen[1].shape == (50,)
    with pytest.raises(ValueError, match="non-finite loss at t = 1.0"):
        estimate_loss_table(exact_prediction(path, "noise"), path, "noise", data(10, 0), [0.5, 1.0], samples_per_t=10)
    with pytest.raises(ValueError, match="prediction"):
        estimate_loss_table(fn, path, "x0", data(10, 0), [0.5], samples_per_t=10)
    with pytest.raises(ValueError, match="reduction"):
        estimate_loss_table(fn, path, "velocity", data(10, 0), [0.5], samples_per_t=10, reduction="max")
    with pytest.raises(ValueError, match="t_grid"):
        estimate_loss_table(fn, path, "velocity", data(10, 0), [0.5, 1.5], samples_per_t=10)
    with pytest.raises(ValueError, match="increasing"):
        estimate_loss_table(fn, path, "velocity", data(10, 0), [0.5, 0.2], samples_per_t=10)
    with pytest.raises(ValueError, match="samples_per_t"):
        estimate_loss_table(fn, path, "velocity", data(10, 0), [0.5], samples_per_t=1)


def test_a_bad_lt_table_names_the_file(tiny_run_and_samples, tmp_path, capsys):
    run, _ = tiny_run_and_samples
    bad = tmp_path / "table.json"
    bad.write_text('{"t": [0.1, 0.5], "L": "oops"}')
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(tmp_path / "s"), "--method", "euler_maruyama",
                 "--num-steps", "2", "--w", "kl_eta", "--eta", "1", "--lt-table", str(bad), "--num-samples", "2",
                 "--no-progress", "--threads", "1"]) == 2
    one_line(capsys, f"--lt-table '{bad}'")


def test_lt_on_a_read_only_checkpoint_is_refused_before_computing(tiny_run_and_samples, tmp_path, monkeypatch, capsys):
    import os

    run, _ = tiny_run_and_samples
    ck = run / "checkpoints" / "step-0000002"
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ck) else real(p, mode))
    monkeypatch.setattr("sit.lt.estimate_loss_table", lambda *a, **k: pytest.fail("computed before the check"))
    capsys.readouterr()
    assert main(["lt", "--ckpt", str(ck), "--t-points", "2", "--samples-per-t", "2", "--no-progress"]) == 2
    one_line(capsys, "cannot write the L_t table", "nothing was computed")
