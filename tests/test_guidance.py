"""Classifier-free guidance wrapper (section 3.3): formula, one batched call, options, errors."""

import math

import pytest
import torch

from sit.guidance.guided import GuidedModel
from sit.objectives import velocity_field
from sit.paths import Linear
from sit.samplers import SampleConfig, sample

NULL = 10


class Recorder:
    """A conditional 'network': out = x * (1 + y) + t (per channel), recording each call."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append((x.shape[0], y.tolist(), t.tolist()))
        return x * (1.0 + y.to(x.dtype)).view(-1, *([1] * (x.ndim - 1))) + t.view(-1, *([1] * (x.ndim - 1)))


def test_guidance_formula_in_one_batched_call():
    rec = Recorder()
    zeta = 2.5
    g = GuidedModel(rec, zeta, NULL)
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    t = torch.full((3,), 0.3, dtype=torch.float64)
    out = g(x, t, y)
    cond, uncond = rec(x, t, y), rec(x, t, torch.full_like(y, NULL))
    torch.testing.assert_close(out, zeta * cond + (1 - zeta) * uncond)
    assert rec.calls[0][0] == 6 and rec.calls[0][1] == [0, 1, 2, NULL, NULL, NULL]
    assert g.nfe == 1 and g.rows == 6
    assert g.scale == zeta and not hasattr(g, "cfg_scale")  # the guidance scale of either strategy, not "CFG's"


def test_scale_one_skips_unconditional_and_scale_zero_is_unconditional():
    rec = Recorder()
    x = torch.randn(2, 3, dtype=torch.float64)
    y, t = torch.tensor([1, 2]), torch.tensor([0.5, 0.5], dtype=torch.float64)
    g = GuidedModel(rec, 1.0, NULL)
    torch.testing.assert_close(g(x, t, y), rec(x, t, y))
    assert rec.calls[0][0] == 2 and g.nfe == 1
    g0 = GuidedModel(rec, 0, NULL)
    torch.testing.assert_close(g0(x, t, y), rec(x, t, torch.full_like(y, NULL)))


def test_official_three_channel_option():
    rec = Recorder()
    x = torch.randn(2, 4, 2, 2, dtype=torch.float64)
    y, t = torch.tensor([3, 4]), torch.tensor([0.1, 0.1], dtype=torch.float64)
    out = GuidedModel(rec, 4.0, NULL, channels=3)(x, t, y)
    cond, uncond = rec(x, t, y), rec(x, t, torch.full_like(y, NULL))
    torch.testing.assert_close(out[:, :3], 4.0 * cond[:, :3] - 3.0 * uncond[:, :3])
    torch.testing.assert_close(out[:, 3:], cond[:, 3:])


def test_interval():
    rec = Recorder()
    x = torch.randn(3, 2, dtype=torch.float64)
    y = torch.tensor([1, 2, 3])
    g = GuidedModel(rec, 3.0, NULL, interval=(0.2, 0.6))
    # all outside: conditional only, one call on B rows
    t = torch.full((3,), 0.9, dtype=torch.float64)
    torch.testing.assert_close(g(x, t, y), rec(x, t, y))
    assert rec.calls[0][0] == 3
    # mixed rows: only the inside rows get an unconditional copy
    t = torch.tensor([0.1, 0.4, 0.9], dtype=torch.float64)
    rec.calls.clear()
    out = g(x, t, y)
    assert len(rec.calls) == 1 and rec.calls[0][0] == 4
    cond, uncond = rec(x, t, y), rec(x, t, torch.full_like(y, NULL))
    torch.testing.assert_close(out[[0, 2]], cond[[0, 2]])
    torch.testing.assert_close(out[1], 3.0 * cond[1] - 2.0 * uncond[1])
    assert g.nfe == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1.5", None, True])
def test_bad_scale_named(bad):
    with pytest.raises(ValueError, match="GuidedModel.scale"):
        GuidedModel(Recorder(), bad, NULL)


def test_bad_options():
    with pytest.raises(ValueError, match="channels"):
        GuidedModel(Recorder(), 2.0, NULL, channels=0)
    with pytest.raises(ValueError, match="interval"):
        GuidedModel(Recorder(), 2.0, NULL, interval=(0.7, 0.2))
    with pytest.raises(ValueError, match="labels"):
        GuidedModel(Recorder(), 2.0, NULL)(torch.zeros(1, 1), torch.zeros(1), None)


def test_guidance_of_gaussian_classes_through_a_sampler():
    """Classes y with data N(m_y, 1) on Linear: every conditional velocity is affine in x with
    the same slope, so the guided field is the exact field of N(zeta m_y + (1 - zeta) m_null, 1)
    and the sampled class means land there."""
    path = Linear()
    means = torch.tensor([-1.0, 2.0, 0.5], dtype=torch.float64)  # class 0, class 1, null (index 2)

    def model_fn(x, t, y):  # exact velocity of N(m_y, 1) data on Linear (alpha = 1 - t, sigma = t)
        a, s = (1 - t)[:, None], t[:, None]
        m = means[y][:, None]
        var = a * a + s * s
        xs = m + a * (x - a * m) / var
        eps = s * (x - a * m) / var
        return -xs + eps

    g = GuidedModel(model_fn, 1.5, 2)
    y = torch.tensor([0, 1] * 2000)
    x0 = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x, info = sample(velocity_field(g, path, "velocity", y=y), x0, SampleConfig(method="heun", num_steps=20), path)
    assert g.nfe == info["nfe"] == 40
    # the guided field is affine in x with mean part 1.5 m_y - 0.5 m_null along the whole path
    for cls in (0, 1):
        m = float(x[y == cls].mean())
        assert math.isclose(m, 1.5 * means[cls].item() - 0.5 * means[2].item(), abs_tol=0.06)
