"""The part files of a sample set: one ``parts/part-SSSSSSSS-EEEEEEEE.npz`` per batch of sample
indices [S, E), written atomically by `sit.generate.engine`; listing them (`scan_parts`), verifying
them (zip CRCs, shapes, the set's identity: `verify_parts`), the gaps left to generate
(`missing_chunks`) and the merge into the ADM-style npz (`merge_parts`)."""

from __future__ import annotations

import contextlib
import re
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from sit import io
from sit.config import field_error

PART_RE = re.compile(r"^part-(\d{8})-(\d{8})\.npz$")


def part_name(start: int, end: int) -> str:
    return f"part-{start:08d}-{end:08d}.npz"


def _part_files(parts_dir: Path) -> list[tuple[int, int, Path]]:
    if not parts_dir.is_dir():
        return []
    out = []
    for p in parts_dir.iterdir():
        m = PART_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), p))
    return sorted(out)


def scan_parts(parts_dir: Path, num_samples: int) -> list[tuple[int, int]]:
    """Ranges [start, end) covered by part files with a readable zip directory; raises on
    overlapping parts or parts beyond ``num_samples``. (`verify_parts` checks their contents.)"""
    ranges = []
    for start, end, p in _part_files(parts_dir):
        try:
            with zipfile.ZipFile(p) as z:
                if "images.npy" not in z.namelist():
                    continue
        except (zipfile.BadZipFile, OSError):
            continue  # unreadable: treated as missing and regenerated
        if not 0 <= start < end <= num_samples:
            raise field_error(ValueError,
                f"part file {p} covers samples [{start}, {end}) outside [0, {num_samples}); "
                "{SampleSpec.num_samples} differs from the interrupted run: use a new {.out}"
            )
        ranges.append((start, end))
    for (s0, e0), (s1, e1) in zip(ranges, ranges[1:]):
        if s1 < e0:
            raise ValueError(f"overlapping part files [{s0}, {e0}) and [{s1}, {e1}) in {parts_dir}")
    return ranges


def _part_problem(p: Path, start: int, end: int, spec_sha256: str) -> tuple[str, str] | None:
    """(kind, text) of what is wrong with a part file ("broken" or "foreign"), or None if it is sound."""
    try:
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()  # reads every member and checks its CRC
        if bad is not None:
            return "broken", f"member {bad} fails its CRC check"
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        return "broken", f"unreadable ({type(e).__name__}: {e})"
    h = str(arrays["spec_sha256"]) if "spec_sha256" in arrays else None
    if h != spec_sha256:
        return "foreign", f"made with settings {h[:12] if h else 'unrecorded'}"
    im, lab = arrays.get("images"), arrays.get("labels")
    if im is None or lab is None or im.shape[0] != end - start or lab.shape != (end - start,):
        return "broken", "holds the wrong number of images or labels"
    return None


def verify_parts(parts_dir: Path, spec_sha256: str, log: Callable[[str], None]) -> None:
    """Rank 0, before the work: delete broken parts (bad CRC, truncated, wrong shapes) with a
    message, so they are regenerated; refuse parts made under another identity (``spec_sha256``)."""
    for start, end, p in _part_files(parts_dir):
        problem = _part_problem(p, start, end, spec_sha256)
        if problem is None:
            continue
        kind, text = problem
        if kind == "foreign":
            raise field_error(ValueError,
                f"{parts_dir} holds part files made with other settings ({p.name}: {text}; this run is "
                f"{spec_sha256[:12]}); they are not adopted: use a new {{.out}} or delete {parts_dir}"
            )
        log(f"sit sample: part {p} is broken ({text}); regenerating samples [{start}, {end})")
        p.unlink(missing_ok=True)


def missing_chunks(covered: list[tuple[int, int]], num_samples: int, batch_size: int) -> list[tuple[int, int]]:
    """The gaps of ``covered`` in [0, num_samples), cut into chunks of at most ``batch_size``."""
    chunks, pos = [], 0
    for s, e in sorted(covered) + [(num_samples, num_samples)]:
        while pos < s:
            end = min(s, pos + batch_size)
            chunks.append((pos, end))
            pos = end
        pos = max(pos, e)
    return chunks


def merge_parts(out_dir: Path, num_samples: int, npz_path: Path, *, save_latents=None, grid_png=False,
                keep_parts=False, grid_nrow: int | None = None) -> tuple[list, tuple]:
    """Concatenate the part files in index order (checking there is no gap or overlap) into the
    ADM-style npz; returns (the distinct NFE-per-sample values of the parts, image shape H, W, 3)."""
    parts_dir = out_dir / "parts"
    covered = scan_parts(parts_dir, num_samples)
    pos = 0
    for s, e in covered + [(num_samples, num_samples)]:
        if s != pos:
            raise RuntimeError(f"samples [{pos}, {s}) are missing from {parts_dir}; run the same command again")
        pos = e
    arr = None  # filled in place: one copy of the set in memory (50K x 256^2 x 3 = 9.8 GB)
    labels, latents, nfes = [], [], []
    for s, e in covered:
        with np.load(parts_dir / part_name(s, e)) as z:
            im = z["images"]
            if im.shape[0] != e - s:
                raise RuntimeError(f"part {part_name(s, e)} holds {im.shape[0]} images, expected {e - s}")
            if arr is None:
                arr = np.empty((num_samples, *im.shape[1:]), dtype=np.uint8)
            arr[s:e] = im
            labels.append(z["labels"])
            nfes.append(float(z["nfe"]))
            if save_latents:
                latents.append(z["latents"])
    io.save_npz_atomic(npz_path, arr_0=arr, arr_1=np.concatenate(labels))
    if save_latents:
        _save_latents(out_dir, save_latents, np.concatenate(latents), np.concatenate(labels))
    if grid_png:
        n = min(len(arr), 256)
        io.save_png(io.make_grid(arr[:n], nrow=grid_nrow), out_dir / "grid.png", upscale=max(1, 64 // arr.shape[1]))
    if not keep_parts:
        for s, e in covered:
            (parts_dir / part_name(s, e)).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            parts_dir.rmdir()
    distinct = sorted(set(v if not float(v).is_integer() else int(v) for v in nfes))
    return distinct, tuple(arr.shape[1:])


def _save_latents(out_dir: Path, fmt: str, lat: np.ndarray, labels: np.ndarray) -> None:
    if fmt == "npy":
        with io.atomic_path(out_dir / "latents.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, lat)
    else:
        from safetensors.numpy import save_file

        with io.atomic_path(out_dir / "latents.safetensors") as tmp:
            save_file({"latents": lat, "labels": labels}, str(tmp))
