"""Test helper (not a test module): the flags of a tiny 2-step `sit train` and of a 4-image
`sit sample`, the tiny model and `TrainConfig` they stand for, and the checks several CLI tests
share (a folder's bytes, a one-line error)."""

from __future__ import annotations

from pathlib import Path

from sit.config import ModelConfig, TrainConfig

TINY_TRAIN_FLAGS = ["--depth", "1", "--hidden-size", "16", "--num-heads", "1", "--patch-size", "2", "--batch", "16",
                    "--warmup", "0", "--log-every", "1", "--ckpt-every", "2", "--no-quality", "--samples-per-class", "1",
                    "--sample-steps", "1", "--no-progress", "--threads", "1", "--steps", "2"]
TINY_SAMPLE_FLAGS = ["--method", "euler", "--num-steps", "2", "--num-samples", "4", "--batch-size", "2", "--no-progress",
                     "--threads", "1"]
TINY_MODEL = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=16, depth=1, num_heads=1,
                         num_classes=10, learn_sigma=False)


def tiny_train_config(out, **kw) -> TrainConfig:
    base = dict(out=str(out), dataset="digits", image_size=8, steps=2, global_batch=16, lr=1e-3, warmup_steps=0,
                log_every=1, ckpt_every=2, quality=False, samples_per_class=1, sample_steps=1, progress=False,
                num_workers=0, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(capsys, *words) -> str:
    """The captured stderr, asserted to be one line holding each of ``words``."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


def train_two_processes(out: Path, flags: list[str], timeout: int = 600):
    """`sit train --out OUT FLAGS` as 2 gloo processes under torchrun (a free port, no inherited rank
    variables, one thread each): the completed process, stderr captured."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "-m", "sit.cli", "train", "--out", str(out), *flags],
                          env=env, capture_output=True, text=True, timeout=timeout)
