"""ADM-evaluator metrics on features with closed-form answers (sit/evaluate/metrics.py)."""

import warnings

import numpy as np
import pytest
import torch
from scipy import linalg

from sit.evaluate.metrics import (
    NpzImages,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_score,
    load_image_set,
    precision_recall,
)


def test_frechet_1d_closed_form():
    # W2² between N(m1, s1²) and N(m2, s2²) is (m1 - m2)² + (s1 - s2)²
    m1, s1, m2, s2 = 0.3, 1.7, -1.2, 0.4
    d = frechet_distance([m1], [[s1**2]], [m2], [[s2**2]])
    assert d == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-12)


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 2, size=5), rng.uniform(0.1, 2, size=5)
    d = frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2))
    assert d == pytest.approx(np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2), rel=1e-10)


def test_frechet_full_covariance_closed_form():
    # tr(S1 + S2 - 2 (S2^½ S1 S2^½)^½): the symmetric form of the same trace
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    r2 = linalg.sqrtm(s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(r2 @ s1 @ r2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # commuting covariances: tr((S1^½ - S2^½)²)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    e1, e2 = rng.uniform(0.2, 3, 6), rng.uniform(0.2, 3, 6)
    c1, c2 = q @ np.diag(e1) @ q.T, q @ np.diag(e2) @ q.T
    assert frechet_distance(mu1, c1, mu1, c2) == pytest.approx(np.sum((np.sqrt(e1) - np.sqrt(e2)) ** 2), rel=1e-9)


def test_frechet_singular_covariances_use_eps_offset():
    # rank-deficient covariances (N < D) stay finite and non-negative
    rng = np.random.default_rng(2)
    f = rng.normal(size=(5, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = frechet_distance(*feature_statistics(f), *feature_statistics(f))
    assert abs(d) < 1e-4


def test_identical_sets_fid_zero_shift_worse():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(400, 8))
    assert abs(fid_from_features(f, f)) < 1e-6
    assert fid_from_features(f, f + 0.5) == pytest.approx(8 * 0.25, rel=1e-6)  # pure mean shift
    g = rng.normal(size=(400, 8))
    assert fid_from_features(f, g + 1.0) > fid_from_features(f, g)


def test_fid_svd_route_equals_sqrtm_route():
    rng = np.random.default_rng(8)
    f, g = rng.normal(size=(60, 10)), 0.7 * rng.normal(size=(45, 10)) @ rng.normal(size=(10, 10)) + 0.2
    a = fid_from_features(f, g, method="sqrtm")
    assert fid_from_features(f, g, method="svd") == pytest.approx(a, rel=1e-9)
    # few samples in many dimensions (singular covariances): auto takes the svd route, exact 0 on itself
    h = rng.normal(size=(12, 300))
    assert abs(fid_from_features(h, h)) < 1e-9
    assert fid_from_features(h, h + 1.0) == pytest.approx(300.0, rel=1e-9)


def test_feature_statistics_float64_unbiased():
    f = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]], dtype=torch.float32)
    mu, sigma = feature_statistics(f)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, [2.0, 4.0])
    np.testing.assert_allclose(sigma, [[4.0, 7.0], [7.0, 13.0]])


def test_inception_score_uniform_and_confident():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert inception_score(np.zeros((50, 1008))) == pytest.approx(1.0, abs=1e-12)
        k = 10
        logits = np.full((100, k), -1e4)
        logits[np.arange(100), np.arange(100) % k] = 0.0
        assert inception_score(logits) == pytest.approx(k, rel=1e-9)
        # confident but always the same class: 1
        same = np.full((30, k), -1e4)
        same[:, 3] = 0.0
        assert inception_score(same) == pytest.approx(1.0, abs=1e-9)


def test_inception_score_splits_mean():
    # split 1: confident balanced over 4 classes (IS 4); split 2: uniform (IS 1); mean 2.5
    k, n = 4, 8
    a = np.full((n, k), -1e4)
    a[np.arange(n), np.arange(n) % k] = 0.0
    logits = np.concatenate([a, np.zeros((n, k))])
    assert inception_score(logits, split_size=n) == pytest.approx(2.5, rel=1e-9)
    with pytest.warns(UserWarning, match="one split"):
        inception_score(logits, split_size=100)


def test_precision_recall_identical_and_disjoint():
    rng = np.random.default_rng(4)
    f = rng.normal(size=(300, 16))
    assert precision_recall(f, f) == (1.0, 1.0)
    p, r = precision_recall(f, f + 100.0)
    assert p == 0.0 and r == 0.0


def test_precision_recall_mode_collapse():
    # samples on a small part of the reference: high precision, low recall
    rng = np.random.default_rng(5)
    real = rng.normal(size=(500, 2))
    fake = 0.1 * rng.normal(size=(500, 2))
    p, r = precision_recall(real, fake, dtype=torch.float64)
    assert p > 0.9 and r < 0.3


