"""The one checkpoint store: write, list, verify, resolve and read checkpoints and run folders.

Owns: what a path given to any reader stands for (a run folder = its newest checkpoint that
verifies; a checkpoint folder; an official ``.pt``; a sit ``.safetensors``), the atomic writing
of training checkpoints, their verification (sha256 + size of every file, ``state.json`` and
``config.json`` included, against ``manifest.json``, which is written last), the fall-back to the
previous valid checkpoint with a message naming the refused one and the one used, the typed
`RunMeta` every reader gets, and a checkpoint's identity (its weights and config, not files added
beside it later, such as ``lt_table.json``).

A training checkpoint ``RUN/checkpoints/step-NNNNNNN/`` holds model.safetensors, ema.safetensors,
optimizer.pt, config.json (the run's `RunMeta` + step), state.json (step, data position, RNG
states, logging window) and manifest.json; a run whose objective owns modules (REPA's projector,
`sit.train.builders.LossTerm`) adds objective.safetensors, listed and hashed in the manifest
like the others, read back only by a resume (never by `load`, exports or samplers). The folder name, state.json's step, config.json's step
and the manifest's step must agree.

Every reader (`sit train --resume`, sample, convert, info, eval, lt, likelihood, pathlength,
sweep, study) goes through `resolve` / `load` / `read_training_state`, so all get the same checks.
Diffusers folders (exports, official DiT folders) are asked about in one place,
`sit.checkpoints_diffusers.diffusers_kind`; `RunMeta` and `CheckpointError` live in `sit.run_meta` (both re-exported here).

Must not import: ``sit.train``, ``sit.generate``, ``sit.evaluate``, ``sit.commands``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from sit import folders
from sit.checkpoints_diffusers import diffusers_kind, identity_files, load_diffusers_folder
from sit.checkpoints_diffusers import is_diffusers_folder as is_diffusers_folder  # re-exported: readers ask the store
from sit.checkpoints_diffusers import is_dit_folder as is_dit_folder
from sit.config import ModelConfig, field_error
from sit.io import fsync_dir, fsync_file, no_space_message, set_file_mode, sha256_file
from sit.run_meta import CONFIG_KEYS as CONFIG_KEYS  # re-exported (moved with RunMeta)
from sit.run_meta import CheckpointError as CheckpointError  # the store's error (recorded_meta raises it too)
from sit.run_meta import RunMeta as RunMeta
from sit.run_meta import recorded_meta as recorded_meta

PathLike = str | os.PathLike
Log = Callable[[str], None]

CKPT_FILES = ("model.safetensors", "ema.safetensors", "optimizer.pt", "config.json")
OBJECTIVE_FILE = "objective.safetensors"   # the objective's own modules (optional; not part of the network)
PHEMA_FILE = "phema.safetensors"           # the post-hoc EMA's tracked copies (optional; sit.train.phema)
STATE = "state.json"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_STEP_DIR = re.compile(r"step-(\d{7,})")


def _default_log(msg: str) -> None:
    print(msg, file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# hashing (cached per (path, size, mtime), so verifying then hashing a checkpoint reads it once)
# ------------------------------------------------------------------------------------------------
_HASHES: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def _record(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def _json_text(obj: Any, indent: int = 2) -> str:
    return json.dumps(obj, indent=indent, sort_keys=indent == 2) + "\n"


def _tensor_bytes(obj: Any) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _write_files(tmp: Path, step: int, model_sd, ema_sd, opt_sd, state: dict, config: dict,
                 extra_sds: Mapping[str, dict] | None = None) -> None:
    import torch
    from safetensors.torch import save_file

    save_file(model_sd, str(tmp / "model.safetensors"))
    save_file(ema_sd, str(tmp / "ema.safetensors"))
    torch.save(opt_sd, tmp / "optimizer.pt")
    for name in ("model.safetensors", "ema.safetensors"):
        set_file_mode(tmp / name)  # safetensors creates 0600; weights are 0644 like every other file
    (tmp / "config.json").write_text(_json_text(dict(config, step=step)))
    for name, sd in (extra_sds or {}).items():
        save_file(sd, str(tmp / name))
    files = {}
    for name in (*CKPT_FILES, *(extra_sds or {})):
        fsync_file(tmp / name)
        files[name] = _record(tmp / name)
    # ``files`` in state.json too: earlier sit versions verify with it
    (tmp / STATE).write_text(_json_text(dict(state, step=step, files=files), indent=1))
    fsync_file(tmp / STATE)
    files[STATE] = _record(tmp / STATE)
    manifest = {"format": MANIFEST_FORMAT, "kind": folders.CHECKPOINT_KIND, "step": step, "files": files}
    (tmp / MANIFEST).write_text(_json_text(manifest))  # last: its presence means complete
    fsync_file(tmp / MANIFEST)
    fsync_dir(tmp)


def save_checkpoint(
    run_dir: PathLike, step: int, net, ema, opt, state: Mapping[str, Any], meta: RunMeta | Mapping[str, Any],
    keep_last: int, extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write RUN/checkpoints/step-NNNNNNN atomically: the files into RUN/.tmp-step-NNNNNNN-PID,
    fsync, manifest.json last, then one rename. Keeps the newest ``keep_last`` checkpoints.
    ``extra``: {file name (``.safetensors``): module}, more weights saved and verified with the
    checkpoint (`OBJECTIVE_FILE`).
    A full disk raises OSError(ENOSPC) "no space left on ... (needed about N MB)" after removing
    the partial folder; the previous checkpoints are untouched. Call on rank 0 only."""
    run_dir = Path(run_dir)
    ck_root = run_dir / "checkpoints"
    ck_root.mkdir(parents=True, exist_ok=True)
    final = ck_root / f"step-{step:07d}"
    tmp = run_dir / f".tmp-step-{step:07d}-{os.getpid()}"
    config = meta.to_config() if isinstance(meta, RunMeta) else dict(meta)
    model_sd, ema_sd = _state_dict_cpu(net), _state_dict_cpu(ema)
    extra_sds = {name: _state_dict_cpu(m) for name, m in (extra or {}).items()}
    opt_sd = opt.state_dict() if hasattr(opt, "state_dict") else opt
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_files(tmp, step, model_sd, ema_sd, opt_sd, dict(state), config, extra_sds)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            need = _tensor_bytes(model_sd) + _tensor_bytes(ema_sd) + _tensor_bytes(opt_sd) + _tensor_bytes(extra_sds)
            raise OSError(errno.ENOSPC, no_space_message(run_dir, need) + f" writing checkpoint step {step}; "
                          f"the previous checkpoints are kept") from e
        raise
    if final.exists():
        trash = run_dir / f".old-{final.name}-{os.getpid()}"
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(ck_root)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _state_dict_cpu(net) -> dict:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}


