"""The `Study` record and its identity (``study_config.json``, read by `read_identity`: a changed setting is refused), the
base configs every cell starts from (`study_base`: the paper's recipe) and the configs of one
(cell, seed) (`cell_configs`, `segments`). Split from `sit.study.run`, which re-exports it.

Must not import: ``sit.commands``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from sit.config import ConfigError, ModelConfig, TrainConfig, field_error, to_dict
from sit.study.cells import Budget, Cell
from sit.study.scoring import ScoringConfig

CONFIG_NAME = "study_config.json"
STUDY_VERSION = 1


@dataclass(frozen=True)
class Study:
    """A study: the base training / network configs (objective fields are set per cell), the
    budget, the cells, and its folder."""

    out: Path
    base: TrainConfig
    model: ModelConfig
    budget: Budget
    cells: tuple[Cell, ...]
    scoring: ScoringConfig = ScoringConfig()

    def identity(self) -> dict:
        base = to_dict(self.base)
        for k in ("out", "progress", "device", "num_workers", "threads", "path", "prediction", "loss_weight",
                  "time_input", "seed", "steps", "global_batch"):
            base.pop(k, None)
        from sit.study.scoring import identity

        return {"version": STUDY_VERSION, "budget": to_dict(self.budget), "cells": [c.name for c in self.cells],
                "train": base, "model": to_dict(self.model)} | identity(self)

    def units(self) -> list[tuple[Cell, int]]:
        """(cell, seed) in run order: every cell at seed 0 first, so a partial study reports sooner."""
        return [(c, s) for s in range(self.budget.seeds) for c in self.cells]

    def result_path(self, cell: Cell, seed: int) -> Path:
        return self.out / "results" / f"{cell.name}-s{seed}.json"

    def run_dir(self, cell: Cell, seed: int) -> Path:
        return self.out / "runs" / f"{cell.name}-s{seed}"

    def unit_lock_dir(self, cell: Cell, seed: int) -> Path:
        """The folder whose lock a process holds while it runs (cell, seed): outside the run folder,
        which is removed and recreated under it."""
        return self.out / "locks" / f"{cell.name}-s{seed}"


def read_identity(out: Path, config_name: str = CONFIG_NAME) -> dict | None:
    """The ``identity`` of a study folder's config (None: no config yet); a config that is not
    JSON, or holds no identity, is refused in one line naming the file."""
    from sit.io import read_json

    f = Path(out) / config_name
    if not f.is_file():
        return None
    d = read_json(f, "study config")
    if not isinstance(d, dict) or not isinstance(d.get("identity"), dict):
        raise field_error(ValueError, f"study config {str(f)!r} holds no study identity (an object with "
                          "'identity'); it was not written by `sit study`: move it away, or give another {.out}")
    return d["identity"]


def check_identity(study: Study) -> None:
    """Write study_config.json, or refuse when the folder holds a study with other settings."""
    from sit.io import differing_fields, write_json

    f = study.out / CONFIG_NAME
    want = json.loads(json.dumps(study.identity()))
    if f.is_file():
        have = read_identity(study.out, CONFIG_NAME)
        if have != want:
            diff = differing_fields(have or {}, want, values=True)
            raise ConfigError(
                "", "out", f"{str(study.out)!r} holds a study made with other settings ({'; '.join(diff[:6])}); "
                "rerun with the same settings to continue it, or use a new {.out}"
            )
        return
    study.out.mkdir(parents=True, exist_ok=True)
    write_json(f, {"identity": want, "created": time.strftime("%Y-%m-%d %H:%M:%S")})


# On top of `sit train`'s resolution: the paper's recipe (uniform t, constant lr, no warm-up, no
# clipping: the official train.py) whatever the demo's own recipe is tuned to. The demo's warm-up of
# 100 steps and clipping at norm 1 kept VP velocity at 600 x 256 at 0.17 class accuracy (FD 111)
# where the official recipe reaches 0.53 (FD 61) (docs/study.md, "Budget"). The embedded study
# keeps the lr it was calibrated with (1e-3, as the official calibration); latents / images keep
# the paper's 1e-4.
STUDY_TRAIN = dict(time_dist="uniform", warmup_steps=0, grad_clip=0.0)
STUDY_EMBEDDED_LR = 1e-3
# on the embedded data the base's preview sampler, fixed here rather than read from the demo's defaults
# (it is part of the study's identity; the cells set their own sampling): the demo may change its own
STUDY_EMBEDDED_PREVIEW = dict(sample_method="heun", sample_steps=20)


def study_base(train: dict | None = None, arch: dict | None = None,
               model: str | None = None) -> tuple[TrainConfig, ModelConfig]:
    """(TrainConfig, ModelConfig) every cell of a study starts from: `sit train`'s resolution of the
    TrainConfig fields ``train`` (data, vae, device, ...) and ModelConfig fields ``arch``
    (`sit.train.recipes.resolve_configs`: the demo's network without data / latents), with the
    paper's recipe STUDY_TRAIN, no progress bars, and on the embedded data STUDY_EMBEDDED_LR and
    STUDY_EMBEDDED_PREVIEW (so the demo's own recipe never reaches a study's identity)."""
    from sit.train.recipes import resolve_configs

    cfg, mc = resolve_configs({**(train or {}), "progress": False}, arch, model)
    embedded = cfg.data is None and cfg.latents is None
    return dataclasses.replace(cfg, **STUDY_TRAIN, **({"lr": STUDY_EMBEDDED_LR, **STUDY_EMBEDDED_PREVIEW} if embedded else {})), mc


def cell_configs(study: Study, cell: Cell, seed: int) -> tuple[TrainConfig, ModelConfig]:
    """The TrainConfig / ModelConfig of one (cell, seed): the base with the cell's objective,
    the budget's steps and batch, and no extras (the study samples and evaluates itself)."""
    b = study.budget
    cfg = dataclasses.replace(
        study.base, out=str(study.run_dir(cell, seed)), path=cell.path, prediction=cell.prediction,
        loss_weight=cell.loss_weight, time_input=cell.time_input, seed=seed, steps=b.steps, global_batch=b.batch,
        ckpt_every=b.steps, keep_last=1, sample_every=0, samples_per_class=1, sample_steps=2, quality=False,
        lt_table=False, progress=False, cfg_scale=b.cfg_scale, sample_method="heun",
    )
    mc = study.model
    if cell.time_input == "discrete":
        mc = dataclasses.replace(mc, learn_sigma=True)  # DiT learns the variance (hybrid loss)
    return cfg, mc


def segments(study: Study, cell: Cell) -> list[int]:
    """Training stops (steps) at which C(v) is measured (velocity cells; Fig. 4), else [steps]."""
    steps, k = study.budget.steps, study.budget.path_checkpoints
    if not cell.velocity:
        return [steps]
    return sorted({max(1, round(steps * (i + 1) / k)) for i in range(k)})
