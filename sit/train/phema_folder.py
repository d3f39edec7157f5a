"""The folder `sit ema --out` writes: a post-hoc EMA folder (`sit.folders.EMA`), a kind of its own.

It holds config.json (the run's config, step = the reconstruction's), ema.safetensors (the
reconstruction, `sit.train.phema.reconstruct`), phema.json (coefficients, fit error) and
manifest.json, written last, with ``"kind": "posthoc-ema"``, the step, the request (the run's
`run_tag`, sigma_rel, step, the snapshots' sha256) and the size and sha256 of every file; every
reader verifies it (`sit.checkpoints.check`). The folder is written whole under a hidden name beside
OUT and renamed into place, so a reader never sees half of it.

Refused before anything is written: OUT inside a checkpoint or post-hoc EMA folder, OUT a run,
checkpoint or sample folder, a folder holding other files (an export, anything else), and an
earlier post-hoc EMA folder of another request unless ``overwrite``; the same request is written
again (the result is the same).

Must not import: sit.generate, sit.commands.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sit import folders
from sit.config import field_error
from sit.io import fsync_dir, fsync_file, remove_tree, set_file_mode, sha256_file
from sit.train.phema import MAX_FIT_ERROR, combine, plan, run_tag

MANIFEST = "manifest.json"
FILES = ("config.json", "ema.safetensors", "phema.json")


def request_of(info: dict, run_config: dict) -> dict:
    """What an output answers: the run, the length, the step and the exact snapshots combined."""
    return {"run": run_tag(run_config.get("train") or {}, run_config.get("model") or {}),
            "sigma_rel": info["sigma_rel"], "step": info["step"],
            "snapshots": [c["sha256"] for c in info["coefficients"]]}


def check_output(out: Path, request: dict, overwrite: bool) -> bool:
    """True when ``out`` holds an earlier output to replace; refusals (module docstring) in one line."""
    found = folders.marks(out)
    if set(found) == {folders.EMA}:
        try:
            old = json.loads((out / MANIFEST).read_text()).get("request")
        except (OSError, ValueError, AttributeError):
            old = None
        if old != request and not overwrite:
            what = (f"sigma_rel {old.get('sigma_rel')} at step {old.get('step')}" if isinstance(old, dict)
                    else "an unreadable request")
            raise field_error(FileExistsError,
                f"{{.out}} {str(out)!r} holds the post-hoc EMA of another request ({what}; this one: sigma_rel "
                f"{request['sigma_rel']:g} at step {request['step']}"
                f"{'' if not isinstance(old, dict) or old.get('run') == request['run'] else ', another run'}); "
                f"choose a new folder, or pass {{.overwrite}} to replace it")
        return True
    folders.require_output(out, folders.EMA, "out")
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir())
        if other:
            raise field_error(FileExistsError,
                f"{{.out}} {str(out)!r} holds other files ({', '.join(other[:4])}{', ...' if len(other) > 4 else ''}); "
                "sit ema writes a new or empty folder: choose another")
    return False


def export_reconstruction(run_dir, sigma_rel: float, out, step: int | None = None, overwrite: bool = False,
                          max_error: float = MAX_FIT_ERROR) -> tuple[Path, dict]:
    """(OUT, info): the reconstruction of ``sigma_rel`` at ``step`` from run ``run_dir``'s
    snapshots written as a post-hoc EMA folder (module docstring). The run's newest checkpoint is
    verified and gives the config; every refusal comes before the first byte is written."""
    from safetensors.torch import save_file

    from sit.checkpoints import resolve
    from sit.train.phema import read_index

    read_index(Path(run_dir) / "phema")  # a folder without snapshots: say how to make them
    if folders.kind_of(run_dir) != folders.RUN:
        folders.require_input(run_dir, (folders.RUN,), "ckpt")
    config = json.loads((resolve(run_dir) / "config.json").read_text())
    info = plan(run_dir, sigma_rel, step, max_error, run=config)
    out = Path(out)
    request = request_of(info, config)
    replace = check_output(out, request, overwrite)
    sd = combine(Path(run_dir) / "phema", info["coefficients"])

    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    remove_tree(tmp)
    tmp.mkdir(parents=True)
    try:
        save_file(sd, str(tmp / "ema.safetensors"))
        (tmp / "phema.json").write_text(json.dumps(dict(info, run=str(run_dir)), indent=1) + "\n")
        (tmp / "config.json").write_text(json.dumps(dict(config, step=info["step"]), indent=2, sort_keys=True) + "\n")
        files = {}
        for name in FILES:
            set_file_mode(tmp / name)
            fsync_file(tmp / name)
            files[name] = {"size": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
        manifest = {"format": 1, "kind": folders.EMA_KIND, "step": info["step"], "request": request, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")  # last
        fsync_file(tmp / MANIFEST)
        set_file_mode(tmp / MANIFEST)
        fsync_dir(tmp)
    except BaseException:
        remove_tree(tmp)
        raise
    trash = out.parent / f".old-{out.name}-{os.getpid()}"
    if replace:
        os.replace(out, trash)
    elif out.is_dir():
        out.rmdir()  # empty (check_output)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    remove_tree(trash)
    return out, info
