"""Train and evaluate one (cell, seed), and drive a whole study (resumable, with ETAs).

Layout of a study folder:
  study_config.json        the settings (identity): a changed setting is refused
  runs/CELL-sSEED/         the training run of sit.train (checkpoints, metrics.jsonl, ...)
  results/CELL-sSEED.json  everything measured for that (cell, seed), written atomically last
  study.md, cells.csv, cells.json, fig_*.png   the report (sit.study.report)
A (cell, seed) without its result JSON is not finished: a resumed study trains it again from
step 0 (its run folder is removed first), and a finished one is never retrained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from sit.config import ConfigError, ModelConfig, TrainConfig, to_dict
from sit.study.cells import FIG5_CELL, W_CHOICES, Budget, Cell
from sit.study.records import check_latents, load_results, read_identity, unit_lock
from sit.study.sampling import generate, spec_name
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
    (`sit.train.presets.resolve_configs`: the demo's network without data / latents), with the
    paper's recipe STUDY_TRAIN, no progress bars, and on the embedded data STUDY_EMBEDDED_LR and
    STUDY_EMBEDDED_PREVIEW (so the demo's own recipe never reaches a study's identity)."""
    from sit.train.presets import resolve_configs

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


ASSUMED_TFLOPS = 400.0   # dry-run hours: sustained matmul TFLOP/s (an H100 in bf16 at ~40 % utilisation)


def unit_cost(study: Study, cell: Cell) -> dict:
    """Estimated matmul work of one (cell, seed) (``sit.models.sit.forward_flops``; a training
    step is 3 forward passes): training, sampling every evaluation of ``evaluate_cell``, and the
    C(v) / L_t measurements (about one forward pass per point), in PFLOP, and the hours at
    ASSUMED_TFLOPS."""
    from sit.models.sit import forward_flops

    b = study.budget
    mc = cell_configs(study, cell, 0)[1]
    f1 = forward_flops(mc, 1)
    n = mc.num_classes * b.samples_per_class
    train = 3 * forward_flops(mc, b.batch) * b.steps
    if not cell.continuous:
        nfe_images = b.nfe * n
        other = 0
    else:
        evals = 1 + (len(W_CHOICES) - 1) + len(b.etas) + 1
        nfe_images = evals * b.nfe * n
        if cell.name == FIG5_CELL:
            nfe_images += sum(5 * nfe * n for nfe in b.nfe_curve if nfe != b.nfe)
        other = b.lt_points * b.lt_samples + (b.path_points * b.path_checkpoints if cell.velocity else 0)
    sample = nfe_images * f1
    total = train + sample + other * f1
    return {"images_seen": b.steps * b.batch, "train_pflop": train / 1e15, "sample_pflop": sample / 1e15,
            "total_pflop": total / 1e15, "hours_at_assumed": total / (ASSUMED_TFLOPS * 1e12) / 3600}


def segments(study: Study, cell: Cell) -> list[int]:
    """Training stops (steps) at which C(v) is measured (velocity cells; Fig. 4), else [steps]."""
    steps, k = study.budget.steps, study.budget.path_checkpoints
    if not cell.velocity:
        return [steps]
    return sorted({max(1, round(steps * (i + 1) / k)) for i in range(k)})


@dataclass
class EvalData:
    """Real images for the quality number and held-out data for C(v) and L_t."""

    real_x: torch.Tensor | None
    real_y: torch.Tensor | None
    heldout_x: torch.Tensor
    heldout_y: torch.Tensor
    score: Callable[[torch.Tensor, torch.Tensor], dict]


HELDOUT_ITEMS = 256   # held-out items of a latent / image study for C(v) and L_t


