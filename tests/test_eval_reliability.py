"""`sit eval` reliability: arguments used or refused, sample-size notes, unreadable inputs as one
line (exit 2), and the on-disk cache of the embedded reference features. Inception is replaced by
a stub (features from the pixels) wherever the real network is not the point."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from sit.cli import main
from sit.evaluate.metrics import fid_sample_note


class StubFeatures:
    """InceptionFeatures stand-in: pool / spatial features are the pixels, tiled to 2048 / 2023."""

    calls: list = []

    def __init__(self, source="auto", **kwargs):
        self.path, self.device = os.environ["STUB_WEIGHTS"], torch.device("cpu")

    def describe(self):
        return "stub"

    def features(self, images, spatial=True):
        StubFeatures.calls.append(len(images))
        f = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
        return dict(pool=np.resize(f, (len(f), 2048)), spatial=np.resize(f, (len(f), 2023)) if spatial else None, logits=None)


@pytest.fixture
def stub(tmp_path, monkeypatch):
    import sit.evaluate.inception as inception

    weights = tmp_path / "stub-weights.bin"
    weights.write_bytes(b"stub weights")
    monkeypatch.setenv("STUB_WEIGHTS", str(weights))
    monkeypatch.setenv("SIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(inception, "InceptionFeatures", StubFeatures)
    StubFeatures.calls = []
    return StubFeatures


def digits_like(tmp_path, n=40, name="s.npz"):
    from sklearn.datasets import load_digits

    d = load_digits()
    u8 = np.clip(d.images[:n] * 16, 0, 255).astype(np.uint8)[..., None].repeat(3, -1)  # (n, 8, 8, 3)
    np.savez(tmp_path / name, arr_0=u8, arr_1=d.target[:n])
    return tmp_path / name


def err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


# ----------------------------------------------------------------------------- item 11: arguments


def test_unknown_reference_names_the_known_datasets(tmp_path, capsys):
    s = digits_like(tmp_path)
    for extra in (["--metrics", "none"], []):
        assert main(["eval", "digitz", str(s), *extra]) == 2
        line = err_line(capsys)
        assert "'digitz'" in line and "['digits', 'mnist_5k']" in line and "did you mean 'digits'" in line
        assert "path that exists" in line and "nothing to compute" not in line


def test_reference_file_is_never_silently_ignored(tmp_path, capsys):
    s = digits_like(tmp_path)
    (tmp_path / "unreadable.npz").write_bytes(b"garbage")
    assert main(["eval", str(tmp_path / "unreadable.npz"), str(s), "--metrics", "none", "--classifier-dataset", "digits"]) == 2
    line = err_line(capsys)
    assert "would not be read" in line and "--classifier-dataset digits" in line
    assert main(["eval", "digits", str(s), "--metrics", "none", "--classifier-dataset", "mnist_5k"]) == 2
    assert "give one of them" in err_line(capsys)
    assert main(["eval", str(s), str(s), "--metrics", "fid", "--fit", "pad"]) == 2
    assert "--fit applies to the classifier metrics only" in err_line(capsys)
    assert main(["eval", "digits", str(s), "--metrics", "none", "--save-ref-stats", str(tmp_path / "r.npz")]) == 2
    assert "--save-ref-stats" in err_line(capsys)


# ----------------------------------------------------------------------------- item 10: sample size


def test_fid_sample_note_says_how_reliable():
    with pytest.raises(ValueError, match="at least 2 images"):
        fid_sample_note(1, 2048, recommended=10_000)
    note = fid_sample_note(2, 2048, recommended=10_000, paper=50_000)
    assert "rank-deficient" in note and "rank <= 1" in note and "1/N" in note and "10,000" in note and "50,000" in note
    mid = fid_sample_note(5000, 2048, recommended=10_000)
    assert "rank-deficient" not in mid and "1/N" in mid
    assert fid_sample_note(10_000, 2048, recommended=10_000) is None


def test_sit_eval_warns_on_small_sets(stub, tmp_path, capsys):
    s = digits_like(tmp_path, n=5)
    ref = digits_like(tmp_path, n=30, name="ref.npz")
    out = tmp_path / "r.json"
    assert main(["eval", str(ref), str(s), "--metrics", "fid", "--out", str(out), "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert "sit eval: warning: FID on 5 images is unreliable" in cap.err and "rank-deficient" in cap.err
    r = json.loads(out.read_text())
    assert "rank <= 4" in r["fid_note"] and r["fid"] > 0
    one = tmp_path / "one.npz"
    np.savez(one, arr_0=np.zeros((1, 8, 8, 3), np.uint8))
    assert main(["eval", str(ref), str(one), "--metrics", "fid"]) == 2
    assert "holds 1 image(s)" in err_line(capsys)


# ----------------------------------------------------------------------------- item 12: bad files


def test_corrupt_npz_is_one_line(tmp_path, capsys):
    good = digits_like(tmp_path, n=20, name="good.npz")
    data = good.read_bytes()
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[300] ^= 0x40  # inside arr_0's pixels: the zip CRC-32 catches it
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    for name, word in (("empty", "is empty (0 bytes)"), ("trunc", "is truncated"), ("flip", "is corrupt")):
        for argv in (["eval", str(good), str(tmp_path / f"{name}.npz"), "--metrics", "fid"],   # as SAMPLES
                     ["eval", str(tmp_path / f"{name}.npz"), str(good), "--metrics", "fid"]):  # as REF
            assert main(argv + ["--no-progress"]) == 2, (name, argv)
            line = err_line(capsys)
            assert word in line and f"{name}.npz" in line, line


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bad_inception_weights_are_one_line(tmp_path, capsys):
    from sit.evaluate.inception import InceptionV3FID

    s = digits_like(tmp_path, n=10)
    marker = tmp_path / "code-ran"
    files = {
        "evil.pt": (pickle.dumps(_RunsCode(marker), protocol=2), "plain pickle, refused"),
        "evil4.pt": (pickle.dumps(_RunsCode(marker), protocol=4), "plain pickle, refused"),
        "random.pt": (np.random.default_rng(0).integers(1, 127, 2000, dtype=np.uint8).tobytes(), "not a PyTorch file"),
        "empty.pt": (b"", "empty file (0 bytes)"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({k: torch.zeros(1) for k in InceptionV3FID().state_dict()}, tmp_path / "shapes.pt")
    files["shapes.pt"] = (None, "wrong shape")
    torch.save(InceptionV3FID().fc.state_dict(), tmp_path / "keys.pt")
    files["keys.pt"] = (None, "missing keys")
    data = (tmp_path / "shapes.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    files["trunc.pt"] = (None, "truncated or corrupt PyTorch archive")
    for name, (_, word) in files.items():
        assert main(["eval", str(s), str(s), "--metrics", "fid", "--inception", str(tmp_path / name)]) == 2, name
        line = err_line(capsys)
        assert word in line and name in line, line
    assert not marker.exists()


# ----------------------------------------------------------------------------- item 2: reference cache


def test_embedded_reference_features_are_cached_and_verified(stub, tmp_path, capsys, monkeypatch):
    import sit.evaluate.classifier as classifier

    monkeypatch.setattr(classifier, "quick_quality", lambda *a, **k: {"fid": 1.0})  # not the point here
    s = digits_like(tmp_path, n=50)
    argv = ["eval", "digits", str(s), "--metrics", "fid,sfid", "--no-progress", "--out"]
    assert main(argv + [str(tmp_path / "a.json")]) == 0
    assert stub.calls == [50, 1797]  # samples, then the reference once
    assert main(argv + [str(tmp_path / "b.json")]) == 0
    assert stub.calls == [50, 1797, 50]  # second run: reference from the cache
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "ab")
    assert (a["fid"], a["sfid"]) == (b["fid"], b["sfid"]) and a["fid"] > 0
    entries = list((tmp_path / "cache" / "refstats").glob("digits-*.npz"))
    assert len(entries) == 1
    capsys.readouterr()
    raw = bytearray(entries[0].read_bytes())
    raw[len(raw) // 2] ^= 0x01
    entries[0].write_bytes(bytes(raw))
    assert main(argv + [str(tmp_path / "c.json")]) == 0
    assert "is corrupt" in capsys.readouterr().out and stub.calls[-1] == 1797  # recomputed with a message
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["fid"] == a["fid"]
    # other weights: another key, so another entry
    (tmp_path / "stub-weights.bin").write_bytes(b"other weights")
    assert main(argv + [str(tmp_path / "d.json")]) == 0
    assert stub.calls[-1] == 1797 and len(list((tmp_path / "cache" / "refstats").glob("digits-*.npz"))) == 2


def test_an_inception_reference_entry_written_by_hand_in_the_stored_layout_reads(tmp_path):
    """The cache's on-disk layout of an Inception reference entry (members pool, spatial, key,
    digest = sha256 of the pool then spatial bytes, named ``<name>-<key>.npz``) is read as such, so
    entries written before the cache was one implementation still read; one of the wrong width is rebuilt."""
    import hashlib

    from sit.evaluate.refstats import cache_key, cached_reference_features
    from sit.io import save_npz_atomic, sha256_file

    (tmp_path / "w.bin").write_bytes(b"weights")
    imgs = np.random.default_rng(0).integers(0, 256, size=(5, 4, 4, 1), dtype=np.uint8)
    key = cache_key(sha256_file(tmp_path / "w.bin"), imgs)
    rng = np.random.default_rng(1)

    def write(pool_dim):
        pool, spatial = rng.normal(size=(5, pool_dim)), rng.normal(size=(5, 2023))
        digest = hashlib.sha256(pool.tobytes() + spatial.tobytes()).hexdigest()
        save_npz_atomic(tmp_path / f"digits-{key}.npz", pool=pool, spatial=spatial, key=np.array(key),
                        digest=np.array(digest))
        return pool

    class Feats:
        path, calls = tmp_path / "w.bin", 0

        def features(self, images, spatial=True):
            Feats.calls += 1
            return {"pool": np.zeros((len(images), 2048)), "spatial": np.zeros((len(images), 2023)), "logits": None}

    pool, lines = write(2048), []
    out = cached_reference_features("digits", imgs, Feats(), cache_dir=tmp_path, log=lines.append)
    assert Feats.calls == 0 and np.array_equal(out["pool"], pool) and out["logits"] is None
    write(2047)
    out = cached_reference_features("digits", imgs, Feats(), cache_dir=tmp_path, log=lines.append)
    assert Feats.calls == 1 and out["pool"].shape == (5, 2048) and "is corrupt (shapes" in lines[-2]


# ----------------------------------------------------------------------------- item 3: documented commands


def documented_commands():
    """Every `sit ...` command line of docs/evaluation.md, docs/data.md and eval / extract --help."""
    import re
    from pathlib import Path

    from sit.commands import eval as eval_cmd
    from sit.commands import extract as extract_cmd

    root = Path(__file__).resolve().parents[1]
    texts = [(root / "docs" / n).read_text() for n in ("evaluation.md", "data.md")] + [eval_cmd.EXAMPLES, extract_cmd.EXAMPLES]
    cmds = []
    for text in texts:
        for line in text.splitlines():
            m = re.match(r"^\s*(?:[A-Z_]+=\S+\s+)*(?:sit|torchrun .*?-m sit\.cli)\s+(\w+.*)$", line)
            if m:
                cmds.append(m.group(1))
    return cmds


def test_documented_commands_parse():
    import shlex

    from sit.cli import build_parser

    cmds = documented_commands()
    assert sum(c.startswith("eval ") for c in cmds) >= 6 and sum(c.startswith("extract ") for c in cmds) >= 5
    parser = build_parser()
    for c in cmds:
        argv = shlex.split(c, comments=True)
        assert "..." not in argv, c
        args = parser.parse_args(argv)
        assert args.func is not None, c


def test_eval_help_examples_run(stub, tmp_path, monkeypatch, capsys):
    import shlex

    from sit.commands import eval as eval_cmd

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    lines = [ln.strip() for ln in eval_cmd.EXAMPLES.splitlines() if ln.strip().startswith("sit eval ")]
    assert len(lines) == 4
    for line in lines:
        argv = [os.path.expanduser(a) for a in shlex.split(line)[1:]]
        if "--dinov2" in argv and not os.path.exists(argv[argv.index("--dinov2") + 1]):  # a tiny random DINOv2
            from transformers import Dinov2Config, Dinov2Model

            Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                     patch_size=14, image_size=224)).save_pretrained(argv[argv.index("--dinov2") + 1])
        for a in argv:  # tiny stand-ins for the files the example reads (written by `sit sample` in the docs)
            if a.endswith((".npz", ".pth")) and not os.path.exists(a):
                os.makedirs(os.path.dirname(a) or ".", exist_ok=True)
                digits_like(tmp_path, n=40, name="tiny.npz")
                os.replace(tmp_path / "tiny.npz", a)
        assert main(argv + ["--no-progress"]) == 0, (line, capsys.readouterr().err)
        assert "wrote " in capsys.readouterr().out


@pytest.mark.parametrize("labels, why", [(None, "no labels"), ([10] * 12, "labels span 10..10"),
                                         ([0] * 5, "5 labels for 12 images")])
def test_classifier_accuracy_na_says_why(labels, why, tmp_path, monkeypatch):
    """Issue 22: `sit eval` on samples whose labels cannot be judged says why accuracy is n/a."""
    import types

    from sit.commands.eval import format_table
    from sit.evaluate.scorers.classifier import evaluate_dataset

    monkeypatch.setenv("SIT_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(12, 8, 8, 1), dtype=np.uint8)
    s = types.SimpleNamespace(images=imgs, labels=None if labels is None else np.array(labels))
    out = evaluate_dataset("digits", s, log=lambda *a: None)
    assert out["clf_accuracy"] is None and why in out["clf_accuracy_note"]
    assert "accuracy n/a: " in format_table(out)
