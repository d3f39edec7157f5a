"""Sample sets for looking and for evaluation: the library behind `sit sample`.

Two layers:

* **The generation engine** (`generate`) knows nothing about networks: it asks a *latent sampler*
  ``sampler_fn(x0, y, noise) -> (x, info)`` for a batch, decodes it (``decode_fn``, e.g. the SD VAE
  for latent models; nothing for pixel-space models), converts to uint8 and writes one part file
  per batch. It shards batches over `torchrun` ranks, resumes a killed run (parts are written
  atomically; a restart generates exactly the missing sample indices), merges the parts into the
  ADM evaluator's npz (``arr_0``: uint8 N x H x W x 3, grey repeated to 3 channels; ``arr_1``: the
  class labels, as guided-diffusion's sampler writes them) and writes a manifest beside it.
* **Model glue** (`build_latent_sampler`, `load_for_sampling`): turns a loaded checkpoint into a
  latent sampler: the prediction function in paper time (`sit.models.field.ModelField`),
  classifier-free guidance (`sit.guidance.GuidedModel`, one batched call per step), the velocity
  field (`sit.objectives.velocity_field`), and a continuous sampler (`sit.samplers.sample`) or
  DiT's discrete ancestral / DDIM sampler (`sit.discrete`).

**Per-sample seeds.** Sample i (0-based index in the set) draws everything random from its own
``torch.Generator('cpu').manual_seed(seed + i)``: first its initial noise x0 (C, H, W) in float32,
then (with random labels) its class label, then, for SDE or ancestral samplers, the noise of each
step in order. Noise is drawn on the CPU row by row (`RowNoise`) and then moved to the device, so a
set is the same whatever the batch size, the number of processes or the device's RNG (up to
floating-point differences of the network on different batch shapes; on CPU in float32 these are
zero in our tests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

import sit

# --------------------------------------------------------------------------------------------
# per-sample random streams


class RowNoise:
    """Per-row random streams: row j of every draw comes from the generator seeded with seeds[j].

    ``noise(x)`` (or ``noise.randn_like(x)``) returns a standard normal tensor shaped like x
    (B, ...), drawn in float32 on the CPU one row at a time, then cast to x's dtype and device.
    Pass it as the ``noise_fn`` of the SDE / ancestral samplers so that step noise, too, depends
    only on the sample's seed.
    """

    def __init__(self, seeds: Sequence[int]):
        self.seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, row_shape: Sequence[int], dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        rows = [torch.randn(tuple(row_shape), generator=g, dtype=torch.float32) for g in self.generators]
        out = torch.stack(rows) if rows else torch.empty((0, *row_shape))
        return out.to(device=device, dtype=dtype)

    def randn_like(self, x: Tensor) -> Tensor:
        if x.shape[0] != len(self):
            raise ValueError(f"RowNoise holds {len(self)} streams but the tensor has batch {x.shape[0]}")
        return self.randn(x.shape[1:], dtype=x.dtype, device=x.device)

    __call__ = randn_like

    def randint(self, high: int) -> Tensor:
        """One integer in [0, high) per row (int64, CPU)."""
        return torch.stack([torch.randint(high, (), generator=g) for g in self.generators]).long()


def parse_labels(spec: str | Sequence[int] | None, num_classes: int | None) -> str | tuple[int, ...]:
    """'random' (per-sample seeded), 'null' (the unconditional label num_classes), or a list of
    class indices ('207,360' or a sequence), cycled over the sample indices."""
    if spec is None:
        spec = "random"
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in ("random", "null"):
            if s == "null" and num_classes is None:
                raise ValueError("--labels null needs a class-conditional model (num_classes unknown)")
            return s
        try:
            spec = [int(v) for v in s.replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise ValueError(f"--labels must be 'random', 'null' or comma-separated class indices (got {spec!r})") from None
    labels = tuple(int(v) for v in spec)
    if not labels:
        raise ValueError("--labels is empty; give 'random', 'null' or class indices such as 207,360")
    if num_classes is not None:
        bad = [v for v in labels if not 0 <= v < num_classes]
        if bad:
            raise ValueError(f"--labels {bad} outside the model's classes [0, {num_classes - 1}]")
    return labels


def labels_for(indices: Sequence[int], spec: str | tuple[int, ...], num_classes: int | None, noise: RowNoise) -> Tensor:
    """Class labels of the samples ``indices`` (drawn from ``noise`` when spec is 'random', so
    call it right after drawing x0)."""
    if spec == "random":
        if num_classes is None:
            return torch.zeros(len(indices), dtype=torch.long)
        return noise.randint(num_classes)
    if spec == "null":
        return torch.full((len(indices),), int(num_classes), dtype=torch.long)
    return torch.tensor([spec[i % len(spec)] for i in indices], dtype=torch.long)


# --------------------------------------------------------------------------------------------
# images


def to_uint8(images: Tensor) -> np.ndarray:
    """Images in [-1, 1], (B, C, H, W) with C in {1, 3}, to uint8 (B, H, W, 3) as DiT/SiT's
    sample_ddp does: clamp(127.5 x + 128, 0, 255) truncated, i.e. (x + 1) * 127.5 rounded half up.
    Grey images (C = 1) are repeated to 3 channels (the ADM evaluator's layout)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (B, 1 or 3, H, W); got shape {tuple(images.shape)}")
    x = torch.clamp(127.5 * images.detach().float() + 128.0, 0, 255).to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 images (N, H, W, 3) into one (rows*(H+pad)+pad, ...) image, ``nrow`` per row."""
    n, h, w, c = images.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / nrow))
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[k]
    return grid


def save_png(array: np.ndarray, path: str | os.PathLike, upscale: int = 1) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
# manifest


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file; of a directory: sha256 over (name, sha256) of its weight/config files."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".pt", ".pth", ".json", ".bin"))
        for p in files:
            h.update(p.name.encode())
            h.update(file_sha256(p).encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def versions() -> dict[str, str]:
    import platform

    return {"sit": sit.__version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(o):
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (torch.dtype, torch.device, Path)):
        return str(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    return repr(o)


def _canon(obj: Any) -> Any:
    """JSON round trip, so tuples vs lists and dataclasses compare equal after reading back."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


# --------------------------------------------------------------------------------------------
# the generation engine

PART_RE = re.compile(r"^part-(\d{8})-(\d{8})\.npz$")
SEED_RULE = (
    "sample i draws x0 (then its random label, then per-step noise) from "
    "torch.Generator('cpu').manual_seed(seed + i), row by row"
)

LatentSampler = Callable[[Tensor, Tensor, RowNoise], "tuple[Tensor, dict]"]
Decoder = Callable[[Tensor], Tensor]


@dataclasses.dataclass(frozen=True)
class GenerateResult:
    npz: Path                 # the merged ADM-style npz (arr_0 images, arr_1 labels)
    manifest: Path
    num_generated: int        # samples generated by this process in this call (0 when complete)
    nfe: list                 # distinct NFE per sample seen in the parts
    images_per_s: float       # this process's rate (0 when nothing was generated)


def _part_name(start: int, end: int) -> str:
    return f"part-{start:08d}-{end:08d}.npz"


def scan_parts(parts_dir: Path, num_samples: int) -> list[tuple[int, int]]:
    """Ranges [start, end) covered by complete part files (readable zip directory); raises on
    overlapping parts or parts beyond ``num_samples``."""
    ranges = []
    if not parts_dir.is_dir():
        return ranges
    for p in parts_dir.iterdir():
        m = PART_RE.match(p.name)
        if not m:
            continue
        start, end = int(m.group(1)), int(m.group(2))
        try:
            with zipfile.ZipFile(p) as z:
                if "images.npy" not in z.namelist():
                    continue
        except (zipfile.BadZipFile, OSError):
            continue  # unreadable: treated as missing and regenerated
        if not 0 <= start < end <= num_samples:
            raise ValueError(
                f"part file {p} covers samples [{start}, {end}) outside [0, {num_samples}); "
                "--num-samples differs from the interrupted run: use a new --out"
            )
        ranges.append((start, end))
    ranges.sort()
    for (s0, e0), (s1, e1) in zip(ranges, ranges[1:]):
        if s1 < e0:
            raise ValueError(f"overlapping part files [{s0}, {e0}) and [{s1}, {e1}) in {parts_dir}")
    return ranges


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


def generate(
    out_dir: str | os.PathLike,
    *,
    num_samples: int,
    batch_size: int,
    seed: int,
    latent_shape: Sequence[int],
    sampler_fn: LatentSampler,
    decode_fn: Decoder | None = None,
    labels: str | tuple[int, ...] = "random",
    num_classes: int | None = None,
    settings: dict | None = None,
    info: dict | None = None,
    device: torch.device | str = "cpu",
    png_folder: bool = False,
    save_latents: str | None = None,
    grid_png: bool = False,
    keep_parts: bool = False,
    progress: bool = True,
    npz_name: str = "samples.npz",
    max_batches: int | None = None,
    initial_noise: Tensor | None = None,
) -> GenerateResult:
    """Generate samples 0..num_samples-1 into ``out_dir``, resumably and sharded over ranks.

    Layout: ``out_dir/samples.npz`` (arr_0 uint8 (N, H, W, 3), arr_1 int64 labels),
    ``manifest.json`` beside it, ``parts/`` while running (removed after the merge unless
    ``keep_parts``), ``images/000000.png ...`` when ``png_folder``, ``latents.npy`` or
    ``latents.safetensors`` when ``save_latents`` is 'npy' / 'safetensors', ``grid.png`` when
    ``grid_png``.

    ``settings`` (everything that determines the samples) is stored in the manifest; resuming with
    different settings is refused. ``info`` holds descriptive fields (versions, hash, ...).
    ``initial_noise`` (N, *latent_shape), when given, replaces the seeded x0 of sample i by row i
    (labels and step noise still come from seed + i).
    ``max_batches`` stops this process after that many batches (without merging), to simulate an
    interrupted run in tests.
    """
    from sit import dist

    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1 (got {num_samples})")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 (got {batch_size})")
    if save_latents not in (None, "npy", "safetensors"):
        raise ValueError(f"unknown latent format {save_latents!r}; expected one of ['npy', 'safetensors']")
    out_dir = Path(out_dir)
    parts_dir = out_dir / "parts"
    manifest_path = out_dir / "manifest.json"
    npz_path = out_dir / npz_name
    settings = _canon(dict(settings or {}))
    settings.update(_canon({
        "num_samples": num_samples, "seed": seed, "labels": labels if isinstance(labels, str) else list(labels),
        "latent_shape": list(latent_shape), "save_latents": save_latents,
    }))
    rank, world = dist.rank(), dist.world_size()
    if initial_noise is not None:
        if initial_noise.shape[0] < num_samples or tuple(initial_noise.shape[1:]) != tuple(latent_shape):
            raise ValueError(
                f"--noise holds shape {tuple(initial_noise.shape)}; expected ({num_samples}, {', '.join(map(str, latent_shape))})"
            )
        settings["initial_noise_sha256"] = hashlib.sha256(initial_noise.float().numpy().tobytes()).hexdigest()

    # 1. settings check / manifest (rank 0 writes; everyone reads the same decision)
    old = None
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            old = None
    if old is not None and old.get("settings") != settings:
        diff = sorted(k for k in set(old.get("settings", {})) | set(settings)
                      if old.get("settings", {}).get(k) != settings.get(k))
        raise ValueError(
            f"{out_dir} holds samples made with different settings (differ in {diff}); "
            "use a new --out or delete that folder"
        )
    if old is not None and old.get("complete") and npz_path.exists():
        dist.print0(f"{npz_path} is complete ({num_samples} samples); nothing to do")
        return GenerateResult(npz_path, manifest_path, 0, old.get("nfe_per_sample", []), 0.0)
    manifest = {
        "settings": settings, "seed_rule": SEED_RULE, "first_seed": seed, "last_seed": seed + num_samples - 1,
        "complete": False, **_canon(info or {}), "versions": versions(),
    }
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        parts_dir.mkdir(exist_ok=True)
        for p in parts_dir.glob(".part-*"):  # leftovers of a killed writer
            p.unlink(missing_ok=True)
        if old is None:
            write_json(manifest_path, manifest)
    dist.barrier()

    # 2. the work: every missing index, in chunks, round-robin over ranks
    covered = scan_parts(parts_dir, num_samples)
    chunks = missing_chunks(covered, num_samples, batch_size)
    dist.barrier()  # all ranks have listed the parts before anyone writes new ones
    mine = chunks[rank::world]
    if max_batches is not None:
        mine = mine[:max_batches]
    n_mine = sum(e - s for s, e in mine)
    done_before = sum(e - s for s, e in covered)
    if done_before:
        dist.print0(f"resuming: {done_before}/{num_samples} samples already in {parts_dir}")

    bar = None
    if progress and rank == 0 and n_mine:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_mine * world, initial=0, unit="img", desc="sampling", dynamic_ncols=True)
    t0 = time.perf_counter()
    generated = 0
    for start, end in mine:
        idx = list(range(start, end))
        noise = RowNoise([seed + i for i in idx])
        x0 = noise.randn(latent_shape, device=device)
        if initial_noise is not None:
            x0 = initial_noise[start:end].to(device=device, dtype=torch.float32)
        y = labels_for(idx, labels, num_classes, noise).to(device)
        with torch.no_grad():
            x, sinfo = sampler_fn(x0, y, noise)
            imgs = decode_fn(x) if decode_fn is not None else x
        u8 = to_uint8(imgs.float())
        arrays = {"images": u8, "labels": y.cpu().numpy().astype(np.int64),
                  "nfe": np.asarray(float(sinfo.get("nfe", -1)))}
        if save_latents:
            arrays["latents"] = x.detach().float().cpu().numpy()
        if png_folder:
            for k, i in enumerate(idx):
                save_png(u8[k], out_dir / "images" / f"{i:06d}.png")
        tmp = parts_dir / f".{_part_name(start, end)}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, parts_dir / _part_name(start, end))
        generated += end - start
        if bar is not None:
            bar.update((end - start) * world)
            bar.set_postfix(img_s=f"{generated * world / max(time.perf_counter() - t0, 1e-9):.2f}", nfe=sinfo.get("nfe"))
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    rate = generated / elapsed if generated else 0.0
    if max_batches is not None:
        return GenerateResult(npz_path, manifest_path, generated, [], rate)
    dist.barrier()

    # 3. merge on rank 0
    nfes: list = []
    if rank == 0:
        nrow = len(labels) if isinstance(labels, tuple) and 2 <= len(labels) <= 32 else None  # a class per column
        nfes, image_shape = merge_parts(out_dir, num_samples, npz_path, save_latents=save_latents,
                                        grid_png=grid_png, keep_parts=keep_parts, grid_nrow=nrow)
        manifest.update({
            "complete": True, "nfe_per_sample": nfes, "npz": npz_path.name, "image_shape": list(image_shape),
            "last_run": {"world_size": world, "batch_size": batch_size, "generated": generated * world,
                         "wall_s": round(elapsed, 3), "images_per_s": round(rate * world, 4)},
        })
        write_json(manifest_path, manifest)
    dist.barrier()
    return GenerateResult(npz_path, manifest_path, generated, nfes, rate)