def eval_data(study: Study, log: Callable[[str], None] = print) -> EvalData:
    base = study.base
    if base.latents is not None or base.data is not None:
        from sit.study.scoring import latent_scorer
        from sit.train.data import build_data

        device = torch.device(base.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        hx, hy = build_data(dataclasses.replace(base, seed=0), device).heldout(device)
        hx, hy = hx[-HELDOUT_ITEMS:].cpu(), hy[-HELDOUT_ITEMS:].cpu()
        return EvalData(None, None, hx, hy, latent_scorer(study, device, log))
    from sit.data.embedded import load_embedded
    from sit.evaluate.scorers import make_scorer

    size = study.model.input_size
    rx, ry = load_embedded(base.dataset, "all", image_size=size)
    hx, hy = load_embedded(base.dataset, "heldout", image_size=size)
    scorer = make_scorer("classifier", rx, ry, seed=0)

    def score(fake, y):
        q = scorer.score_images(fake.clamp(-1, 1), y)
        return {"fd": float(q.fd), "accuracy": q.accuracy, "precision": q.precision, "recall": q.recall}

    return EvalData(rx, ry, hx, hy, score)


def path_length(net, cell: Cell, data: EvalData, points: int, seed: int) -> tuple[float, float]:
    """C(v) of the EMA velocity model on held-out data (sit.likelihood.path_length, sum over dims)."""
    from sit.likelihood import path_length as c_of_v
    from sit.models.field import ModelField
    from sit.objectives import velocity_field
    from sit.paths import get_path
    from sit.study.sampling import noise_seed

    path = get_path(cell.path)
    mf = ModelField(net.eval(), "velocity", "continuous")
    dev = next(net.parameters()).device

    def field(x, t, y):
        return velocity_field(mf, path, "velocity", y=y)(x, t)

    g = torch.Generator(device=dev).manual_seed(noise_seed(seed, "path-length"))
    t_min = 1e-3 if cell.path == "vp" else 0.0   # VP's sigma_dot is infinite at t = 0
    return c_of_v(field, path, [(data.heldout_x.to(dev), data.heldout_y.to(dev))], num_points=points, generator=g,
                  t_min=t_min)


def loss_table(net, cell: Cell, data: EvalData, budget: Budget, seed: int):
    """L_t of the EMA model on held-out data (sit.lt), for w_KL,eta (eq. 14)."""
    from sit.lt import estimate_loss_table
    from sit.models.field import ModelField
    from sit.paths import get_path
    from sit.study.sampling import noise_seed

    edge = 1e-3 if cell.prediction != "velocity" or cell.path == "vp" else 0.0
    grid = torch.linspace(max(edge, 1e-3), 1.0 - edge, budget.lt_points, dtype=torch.float64)
    dev = next(net.parameters()).device
    g = torch.Generator(device=dev).manual_seed(noise_seed(seed, "lt"))
    return estimate_loss_table(ModelField(net.eval(), cell.prediction, "continuous"), get_path(cell.path),
                               cell.prediction, [(data.heldout_x.to(dev), data.heldout_y.to(dev))], grid,
                               samples_per_t=budget.lt_samples, generator=g)


def _measure(net, cell, study, data, spec, y, seed, key, table=None, log=None) -> dict:
    t0 = time.perf_counter()
    if log is not None:
        extra = f" eta={spec['eta']}" if "eta" in spec else ""
        log(f"  {cell.name} s{seed}: sampling {spec_name(spec)}{extra} (NFE {spec['nfe']}, {int(y.shape[0])} samples"
            f"{', choosing eta' if key == 'eta-select' else ''})")
    mc = cell_configs(study, cell, seed)[1]
    fake, nfe = generate(net, cell, mc, spec, y, seed, key, cfg_scale=study.budget.cfg_scale, table=table)
    rec = dict(spec, nfe=nfe, samples=int(y.shape[0]))
    try:
        rec.update(data.score(fake, y))
    except ValueError as e:   # e.g. NaN samples of a diverged sampler: recorded, not fatal
        rec.update(fd=None, error=str(e))
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    return rec


def evaluate_cell(net, cell: Cell, study: Study, data: EvalData, seed: int, log: Callable[[str], None]) -> dict:
    """Every measurement of one trained model: the ODE / DDPM number (Tables 2-4), the SDE
    with each w_t (Tables 5-6; w_KL,eta with eta chosen on separate noise), Fig. 5 curves."""
    b = study.budget
    y = torch.arange(study.model.num_classes).repeat_interleave(b.samples_per_class)
    if not cell.continuous:
        return {"evals": {"ddpm": _measure(net, cell, study, data, {"kind": "ddpm", "nfe": b.nfe}, y, seed, "main",
                                           log=log)}}
    evals = {"ode": _measure(net, cell, study, data, {"kind": "ode", "nfe": b.nfe}, y, seed, "main", log=log)}
    for w in W_CHOICES[:-1]:
        evals[f"sde:{w}"] = _measure(net, cell, study, data, {"kind": "sde", "nfe": b.nfe, "w": w}, y, seed, "main",
                                     log=log)
    table = loss_table(net, cell, data, b, seed)
    sweep = {}
    for eta in b.etas:   # choose eta on other noise than the reported number
        spec = {"kind": "sde", "nfe": b.nfe, "w": "kl_eta", "eta": eta}
        sweep[str(eta)] = _measure(net, cell, study, data, spec, y, seed, "eta-select", table, log=log).get("fd")
    finite = {k: v for k, v in sweep.items() if v is not None and math.isfinite(v)}
    eta = float(min(finite, key=finite.get)) if finite else b.etas[0]
    evals["sde:kl_eta"] = _measure(net, cell, study, data, {"kind": "sde", "nfe": b.nfe, "w": "kl_eta", "eta": eta},
                                   y, seed, "main", table, log=log)
    log(f"  {cell.name} s{seed}: " + ", ".join(f"{k} FD {_fmt(v.get('fd'))}" for k, v in evals.items()))
    out = {"evals": evals, "eta_sweep": sweep, "eta": eta, "lt_table": json.loads(table.to_json())}
    if cell.name == FIG5_CELL:
        log(f"  {cell.name} s{seed}: Fig. 5 curve (NFE {list(b.nfe_curve)})")
        out["nfe_curve"] = _nfe_curve(net, cell, study, data, y, seed, evals, eta, table)
    return out


def _nfe_curve(net, cell, study, data, y, seed, evals, eta, table) -> dict:
    curves: dict[str, dict[str, float | None]] = {}
    for nfe in study.budget.nfe_curve:
        specs = [{"kind": "ode", "nfe": nfe}] + [{"kind": "sde", "nfe": nfe, "w": w} for w in W_CHOICES]
        for spec in specs:
            if spec.get("w") == "kl_eta":
                spec["eta"] = eta
            name = spec_name(spec)
            if nfe == study.budget.nfe:
                rec = evals[name]
            else:
                rec = _measure(net, cell, study, data, spec, y, seed, "main", table if spec.get("w") == "kl_eta" else None)
            curves.setdefault(name, {})[str(nfe)] = rec.get("fd")
    return curves


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def run_unit(study: Study, cell: Cell, seed: int, data: EvalData, log: Callable[[str], None]) -> dict:
    """Train (cell, seed) from step 0, measure it, write results/CELL-sSEED.json atomically; under
    the unit's lock (`sit.study.records.unit_lock`), taken before its unfinished run folder is
    removed, so a second process for the same unit says in one line that it is running."""
    from sit.io import remove_tree

    with unit_lock(study, cell, seed, log):
        done = study.result_path(cell, seed)
        if done.is_file():   # finished by another process while this one waited for its turn
            log(f"  {cell.name} s{seed}: finished meanwhile by another process ({str(done)!r})")
            return json.loads(done.read_text())
        run_dir = study.run_dir(cell, seed)
        if run_dir.exists():
            log(f"  {cell.name} s{seed}: removing the unfinished run {str(run_dir)!r} (restarts from step 0)")
            remove_tree(run_dir)
        return _run_unit(study, cell, seed, data, log, run_dir)


def _run_unit(study: Study, cell: Cell, seed: int, data: EvalData, log: Callable[[str], None], run_dir: Path) -> dict:
    from sit.io import write_json
    from sit.train import train
    from sit.train.loop import Callbacks

    t0, cpu0 = time.perf_counter(), time.process_time()
    cfg, mc = cell_configs(study, cell, seed)
    path_lengths, result = [], None
    cb = Callbacks(after_step=_train_progress(f"  {cell.name} s{seed}", study.budget.steps, log))
    for k, stop in enumerate(segments(study, cell)):
        if k == 0:
            result = train(dataclasses.replace(cfg, steps=stop), mc, callbacks=cb)
        else:
            result = train(resume=run_dir, steps=stop, callbacks=cb)
        if result.status != "done":
            raise RuntimeError(f"training of {cell.name} seed {seed} stopped at step {result.step} ({result.status})")
        if cell.velocity:
            c, se = path_length(result.ema, cell, data, study.budget.path_points, seed)
            path_lengths.append({"step": stop, "C": c, "stderr": se})
        log(f"  {cell.name} s{seed}: trained {stop}/{study.budget.steps} steps ({time.perf_counter() - t0:.0f} s)")
    train_s = time.perf_counter() - t0
    measured = evaluate_cell(result.ema, cell, study, data, seed, log)
    rec = {
        "cell": cell.name, "seed": seed, "path": cell.path, "prediction": cell.prediction,
        "loss_weight": cell.loss_weight, "time_input": cell.time_input, "objective": cell.objective,
        "steps": result.step, "batch": study.budget.batch, "final_loss": _final_loss(run_dir),
        "path_length": path_lengths, **measured,
        "wall_s": {"train": round(train_s, 1), "eval": round(time.perf_counter() - t0 - train_s, 1),
                   "total": round(time.perf_counter() - t0, 1), "cpu": round(time.process_time() - cpu0, 1)},
    }
    write_json(study.result_path(cell, seed), rec)
    return rec


PROGRESS_LINES = 10      # training progress lines per unit (every tenth of the steps)
PROGRESS_MIN_S = 20.0    # ... but not more often than this many seconds apart (except the last)


def _train_progress(prefix: str, total: int, log: Callable[[str], None]) -> Callable[[int], None]:
    """``after_step`` callback: a line "training step k/N (x s/step, ETA ...)" every tenth of
    training (at most one per PROGRESS_MIN_S seconds, and always the last). The rate is the median
    time between consecutive steps, so the C(v) measurements between training segments do not
    inflate it."""
    every = max(1, total // PROGRESS_LINES)
    state = {"prev": None, "t": 0.0, "last": -math.inf}
    deltas: list[float] = []

    def after_step(step: int) -> None:
        now = time.perf_counter()
        if state["prev"] is not None and step == state["prev"] + 1:
            deltas.append(now - state["t"])
        state["prev"], state["t"] = step, now
        if (step % every and step != total) or (now - state["last"] < PROGRESS_MIN_S and step != total):
            return
        state["last"] = now
        per = sorted(deltas)[len(deltas) // 2] if deltas else None   # median: robust to the C(v) pauses
        eta = f", ETA {_dur(per * (total - step))}" if per is not None and step < total else ""
        log(f"{prefix}: training step {step}/{total}" + (f" ({per:.3f} s/step{eta})" if per is not None else ""))

    return after_step


def _final_loss(run_dir: Path) -> float | None:
    f = run_dir / "metrics.jsonl"
    if not f.is_file():
        return None
    loss = None
    for line in f.read_text().splitlines():
        try:
            loss = json.loads(line).get("loss", loss)
        except json.JSONDecodeError:
            continue
    return loss


def _eta(done: dict[str, list[float]], cell: Cell, remaining: list[Cell]) -> tuple[float | None, float | None]:
    allv = [v for vs in done.values() for v in vs]
    if not allv:
        return None, None
    mean = sum(allv) / len(allv)

    def est(c: Cell) -> float:
        vs = done.get(c.name)
        return sum(vs) / len(vs) if vs else mean

    return est(cell), sum(est(c) for c in remaining)


def run_study(study: Study, only: list[tuple[str, int | None]] | None = None,
              log: Callable[[str], None] = print, jobs: int = 1) -> list[dict]:
    """Run every unfinished (cell, seed) of ``study`` (or those named by ``only``), with progress
    and ETAs, in ``jobs`` worker processes (1: in this process); returns the results run now."""
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError("", "jobs", f"must be an integer >= 1 (got {jobs!r})")
    from sit.study.scoring import check_inputs

    check_inputs(study)   # before the study folder is written
    check_identity(study)
    check_latents(study, log)
    todo = [(c, s) for c, s in study.units()
            if not only or any(c.name == n and (ss is None or ss == s) for n, ss in only)]
    done_times: dict[str, list[float]] = {}
    for r in load_results(study.out):
        done_times.setdefault(r["cell"], []).append(r["wall_s"]["total"])
    pending = [(c, s) for c, s in todo if not study.result_path(c, s).is_file()]
    log(f"sit study: {len(todo) - len(pending)} of {len(todo)} (cell, seed) units already done; {len(pending)} to run")
    if not pending:
        return []
    t_start = time.perf_counter()
    from sit.train.log import missing_tensorboard_said_once

    with missing_tensorboard_said_once(log, f"{str(study.out / 'runs')!r}/CELL-sSEED/metrics.jsonl of each unit"):
        if jobs == 1:
            _worker_init(study)
            out = []
            for i, (cell, seed) in enumerate(pending):
                log(f"sit study: [{i + 1}/{len(pending)}] {_eta_line(done_times, cell, seed, pending[i:], 1, t_start)}")
                rec = run_unit(study, cell, seed, _DATA[0], log)
                done_times.setdefault(cell.name, []).append(rec["wall_s"]["total"])
                out.append(rec)
        else:
            out = _run_parallel(study, pending, done_times, jobs, t_start, log)
    log(f"sit study: ran {len(out)} units in {_dur(time.perf_counter() - t_start)}")
    return out


_DATA: list[EvalData] = []


def worker_threads(requested: int, jobs: int) -> int:
    """Torch threads of each of ``jobs`` study workers: ``requested`` when > 0, else the usable cores
    shared out (at least 1). A spawned worker left at torch's default takes every core, so 2 workers
    on 2 cores ran 4 threads and each training step took 2.2x as long (0.80 s against 0.37 s)."""
    if requested > 0:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, jobs))


def _worker_init(study: Study, worker: bool = False, jobs: int = 1) -> None:
    """Per process: torch threads, the evaluation data, and (a Linux worker) die with the parent."""
    if worker:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").prctl(1, 9)   # PR_SET_PDEATHSIG = SIGKILL: no orphans after a kill
        except (OSError, AttributeError):
            pass
    if worker:
        from sit.train.log import SAY_MISSING_TENSORBOARD

        SAY_MISSING_TENSORBOARD[0] = False   # the parent said it once for every unit
        torch.set_num_threads(worker_threads(study.base.threads, jobs))
    elif study.base.threads > 0:
        torch.set_num_threads(study.base.threads)
    _DATA[:] = [eval_data(study)]


def _worker_run(study: Study, cell_name: str, seed: int, line: str) -> dict:
    from sit.study.cells import CELL_BY_NAME

    print(line, flush=True)
    return run_unit(study, CELL_BY_NAME[cell_name], seed, _DATA[0], lambda s: print(s, flush=True))


def _run_parallel(study, pending, done_times, jobs, t_start, log) -> list[dict]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    out, futs, queue = [], {}, list(enumerate(pending))
    ctx = multiprocessing.get_context("spawn")

    def submit(ex):   # one unit per free worker, so its ETA line uses the times known now
        i, (cell, seed) = queue.pop(0)
        line = f"sit study: [{i + 1}/{len(pending)}] {_eta_line(done_times, cell, seed, pending[i:], jobs, t_start)}"
        fut = ex.submit(_worker_run, study, cell.name, seed, line)
        futs[fut] = (cell, seed)
        return fut

    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(study, True, jobs)) as ex:
        while queue and len(futs) < jobs:
            submit(ex)
        left = set(futs)
        while left:
            finished, left = wait(left, return_when=FIRST_COMPLETED)
            for f in finished:
                cell, seed = futs[f]
                if f.exception() is not None:
                    ex.shutdown(cancel_futures=True)
                    raise f.exception()
                rec = f.result()
                done_times.setdefault(cell.name, []).append(rec["wall_s"]["total"])
                out.append(rec)
                rest = [futs[g][0] for g in left] + [c for _, (c, _) in queue]
                _, e_all = _eta(done_times, cell, rest)
                log(f"sit study: done {cell.name} seed {seed} in {_dur(rec['wall_s']['total'])}; {len(rest)} left, "
                    f"study ETA ~{_dur((e_all or 0) / jobs)} ({_dur(time.perf_counter() - t_start)} elapsed)")
                if queue:
                    left.add(submit(ex))
    return out


def _eta_line(done_times, cell, seed, rest, jobs, t_start) -> str:
    e_unit, e_all = _eta(done_times, cell, [c for c, _ in rest])
    eta = "ETA: estimating after the first unit" if e_unit is None else \
        f"ETA this unit ~{_dur(e_unit)}, study ~{_dur(e_all / jobs)}"
    return f"cell {cell.name} seed {seed} ({eta}; {_dur(time.perf_counter() - t_start)} elapsed)"


def _dur(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
