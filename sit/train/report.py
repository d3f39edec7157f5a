"""The pictures and numbers of a run: EMA sample grids (RUN/samples/step-NNNNNNN.png) and, after
training (rank 0), the loss curve, samples.png (samples beside real images), quality.json (a quick
quality number on embedded data) and the optional L_t table stored with the final checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sit import dist
from sit.config import ModelConfig, TrainConfig
from sit.io import image_grid, label_rows, save_png, side_by_side, write_text_atomic
from sit.train.builders import Objective, generate
from sit.train.data import DataSource
from sit.train.log import plot_loss_curve
from sit.train.seeds import generator


def sample_grid(ema, cfg: TrainConfig, model_cfg: ModelConfig, data: DataSource, objective: Objective, device,
                out: Path) -> Tensor:
    """EMA samples of the first (up to 10) classes, ``samples_per_class`` each, saved as a grid
    (when the data can show them as pixels); returns the samples."""
    k = min(model_cfg.num_classes, 10)
    y = torch.arange(k).repeat_interleave(cfg.samples_per_class)
    x = generate(ema, cfg, model_cfg, y, seed=cfg.seed, device=device, objective=objective)
    img = data.to_pixels(x)
    if img is not None:
        save_png(image_grid(img, ncol=cfg.samples_per_class), out)
    return x


def finish_run(run_dir: Path, ckpt: Path | None, ema, cfg: TrainConfig, model_cfg: ModelConfig, data: DataSource,
               objective: Objective, device) -> dict | None:
    """After training (rank 0): loss curve, final sample grid beside real images, quality number
    (embedded data), optional L_t table stored in the checkpoint."""
    if (run_dir / "metrics.jsonl").is_file():
        plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png")
    quality = None
    k = min(model_cfg.num_classes, 10)
    n = cfg.samples_per_class
    x = sample_grid(ema, cfg, model_cfg, data, objective, device, run_dir / "samples" / "final.png")
    real = data.real_images(k, n)
    if real is not None:
        rows = [f"y={c}" for c in range(k)]  # each row is one class, labelled
        save_png(side_by_side(label_rows(image_grid(x, ncol=n), rows), label_rows(image_grid(real, ncol=n), rows)),
                 run_dir / "samples.png")
        if cfg.quality:
            quality = _quality(ema, cfg, model_cfg, data, objective, device, run_dir)
    if cfg.lt_table and ckpt is not None:
        _lt_table(ema, cfg, data, device, ckpt)
    return quality


def _quality(ema, cfg, model_cfg, data: DataSource, objective, device, run_dir: Path) -> dict | None:
    import json

    try:
        from sit.evaluate.scorers import scorer_class

        classifier = scorer_class("classifier")  # the scorer table's row
    except ImportError as e:
        dist.print0(f"sit train: no quality number ({e})")
        return None
    ref = data.quality_reference()
    if ref is None:
        return None
    real_x, real_y = ref
    m = cfg.quality_samples_per_class
    y = torch.arange(model_cfg.num_classes).repeat_interleave(m)
    t0 = time.perf_counter()
    fake = generate(ema, cfg, model_cfg, y, seed=cfg.seed + 1, device=device, objective=objective).cpu()
    t_sample = time.perf_counter() - t0
    sc = classifier(real_x, real_y, seed=0).score_images(fake.clamp(-1, 1), y)
    q = dict(accuracy=sc.accuracy, fid=sc.fd, precision=sc.precision, recall=sc.recall,
             classifier_test_accuracy=sc.extra["classifier_test_accuracy"], num_real=sc.num_real, num_fake=sc.num_fake)
    q = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in q.items()}
    q.update(samples_per_class=m, cfg_scale=cfg.cfg_scale, sample_method=cfg.sample_method,
             sample_steps=cfg.sample_steps, sampling_seconds=round(t_sample, 2),
             metric="sit.evaluate.scorers.classifier (small-CNN feature space; not an Inception FID)")
    write_text_atomic(run_dir / "quality.json", json.dumps(q, indent=2) + "\n")
    dist.print0("sit train: quality " + ", ".join(
        f"{k} {q[k]:.4g}" for k in ("accuracy", "fid", "precision", "recall") if isinstance(q.get(k), float)))
    return q


def _lt_table(ema, cfg: TrainConfig, data: DataSource, device, ckpt: Path) -> None:
    """L_t of the EMA model on held-out data (sit.lt.estimate_loss_table; per-dimension mean, the
    training loss's scale) on a 50-point grid inside (0, 1), stored as ckpt/lt_table.json."""
    if cfg.time_input != "continuous":
        dist.print0("sit train: the L_t table (lt_table) needs continuous time (w_KL,eta is a continuous-time SDE); skipped")
        return
    from sit.lt import estimate_loss_table
    from sit.models.field import ModelField
    from sit.paths import get_path

    hx, hy = data.heldout(device)
    eps_edge = 1e-3 if cfg.prediction != "velocity" or cfg.path == "vp" else 0.0
    grid = torch.linspace(max(eps_edge, 1e-3), 1.0 - eps_edge, 50, dtype=torch.float64)
    ema.eval()
    model_fn = ModelField(ema, cfg.prediction, "continuous")
    table = estimate_loss_table(model_fn, get_path(cfg.path), cfg.prediction, [(hx.to(device), hy.to(device))], grid,
                                samples_per_t=min(256, max(2, hx.shape[0])), generator=generator(cfg.seed, 11))
    write_text_atomic(ckpt / "lt_table.json", table.to_json())
    dist.print0(f"sit train: L_t table stored in {str(ckpt / 'lt_table.json')!r}")
