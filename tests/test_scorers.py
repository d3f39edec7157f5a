"""The evaluation seam (sit/evaluate/scorer.py, sit/evaluate/scorers/): Fréchet identities through
each scorer, the verified reference-feature cache and the verified classifier cache."""

import numpy as np
import pytest
import torch

from sit.evaluate.scorer import Scores, reference_features, shifted_fd
from sit.evaluate.scorers.pixel import PixelScorer


def _images(n=200, seed=0, lo=-0.6, hi=0.6):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64)


def test_pixel_scorer_self_zero_and_shift_closed_form():
    sc = PixelScorer()
    x = _images()
    real = sc.features(x)
    assert real["pixels"].shape == (200, 64)
    assert abs(sc.scores(real, sc.features(x)).fd) < 1e-9
    # +0.2 in [-1, 1] is +0.1 in [0, 1] on each of 64 pixels: equal covariances, d^2 = |shift|^2 = 0.64
    shifted = sc.scores(real, sc.features(x + 0.2))
    assert shifted.fd == pytest.approx(64 * 0.1**2, rel=1e-9, abs=1e-9)
    assert shifted.fd == pytest.approx(shifted_fd(real["pixels"], np.full(64, 0.1)), rel=1e-9)
    # uint8 images read as value / 255
    u = np.full((3, 2, 2, 1), 255, dtype=np.uint8)
    assert np.all(sc.features(u)["pixels"] == 1.0)
    with pytest.raises(ValueError, match="uint8"):
        sc.features(np.zeros((2, 2, 2, 1), dtype=np.int32))


def test_scores_record_is_typed_and_flat():
    s = Scores("x", fd=np.float64(1.5), precision=1, extra={"note": "n"})
    assert isinstance(s.fd, float) and isinstance(s.precision, float)
    d = s.as_dict()
    assert d["fd"] == 1.5 and d["note"] == "n" and d["recall"] is None and "extra" not in d


def test_inception_scorer_random_weights_identities(tmp_path):
    from sit.evaluate.inception import InceptionV3FID
    from sit.evaluate.scorers.inception import InceptionScorer

    torch.manual_seed(0)
    torch.save(InceptionV3FID().state_dict(), tmp_path / "pt_inception-2015-12-05-test.pth")
    sc = InceptionScorer(str(tmp_path / "pt_inception-2015-12-05-test.pth"), device="cpu", batch_size=8)
    imgs = np.random.default_rng(0).integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
    f = sc.features(imgs)
    same = sc.scores(f, f, pr=True)
    assert abs(same.fd) < 1e-6 and abs(same.sfd) < 1e-6 and same.precision == 1.0 and same.recall == 1.0
    assert same.inception_score is not None and same.inception_score >= 1.0 - 1e-9
    c = np.linspace(-1, 1, f["pool"].shape[1])
    moved = sc.scores(f, f | {"pool": f["pool"] + c})
    assert moved.fd == pytest.approx(shifted_fd(f["pool"], c), rel=1e-6)
    # the identity names the weights: other bytes, other identity
    torch.manual_seed(1)
    torch.save(InceptionV3FID().state_dict(), tmp_path / "pt_inception-2015-12-05-other.pth")
    other = InceptionScorer(str(tmp_path / "pt_inception-2015-12-05-other.pth"), device="cpu")
    assert other.identity() != sc.identity()