def merge_parts(out_dir: Path, num_samples: int, npz_path: Path, *, save_latents=None, grid_png=False,
                keep_parts=False, grid_nrow: int | None = None) -> tuple[list, tuple]:
    """Concatenate the part files in index order (checking there is no gap or overlap) into the
    ADM-style npz; returns (the distinct NFE-per-sample values of the parts, image shape H, W, 3)."""
    parts_dir = out_dir / "parts"
    covered = scan_parts(parts_dir, num_samples)
    pos = 0
    for s, e in covered:
        if s != pos:
            raise RuntimeError(f"samples [{pos}, {s}) are missing from {parts_dir}; run the same command again")
        pos = e
    if pos != num_samples:
        raise RuntimeError(f"samples [{pos}, {num_samples}) are missing from {parts_dir}; run the same command again")
    arr = None  # filled in place: one copy of the set in memory (50K x 256^2 x 3 = 9.8 GB)
    labels, latents, nfes = [], [], []
    for s, e in covered:
        with np.load(parts_dir / _part_name(s, e)) as z:
            im = z["images"]
            if im.shape[0] != e - s:
                raise RuntimeError(f"part {_part_name(s, e)} holds {im.shape[0]} images, expected {e - s}")
            if arr is None:
                arr = np.empty((num_samples, *im.shape[1:]), dtype=np.uint8)
            arr[s:e] = im
            labels.append(z["labels"])
            nfes.append(float(z["nfe"]))
            if save_latents:
                latents.append(z["latents"])
    tmp = npz_path.with_name(f".{npz_path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, arr_0=arr, arr_1=np.concatenate(labels))
    os.replace(tmp, npz_path)
    if save_latents:
        lat = np.concatenate(latents)
        if save_latents == "npy":
            np.save(out_dir / "latents.npy", lat)
        else:
            from safetensors.numpy import save_file

            save_file({"latents": lat, "labels": np.concatenate(labels)}, str(out_dir / "latents.safetensors"))
    if grid_png:
        n = min(len(arr), 256)
        save_png(make_grid(arr[:n], nrow=grid_nrow), out_dir / "grid.png", upscale=max(1, 64 // arr.shape[1]))
    if not keep_parts:
        for s, e in covered:
            (parts_dir / _part_name(s, e)).unlink(missing_ok=True)
        try:
            parts_dir.rmdir()
        except OSError:
            pass
    distinct = sorted(set(v if not float(v).is_integer() else int(v) for v in nfes))
    return distinct, tuple(arr.shape[1:])


def load_noise(path: str | os.PathLike) -> Tensor:
    """Explicit initial noise from .npy or .safetensors (first tensor, or the one named 'noise'),
    shape (N, C, H, W) float."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--noise file {path} does not exist")
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        return torch.from_numpy(np.asarray(arr, dtype=np.float32))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        d = load_file(str(path))
        if not d:
            raise ValueError(f"--noise file {path} holds no tensor")
        return d.get("noise", next(iter(d.values()))).float()
    raise ValueError(f"unknown noise file type {path.suffix!r}; expected one of ['.npy', '.safetensors']")


# --------------------------------------------------------------------------------------------
# model glue: checkpoint -> latent sampler

DISCRETE_METHODS = ("ddpm", "ddim")
LT_TABLE_NAME = "lt_table.json"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The concrete checkpoint a path stands for (a run directory means its newest checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    if path.is_dir() and not (path / "config.json").is_file() and (path / "checkpoints").is_dir():
        from sit.models.checkpoint import _newest_checkpoint

        return _newest_checkpoint(path)
    return path


def loss_table_path(ckpt: str | os.PathLike) -> Path:
    """Where `sit lt` stores the L_t table of a checkpoint: ``DIR/lt_table.json`` for a checkpoint
    directory, ``NAME.lt.json`` beside a checkpoint file."""
    ck = resolve_checkpoint(ckpt)
    if ck.is_dir():
        return ck / LT_TABLE_NAME
    return ck.with_name(ck.stem + ".lt.json")


def find_loss_table(ckpt: str | os.PathLike, meta: dict | None = None):
    """The L_t table stored with a checkpoint (file from `sit lt`, else meta['loss_table']), or None."""
    from sit.diffusion_coef import LossTable

    p = loss_table_path(ckpt)
    if p.is_file():
        return LossTable.load(p)
    if meta and isinstance(meta.get("loss_table"), dict):
        d = dict(meta["loss_table"])
        d.pop("kind", None)
        return LossTable(**d)
    return None


def model_num_classes(net) -> int | None:
    n = getattr(net, "num_classes", None)
    return int(n) if n is not None else None


def parse_interval(spec: str | Sequence[float] | None) -> tuple[float, float] | None:
    """'0.1,0.9' -> (0.1, 0.9): guidance only for t in [lo, hi] (paper time)."""
    if spec is None or spec == "" or spec == "none":
        return None
    if isinstance(spec, str):
        try:
            lo, hi = (float(v) for v in spec.split(","))
        except ValueError:
            raise ValueError(f"--cfg-interval must be 'LO,HI' with 0 <= LO < HI <= 1 (got {spec!r})") from None
    else:
        lo, hi = (float(v) for v in spec)
    if not (0.0 <= lo < hi <= 1.0):
        raise ValueError(f"--cfg-interval must be 'LO,HI' with 0 <= LO < HI <= 1 (got {spec!r})")
    return (lo, hi)


def parse_channels(spec: str | int | None) -> int | None:
    """'all' (None: guide every channel, the default) or a count k (guide channels 0..k-1;
    the official SiT/DiT forward_with_cfg uses 3 of the 4 latent channels)."""
    if spec is None or str(spec).lower() == "all":
        return None
    try:
        k = int(spec)
    except ValueError:
        raise ValueError(f"--cfg-channels must be 'all' or a channel count such as 3 (got {spec!r})") from None
    if k < 1:
        raise ValueError(f"--cfg-channels must be 'all' or a count >= 1 (got {spec!r})")
    return k


class _CallCounter:
    """Counts calls of a prediction function (network evaluations per sample = calls, since a
    guided call evaluates the conditional and unconditional rows in one batch)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.fn(*a, **k)


PRECISIONS = ("fp32", "bf16", "bf16-weights")


def prepare_network(net, precision: str = "fp32", compile: bool = False, device=None):
    """A loaded network ready for sampling: on ``device``, eval mode, no gradients; with
    ``precision="bf16-weights"`` its weights (and so its activations) are cast to bfloat16 (the
    fastest eager path: SiT-S/2 forward at ~76 % of a CPU's bf16 matmul peak against ~67 % under
    autocast; larger rounding); ``compile`` then runs it through
    `sit.models.sit.compile_for_inference` (after the cast, since compiling freezes the weights)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    if device is not None:
        net = net.to(device)
    net = net.eval().requires_grad_(False)
    if precision == "bf16-weights":
        net = net.to(torch.bfloat16)
    if compile:
        from sit.models.sit import compile_for_inference

        net = compile_for_inference(net)
    return net


def build_latent_sampler(
    net,
    meta: dict,
    *,
    method: str,
    sample_options: dict,
    cfg_scale: float = 1.0,
    cfg_channels: int | None = None,
    cfg_interval: tuple[float, float] | None = None,
    precision: str = "fp32",
    table=None,
    progress: bool = False,
) -> tuple[LatentSampler, dict]:
    """A latent sampler ``(x0, y, noise) -> (x, info)`` for a loaded network.

    method: a continuous sampler of `sit.samplers` (sample_options are `SampleConfig` fields) or
    'ddpm' / 'ddim' (DiT's discrete sampler on the respaced grid of sample_options['num_steps']).
    Returns the sampler and a description (resolved sampler config) for the manifest.
    """
    from sit.guidance import GuidedModel
    from sit.models.field import ModelField

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    if not (isinstance(cfg_scale, (int, float)) and math.isfinite(cfg_scale)):
        raise ValueError(f"--cfg-scale must be a finite number (got {cfg_scale!r})")
    dtype = torch.bfloat16 if precision == "bf16" else None
    num_classes = model_num_classes(net)
    time_input = meta.get("time_input", "continuous")
    prediction = meta.get("prediction", "velocity")
    field_fn = ModelField(net, prediction, time_input, dtype=dtype)

    if method in DISCRETE_METHODS or time_input == "discrete":
        if method not in DISCRETE_METHODS:
            raise ValueError(
                f"this checkpoint is a discrete-time DDPM model (DiT); --method must be one of "
                f"{list(DISCRETE_METHODS)} (got {method!r})"
            )
        if time_input != "discrete":
            raise ValueError(f"--method {method} needs a discrete-time (DiT) checkpoint; this one is {time_input!r}")
        if cfg_interval is not None:
            raise ValueError("--cfg-interval is in continuous time t; it does not apply to --method ddpm/ddim")
        from sit import discrete

        steps = int(sample_options.get("num_steps") or 250)
        if steps < 1:
            raise ValueError(f"--num-steps must be >= 1 (got {steps})")
        learn_sigma = field_fn.out_channels == 2 * field_fn.in_channels
        diffusion = discrete.DiscreteDiffusion(discrete.DiscreteConfig(learn_sigma=learn_sigma)).respace(steps)
        raw = _CallCounter(field_fn.raw)
        # 'all' means all eps channels: the learned-variance channels keep the conditional value (as DiT)
        ch = field_fn.in_channels if cfg_channels is None else min(cfg_channels, field_fn.in_channels)
        guided = GuidedModel(raw, cfg_scale, num_classes, channels=ch) if cfg_scale != 1.0 else raw
        eta = float(sample_options.get("eta") or 0.0)

        def sampler_fn(x0: Tensor, y: Tensor, noise: RowNoise):
            raw.calls = 0
            fn = lambda x, k: guided(x, k, y)  # noqa: E731
            if method == "ddpm":
                x = discrete.sample_ddpm(fn, x0, diffusion, progress=progress, noise_fn=noise)
            else:
                x = discrete.sample_ddim(fn, x0, diffusion, eta=eta, progress=progress, noise_fn=noise)
            return x, {"nfe": raw.calls}

        desc = {"method": method, "num_steps": steps, "eta": eta if method == "ddim" else None,
                "timesteps": "DiT respacing", "per_seed_step_noise": True}
        return sampler_fn, desc

    from sit.objectives import velocity_field
    from sit.paths import get_path
    from sit.samplers import SampleConfig
    from sit.samplers import sample as run_sampler

    path = get_path(meta.get("path", "linear"))
    names = {f.name for f in dataclasses.fields(SampleConfig)}
    opts = {k: v for k, v in sample_options.items() if v is not None}
    if isinstance(opts.get("last_step"), str) and opts["last_step"].lower() == "none":
        opts["last_step"] = None  # explicit: no last step (the Euler-Maruyama grid runs to t_end)
    unknown = sorted(set(opts) - names)
    if unknown:
        raise ValueError(f"sampler option(s) {unknown} are not SampleConfig fields; expected some of {sorted(names)}")
    cfg = SampleConfig(method=method, **{k: v for k, v in opts.items() if k != "method"})
    counter = _CallCounter(field_fn)
    guided = (GuidedModel(counter, cfg_scale, num_classes, channels=cfg_channels, interval=cfg_interval)
              if cfg_scale != 1.0 else counter)
    stochastic = _is_stochastic(cfg)

    def sampler_fn(x0: Tensor, y: Tensor, noise: RowNoise):
        counter.calls = 0
        field = velocity_field(guided, path, prediction, y=y)
        # per-row step noise: sample i's SDE noise depends on seed i only, not on its batch
        extra = {"noise_fn": noise} if stochastic else {}
        x, info = run_sampler(field, x0, cfg, path, table=table, prediction=prediction, progress=progress, **extra)
        info = dict(info or {})
        info["network_calls"] = counter.calls
        info.setdefault("nfe", counter.calls)
        return x, info

    desc = {"config": dataclasses.asdict(cfg), "path": path.name, "prediction": prediction,
            "per_seed_step_noise": True}
    return sampler_fn, desc


def _is_stochastic(cfg) -> bool:
    m = str(getattr(cfg, "method", "")).lower()
    return m in ("euler_maruyama", "em", "sde_heun", "heun_sde", "sde_euler") or "sde" in m or "maruyama" in m


def default_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sample_command(
    *,
    ckpt: str | os.PathLike,
    out: str | os.PathLike,
    values: dict,
    preset: str | None = None,
    seed: int = 0,
    batch_size: int = 32,
    vae: str | None = None,
    precision: str = "fp32",
    device: str | None = None,
    weights: str = "ema",
    noise: str | None = None,
    lt_table: str | None = None,
    grid_png: bool = False,
    png_folder: bool = False,
    save_latents: str | None = None,
    keep_parts: bool = False,
    progress: bool = True,
    net_and_meta: tuple | None = None,
    compile: bool = False,
    tf32: bool = True,
) -> GenerateResult:
    """Everything `sit sample` does: load, build the sampler, generate, merge, manifest.
    ``values`` are the resolved sampler/guidance/label options (see `sit.commands.sample`).
    ``compile``: run the network through `sit.models.sit.compile_for_inference` (frozen weights).
    ``tf32``: TF32 matmuls for a float32 network on CUDA (`sit.dist.tf32`; the VAE decode too)."""
    from sit import dist

    dev = dist.init(default_device(device))
    if net_and_meta is None:
        from sit.models.checkpoint import load_model

        net, meta = load_model(ckpt, prefer=weights)
    else:
        net, meta = net_and_meta
    net = prepare_network(net, precision, compile, dev)
    num_classes = model_num_classes(net)
    labels = parse_labels(values.get("labels"), num_classes)
    num_samples = values.get("num_samples") or (len(labels) if isinstance(labels, tuple) else 16)
    values = dict(values, num_samples=int(num_samples))
    method = str(values.get("method", "heun"))

    table = None
    table_src = None
    if str(values.get("w") or "") == "kl_eta" and float(values.get("eta") or 0) > 0:
        from sit.diffusion_coef import LossTable

        if lt_table:
            table, table_src = LossTable.load(lt_table), str(lt_table)
        else:
            table = find_loss_table(ckpt, meta)
            table_src = str(loss_table_path(ckpt)) if table is not None else None
        if table is None:
            raise FileNotFoundError(
                f"--w kl_eta needs the model's L_t table: run `sit lt --ckpt {ckpt}` first "
                f"(stores {loss_table_path(ckpt)}) or pass --lt-table FILE"
            )

    sample_options = {k: values.get(k) for k in
                      ("num_steps", "atol", "rtol", "grid", "t_start", "t_end", "w", "w_scale", "eta", "last_step", "last_step_size")}
    cfg_scale = float(values.get("cfg_scale", 1.0))
    channels = parse_channels(values.get("cfg_channels"))
    interval = parse_interval(values.get("cfg_interval"))
    sampler_fn, sampler_desc = build_latent_sampler(
        net, meta, method=method, sample_options=sample_options, cfg_scale=cfg_scale, cfg_channels=channels,
        cfg_interval=interval, precision=precision, table=table,
    )

    C, H = int(net.in_channels), int(net.config.input_size)
    latent_shape = (C, H, H)
    decode_fn = None
    vae_desc = None
    if C not in (1, 3):
        if not vae:
            raise ValueError(
                f"this is a latent model ({C} channels): pass --vae PATH (a local SD VAE folder, e.g. sd-vae-ft-ema) to decode"
            )
        from sit.vae import VAE

        v = VAE.from_pretrained(vae, device=dev)
        decode_fn, vae_desc = v.decode, {"vae": str(vae), "scale_factor": v.scale_factor}
    init = load_noise(noise) if noise else None

    ck = resolve_checkpoint(ckpt)
    settings = {
        "checkpoint_sha256": file_sha256(ck), "interpolant": meta.get("path"), "prediction": meta.get("prediction"),
        "time_input": meta.get("time_input"), "sampler": sampler_desc, "method": method,
        "guidance": {"cfg_scale": cfg_scale, "channels": "all" if channels is None else channels, "interval": interval},
        "vae": vae_desc, "precision": precision, "loss_table": table.to_json() if table is not None else None,
    }
    info = {"checkpoint": str(ck), "model": meta.get("model"), "step": meta.get("step"), "preset": preset,
            "loss_table_file": table_src, "device": str(dev), "compile": bool(compile), "tf32": bool(tf32) and dev.type == "cuda"}
    with dist.tf32(tf32):
        return generate(
            out, num_samples=int(num_samples), batch_size=batch_size, seed=seed, latent_shape=latent_shape,
            sampler_fn=sampler_fn, decode_fn=decode_fn, labels=labels, num_classes=num_classes, settings=settings,
            info=info, device=dev, png_folder=png_folder, save_latents=save_latents, grid_png=grid_png,
            keep_parts=keep_parts, progress=progress, initial_noise=init,
        )


def sample_images(
    sampler_fn: LatentSampler,
    *,
    num_samples: int,
    batch_size: int,
    seed: int,
    latent_shape: Sequence[int],
    labels: str | tuple[int, ...] = "random",
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    decode_fn: Decoder | None = None,
) -> tuple[Tensor, Tensor, list]:
    """In-memory sampling with the same per-sample seeds as `generate` (for sweeps): returns
    (images or latents float32 on the CPU, labels (N,), distinct NFE per sample)."""
    xs, ys, nfes = [], [], set()
    for start in range(0, num_samples, batch_size):
        idx = list(range(start, min(num_samples, start + batch_size)))
        noise = RowNoise([seed + i for i in idx])
        x0 = noise.randn(latent_shape, device=device)
        y = labels_for(idx, labels, num_classes, noise).to(device)
        with torch.no_grad():
            x, info = sampler_fn(x0, y, noise)
            if decode_fn is not None:
                x = decode_fn(x)
        xs.append(x.float().cpu())
        ys.append(y.cpu())
        nfes.add(info.get("nfe"))
    return torch.cat(xs), torch.cat(ys), sorted(v for v in nfes if v is not None)


def load_eval_data(spec: str, *, image_size: int | None = None, split: str = "heldout") -> tuple[Tensor, Tensor | None]:
    """Data for likelihood, L_t, path length and sweeps: (x (N, C, H, W) float32, labels or None).

    spec: an embedded dataset name ('digits', 'mnist_5k', optionally ':train', ':heldout',
    ':all'; images in [-1, 1] resized/padded to ``image_size``), or an .npz file with either
    uint8 images ``arr_0`` (N, H, W, C) (mapped to [-1, 1]) or float arrays (N, C, H, W)
    (used as they are, e.g. latents), and labels in ``arr_1`` or ``labels`` when present."""
    name, _, sp = spec.partition(":")
    from sit.data.embedded import EMBEDDED_DATASETS, load_embedded

    if name in EMBEDDED_DATASETS:
        x, y = load_embedded(name, split=sp or split, image_size=image_size)
        return x.float(), y.long()
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(
            f"--data {spec!r}: neither an embedded dataset {list(EMBEDDED_DATASETS)} nor an existing .npz file"
        )
    if p.suffix != ".npz":
        raise ValueError(f"unknown data file type {p.suffix!r}; expected one of ['.npz'] or {list(EMBEDDED_DATASETS)}")
    with np.load(p) as z:
        key = "arr_0" if "arr_0" in z else ("latents" if "latents" in z else None)
        if key is None:
            raise ValueError(f"{p} holds neither 'arr_0' nor 'latents' (keys: {sorted(z.keys())})")
        a = z[key]
        lab = z["arr_1"] if "arr_1" in z else (z["labels"] if "labels" in z else None)
    if a.dtype == np.uint8:
        if a.ndim != 4:
            raise ValueError(f"{p}: uint8 images must be (N, H, W, C); got shape {a.shape}")
        x = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    else:
        if a.ndim != 4:
            raise ValueError(f"{p}: float data must be (N, C, H, W); got shape {a.shape}")
        x = torch.from_numpy(np.asarray(a, dtype=np.float32))
    y = torch.from_numpy(np.asarray(lab)).long() if lab is not None else None
    return x, y


def match_model_input(x: Tensor, net) -> Tensor:
    """Grey images for a grey model; RGB images of equal channels made grey for a 1-channel model."""
    C = int(net.in_channels)
    if x.shape[1] == C:
        return x
    if C == 1 and x.shape[1] == 3:
        return x.mean(1, keepdim=True)
    raise ValueError(f"data has {x.shape[1]} channels but the model expects {C}")


# --------------------------------------------------------------------------------------------
# shared by `sit lt`, `sit likelihood`, `sit pathlength`


def default_data_spec(net, split: str = "heldout") -> str:
    """The embedded dataset a pixel-space demo model was trained on, guessed from its size."""
    C, H = int(net.in_channels), int(net.config.input_size)
    if C != 1:
        raise ValueError(f"a {C}-channel model needs --data FILE.npz (images or latents it was trained on)")
    return ("digits" if H <= 8 else "mnist_5k") + f":{split}"


def load_eval_model(ckpt, *, weights: str = "ema", device: str | None = None, precision: str = "fp32"):
    """(net, meta, model_fn (prediction in paper time), path, device) for evaluation commands."""
    from sit import dist
    from sit.models.checkpoint import load_model
    from sit.models.field import ModelField
    from sit.paths import get_path

    dev = dist.init(default_device(device))
    net, meta = load_model(ckpt, prefer=weights)
    net = prepare_network(net, precision, device=dev)
    if meta.get("time_input", "continuous") != "continuous":
        raise ValueError(f"{ckpt} is a discrete-time (DiT/DDPM) checkpoint; this command needs a continuous-time SiT model")
    dtype = torch.bfloat16 if precision == "bf16" else None
    model_fn = ModelField(net, meta.get("prediction", "velocity"), "continuous", dtype=dtype)
    return net, meta, model_fn, get_path(meta.get("path", "linear")), dev


def eval_batches(x: Tensor, y: Tensor | None, batch_size: int, device, conditional: bool = True) -> list:
    """(x*, y) pairs on the device; y is the null label (None) when unconditional or unlabelled."""
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i: i + batch_size].to(device)
        yb = y[i: i + batch_size].to(device) if (conditional and y is not None) else None
        out.append((xb, yb))
    return out
