"""w_t choices (math.md section 6) and the L_t table of w_KL,eta (eq. 14)."""

import math

import pytest
import torch

from sit.diffusion_coef import W_NAMES, LossTable, get_w, kl_eta
from sit.io import write_text_atomic
from sit.paths import GVP, VP, Linear

T = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.9], dtype=torch.float64)


def test_paper_forms():
    lin = Linear()
    torch.testing.assert_close(get_w("kl", lin)(T), 2 * T / (1 - T))  # 2 lambda_t = 2 t / (1 - t)
    torch.testing.assert_close(get_w("kl", VP())(T), 0.1 + 19.9 * T)  # w_KL = beta_t on VP
    torch.testing.assert_close(get_w("sigma", GVP(), scale=3.0)(T), 3 * torch.sin(math.pi * T / 2))
    torch.testing.assert_close(get_w("sin2", lin)(T), torch.sin(math.pi * T) ** 2)
    torch.testing.assert_close(get_w("constant", lin, scale=0.7)(T), torch.full_like(T, 0.7))
    assert torch.isinf(get_w("kl", lin)(torch.tensor([1.0]))).all()


def test_official_forms_are_twice_the_official_D():
    lin = Linear()
    tau = 1 - T
    # the official D(tau) with norm n; w = 2 D
    n = 0.5
    torch.testing.assert_close(get_w("official-sigma", lin, scale=n)(T), 2 * n * T)
    torch.testing.assert_close(get_w("official-sigma", lin, scale=0.5)(T), get_w("sigma", lin)(T))
    torch.testing.assert_close(get_w("official-linear", lin, scale=n)(T), 2 * n * (1 - tau))
    torch.testing.assert_close(get_w("official-decreasing", lin, scale=n)(T), 2 * 0.25 * (n * torch.cos(math.pi * tau) + 1) ** 2)
    torch.testing.assert_close(get_w("official-inccreasing-decreasing", lin, scale=n)(T), 2 * n * torch.sin(math.pi * tau) ** 2)
    torch.testing.assert_close(get_w("official-constant", lin, scale=n)(T), torch.full_like(T, 2 * n))
    torch.testing.assert_close(get_w("SBDM", lin)(T), get_w("kl", lin)(T))


def test_kl_eta():
    lin = Linear()
    table = LossTable(t=[0.0, 1.0], loss=[2.0, 4.0], stderr=[0.1, 0.1], dim=4)
    eta = 0.3
    w = get_w("kl_eta", lin, eta=eta, table=table)(T)
    wk, L = 2 * T / (1 - T), 2.0 + 2.0 * T
    torch.testing.assert_close(w, wk * torch.sqrt(L / (L + 2 * eta * wk**2)))
    # eta = 0 gives w_KL; finite limit sqrt(L_1 / (2 eta)) at t = 1 for eta > 0
    torch.testing.assert_close(get_w("kl_eta", lin, eta=0.0)(T), wk)
    w1 = get_w("kl_eta", lin, eta=eta, table=table)(torch.tensor([1.0], dtype=torch.float64))
    torch.testing.assert_close(w1, torch.tensor([math.sqrt(4.0 / (2 * eta))], dtype=torch.float64))
    assert kl_eta(torch.zeros(1), torch.zeros(1), 1.0).item() == 0.0


def test_loss_table_interpolation_json_and_reduction(tmp_path):
    tab = LossTable(t=[0.1, 0.5, 0.9], loss=[1.0, 3.0, 2.0], stderr=[0.1, 0.2, 0.3], dim=8, num_samples=100, path="linear")
    q = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.7, 1.0])
    torch.testing.assert_close(tab(q), torch.tensor([1.0, 1.0, 2.0, 3.0, 2.5, 2.0]))
    assert LossTable.from_json(tab.to_json()) == tab
    write_text_atomic(tmp_path / "lt.json", tab.to_json())  # as `sit lt` and training store it
    assert LossTable.load(tmp_path / "lt.json") == tab
    s = tab.with_reduction("sum")
    assert s.reduction == "sum" and s.loss == (8.0, 24.0, 16.0)
    assert s.with_reduction("mean") == tab
    assert tab(torch.tensor(0.3, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(t=[0.5, 0.2], loss=[1, 1]), "increasing"),
        (dict(t=[0.5], loss=[1, 1]), "lengths"),
        (dict(t=[1.5], loss=[1]), "t"),
        (dict(t=[0.5], loss=[-1]), "loss"),
        (dict(t=[0.5], loss=[1], reduction="max"), "reduction"),
        (dict(t=[0.5], loss=[1], dim=0), "dim"),
    ],
)
def test_loss_table_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        LossTable(**kwargs)
    with pytest.raises(ValueError, match="unknown LossTable field"):
        LossTable.from_json('{"t": [0.5], "loss": [1.0], "foo": 1}')


def test_bad_w_inputs_named():
    with pytest.raises(ValueError, match="'foo'"):
        get_w("foo", Linear())
    with pytest.raises(ValueError, match="eta"):
        get_w("kl_eta", Linear(), eta=-1.0)
    with pytest.raises(ValueError, match="scale"):
        get_w("sigma", Linear(), scale=float("nan"))
    with pytest.raises(ValueError, match="LossTable"):
        get_w("kl_eta", Linear(), eta=1.0)
    for name in W_NAMES:  # every name builds and evaluates finitely inside (0, 1)
        tab = LossTable(t=[0.0, 1.0], loss=[1.0, 1.0])
        assert torch.isfinite(get_w(name, GVP(), eta=0.5, table=tab)(torch.tensor([0.3, 0.7]))).all()


def test_w_table_is_the_one_list_and_kl_is_official_sbdm():
    from sit.diffusion_coef import W_FUNCTIONS, W_NAMES, canonical_w

    assert tuple(W_FUNCTIONS) == W_NAMES
    assert W_FUNCTIONS["kl"] is W_FUNCTIONS["official-sbdm"]
    assert canonical_w("SBDM") == "official-sbdm" and canonical_w("w_kl") == "kl"
    with pytest.raises(ValueError, match="unknown diffusion coefficient w 'nope'"):
        canonical_w("nope")
    t = torch.linspace(0, 0.9, 5, dtype=torch.float64)
    torch.testing.assert_close(get_w("official-sbdm", GVP(), scale=0.5)(t), get_w("kl", GVP(), scale=0.5)(t))