def test_reference_features_cached_verified_and_rebuilt(tmp_path):
    sc = PixelScorer()
    calls = []

    class Counting(PixelScorer):
        def features(self, images):
            calls.append(len(images))
            return sc.features(images)

    imgs = np.random.default_rng(1).integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)
    lines = []
    a = reference_features(Counting(), "toy", imgs, cache_dir=tmp_path, log=lines.append)
    b = reference_features(Counting(), "toy", imgs, cache_dir=tmp_path, log=lines.append)
    assert calls == [40] and np.array_equal(a["pixels"], b["pixels"]) and "cached" in lines[-1]
    (entry,) = tmp_path.glob("pixel-toy-*.npz")
    raw = bytearray(entry.read_bytes())
    raw[len(raw) // 2] ^= 0x01   # inside the feature bytes
    entry.write_bytes(bytes(raw))
    c = reference_features(Counting(), "toy", imgs, cache_dir=tmp_path, log=lines.append)
    assert calls == [40, 40] and any("is corrupt" in ln for ln in lines)
    assert np.array_equal(a["pixels"], c["pixels"])
    # other images: another entry
    reference_features(Counting(), "toy", imgs[:20], cache_dir=tmp_path, log=lines.append)
    assert len(list(tmp_path.glob("pixel-toy-*.npz"))) == 2


def test_classifier_cache_verified_on_read(tmp_path):
    from sklearn.datasets import load_digits

    from sit.evaluate.classifier import get_classifier

    d = load_digits()
    x = torch.tensor(d.images[:300], dtype=torch.float32)[:, None] / 8.0 - 1.0
    y = torch.tensor(d.target[:300])
    lines = []
    a = get_classifier(x, y, seed=0, cache_dir=tmp_path, log=lines.append)
    (entry,) = tmp_path.glob("*.safetensors")
    raw = bytearray(entry.read_bytes())
    raw[-5] ^= 0x40   # a flipped bit in the last weights: the file still parses
    entry.write_bytes(bytes(raw))
    b = get_classifier(x, y, seed=0, cache_dir=tmp_path, log=lines.append)
    assert len(lines) == 1 and "is corrupt" in lines[0] and "sha256" in lines[0]
    for va, vb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(va, vb)   # retrained: the same weights, not the flipped ones
    get_classifier(x, y, seed=0, cache_dir=tmp_path, log=lines.append)
    assert len(lines) == 1           # the rewritten entry verifies
    entry.write_bytes(b"not a safetensors file")
    get_classifier(x, y, seed=0, cache_dir=tmp_path, log=lines.append)
    assert len(lines) == 2 and "unreadable" in lines[1]


def test_dinov2_scorer_from_a_local_folder(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    from sit.evaluate.scorers.dinov2 import Dinov2Scorer

    with pytest.raises(FileNotFoundError, match="DINOv2 weights not found"):
        Dinov2Scorer(tmp_path / "missing")
    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       patch_size=14, image_size=224)
    Dinov2Model(cfg).save_pretrained(tmp_path / "dino")
    sc = Dinov2Scorer(tmp_path / "dino", device="cpu", batch_size=4)
    imgs = np.random.default_rng(0).integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    f = sc.features(imgs)
    assert f["cls"].shape == (5, 32)
    assert abs(sc.scores(f, f).fd) < 1e-6
    grey = sc.features(imgs[..., :1])                        # grey images are replicated to RGB
    assert np.allclose(grey["cls"], sc.features(np.repeat(imgs[..., :1], 3, axis=-1))["cls"])
    c = np.full(32, 0.5)
    assert sc.scores(f, {"cls": f["cls"] + c}).fd == pytest.approx(shifted_fd(f["cls"], c), rel=1e-6)
    assert sc.identity().startswith("dinov2-") and "model.safetensors" in sc.identity()


def test_one_inception_reference_is_one_cache_entry_whoever_asks(tmp_path, monkeypatch):
    """The seam (`reference_features`, the study) and `InceptionScorer.reference` (`sit eval`) read and
    write the same entry: one file per reference set, its features computed once."""
    import sit.evaluate.inception as inception
    from sit.evaluate.scorers.inception import InceptionScorer

    calls = []

    class Feats:
        def __init__(self, source="auto", **kw):
            self.path = tmp_path / "w.bin"

        def features(self, images, spatial=True):
            calls.append(len(images))
            f = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
            return {"pool": np.resize(f, (len(f), 2048)), "spatial": np.resize(f, (len(f), 2023)) if spatial else None,
                    "logits": None}

    (tmp_path / "w.bin").write_bytes(b"weights")
    monkeypatch.setattr(inception, "InceptionFeatures", Feats)
    imgs = np.random.default_rng(0).integers(0, 256, size=(12, 4, 4, 3), dtype=np.uint8)
    sc, cache, lines = InceptionScorer("w.bin"), tmp_path / "cache", []
    a = reference_features(sc, "digits", imgs, cache_dir=cache, log=lines.append)
    b = sc.reference("digits", imgs, cache_dir=cache, log=lines.append)
    c = reference_features(InceptionScorer("w.bin", spatial=False), "digits", imgs, cache_dir=cache, log=lines.append)
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["digits"] and calls == [12]
    assert all(np.array_equal(a[k], x[k]) for x in (b, c) for k in ("pool", "spatial"))
