"""The training loop: ``train(cfg, model_cfg)`` on one process or under ``torchrun`` (DDP; NCCL on
GPUs, gloo on CPU). Read top to bottom: `train` opens the run folder, `_train` builds the pieces,
`_step` is one optimizer step (micro-batches, one all-reduce of the statistics, clipping, the
non-finite check, AdamW, EMA), `_after_step` the cadence of logs, checkpoints and grids.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import signal
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from sit import dist
from sit.checkpoints import OBJECTIVE_FILE, PHEMA_FILE, read_extra_state, read_objective_state, save_checkpoint
from sit.config import MAX_THREADS_PER_CORE, ConfigError, ModelConfig, TrainConfig, field_error, max_threads, usable_cores
from sit.train.builders import Objective, build_objective, model_config_for
from sit.train.data import DataSource, StepSampler, build_data
from sit.train.ddp import average_grads, check_ranks_agree, wrap
from sit.train.folder import OpenedRun, check_resumed_space, open_fresh, open_resume, run_meta, write_run_config
from sit.train.log import NUM_T_BINS, Logger, Window, truncate_metrics
from sit.train.optim import (  # (sit.train and the benchmarks import them from here too)
    clip_grad_norm,
    ema_decay_at,
    ema_update,
    load_adamw_state,
    lr_at,
    make_adamw,
)
from sit.train.report import finish_run, sample_grid
from sit.train.seeds import generator, rng_state, seed_of, set_rng_state


def run_threads(n: int, saved: bool, log=print) -> int:
    """The torch threads a run sets: ``n`` (0 = torch's default) within `sit.config.max_threads`.
    A count the run saved on a machine with more cores (``saved``: a resume that does not set
    threads) is capped to this machine's bound with a message; one given now above it is refused
    (more threads than that crashed inside torch, issue 22)."""
    top = max_threads()
    if n <= top:
        return n
    if not saved:
        raise ConfigError("TrainConfig", "threads", f"must be 0 (torch's default) or 1 .. {top} ({MAX_THREADS_PER_CORE} "
                          f"x {usable_cores()} usable cores) (got {n!r})")
    log(f"sit train: the run's saved threads={n} exceed this machine's bound of {top} ({MAX_THREADS_PER_CORE} x "
        f"{usable_cores()} usable cores); using {top}")
    return top


class NonFiniteLossError(RuntimeError):
    """Too many non-finite (NaN / inf) losses or gradients in a row."""


@dataclasses.dataclass(frozen=True)
class Callbacks:
    """Hooks into the loop (tests, experiments). ``on_losses(step, losses (B,)) -> losses`` sees
    the per-sample losses of each micro-batch before the backward pass (step 0-based);
    ``after_step(step)`` runs after each step's logging, checkpoint and grid (step = steps done)."""

    on_losses: Callable[[int, Tensor], Tensor] | None = None
    after_step: Callable[[int], None] | None = None


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    step: int
    status: str                     # "done" | "terminated"
    last_checkpoint: Path | None
    quality: dict | None = None
    net: nn.Module | None = None    # the trained network and its EMA (this process's copies)
    ema: nn.Module | None = None


class _NoDrop(nn.Module):
    """Calls the (possibly DDP-wrapped) network with label dropout disabled: the loop replaces
    dropped labels by the null class itself, from its own seeded generator."""

    def __init__(self, net: nn.Module, in_channels: int, out_channels: int, bare: nn.Module | None = None):
        super().__init__()
        self.net = net
        self.in_channels, self.out_channels = in_channels, out_channels  # read by ModelField
        # the network without the DDP wrapper, for what DDP's forward cannot run (MeanFlow's JVP)
        self.bare = None if bare is None else _NoDrop(bare, in_channels, out_channels)

    def forward(self, x: Tensor, t: Tensor, y: Tensor, **kw):
        return self.net(x, t, y, force_drop_ids=torch.zeros_like(y), **kw)  # kw: t2, hidden (the objective's)


@dataclasses.dataclass
class _Parts:
    """What the loop is made of (built once by `_train`)."""

    cfg: TrainConfig
    model_cfg: ModelConfig
    run_dir: Path
    device: torch.device
    net: nn.Module
    ema: nn.Module
    opt: torch.optim.Optimizer
    train_net: nn.Module            # net, compiled and/or DDP-wrapped
    params: list                    # the trainable parameters (AdamW's, clipped together): network, then terms'
    objective: Objective
    data: DataSource
    sampler: StepSampler
    meta: object                    # RunMeta of the run (config.json of every checkpoint)
    callbacks: Callbacks
    autocast: Callable = nullcontext
    fn_net: nn.Module | None = None     # train_net called with label dropout off (the loop drops labels)
    term_params: list = dataclasses.field(default_factory=list)  # the params owned by the objective's loss terms
    pema: nn.Module | None = None       # post-hoc EMA copies (sit.train.phema.PowerEMA) with cfg.phema_sigmas


@dataclasses.dataclass
class _State:
    step: int = 0
    window: Window = dataclasses.field(default_factory=Window)
    consecutive_bad: int = 0
    last_ckpt: Path | None = None
    lr: float = 0.0
    grad_norm: float = float("nan")
    terminate: bool = False


def train(
    cfg: TrainConfig | None = None,
    model_cfg: ModelConfig | None = None,
    *,
    resume=None,
    steps: int | None = None,
    overrides: dict | None = None,
    overwrite: bool = False,
    callbacks: Callbacks | None = None,
) -> TrainResult:
    """Train (or, with ``resume``, continue) a run; see `sit.train`.

    cfg / model_cfg: a fresh run into ``cfg.out`` (refused if that folder holds a run, unless
    ``overwrite``). resume: a run folder (its newest valid checkpoint) or a checkpoint folder; the
    saved configs are used, ``overrides`` / ``steps`` may change the fields of
    `sit.train.folder.RESUME_OVERRIDES` (recorded in run_config.json's history)."""
    device = dist.init(cfg.device if cfg is not None else None)
    if resume is not None:
        ov = dict(overrides or {}, **({"steps": steps} if steps is not None else {}))
        run = open_resume(resume, ov, log=dist.print0)
    else:
        if cfg is None or model_cfg is None:
            raise ValueError("train() needs cfg and model_cfg, or resume=RUN_DIR")
        run_threads(cfg.threads, saved=False)  # refused before the folder is touched
        if cfg.repa_encoder is not None:  # the encoders, the block and the data too
            from sit.train.repa import check_repa

            check_repa(cfg, model_cfg)
        model_cfg = model_config_for(cfg, model_cfg)  # the conditioning inputs the objective adds (MeanFlow)
        run = open_fresh(cfg, model_cfg, overwrite, log=dist.print0)
    threads_before = torch.get_num_threads()
    try:
        if run.cfg.device is not None:
            device = dist.init(run.cfg.device)
        threads = run_threads(run.cfg.threads, saved=resume is not None and "threads" not in ov, log=dist.print0)
        if threads > 0:
            torch.set_num_threads(threads)
        with dist.tf32(run.cfg.tf32):
            return _train(run, device, callbacks or Callbacks())
    finally:
        torch.set_num_threads(threads_before)
        if run.lock is not None:
            run.lock.release()


def _train(run: OpenedRun, device: torch.device, callbacks: Callbacks) -> TrainResult:
    cfg, model_cfg, run_dir = run.cfg, run.model_cfg, run.run_dir
    torch.manual_seed(seed_of(cfg.seed, 0))  # the same initial weights on every rank (and for the EMA copy)
    data = build_data(cfg, device)
    _check_shapes(data, model_cfg)
    check_resumed_space(run.resumed_data, data.info)
    meta = run_meta(cfg, model_cfg, data.info)
    if dist.is_main():
        write_run_config(run_dir, meta, run.history)
    dist.barrier()
    from sit.models.sit import SiT

    net = SiT(model_cfg, grad_checkpointing=cfg.grad_checkpointing).to(device)
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    pema = None
    if cfg.phema_sigmas:
        from sit.train.phema import PowerEMA

        pema = PowerEMA(net, cfg.phema_sigmas)
    with torch.random.fork_rng(devices=[]):  # the terms' modules from their own seed: the same on every rank
        torch.manual_seed(seed_of(cfg.seed, 5))
        objective = build_objective(cfg, model_cfg, terms_device=device)
    term_params = [p for p in objective.terms.parameters() if p.requires_grad]
    params = [p for p in net.parameters() if p.requires_grad] + term_params
    opt = make_adamw(params, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    torch.manual_seed(seed_of(cfg.seed, 0, dist.rank()))  # any later use of the global RNG differs per rank
    st = _State()
    if run.loaded is not None:
        _restore(run.loaded, net, ema, opt, st, run_dir, objective, pema)
    dist.barrier()
    p = _Parts(cfg, model_cfg, run_dir, device, net, ema, opt, wrap(net, cfg, device), params, objective, data,
               StepSampler(data.n, cfg.global_batch, cfg.grad_accum, dist.world_size(), dist.rank(), cfg.seed), meta, callbacks,
               term_params=term_params, pema=pema)
    p.fn_net = _NoDrop(p.train_net, model_cfg.in_channels, model_cfg.out_channels,
                       bare=p.train_net.module if dist.world_size() > 1 else None)
    if cfg.precision == "bf16":
        p.autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    status = _run_steps(p, st)
    if dist.world_size() > 1:
        check_ranks_agree(net, ema, run_dir, device)
    result = TrainResult(run_dir, st.step, status, st.last_ckpt, net=net, ema=ema)
    if status == "done" and dist.is_main():
        result.quality = finish_run(run_dir, st.last_ckpt, ema, cfg, model_cfg, data, p.objective, device)
    dist.barrier()
    return result


def _run_steps(p: _Parts, st: _State) -> str:
    """Steps until ``cfg.steps`` (or SIGTERM: finish the step, checkpoint, return "terminated")."""
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGTERM, lambda *_: setattr(st, "terminate", True))
    logger = Logger(p.run_dir, p.cfg.steps, st.step, dist.is_main(), p.cfg.progress, log=dist.print0)
    pixels = any(term.needs_pixels for term in p.objective.terms)
    batches = p.data.batches(p.sampler, st.step, p.cfg.steps, p.cfg.num_workers, p.device,
                             **({"pixels": True} if pixels else {}))
    p.net.train()
    try:
        while st.step < p.cfg.steps:
            _step(p, st, batches, logger)
            if _after_step(p, st, logger):
                return "terminated"
        return "done"
    finally:
        logger.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)