def clean_stale(run_dir: PathLike, log: Log | None = None) -> list[Path]:
    """Remove RUN/.tmp-step-* / .old-step-* folders left by a killed writer (call with the run's
    lock held, so no live writer owns them). Returns what was removed."""
    run_dir = Path(run_dir)
    gone = [p for p in sorted(run_dir.glob(".tmp-step-*")) + sorted(run_dir.glob(".old-step-*")) if p.is_dir()]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    if gone and log is not None:
        log(f"sit: removed {len(gone)} partial checkpoint folder(s) left by an interrupted run: {[p.name for p in gone]}")
    return gone


# ------------------------------------------------------------------------------------------------
# listing and verifying
# ------------------------------------------------------------------------------------------------
def list_checkpoints(run_dir: PathLike) -> list[Path]:
    """Training checkpoint folders ``RUN/checkpoints/step-NNNNNNN`` of a run, oldest first (by step)."""
    ck = Path(run_dir) / "checkpoints"
    if not ck.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in ck.iterdir() if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))]
    return [p for _, p in sorted(out)]


def _read_json(ckpt: Path, name: str) -> dict:
    try:
        d = json.loads((ckpt / name).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(ckpt, f"{name} is corrupt ({e})") from None
    if not isinstance(d, dict):
        raise CheckpointError(ckpt, f"{name} is corrupt (not a JSON object)")
    return d


def _check_files(ckpt: Path, files: Any, required: tuple[str, ...], source: str) -> None:
    if not isinstance(files, dict):
        raise CheckpointError(ckpt, f"{source} lacks 'files'")
    for name in required:
        if name not in files:
            raise CheckpointError(ckpt, f"{source} does not cover {name}")
    for name, rec in files.items():
        p = ckpt / name
        if not p.is_file():
            raise CheckpointError(ckpt, f"incomplete: {name} is missing")
        size = p.stat().st_size
        if size != rec.get("size"):
            raise CheckpointError(ckpt, f"{name} is truncated or altered ({size} bytes, expected {rec.get('size')})")
        if _sha256(p) != rec.get("sha256"):
            raise CheckpointError(ckpt, f"{name} is corrupt: sha256 mismatch")


def _check_steps(ckpt: Path, steps: dict[str, Any], required: bool = True) -> int | None:
    m = _STEP_DIR.fullmatch(ckpt.name)
    if m:
        steps = {"folder name": int(m.group(1)), **steps}
    known = {k: v for k, v in steps.items() if v is not None}
    if len(set(known.values())) > 1:
        raise CheckpointError(ckpt, "step mismatch: " + ", ".join(f"{k} {v}" for k, v in known.items()))
    if not known:
        if required:
            raise CheckpointError(ckpt, "no step recorded")
        return None
    return int(next(iter(known.values())))


def verify(ckpt: PathLike) -> dict:
    """The parsed state.json of training checkpoint ``ckpt`` after checking every file against
    manifest.json (size and sha256; state.json and config.json included) and that the folder name,
    state.json, config.json and the manifest agree on the step; CheckpointError naming the problem
    otherwise.

    Backward compatible read: a checkpoint written before manifest.json existed (sit <= 0.x: the
    hashes of model/ema/optimizer/config in state.json's ``files``) is verified that older way,
    state.json itself then being covered only by the step agreement check."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise FileNotFoundError(f"no checkpoint folder {str(ckpt)!r}")
    if (ckpt / MANIFEST).is_file():
        manifest = _read_json(ckpt, MANIFEST)
        _check_files(ckpt, manifest.get("files"), (*CKPT_FILES, STATE), MANIFEST)
        state = _read_json(ckpt, STATE)
        step_m = manifest.get("step")
    elif (ckpt / STATE).is_file():
        state = _read_json(ckpt, STATE)
        _check_files(ckpt, state.get("files"), CKPT_FILES, STATE)
        step_m = None
    else:
        raise CheckpointError(ckpt, "incomplete: no manifest.json or state.json")
    config = _read_json(ckpt, "config.json")
    if "step" not in state:
        raise CheckpointError(ckpt, "state.json lacks 'step'")
    _check_steps(ckpt, {"state.json": state["step"], "config.json": config.get("step"), "manifest.json": step_m})
    return state


def verify_listed(folder: PathLike, required: tuple[str, ...]) -> dict:
    """The manifest.json of a folder written whole by one command (`sit ema --out`) after checking
    every file it lists (size, sha256; ``required`` among them) and that its step agrees with
    config.json's; CheckpointError naming the problem otherwise."""
    folder = Path(folder)
    manifest = _read_json(folder, MANIFEST)
    _check_files(folder, manifest.get("files"), required, MANIFEST)
    _check_steps(folder, {"config.json": _read_json(folder, "config.json").get("step"), "manifest.json": manifest.get("step")})
    return manifest


def is_training_checkpoint(path: PathLike) -> bool:
    """A folder with state.json, or with a manifest.json that is not a sample set's (its "kind" is
    read first; a corrupt manifest counts, so `verify` names it)."""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / STATE).is_file():
        return True
    return (p / MANIFEST).is_file() and not {folders.SAMPLES, folders.EMA} & set(folders.marks(p))


