"""Class-per-folder image datasets with the ADM centre crop (the preprocessing of DiT and SiT).

Layout (as torchvision's ImageFolder)::

    root/n01440764/xxx.JPEG
    root/n01443537/yyy.png
    ...

Class folders are sorted by name and numbered 0..K-1 (hidden folders, starting with ".", are
ignored); images are found recursively inside each class folder by extension (directory
symlinks inside a class folder are not followed, with a warning). Each image is loaded with
Pillow, converted to 8-bit RGB (:func:`to_rgb`: 16-bit and float images scaled, alpha over
white), centre-cropped to ``image_size`` as in ADM / DiT / SiT (:func:`center_crop_arr`),
optionally flipped horizontally, and scaled to [-1, 1].
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

log = logging.getLogger("sit.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
ON_ERROR = ("skip", "raise")


class CorruptImageError(OSError):
    """An image that Pillow cannot read; ``path`` names it."""

    def __init__(self, path: str, cause: BaseException):
        super().__init__(f"cannot read image {path!r}: {type(cause).__name__}: {cause}")
        self.path = path


def center_crop_arr(image: Image.Image, image_size: int) -> Image.Image:
    """The ADM centre crop (used by DiT and SiT): while the short side is >= 2 * image_size, halve
    the image with a BOX filter (sizes floor-divided by 2); then resize with BICUBIC so the short
    side is exactly image_size (long side rounded); then cut the centre image_size x image_size
    square (offset floor((side - image_size) / 2)). Returns a new image of size (image_size, image_size)."""
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1 (got {image_size})")
    while min(image.size) >= 2 * image_size:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.BOX)
    scale = image_size / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), resample=Image.BICUBIC)
    left = (image.width - image_size) // 2
    top = (image.height - image_size) // 2
    return image.crop((left, top, left + image_size, top + image_size))


def to_tensor(image: Image.Image) -> Tensor:
    """RGB uint8 image (H, W, 3) -> float32 tensor (3, H, W) in [-1, 1] (x / 127.5 - 1)."""
    arr = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().div_(127.5).sub_(1.0)


ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, scaling rather than clipping (see docs/data.md, "Image modes"):
    16-bit grey (``I;16*``, and ``I``, which Pillow uses for 16-bit PNGs) is divided by 257 so
    0..65535 maps onto 0..255 (``I`` values outside 0..65535 are an error); float ``F`` in [0, 1] is
    multiplied by 255, in [0, 255] taken as it is (other ranges are an error); an alpha channel
    (``RGBA``, ``LA``, ``PA``, or a palette/grey image with a transparency key) is composited over
    white; ``P`` (palette), ``1``, ``L``, ``CMYK``, ``YCbCr`` ... go through Pillow's own conversion."""
    if im.mode in INT_MODES or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if im.mode == "F":
            if lo < 0 or hi > 255 or not np.isfinite(a).all():
                raise ValueError(f"float (mode F) image with values in [{lo:g}, {hi:g}]; expected [0, 1] or [0, 255]")
            a = a * 255.0 if hi <= 1.0 else a
        else:
            if lo < 0 or hi > 65535:
                raise ValueError(f"integer (mode {im.mode}) image with values in [{lo:g}, {hi:g}]; expected 0..65535")
            a = a / 257.0
        grey = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")
        return grey.convert("RGB")
    if im.mode in ALPHA_MODES or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_rgb(path: str) -> Image.Image:
    """Open and fully decode an image as 8-bit RGB (:func:`to_rgb`); any failure -> CorruptImageError naming the path."""
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise CorruptImageError(str(path), e) from e


