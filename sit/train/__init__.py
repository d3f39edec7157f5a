"""`sit train`: SiT (continuous time) or DiT's DDPM (discrete time), one process or ``torchrun``.

``train(cfg, model_cfg)`` writes a run folder:

    RUN/run_config.json              resolved config (also inside every checkpoint as config.json)
    RUN/metrics.jsonl                one record per ``log_every`` steps: step, loss, loss by t bin,
                                     lr, grad norm, images/s, skipped (non-finite) steps
    RUN/checkpoints/step-0000100/    model.safetensors, ema.safetensors, optimizer.pt, state.json,
                                     config.json, manifest.json (+ lt_table.json with ``lt_table``,
                                     objective.safetensors with loss terms that own modules (REPA),
                                     phema.safetensors with ``phema_sigmas``)
    RUN/phema/                       post-hoc EMA snapshots + index.json (``phema_every``; `sit ema`)
    RUN/samples/step-0000100.png     EMA sample grids (one row per class)
    RUN/loss_curve.png, RUN/samples.png (samples beside real images), RUN/quality.json (embedded data)

Determinism, the basis of exact resume and of DDP = single process: everything random in a step
is a function of (seed, step) (`sit.train.seeds`). So a run resumed from a checkpoint repeats the
uninterrupted run exactly (same process count), and N processes compute the same mean loss and
gradient as one process on the same global batch.

The package: `loop` (the loop), `seam` (what an objective hands its loss terms, `LossTerm`, the
`Objective` interface), `objective` (the tables: objectives, loss-term builders, `build_objective`),
`paper` (continuous SiT / discrete DDPM: time draw, losses, preview sampler), `meanflow` (MeanFlow's
average-velocity objective), `terms` (the cosine term), `repa` (representation alignment), `phema` (post-hoc EMA), `data` (data sources and the step sampler), `folder` (run folder, lock, resume
and its overrides), `log` (metrics.jsonl, TensorBoard, progress), `report` (grids, loss curve,
quality, L_t table), `seeds`; checkpoint I/O is `sit.checkpoints`.
"""

from sit.lazy_exports import lazy_exports

# the names below are imported when first used (PEP 562), so importing one submodule (a torch-free
# record, e.g. for `--help`) does not import the others
_EXPORTS = {
    "CKPT_FILES": ("sit.checkpoints", "CKPT_FILES"),
    "CheckpointError": ("sit.checkpoints", "CheckpointError"),
    "find_resumable": ("sit.checkpoints", "find_resumable"),
    "list_checkpoints": ("sit.checkpoints", "list_checkpoints"),
    "read_training_state": ("sit.checkpoints", "read_training_state"),
    "run_dir_of": ("sit.checkpoints", "run_dir_of"),
    "save_checkpoint": ("sit.checkpoints", "save_checkpoint"),
    "verify_checkpoint": ("sit.checkpoints", "verify"),
    "build_objective": ("sit.train.builders", "build_objective"),
    "generate": ("sit.train.builders", "generate"),
    "DataSource": ("sit.train.data", "DataSource"),
    "StepSampler": ("sit.train.data", "StepSampler"),
    "build_data": ("sit.train.data", "build_data"),
    "RESUME_OVERRIDES": ("sit.train.folder", "RESUME_OVERRIDES"),
    "apply_overrides": ("sit.train.folder", "apply_overrides"),
    "run_meta": ("sit.train.folder", "run_meta"),
    "NUM_T_BINS": ("sit.train.log", "NUM_T_BINS"),
    "plot_loss_curve": ("sit.train.log", "plot_loss_curve"),
    "Callbacks": ("sit.train.loop", "Callbacks"),
    "NonFiniteLossError": ("sit.train.loop", "NonFiniteLossError"),
    "TrainResult": ("sit.train.loop", "TrainResult"),
    "clip_grad_norm": ("sit.train.loop", "clip_grad_norm"),
    "ema_decay_at": ("sit.train.loop", "ema_decay_at"),
    "ema_update": ("sit.train.loop", "ema_update"),
    "load_adamw_state": ("sit.train.loop", "load_adamw_state"),
    "lr_at": ("sit.train.loop", "lr_at"),
    "make_adamw": ("sit.train.loop", "make_adamw"),
    "train": ("sit.train.loop", "train"),
    "rng_state": ("sit.train.seeds", "rng_state"),
    "set_rng_state": ("sit.train.seeds", "set_rng_state"),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "CKPT_FILES", "CheckpointError", "find_resumable", "list_checkpoints", "read_training_state", "run_dir_of",
    "save_checkpoint", "verify_checkpoint", "DataSource", "StepSampler", "build_data", "RESUME_OVERRIDES",
    "apply_overrides", "run_meta", "NUM_T_BINS", "plot_loss_curve", "Callbacks", "NonFiniteLossError", "TrainResult",
    "clip_grad_norm", "ema_decay_at", "ema_update", "load_adamw_state", "lr_at", "make_adamw", "train", "build_objective", "generate",
    "rng_state", "set_rng_state",
]