def test_precision_recall_batched_equals_unbatched():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(130, 5)), rng.normal(size=(90, 5)) + 0.3
    a = precision_recall(real, fake, dtype=torch.float64)
    b = precision_recall(real, fake, dtype=torch.float64, batch_size=17)
    assert a == b


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_images_streams_slices(tmp_path, save):
    a = np.random.default_rng(10).integers(0, 256, size=(23, 4, 5, 3), dtype=np.uint8)
    save(tmp_path / "x.npz", arr_0=a, arr_1=np.arange(23))
    r = NpzImages(tmp_path / "x.npz")
    assert r.shape == a.shape and len(r) == 23 and r.dtype == np.uint8
    for lo, hi in [(0, 7), (7, 20), (2, 5), (20, 100)]:  # sequential, then backwards, then past the end
        np.testing.assert_array_equal(r[lo:hi], a[lo:hi])
    np.testing.assert_array_equal(np.asarray(r), a)
    s = load_image_set(tmp_path / "x.npz", lazy=True)
    assert isinstance(s.images, NpzImages)
    np.testing.assert_array_equal(s.images[3:9], a[3:9])
    np.testing.assert_array_equal(s.labels, np.arange(23))


def test_load_image_set_npz_and_folder(tmp_path):
    from PIL import Image

    imgs = np.random.default_rng(7).integers(0, 256, size=(3, 6, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", imgs, np.array([1, 2, 3]))
    s = load_image_set(tmp_path / "s.npz")
    np.testing.assert_array_equal(s.images, imgs)
    np.testing.assert_array_equal(s.labels, [1, 2, 3])
    d = tmp_path / "imgs"
    d.mkdir()
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(d / f"{i:03d}.png")
    np.testing.assert_array_equal(load_image_set(d).images, imgs)
    mu, sigma = np.zeros(4), np.eye(4)
    np.savez(tmp_path / "ref.npz", arr_0=imgs, mu=mu, sigma=sigma)
    ref = load_image_set(tmp_path / "ref.npz", with_images=False)
    assert ref.images is None and ref.mu_s is None
    np.testing.assert_array_equal(ref.sigma, sigma)
    with pytest.raises(FileNotFoundError):
        load_image_set(tmp_path / "missing.npz")
    (tmp_path / "s.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown image set format"):
        load_image_set(tmp_path / "s.txt")


class _StubFeatures:
    """Stands in for InceptionFeatures: features are the pixels themselves (fast, deterministic)."""

    def __init__(self, source="auto", **kwargs):
        self.path, self.device = "stub", torch.device("cpu")

    def describe(self):
        return "stub"

    def features(self, images, spatial=True):
        f = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
        return dict(pool=f, spatial=f[:, ::2] if spatial else None, logits=f[:, :10])


def test_sit_eval_precomputed_reference_statistics_match_images(tmp_path, monkeypatch):
    import json

    import sit.evaluate.inception as inception
    from sit.cli import main

    monkeypatch.setattr(inception, "InceptionFeatures", _StubFeatures)
    rng = np.random.default_rng(9)
    ref = rng.integers(0, 256, size=(40, 2, 2, 3), dtype=np.uint8)
    smp = np.clip(ref.astype(int) + rng.integers(-30, 30, size=ref.shape), 0, 255).astype(np.uint8)
    f = ref.reshape(40, -1).astype(np.float64)
    mu, sigma = feature_statistics(f)
    mu_s, sigma_s = feature_statistics(f[:, ::2])
    np.savez(tmp_path / "ref_img.npz", arr_0=ref)
    np.savez(tmp_path / "ref_stats.npz", arr_0=ref, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    np.savez(tmp_path / "s.npz", arr_0=smp)
    res = []
    for name in ("ref_img", "ref_stats"):
        out = tmp_path / f"{name}.json"
        assert main(["eval", str(tmp_path / f"{name}.npz"), str(tmp_path / "s.npz"), "--out", str(out), "--no-progress"]) == 0
        res.append(json.loads(out.read_text()))
    assert res[0]["fid_reference"] == "reference images" and res[1]["fid_reference"] == "precomputed reference statistics"
    assert res[0]["fid"] == pytest.approx(res[1]["fid"], rel=1e-8)
    assert res[0]["sfid"] == pytest.approx(res[1]["sfid"], rel=1e-8)
    assert res[0]["fid"] == pytest.approx(fid_from_features(f, smp.reshape(40, -1)), rel=1e-8)
    assert 0 < res[0]["precision"] <= 1 and res[0]["is"] >= 1.0
    # --save-ref-stats writes ADM-keyed statistics that give the same FID / sFID afterwards
    stats = tmp_path / "saved.npz"
    assert main(["eval", str(tmp_path / "ref_img.npz"), str(tmp_path / "s.npz"), "--metrics", "fid",
                 "--save-ref-stats", str(stats), "--out", str(tmp_path / "a.json"), "--no-progress"]) == 0
    assert main(["eval", str(stats), str(tmp_path / "s.npz"), "--metrics", "fid,sfid", "--out", str(tmp_path / "b.json"),
                 "--no-progress"]) == 0
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["fid"] == pytest.approx(res[0]["fid"], rel=1e-8) and b["sfid"] == pytest.approx(res[0]["sfid"], rel=1e-8)
