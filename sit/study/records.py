"""The records of a study folder a reader must trust: the finished (cell, seed) results (each
checked before the report or the ETAs read it) and, for a latent study, the identity of its latent
folder (``latents.json``: the latent space and the index's sha256, so a re-extracted folder at the
same path is refused instead of mixing two latent spaces in one table); and the lock a process
holds while it runs a (cell, seed) (``locks/CELL-sSEED/.lock``). The study's own record,
``study_config.json``, is `sit.study.config`'s (`read_identity`, re-exported here).

Must not import: ``sit.study.run``, ``sit.study.workers``, ``sit.commands``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Callable

from sit.config import ConfigError
from sit.study.config import Study, read_identity  # noqa: F401  (read_identity: re-exported; it moved there)

LATENTS_NAME = "latents.json"


def latents_identity(study: Study) -> dict | None:
    """What names a latent study's latent folder beyond its path: the latent space the cells train
    in (scale, shift, per-channel normalisation, the study's overrides applied) and the sha256 of
    the folder's index (the VAE's hash, the files, the shards' layout). None for other studies."""
    if study.base.latents is None:
        return None
    from sit.data.latents import index_space, read_index
    from sit.io import sha256_bytes

    index = read_index(study.base.latents)
    space = index_space(index, study.base.vae_scale, study.base.vae_shift)
    return {"folder": str(study.base.latents), "space": space.record(),
            "index_sha256": sha256_bytes(json.dumps(index, sort_keys=True).encode())}


def check_latents(study: Study, log: Callable[[str], None] = print) -> None:
    """Refuse, in one line, a latent study continued on a latent folder of another identity
    (`latents_identity`: re-extracted with another scale, say), so one table never mixes cells of
    two latent spaces; the first run records it in ``latents.json``."""
    from sit.io import differing_fields, read_json, write_json

    want = latents_identity(study)
    if want is None:
        return
    want = json.loads(json.dumps(want))
    f = study.out / LATENTS_NAME
    if not f.is_file():
        if load_results(study.out):
            log(f"sit study: recording the identity of the latent folder {want['folder']!r} in {str(f)!r} (this "
                "study was made before sit recorded it; its finished cells are taken to be of this latent space)")
        write_json(f, want)
        return
    have = read_json(f, "study latent-folder record")
    have = have if isinstance(have, dict) else {}
    diff = differing_fields(have.get("space") if isinstance(have.get("space"), dict) else {}, want["space"], "space.",
                            values=True)
    if have.get("index_sha256") != want["index_sha256"]:
        diff.append(f"index sha256 {str(have.get('index_sha256'))[:12]}... -> {want['index_sha256'][:12]}...")
    if diff:
        raise ConfigError("", "latents", f"{want['folder']!r} is not the latent folder this study's cells trained on "
                          f"({'; '.join(diff[:4])}; recorded in {str(f)!r}): re-extracted or another folder; give the "
                          "study its own latent folder again, or start a new {.out}")


def load_results(out: Path) -> list[dict]:
    """Every finished (cell, seed) result of a study folder, each checked (`check_result`): a file
    that is not a result is refused in one line naming it, never skipped (its unit would count as
    done) and never a traceback in the report."""
    res = []
    for f in sorted((Path(out) / "results").glob("*.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"study result {str(f)!r} is unreadable ({e}); remove it to run that (cell, seed) "
                             "again") from None
        check_result(rec, f)
        res.append(rec)
    return res


def check_result(rec, f: Path) -> None:
    """The fields of a result that the report and the ETAs read, with their types (one line naming
    the file and the field otherwise)."""
    from sit.study.cells import CELL_BY_NAME

    def bad(what: str):
        return ValueError(f"study result {str(f)!r} is malformed: {what}; remove it to run that (cell, seed) again")

    if not isinstance(rec, dict):
        raise bad(f"not an object (got {type(rec).__name__})")
    if rec.get("cell") not in CELL_BY_NAME:
        raise bad(f"unknown cell {rec.get('cell')!r}")
    if f.name != f"{rec['cell']}-s{rec.get('seed')}.json" or isinstance(rec.get("seed"), bool):
        raise bad(f"its cell / seed ({rec['cell']!r}, {rec.get('seed')!r}) are not those of its name")
    evals = rec.get("evals")
    if not isinstance(evals, dict) or not all(isinstance(v, dict) and v.get("kind") in ("ode", "sde", "ddpm")
                                              for v in evals.values()):
        raise bad("'evals' is not a map of evaluations with a kind ode / sde / ddpm")
    for k, v in evals.items():
        for name in ("fd", "accuracy"):
            x = v.get(name)
            if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float))):
                raise bad(f"evals.{k}.{name} is not a number (got {x!r:.40})")
    total = rec.get("wall_s", {}).get("total") if isinstance(rec.get("wall_s"), dict) else None
    if isinstance(total, bool) or not isinstance(total, (int, float)):
        raise bad("'wall_s.total' is not a number")
    pl = rec.get("path_length", [])
    if not isinstance(pl, list) or not all(isinstance(p, dict) and isinstance(p.get("step"), int) for p in pl):
        raise bad("'path_length' is not a list of {step, C}")
    curve = rec.get("nfe_curve", {})
    if not isinstance(curve, dict) or not all(isinstance(c, dict) for c in curve.values()):
        raise bad("'nfe_curve' is not a map of curves")


class UnitRunningError(RuntimeError):
    """Another live process runs this (cell, seed) of the study."""


@contextlib.contextmanager
def unit_lock(study: Study, cell, seed: int, log: Callable[[str], None]):
    """Hold the lock of (cell, seed) (`Study.unit_lock_dir`, outside the run folder, which is
    removed and recreated under it); a live holder, or a live `sit train` holding the unit's run
    folder (a job of an older sit), is `UnitRunningError` in one line."""
    from sit.io import FolderLock, FolderLockedError

    def running(e: Exception) -> UnitRunningError:
        return UnitRunningError(f"{cell.name}:{seed} of the study {str(study.out)!r} is running already: {e}")

    lock = FolderLock(study.unit_lock_dir(cell, seed), f"study unit {cell.name}:{seed}", log=log)
    try:
        lock.acquire()
    except FolderLockedError as e:
        raise running(e) from None
    try:
        run_dir = study.run_dir(cell, seed)
        if run_dir.exists():
            try:
                with FolderLock(run_dir, "run folder", log=log):
                    pass
            except FolderLockedError as e:
                raise running(e) from None
        yield lock
    finally:
        lock.release()