class _Sums:
    """This rank's sums over one step's micro-batches: finite loss, loss and count by t bin, bad
    micro-batches, and each extra loss term's finite sum."""

    def __init__(self, term_names: tuple[str, ...] = ()):
        self.term_names = term_names
        self.terms = torch.zeros(len(term_names), dtype=torch.float64)
        self.loss = torch.zeros((), dtype=torch.float64)
        self.bins = torch.zeros(NUM_T_BINS, dtype=torch.float64)
        self.counts = torch.zeros(NUM_T_BINS, dtype=torch.float64)
        self.bad = torch.zeros((), dtype=torch.float64)
        self.bad_t: list[float] = []

    def add(self, losses: Tensor, t_frac: Tensor) -> None:
        ld = losses.detach().double().cpu()
        finite = torch.isfinite(ld)
        if not bool(finite.all()):
            self.bad += 1
            self.bad_t.extend(t_frac[~finite.to(t_frac.device)].cpu().tolist())
        kept = torch.where(finite, ld, torch.zeros_like(ld))
        self.loss += kept.sum()
        b = (t_frac.cpu() * NUM_T_BINS).long().clamp(0, NUM_T_BINS - 1)
        self.bins.index_add_(0, b, kept)
        self.counts.index_add_(0, b, finite.double())

    def add_terms(self, values: dict[str, Tensor], finite: Tensor) -> None:
        for i, name in enumerate(self.term_names):
            v = values[name].detach().double().cpu()
            self.terms[i] += torch.where(finite, v, torch.zeros_like(v)).sum()

    def all_reduce(self, device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(loss, bins, counts, bad) summed over ranks (one all-reduce; the terms' sums ride along
        into ``self.terms``)."""
        n = len(self.term_names)
        s = torch.cat([self.loss.view(1), self.bins, self.counts, self.bad.view(1), self.terms])
        s = dist.all_reduce_sum(s.to(device)).cpu()
        if n:
            self.terms, s = s[-n:], s[:-n]
        return s[0], s[1 : 1 + NUM_T_BINS], s[1 + NUM_T_BINS : 1 + 2 * NUM_T_BINS], s[-1]


def _micro(p: _Parts, step: int, micro: int, x: Tensor, y: Tensor, sums: _Sums, pixels: Tensor | None = None) -> None:
    """Forward and backward of one micro-batch; its randomness is drawn for the whole global
    micro-batch from (seed, 2, step, micro), then this rank's rows are taken."""
    cfg, n, rows, dev = p.cfg, p.sampler.micro_global, p.sampler.rows(), p.device
    g = generator(cfg.seed, 2, step, micro)
    t_all = p.objective.sample_t(n, g)
    eps_all = torch.randn((n, *x.shape[1:]), generator=g)
    drop_p = p.model_cfg.class_dropout_prob
    drop_all = torch.rand(n, generator=g) < drop_p
    t, eps = t_all[rows].to(dev), eps_all[rows].to(dev, x.dtype)
    if drop_p > 0:
        y = torch.where(drop_all[rows].to(dev), torch.full_like(y, p.model_cfg.num_classes), y)
    last = micro == cfg.grad_accum - 1
    with p.train_net.no_sync() if dist.world_size() > 1 and not last else nullcontext():
        with p.autocast():
            out = p.objective.outputs(p.fn_net, x, t, eps, y)
            out.pixels = pixels
            losses = out.loss
            t_frac = p.objective.t_fraction(t)
            terms = {term.name: term(out) for term in p.objective.terms}
        losses = losses.float()
        if p.callbacks.on_losses is not None:
            losses = p.callbacks.on_losses(step, losses)
        if not terms:
            (losses.mean() / cfg.grad_accum).backward()
        else:
            total = losses + sum(term.coeff * terms[term.name].float() for term in p.objective.terms)
            (total.mean() / cfg.grad_accum).backward()
            finite = torch.isfinite(total.detach()).cpu()
            sums.add_terms(terms, finite)
            losses = torch.where(finite.to(losses.device), losses, torch.full_like(losses, float("nan")))
    sums.add(losses, t_frac)


def _step(p: _Parts, st: _State, batches, logger: Logger) -> None:
    """One optimizer step; a non-finite loss or gradient anywhere skips it (weights unchanged)."""
    cfg = p.cfg
    st.lr = lr_at(cfg, st.step)
    for group in p.opt.param_groups:
        group["lr"] = st.lr
    sums = _Sums(tuple(term.name for term in p.objective.terms))
    for micro in range(cfg.grad_accum):
        batch = next(batches)  # (x, y) or, for terms that read images, (x, y, pixels)
        _micro(p, st.step, micro, batch[0], batch[1], sums, batch[2] if len(batch) > 2 else None)
    loss, bins, counts, bad = sums.all_reduce(p.device)
    if p.term_params and dist.world_size() > 1:
        average_grads(p.term_params, p.device)
    st.grad_norm = clip_grad_norm(p.params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    if bad.item() == 0 and math.isfinite(st.grad_norm):
        p.opt.step()
        ema_update(p.ema, p.net, ema_decay_at(cfg, st.step))
        if p.pema is not None:
            p.pema.update(p.net, st.step + 1)
        st.consecutive_bad = 0
        st.window.add(loss, cfg.global_batch, bins, counts)
        if sums.term_names:
            st.window.add_terms(dict(zip(sums.term_names, sums.terms.tolist())))
    else:
        st.consecutive_bad += 1
        st.window.skipped += 1
        logger.nonfinite(st.step + 1, st.grad_norm, sums.bad_t, st.consecutive_bad)
    p.opt.zero_grad(set_to_none=True)
    st.step += 1
    st.window.steps += 1
    st.window.images += cfg.global_batch
    logger.stepped()


def _after_step(p: _Parts, st: _State, logger: Logger) -> bool:
    """Log, checkpoint, grid, callbacks; raise NonFiniteLossError; True when SIGTERM asks to stop."""
    cfg, step = p.cfg, st.step
    if step % cfg.log_every == 0 or step == cfg.steps:
        logger.window(step, st.window, st.lr, st.grad_norm, ema_decay_at(cfg, step - 1), p.objective.record)
        st.window = Window()
    stop_bad = st.consecutive_bad >= cfg.max_nonfinite
    if dist.world_size() > 1:
        st.terminate = dist.all_reduce_sum(torch.tensor([float(st.terminate)], device=p.device)).item() > 0
    if step % cfg.ckpt_every == 0 or step == cfg.steps or st.terminate or stop_bad:
        st.last_ckpt = _checkpoint(p, st)
    if cfg.phema_every and step % cfg.phema_every == 0 and dist.is_main():
        from sit.config import to_dict
        from sit.train.phema import run_tag, write_snapshots

        write_snapshots(p.run_dir, p.pema, step, run=run_tag(to_dict(cfg), to_dict(p.model_cfg)))
    if cfg.sample_every and step % cfg.sample_every == 0 and dist.is_main():
        sample_grid(p.ema, cfg, p.model_cfg, p.data, p.objective, p.device, p.run_dir / "samples" / f"step-{step:07d}.png")
    if p.callbacks.after_step is not None:
        p.callbacks.after_step(step)
    if stop_bad:
        raise field_error(NonFiniteLossError,
            f"training stopped after {st.consecutive_bad} non-finite losses/gradients in a row (last at step {step}); "
            f"the weights were not changed by them; checkpoint to return to: {str(st.last_ckpt)!r} "
            f"(resume with {{resume}} {str(p.run_dir)!r} and a lower {{TrainConfig.lr}} or a {{TrainConfig.grad_clip}})"
        )
    if st.terminate:
        dist.print0(f"sit train: SIGTERM received; saved {str(st.last_ckpt)!r}; resuming {str(p.run_dir)!r} continues from it")
    return st.terminate


def _checkpoint(p: _Parts, st: _State) -> Path:
    final = p.run_dir / "checkpoints" / f"step-{st.step:07d}"
    if dist.is_main():
        state = {
            "data_position": p.sampler.position(st.step),
            "world_size": dist.world_size(),
            "window": st.window.to_dict(),
            "consecutive_nonfinite": st.consecutive_bad,
            "rng": rng_state(),
            "time": time.time(),
        }
        extra = {OBJECTIVE_FILE: p.objective.terms} if len(p.objective.terms) else {}
        if p.pema is not None:
            extra[PHEMA_FILE] = p.pema.copies
        save_checkpoint(p.run_dir, st.step, p.net, p.ema, p.opt, state, p.meta, p.cfg.keep_last, extra=extra)
    dist.barrier()
    return final


def _check_shapes(data: DataSource, mc: ModelConfig) -> None:
    if (data.channels, data.size, data.num_classes) != (mc.in_channels, mc.input_size, mc.num_classes):
        raise ValueError(
            f"model expects {mc.in_channels}x{mc.input_size}x{mc.input_size} inputs and {mc.num_classes} classes; "
            f"the data gives {data.channels}x{data.size}x{data.size} and {data.num_classes}"
        )


def _restore(loaded: tuple, net, ema, opt, st: _State, run_dir: Path, objective: Objective, pema=None) -> None:
    ck, state, model_sd, ema_sd, opt_sd = loaded
    net.load_state_dict(model_sd)
    ema.load_state_dict(ema_sd)
    if len(objective.terms):
        objective.terms.load_state_dict(read_objective_state(ck))
    if pema is not None:
        pema.copies.load_state_dict(read_extra_state(ck, PHEMA_FILE, "the run tracks a post-hoc EMA (phema_sigmas)"))
    load_adamw_state(opt, opt_sd)
    st.step = int(state["step"])
    st.window = Window(state.get("window"))
    st.consecutive_bad = int(state.get("consecutive_nonfinite", 0))
    if "rng" in state and dist.rank() == 0:
        set_rng_state(state["rng"])
    if dist.is_main():
        truncate_metrics(run_dir / "metrics.jsonl", st.step)
