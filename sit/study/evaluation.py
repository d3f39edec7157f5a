"""What is measured of one trained (cell, seed): the evaluation data (`eval_data`), the sample
quality of every sampler the paper reports (`evaluate_cell`: ODE / DDPM, the SDE with each w_t,
w_KL,eta with eta chosen on separate noise, Fig. 5 curves), C(v) (`path_length`) and L_t
(`loss_table`). Split from `sit.study.run`, which re-exports it.

Must not import: ``sit.commands``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from sit.study.cells import FIG5_CELL, W_CHOICES, Budget, Cell
from sit.study.config import Study, cell_configs
from sit.study.eval_sampler import generate, spec_name


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
    from sit.study.eval_sampler import noise_seed

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
    from sit.study.eval_sampler import noise_seed

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