def check(ckpt: PathLike) -> Path:
    """``ckpt`` after the checks its kind allows: training checkpoints (manifest.json or
    state.json) `verify`; a plain checkpoint folder (config.json + weights, e.g. an export) must
    have a config.json that parses and, if named step-NNNNNNN, the same step; files are checked
    when read."""
    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint at {str(ckpt)!r}")
    if is_training_checkpoint(ckpt):
        verify(ckpt)
    elif folders.EMA in folders.marks(ckpt):
        verify_listed(ckpt, ("config.json", "ema.safetensors"))
    elif ckpt.is_dir() and (ckpt / "config.json").is_file():
        _check_steps(ckpt, {"config.json": _read_json(ckpt, "config.json").get("step")}, required=False)
    return ckpt


def run_checkpoints(run_dir: Path) -> list[Path]:
    """Everything under RUN/checkpoints a reader could take (training checkpoint folders, exported
    folders, .pt / .safetensors files), oldest first (step in the name, then mtime)."""
    from sit.models.pt_file import step_from_name

    ck = run_dir / "checkpoints"
    cands = [p for p in ck.iterdir() if (p.is_dir() and (is_training_checkpoint(p) or (p / "config.json").is_file()))
             or (p.is_file() and p.suffix in (".pt", ".safetensors"))]

    def key(p: Path):
        step = step_from_name(p.name[5:] if _STEP_DIR.fullmatch(p.name) else p.name)
        return (step if step is not None else -1, p.stat().st_mtime)

    return sorted(cands, key=key)