def find_classes(root: str | os.PathLike) -> list[str]:
    """Sorted names of the (non-hidden) sub-folders of root; clear errors for a missing/empty root."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {str(root)!r} is not a directory")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise FileNotFoundError(
            f"image folder {str(root)!r} has no class sub-folders; expected root/<class_name>/<image files>"
        )
    return classes


def load_label_map(path: str | os.PathLike) -> dict[str, int]:
    """A JSON file {"class_folder_name": label, ...} (e.g. to keep ImageNet's numbering on a subset)."""
    with open(path) as f:
        mapping = json.load(f)
    if not isinstance(mapping, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()):
        raise ValueError(f"label map {str(path)!r} must be a JSON object {{folder name: integer label}}")
    return mapping


def list_images(root: str, classes: list[str], class_to_idx: dict[str, int], exts: tuple[str, ...]) -> list[tuple[str, int]]:
    """(path, label) of every image under root/<class>/, sorted. Directory symlinks inside a class
    folder are not followed (a link such as ``cat/up -> ..`` would loop and list other classes'
    images under this label); they are counted and named in one warning. A class folder that is
    itself a symlink is read, and symlinked image files are kept."""
    samples: list[tuple[str, int]] = []
    skipped: list[str] = []
    for c in classes:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, c), followlinks=False):
            dirnames.sort()
            skipped += [os.path.join(dirpath, d) for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for fn in sorted(filenames):
                if fn.lower().endswith(exts):
                    samples.append((os.path.join(dirpath, fn), class_to_idx[c]))
    if skipped:
        log.warning("image folder %r: %d directory symlink(s) inside class folders not followed (they can loop "
                    "or point into other classes), e.g. %s -> %s", root, len(skipped), skipped[0], os.readlink(skipped[0]))
    return samples


class ImageFolderDataset(Dataset):
    """ImageFolder with the ADM centre crop: item i -> (image float32 (3, S, S) in [-1, 1], label int).

    Args:
        root: folder with one sub-folder per class.
        image_size: S, the output side in pixels.
        flip: random horizontal flip with probability 1/2. The coin is drawn from a generator seeded
            by (seed, epoch, index), so a run is reproducible whatever the number of workers;
            call :meth:`set_epoch` each epoch (as with DistributedSampler).
        on_error: "raise" (a CorruptImageError naming the path) or "skip" (the unreadable image is
            recorded in ``bad_paths``, logged once, and the next readable image in index order is
            returned instead; with DataLoader workers each worker holds its own ``bad_paths``, so use
            ``verify=True`` for an exact count in the main process).
        verify: decode every image once at construction; with "skip" unreadable ones are dropped
            from ``samples`` and counted in ``bad_paths``, with "raise" the first one is an error.
            Slow on large datasets (every file is decoded).
        class_to_idx: explicit label per class folder (e.g. from :func:`load_label_map`); every
            folder must be listed. Default: sorted folder names -> 0..K-1.
        num_classes: the label range [0, num_classes); a label outside it is a ValueError.
            Default: K, or max(label) + 1 with ``class_to_idx``.
    """

    def __init__(self, root: str | os.PathLike, image_size: int, *, flip: bool = False,
                 on_error: Literal["skip", "raise"] = "raise", verify: bool = False,
                 class_to_idx: dict[str, int] | None = None, num_classes: int | None = None,
                 extensions: tuple[str, ...] = IMAGE_EXTENSIONS, seed: int = 0):
        if on_error not in ON_ERROR:
            raise ValueError(f"unknown on_error {on_error!r}; expected one of {list(ON_ERROR)}")
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer (got {image_size!r})")
        self.root = str(root)
        self.image_size = image_size
        self.flip = bool(flip)
        self.on_error = on_error
        self.seed = int(seed)
        self.epoch = 0
        self.classes = find_classes(root)
        if class_to_idx is None:
            class_to_idx = {c: i for i, c in enumerate(self.classes)}
        else:
            missing = [c for c in self.classes if c not in class_to_idx]
            if missing:
                raise ValueError(f"class folder(s) {missing[:5]} of {self.root!r} are not in the label map")
            class_to_idx = {c: int(class_to_idx[c]) for c in self.classes}
        if num_classes is None:
            num_classes = max(class_to_idx.values()) + 1
        self.num_classes = int(num_classes)
        bad = {c: v for c, v in class_to_idx.items() if not 0 <= v < self.num_classes}
        if bad:
            raise ValueError(
                f"label(s) outside the class range [0, {self.num_classes}): {dict(list(bad.items())[:5])}"
            )
        self.class_to_idx = class_to_idx
        exts = tuple(e.lower() for e in extensions)
        self.samples = list_images(self.root, self.classes, class_to_idx, exts)
        if not self.samples:
            raise FileNotFoundError(
                f"no images with extensions {list(exts)} under the class folders of {self.root!r}"
            )
        empty = sorted(set(self.classes) - {c for c in self.classes if class_to_idx[c] in {lab for _, lab in self.samples}})
        if empty:  # it would still take a label and count as a class that is never shown
            raise ValueError(f"class folder(s) {empty[:5]} of {self.root!r} hold no images with extensions {list(exts)}; "
                             "remove them, or give the labels with a label map")
        self.bad_paths: set[str] = set()
        if verify:
            kept = []
            for path, label in self.samples:
                try:
                    load_rgb(path)
                    kept.append((path, label))
                except CorruptImageError as e:
                    if on_error == "raise":
                        raise
                    self._record_bad(e)
            if not kept:
                raise FileNotFoundError(f"no readable images under {self.root!r}")
            self.samples = kept

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    @property
    def num_skipped(self) -> int:
        """Number of distinct unreadable images met so far (in this process)."""
        return len(self.bad_paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def _record_bad(self, e: CorruptImageError) -> None:
        if e.path not in self.bad_paths:
            self.bad_paths.add(e.path)
            log.warning("skipping unreadable image (%d so far): %s", len(self.bad_paths), e)

    def load(self, index: int, flip: bool = False) -> tuple[Tensor, int]:
        """Item ``index`` without the error policy (CorruptImageError on a bad file), optionally mirrored."""
        path, label = self.samples[index]
        image = center_crop_arr(load_rgb(path), self.image_size)
        if flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor(image), label

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        n = len(self.samples)
        for k in range(n):
            j = (index + k) % n
            flip = False
            if self.flip:
                flip = bool(np.random.default_rng([self.seed, self.epoch, j]).integers(2))
            try:
                return self.load(j, flip)
            except CorruptImageError as e:
                if self.on_error == "raise":
                    raise
                self._record_bad(e)
        raise RuntimeError(f"no readable image in {self.root!r} ({n} files, all unreadable)")
