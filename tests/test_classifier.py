"""quick_quality: metrics in a small classifier's feature space (sit/evaluate/classifier.py)."""

import pytest
import torch

from sit.evaluate.classifier import get_classifier, quick_quality


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # (1797, 1, 8, 8) in [-1, 1]
    return x, torch.tensor(d.target)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sitcache") / "classifier"  # = default_cache_dir() under SIT_CACHE


def test_quick_quality_real_vs_real_and_noise(digits, cache):
    x, y = digits
    same = quick_quality(x, y, x, y, cache_dir=cache)
    assert same["accuracy"] > 0.95
    assert same["classifier_test_accuracy"] > 0.85
    assert abs(same["fid"]) < 1e-6
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    noise = torch.rand(400, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = quick_quality(x, y, noise, y[:400], cache_dir=cache)
    assert bad["accuracy"] < 0.4
    assert bad["fid"] > 10 * max(same["fid"], 1.0)
    assert bad["precision"] < 0.5
    # half of the real data, unconditional: no accuracy, FID far below noise
    unc = quick_quality(x, y, x[::2], None, cache_dir=cache)
    assert unc["accuracy"] is None and unc["fid"] < bad["fid"] / 10


def test_classifier_cached_and_deterministic(digits, cache):
    x, y = digits
    cache.mkdir(parents=True, exist_ok=True)
    a = get_classifier(x[:300], y[:300], seed=0, cache_dir=cache)
    files = sorted(cache.iterdir())
    b = get_classifier(x[:300], y[:300], seed=0, cache_dir=cache)  # from the cache
    assert sorted(cache.iterdir()) == files
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = get_classifier(x[:300], y[:300], seed=0, cache_dir=False)  # retrained: same weights
    for va, vc in zip(a.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vc)


def test_quick_quality_rejects_bad_shapes(digits):
    x, y = digits
    with pytest.raises(ValueError, match="differ in shape"):
        quick_quality(x, y, torch.zeros(10, 1, 4, 4), None, cache_dir=False)
    nan = torch.zeros(10, 1, 8, 8)
    nan[3, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="1 of 10 generated images contain NaN"):
        quick_quality(x, y, nan, None, cache_dir=False)


def test_sit_eval_cli_classifier_mode(digits, cache, tmp_path, monkeypatch, capsys):
    import json

    import numpy as np

    from sit.cli import main

    monkeypatch.setenv("SIT_CACHE", str(cache.parent))  # reuse the classifier trained above
    x, y = digits
    u8 = torch.clamp(127.5 * x[:300] + 128, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).expand(-1, -1, -1, 3)
    np.savez(tmp_path / "s.npz", arr_0=u8.numpy(), arr_1=y[:300].numpy())
    assert main(["eval", "digits", str(tmp_path / "s.npz"), "--metrics", "none", "--out", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["classifier_dataset"] == "digits" and r["num_fake"] == 300
    assert r["clf_accuracy"] > 0.95 and r["clf_precision"] > 0.9 and r["clf_fid"] < 60.0  # noise: ~600
    assert "classifier FID" in capsys.readouterr().out
    assert main(["eval", "digits", str(tmp_path / "s.npz"), "--metrics", "fid,bogus"]) == 2
    assert "unknown metric 'bogus'" in capsys.readouterr().err


def test_cached_classifier_leaves_the_global_rng_as_training_does(tmp_path):
    """A run must not depend on whether the classifier cache was warm: reading the cache consumes no
    global random numbers, exactly as training it does not (REPA's digits encoder is built between a
    seed and the projector's initialisation)."""
    import torch

    from sit.data.embedded import load_embedded
    from sit.evaluate.classifier import get_classifier

    x, y = load_embedded("digits", "train", image_size=8)
    draws = []
    for _ in range(2):  # cold (trains and writes the cache), then warm (reads it)
        torch.manual_seed(5)
        get_classifier(x, y, num_classes=10, seed=1, cache_dir=tmp_path, log=lambda s: None)
        draws.append(torch.rand(3))
    torch.manual_seed(5)
    assert torch.equal(draws[0], torch.rand(3)) and torch.equal(draws[1], draws[0])