def _newest_valid(cands: list[Path], where: Path, log: Log, what: str, verifier=check) -> tuple[Path, Any]:
    refused: list[CheckpointError] = []
    for ck in reversed(cands):
        try:
            got = verifier(ck)
        except CheckpointError as e:
            refused.append(e)
            continue
        if refused:
            log("sit: " + "; ".join(f"refusing {Path(e.ckpt).name} ({e.reason})" for e in refused) + f"; using {ck.name}")
        return ck, got
    if not cands:
        raise FileNotFoundError(f"no checkpoint {what} under {str(where / 'checkpoints')!r}")
    raise CheckpointError(where, "no usable checkpoint: " + "; ".join(f"{Path(e.ckpt).name}: {e.reason}" for e in refused))


def resolve(path: PathLike, *, log: Log | None = None, field: str = "checkpoint") -> Path:
    """The concrete checkpoint ``path`` stands for: a run folder means its newest checkpoint that
    verifies (refused ones are named through ``log``, default stderr: "refusing step-0000200
    (model.safetensors is corrupt: sha256 mismatch); using step-0000100"); a checkpoint folder must
    verify; a file is itself. Raises FileNotFoundError / CheckpointError with one line; ``field``
    (the argument the path came in, e.g. ``guide_ckpt``) is the one its refusals name."""
    path = Path(path)
    log = log or _default_log
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    if diffusers_kind(path):  # an export / diffusers DiT: checked when read
        return path
    folders.require_input(path, folders.READABLE, field)
    if path.is_file() and path.name in CKPT_FILES + (STATE, MANIFEST) and {folders.CHECKPOINT, folders.EMA} & set(folders.marks(path.parent)):
        raise field_error(ValueError, f"{str(path)!r} is one file of the checkpoint folder {str(path.parent)!r}: pass "
                          f"the folder ({{.{'ckpt' if field == 'checkpoint' else field}}} {path.parent}) so that it is verified and its config read")
    if path.is_dir() and not is_training_checkpoint(path) and not (path / "config.json").is_file():
        if (path / "checkpoints").is_dir():
            return _newest_valid(run_checkpoints(path), path, log, "to read")[0]
        raise FileNotFoundError(
            f"{str(path)!r} is neither a checkpoint directory (config.json + ema/model.safetensors) nor a run directory (checkpoints/)"
        )
    return check(path)


