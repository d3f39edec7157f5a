"""`sit eval --metrics NAME[,NAME]` picks scorers by name from the one table
`sit.evaluate.scorers.SCORERS`: a scorer added by one row is reached from the command line,
FD-DINOv2 is computed from a local Dinov2Model folder, the default metrics are unchanged, and the
quality file of `sit train` looks its scorer up in the same table."""

import json

import numpy as np
import pytest
import torch

from sit.cli import main
from sit.evaluate.scorer import Scores, fd_of
from sit.evaluate.scorers import SCORERS, ScorerRow, parse_metrics
from sit.io import save_npz_atomic


def _npz(path, seed, n=12, size=16, shift=0):
    imgs = np.random.default_rng(seed).integers(0, 200, size=(n, size, size, 3)).astype(np.uint8) + shift
    save_npz_atomic(path, arr_0=imgs.astype(np.uint8))
    return imgs


class BrightnessScorer:
    """A toy scorer (one class + one row): the feature of an image is its mean value in [0, 1]."""

    name = "toy"
    fd_key = "mean"

    def identity(self) -> str:
        return "toy-brightness-v1"

    def features(self, images) -> dict:
        a = np.asarray(images).astype(np.float64) / 255.0
        return {"mean": a.reshape(a.shape[0], -1).mean(axis=1, keepdims=True)}

    def scores(self, real, fake, **kw) -> Scores:
        return Scores("toy", fd=fd_of(real["mean"], fake["mean"]), num_real=len(real["mean"]), num_fake=len(fake["mean"]))


def _eval(tmp_path, *argv):
    out = tmp_path / "eval.json"
    rc = main(["eval", str(tmp_path / "ref.npz"), str(tmp_path / "fake.npz"), "--out", str(out), "--no-progress",
               "--threads", "1", *argv])
    return rc, (json.loads(out.read_text()) if rc == 0 else None)


def test_parse_metrics_reads_the_table_and_keeps_the_default():
    assert parse_metrics("fid,sfid,is,pr") == {"inception": ("fid", "sfid", "is", "pr")}
    assert parse_metrics("inception") == parse_metrics("fid,sfid,is,pr")
    assert parse_metrics("dinov2,fid,pixel") == {"inception": ("fid",), "dinov2": ("fd_dinov2",), "pixel": ("fd_pixel",)}
    assert parse_metrics("none") == {}
    with pytest.raises(ValueError, match="unknown metric 'fdd'.*'dinov2'"):
        parse_metrics("fid,fdd")


def test_a_toy_scorer_added_by_one_row_is_reached_from_sit_eval(tmp_path, monkeypatch, capsys):
    ref, fake = _npz(tmp_path / "ref.npz", 0), _npz(tmp_path / "fake.npz", 1, shift=40)
    assert _eval(tmp_path, "--metrics", "toy")[0] == 2
    assert "unknown metric 'toy'" in capsys.readouterr().err
    monkeypatch.setitem(SCORERS, "toy", ScorerRow(BrightnessScorer, ("fd_toy",), None, "mean brightness"))
    rc, res = _eval(tmp_path, "--metrics", "toy")
    assert rc == 0
    m1, m2 = ref.reshape(12, -1).mean(1) / 255, fake.reshape(12, -1).mean(1) / 255
    v1, v2 = np.var(m1, ddof=1), np.var(m2, ddof=1)  # the Fréchet distance of two 1-d Gaussians
    assert res["fd_toy"] == pytest.approx((m1.mean() - m2.mean()) ** 2 + v1 + v2 - 2 * np.sqrt(v1 * v2), rel=1e-6)
    assert res["metrics"] == ["fd_toy"] and "fid" not in res
    assert "FD-toy" in capsys.readouterr().out


def test_fd_dinov2_from_sit_eval_with_a_local_folder(tmp_path, capsys):
    from transformers import Dinov2Config, Dinov2Model

    from sit.evaluate.scorers.dinov2 import Dinov2Scorer

    ref, fake = _npz(tmp_path / "ref.npz", 0, n=6), _npz(tmp_path / "fake.npz", 1, n=6, shift=30)
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=14, image_size=224)).save_pretrained(tmp_path / "dino")
    capsys.readouterr()
    assert _eval(tmp_path, "--metrics", "dinov2")[0] == 2   # no weights: one line naming --dinov2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--dinov2 is needed by --metrics dinov2" in err
    assert _eval(tmp_path, "--metrics", "pixel", "--dinov2", str(tmp_path / "dino"))[0] == 2
    assert "add dinov2 to --metrics" in capsys.readouterr().err
    rc, res = _eval(tmp_path, "--metrics", "dinov2,pixel", "--dinov2", str(tmp_path / "dino"))
    assert rc == 0
    sc = Dinov2Scorer(tmp_path / "dino", device="cpu")
    assert res["fd_dinov2"] == pytest.approx(fd_of(sc.features(ref)["cls"], sc.features(fake)["cls"]), rel=1e-6)
    assert res["fd_dinov2"] > 0 and res["fd_pixel"] > 0 and res["dinov2_num_samples"] == 6


def test_the_quality_file_of_training_uses_the_tables_classifier_row(tmp_path, monkeypatch):
    seen = []

    class FixedClassifier:
        def __init__(self, real_x, real_y, *, seed=0):
            seen.append(tuple(real_x.shape))

        def score_images(self, fake_x, fake_y=None):
            return Scores("classifier", fd=1.25, precision=0.5, recall=0.5, accuracy=0.75, num_real=1, num_fake=len(fake_x),
                          extra={"classifier_test_accuracy": 0.9})

    monkeypatch.setitem(SCORERS, "classifier", ScorerRow(FixedClassifier, (), None, "a test's classifier"))
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--depth", "2", "--hidden-size", "32", "--num-heads", "2", "--patch-size",
                 "2", "--batch", "16", "--steps", "1", "--samples-per-class", "1", "--sample-steps", "2",
                 "--quality-samples-per-class", "1", "--no-progress", "--threads", "1", "--num-workers", "0"]) == 0
    q = json.loads((run / "quality.json").read_text())
    assert seen and q["fid"] == 1.25 and q["accuracy"] == 0.75 and q["num_fake"] == 10
