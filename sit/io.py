"""File helpers: the one home of atomic writes, JSON, sha256, uint8 conversion, grids and PNGs.

Owns: how bytes reach the disk (write to a hidden temporary file in the same folder, fsync, then
``os.replace``, so a reader never sees half a file and a killed writer leaves only a ``.*.tmp*``
file that the next run ignores), file hashing, JSON with sorted keys, and the conversion of
images in [-1, 1] to uint8 grids and PNG files.

Must not import: anything of ``sit`` but ``sit.config`` (the records `json_default` writes; this
module sits under the programs layer; `sit.checkpoints`, `sit.train`, `sit.generate` and `sit.evaluate` use it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------
# hashing and durability


def sha256_file(path: PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fsync_file(path: PathLike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: PathLike) -> None:
    """fsync a directory (makes a rename inside it durable); a no-op where the OS refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tmp_path_for(path: PathLike) -> Path:
    """The hidden temporary name an atomic write of ``path`` uses (same folder, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def no_space_message(path: PathLike, needed_bytes: int | None = None) -> str:
    need = f" (needed about {needed_bytes / 1e6:.1f} MB)" if needed_bytes else ""
    return f"no space left on the device holding {str(path)!r}{need}"


def file_mode() -> int:
    """The mode an ordinary new file gets here (0o666 less the umask: 0644 with the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def set_file_mode(path: PathLike) -> None:
    """Give ``path`` the ordinary file mode (libraries such as safetensors create files 0600)."""
    os.chmod(path, file_mode())


@contextlib.contextmanager
def atomic_path(path: PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically (with the
    ordinary file mode, `file_mode`), on failure it is removed and ``path`` is left as it was. ``durable`` fsyncs the file and its folder.
    A full disk becomes an ``OSError`` whose message says so."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        set_file_mode(tmp)  # whatever the writer used, the file gets the mode of every other file
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, no_space_message(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: PathLike, data: bytes, *, durable: bool = False) -> Path:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: PathLike, text: str, *, durable: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


def save_npz_atomic(path: PathLike, **arrays: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


def remove_tree(path: PathLike) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# JSON


def json_default(o: Any) -> Any:
    """JSON for the values sit records: dataclasses, numpy scalars, paths, dtypes, tuples."""
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        from sit.config import ModelConfig, to_dict

        # ModelConfig's later options are left out at their default (recorded identities unchanged)
        return to_dict(o) if isinstance(o, ModelConfig) else dataclasses.asdict(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    mod = type(o).__module__
    if mod.startswith("torch"):
        return str(o)  # torch.dtype, torch.device
    return repr(o)


def to_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, sort_keys=True, default=json_default) + "\n"


def canonical(obj: Any) -> Any:
    """JSON round trip, so tuples vs lists and dataclasses compare equal after reading back."""
    return json.loads(json.dumps(obj, sort_keys=True, default=json_default))


def differing_fields(old: Any, new: Any, prefix: str = "", values: bool = False) -> list[str]:
    """Dotted names of the fields where two (nested) dicts differ ('sample.num_steps', 'weights');
    ``values`` appends ': old -> new' to each."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differing_fields(a, b, f"{prefix}{k}.", values)
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}" if values else f"{prefix}{k}")
    return out


def write_json(path: PathLike, obj: Any, *, durable: bool = False) -> Path:
    """Write ``obj`` as sorted, indented JSON, atomically."""
    return write_text_atomic(path, to_json(obj), durable=durable)


def read_json(path: PathLike, what: str = "file") -> Any:
    """Parse a JSON file; a missing, empty or corrupt file raises ValueError naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {str(path)!r} is corrupt (not UTF-8 text)") from None
    if not text.strip():
        raise ValueError(f"{what} {str(path)!r} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {str(path)!r} is corrupt ({e})") from None


# --------------------------------------------------------------------------------------------
# images


def to_uint8(images) -> np.ndarray:
    """Images in [-1, 1], (B, C, H, W) tensor with C in {1, 3}, to uint8 (B, H, W, 3) as DiT/SiT's
    sample_ddp does: clamp(127.5 x + 128, 0, 255) truncated, i.e. (x + 1) * 127.5 rounded half up.
    Grey images (C = 1) are repeated to 3 channels (the ADM evaluator's layout)."""
    import torch

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


def image_grid(x, ncol: int, min_side: int = 32, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) tensor in [-1, 1] (C = 1 or 3; other C: first 3 or 1 channel) -> uint8
    (rows*H', ncol*W', 3) with ``ncol`` images per row, each upscaled by an integer factor to at
    least ``min_side`` pixels (the training preview grids)."""
    import torch

    x = x.detach().float().cpu().clamp(-1, 1)
    if x.shape[1] not in (1, 3):
        x = x[:, :3] if x.shape[1] > 3 else x[:, :1]
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    f = max(1, math.ceil(min_side / x.shape[-1]))
    if f > 1:
        x = x.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)
    n, _, h, w = x.shape
    rows = math.ceil(n / ncol)
    canvas = torch.ones(3, rows * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = x[i]
    return ((canvas.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def save_png(array: np.ndarray, path: PathLike, upscale: int = 1) -> Path:
    """Write a uint8 (H, W, 3) or (H, W) array as a PNG, atomically; ``upscale`` by nearest neighbour."""
    from PIL import Image

    img = Image.fromarray(array)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def save_figure(fig, path: PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(path)


def label_rows(grid: np.ndarray, labels: list[str]) -> np.ndarray:
    """A uint8 grid (H, W, 3) of ``len(labels)`` equal rows with a white column on its left holding
    each row's label (PIL default font), e.g. the class of each row of samples.png."""
    from PIL import Image, ImageDraw

    width = 6 * max(len(t) for t in labels) + 6
    img = Image.new("RGB", (grid.shape[1] + width, grid.shape[0]), (255, 255, 255))
    img.paste(Image.fromarray(grid), (width, 0))
    d = ImageDraw.Draw(img)
    pitch = grid.shape[0] / len(labels)
    for i, text in enumerate(labels):
        d.text((2, int(i * pitch + pitch / 2) - 5), text, fill=(0, 0, 0))
    return np.asarray(img)


def side_by_side(left: np.ndarray, right: np.ndarray, titles=("samples (EMA, guided)", "real"), gap: int = 12) -> np.ndarray:
    """Two uint8 grids next to each other with a title strip above each (PIL default font)."""
    from PIL import Image, ImageDraw

    h = max(left.shape[0], right.shape[0])
    strip = 16
    width = left.shape[1] + gap + right.shape[1]
    img = Image.new("RGB", (width, h + strip), (255, 255, 255))
    img.paste(Image.fromarray(left), (0, strip))
    img.paste(Image.fromarray(right), (left.shape[1] + gap, strip))
    d = ImageDraw.Draw(img)
    d.text((2, 2), titles[0], fill=(0, 0, 0))
    d.text((left.shape[1] + gap + 2, 2), titles[1], fill=(0, 0, 0))
    return np.asarray(img)


# --------------------------------------------------------------------------------------------
# folder locks


class FolderLockedError(RuntimeError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """An exclusive lock on a run or sample folder: ``DIR/.lock`` holds ``{"pid", "host"}``.

    The holder keeps the lock file open with ``fcntl.flock(LOCK_EX)``, which the kernel drops when
    the process dies, so taking over a stale lock is atomic: of several processes racing for a
    lock left by a dead one, exactly one gets the flock (the others are refused naming the
    holder). A file whose ``flock`` we got but which was replaced meanwhile (its holder released
    it) is retried. A lock file naming a live process of this host that holds no flock (an older
    sit) or another host is still refused, naming the holder; one naming a dead process is taken
    over with a message through ``log``. Use as a context manager; ``release()`` removes the file
    only if it is still ours."""

    NAME = ".lock"

    def __init__(self, folder: PathLike, what: str = "folder", log: Callable[[str], None] | None = None):
        self.folder, self.what, self.log = Path(folder), what, log or (lambda s: None)
        self.path = self.folder / self.NAME
        self.held = False
        self._fd: int | None = None

    def _holder(self) -> dict | None:
        try:
            d = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return d if isinstance(d, dict) else None

    def _refuse(self, holder: dict | None) -> FolderLockedError:
        who = (f"process {holder.get('pid')} on {holder.get('host')!r}" if holder else "another process")
        return FolderLockedError(
            f"{self.what} {str(self.folder)!r} is in use by {who} (lock file {str(self.path)!r}); wait for it "
            "to finish, or delete the lock file if that process is gone"
        )

    def _open_locked(self) -> int | None:
        """An fd of the current lock file with our exclusive flock on it, or None if a live process holds it."""
        import fcntl

        for _ in range(100):
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)  # the holder released (removed) the file between our open and flock: again
        raise FolderLockedError(f"could not take the lock {str(self.path)!r}")

    def acquire(self) -> "FolderLock":
        import socket

        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        fd = self._open_locked()
        if fd is None:
            holder = self._holder()
            if holder is not None and holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                raise FolderLockedError(f"{self.what} {str(self.folder)!r} is already locked by this process")
            raise self._refuse(holder)
        try:
            holder = self._holder()
            if holder and holder.get("pid") != me["pid"]:
                try:
                    pid = int(holder.get("pid", -1))
                except (TypeError, ValueError):
                    pid = -1
                if holder.get("host") != me["host"] or _pid_alive(pid):
                    raise self._refuse(holder)
                self.log(f"sit: taking over the stale lock of {self.what} {str(self.folder)!r} "
                         f"(left by process {holder.get('pid')}, which is gone)")
            data = (json.dumps(me) + "\n").encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self.held = fd, True
        return self

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)  # while still flocked: a waiter retries on the new file
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.held = False

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