def run_dir_of(ckpt: PathLike) -> Path:
    ckpt = Path(ckpt)
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def read_training_state(ckpt: PathLike) -> tuple[dict, RunMeta, dict, dict, dict]:
    """(state, RunMeta, model_sd, ema_sd, optimizer_sd) of a verified training checkpoint."""
    import torch
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    state = verify(ckpt)
    try:
        meta = RunMeta.from_dict(json.loads((ckpt / "config.json").read_text()), source=ckpt)
        model_sd = load_file(str(ckpt / "model.safetensors"))
        ema_sd = load_file(str(ckpt / "ema.safetensors"))
        opt_sd = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  any parse failure means a bad checkpoint
        raise CheckpointError(ckpt, f"cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    return state, meta, model_sd, ema_sd, opt_sd


def read_extra_state(ckpt: PathLike, name: str, what: str) -> dict:
    """The state dict in extra file ``name`` (`OBJECTIVE_FILE`, `PHEMA_FILE`) of a verified
    training checkpoint; CheckpointError naming ``what`` needs it when the manifest lists none."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    verify(ckpt)
    listed = _read_json(ckpt, MANIFEST).get("files", {}) if (ckpt / MANIFEST).is_file() else {}
    if name not in listed:
        raise CheckpointError(ckpt, f"{what}, but the manifest lists no {name}")
    try:
        return load_file(str(ckpt / name))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(ckpt, f"{name} cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e


def read_objective_state(ckpt: PathLike) -> dict:
    """The state dict of the objective's own modules (`OBJECTIVE_FILE`) of a training checkpoint."""
    return read_extra_state(ckpt, OBJECTIVE_FILE, "the run's objective owns modules (e.g. REPA's projector)")


def find_resumable(path: PathLike, log: Log | None = None) -> tuple[Path, tuple]:
    """(checkpoint, read_training_state(checkpoint)) of the newest training checkpoint of run folder
    ``path`` that verifies (or of ``path`` itself if it is a checkpoint); refused ones are named
    through ``log``. FileNotFoundError when there is none, CheckpointError when none verifies."""
    path = Path(path)
    log = log or _default_log
    if is_training_checkpoint(path):
        return path, read_training_state(path)
    if not path.exists():
        raise FileNotFoundError(f"no run folder {str(path)!r} to resume")
    return _newest_valid(list_checkpoints(path), path, log, "to resume", read_training_state)


def load(
    path: PathLike,
    *,
    weights: str = "ema",
    kind: str | None = None,
    num_heads: int | None = None,
    config: ModelConfig | None = None,
    log: Log | None = None,
):
    """(net (SiT, eval mode, float32, CPU), RunMeta) of the checkpoint ``path`` stands for
    (`resolve`, which verifies), with ``weights`` "ema" or "model" where both exist. ``kind`` /
    ``num_heads`` / ``config`` override what official files cannot state (see
    `sit.models.checkpoint.load_model`)."""
    from sit.models.checkpoint import load_model

    log = log or _default_log
    for attempt in range(3):
        ck = resolve(path, log=log)
        if dkind := diffusers_kind(ck):
            net, meta = load_diffusers_folder(ck, dkind, weights)
            return net, RunMeta.from_dict(meta, source=ck)
        try:
            net, meta = load_model(ck, config=config, prefer=weights, kind=kind, num_heads=num_heads)
            return net, RunMeta.from_dict(recorded_meta(meta, kind, ck), source=ck)
        except (OSError, ValueError, CheckpointError):
            # a training run writing this run folder prunes its old checkpoints: say so and take the
            # newest that verifies again, rather than failing on a half-removed folder
            if ck.exists() or ck == Path(path) or attempt == 2:
                raise
            log(f"sit: checkpoint {str(ck)!r} was removed while it was read (a training run pruning its old "
                f"checkpoints?); taking the newest checkpoint of {str(path)!r} that verifies again")
    raise AssertionError("unreachable")


def _identity_files(ckpt: Path) -> list[Path]:
    if dkind := diffusers_kind(ckpt):
        return identity_files(ckpt, dkind)
    return sorted(p for p in ckpt.iterdir() if p.is_file() and (
        p.name == "config.json" or (p.suffix in WEIGHT_SUFFIXES and p.name not in ("optimizer.pt", OBJECTIVE_FILE, PHEMA_FILE))))


def identity(ckpt: PathLike) -> str:
    """sha256 naming a checkpoint by its weights and config only: for a folder, over (name, sha256)
    of its weight files (model/ema .safetensors, .pt; not optimizer.pt) and config.json, so files
    added beside it later (``lt_table.json`` from `sit lt`) do not change it; for a file, its sha256."""
    import hashlib

    ck = resolve(ckpt)
    if ck.is_file():
        return _sha256(ck)
    h = hashlib.sha256()
    for p in _identity_files(ck):
        h.update(p.name.encode())
        h.update(_sha256(p).encode())
    return h.hexdigest()
