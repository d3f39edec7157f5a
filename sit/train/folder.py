"""The run folder of `sit train`: a fresh run refuses a folder that already holds one (unless
``overwrite``), rank 0 holds RUN/.lock for the whole run, a resume cleans partial checkpoint
folders of a killed writer, reads the newest valid checkpoint through the store and applies the
documented overrides (recorded in run_config.json's "history"), and the run's `RunMeta`.

RUN/run_config.json is the config.json layout (`sit.checkpoints.RunMeta.to_config`, without the
step) plus, once a resume changed something, "history": [{"step": 1200, "changed": {"lr": [old, new]}}].
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from sit import dist, folders
from sit.checkpoints import RunMeta, clean_stale, find_resumable, is_training_checkpoint, list_checkpoints, run_dir_of
from sit.config import RESUME_OVERRIDES, ConfigError, ModelConfig, TrainConfig, field_error, from_dict, to_dict
from sit.io import FolderLock, write_text_atomic

RUN_MARKERS = ("run_config.json", "metrics.jsonl", "checkpoints")


@dataclasses.dataclass
class OpenedRun:
    cfg: TrainConfig
    model_cfg: ModelConfig
    run_dir: Path
    loaded: tuple | None            # (ckpt, state, model_sd, ema_sd, opt_sd) when resuming
    history: list                   # run_config.json "history"
    lock: FolderLock | None         # rank 0: held until the run ends
    resumed_data: dict | None = None  # the resumed checkpoint's "data" record (its latent space is kept)


def run_meta(cfg: TrainConfig, model_cfg: ModelConfig, data_info: dict | None = None) -> RunMeta:
    """The `RunMeta` of a run (its config.json via ``to_config()``; read by `sit.checkpoints.load`)."""
    import sit

    discrete = cfg.time_input == "discrete"
    return RunMeta(
        model=model_cfg,
        path="ddpm" if discrete else cfg.path,
        prediction="noise" if discrete else cfg.prediction,
        loss_weight=None if discrete else cfg.loss_weight,
        time_input=cfg.time_input,
        train=to_dict(cfg),
        data=data_info or {},
        extra={"sit_version": sit.__version__},
    )


def run_config(meta: RunMeta, history: list) -> dict:
    """The RUN/run_config.json of ``meta``."""
    d = {k: v for k, v in meta.to_config().items() if k != "step"}
    return dict(d, history=history) if history else d


def write_run_config(run_dir: Path, meta: RunMeta, history: list) -> None:
    write_text_atomic(run_dir / "run_config.json", json.dumps(run_config(meta, history), indent=2, sort_keys=True) + "\n")


def _refuse_existing(run_dir: Path, overwrite: bool) -> None:
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise field_error(NotADirectoryError, f"{{TrainConfig.out}} {str(run_dir)!r} is a file, not a run folder")
    folders.require_output(run_dir, folders.RUN, "TrainConfig.out")  # a sample / checkpoint folder, even with overwrite
    found = [n for n in RUN_MARKERS if (run_dir / n).exists()]
    if found and not overwrite and not list_checkpoints(run_dir):
        raise field_error(FileExistsError,
            f"run folder {str(run_dir)!r} holds a run that never reached a checkpoint ({', '.join(found)}), so "
            f"there is nothing to resume; pass {{overwrite}} to delete it and start again"
        )
    if found and not overwrite:
        raise field_error(FileExistsError,
            f"run folder {str(run_dir)!r} already holds a run ({', '.join(found)}); continue it with "
            f"{{resume}} {str(run_dir)!r}, or pass {{overwrite}} to delete it and start again"
        )


def _clear(run_dir: Path, log) -> None:
    gone = [p for p in run_dir.iterdir() if p.name != FolderLock.NAME]
    for p in gone:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    if gone:
        log(f"sit train: overwrite: removed the previous run in {str(run_dir)!r} ({len(gone)} entries)")


def _lock(run_dir: Path, log) -> FolderLock | None:
    return FolderLock(run_dir, "run folder", log).acquire() if dist.is_main() else None


def open_fresh(cfg: TrainConfig, model_cfg: ModelConfig, overwrite: bool = False, log=print) -> OpenedRun:
    run_dir = Path(cfg.out)
    if not run_dir.exists():
        folders.require_output(run_dir, folders.RUN, "TrainConfig.out")  # not inside a checkpoint folder
    _refuse_existing(run_dir, overwrite)
    dist.barrier()
    lock = _lock(run_dir, log)
    if overwrite and lock is not None:
        _clear(run_dir, log)
    elif lock is not None:
        clean_stale(run_dir, log)  # half-written checkpoints of a run killed at its start
    return OpenedRun(cfg, model_cfg, run_dir, None, [], lock)


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> tuple[TrainConfig, dict]:
    """(cfg with ``overrides``, {field: [old, new]} of what changed); a field outside
    `RESUME_OVERRIDES` is refused by name."""
    bad = sorted(set(overrides) - set(RESUME_OVERRIDES))
    if bad:
        raise ConfigError("", "resume", f"keeps the run's saved config; {bad} cannot change (allowed: {list(RESUME_OVERRIDES)})")
    changed = {k: [getattr(cfg, k), v] for k, v in overrides.items() if getattr(cfg, k) != v}
    return dataclasses.replace(cfg, **{k: v for k, (_, v) in changed.items()}), changed


def _old_history(run_dir: Path) -> list:
    try:
        h = json.loads((run_dir / "run_config.json").read_text()).get("history", [])
    except (OSError, ValueError, AttributeError):
        return []
    return h if isinstance(h, list) else []


def open_resume(resume, overrides: dict[str, Any] | None = None, log=print) -> OpenedRun:
    path = Path(resume)
    folders.require_input(path, (folders.RUN, folders.CHECKPOINT), "resume")
    run_dir = run_dir_of(path) if is_training_checkpoint(path) else path
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder {str(run_dir)!r} to resume")
    lock = _lock(run_dir, log)
    try:
        if lock is not None:
            clean_stale(run_dir, log)
        if not list_checkpoints(run_dir) and not is_training_checkpoint(path):
            if any((run_dir / n).exists() for n in RUN_MARKERS):  # as a fresh run into it says (_refuse_existing)
                raise field_error(FileNotFoundError,
                    f"run folder {str(run_dir)!r} never reached a checkpoint (it was stopped before the first one), so "
                    f"there is nothing to resume; start again with {{TrainConfig.out}} {str(run_dir)!r} {{overwrite}}"
                )
            # nothing of a run (at most the lock and half-written checkpoints of a run killed at its start, which
            # clean_stale removed): a fresh run into it is accepted as it is, so say that
            raise field_error(FileNotFoundError,
                f"run folder {str(run_dir)!r} holds no run (a run killed before it wrote anything leaves it so), so "
                f"there is nothing to resume; start a run there with {{TrainConfig.out}} {str(run_dir)!r}"
            )
        ck, (state, meta, model_sd, ema_sd, opt_sd) = find_resumable(path, log=log)
        cfg, changed = apply_overrides(from_dict(TrainConfig, dict(meta.train)), overrides or {})
        if cfg.steps < int(state["step"]):
            raise ConfigError("TrainConfig", "steps", f"{cfg.steps} is below the checkpoint's step {state['step']} ({ck}); "
                              f"give {{steps}} above {state['step']}, or sample from that checkpoint as it is")
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    history = _old_history(run_dir) + ([{"step": int(state["step"]), "changed": changed}] if changed else [])
    note = f"; changed {changed}" if changed else ""
    log(f"sit train: resuming {str(run_dir)!r} from {ck.name} (step {state['step']}){note}")
    return OpenedRun(cfg, meta.model, run_dir, (ck, state, model_sd, ema_sd, opt_sd), history, lock,
                     resumed_data=dict(meta.data) if meta.data else None)


def check_resumed_space(recorded: dict | None, now: dict) -> None:
    """A resumed latent run must see the latents in the space it was trained in (scale, shift,
    per-channel normalisation; `sit.vae.LatentSpace`): a latent folder extracted again or edited
    under the same path is refused in one line; so are REPA encoders whose files changed."""
    if now.get("repa_encoders"):
        from sit.train.repa import check_resumed_encoders

        check_resumed_encoders(recorded, now)
    if not recorded or recorded.get("kind") not in ("latents", "images") or now.get("kind") != recorded.get("kind"):
        return
    from sit.vae import LatentSpace

    old, new = LatentSpace.from_record(recorded), LatentSpace.from_record(now)
    if old != new:
        what = [k for k in ("scale", "shift", "mean", "std") if getattr(old, k) != getattr(new, k)]
        raise ValueError(f"the run was trained on latents with another {'/'.join(what)} than its data gives now "
                         f"(recorded {old.record()}, now {new.record()}); the latent folder changed since: resume "
                         "with the data the run started on")
