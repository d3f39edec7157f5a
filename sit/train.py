"""The training loop of `sit train`: SiT (continuous time) or DiT's DDPM (discrete time).

One function, ``train(cfg, model_cfg)``, runs on one process or under ``torchrun`` (DDP; NCCL on
GPUs, gloo on CPU) and writes a run folder:

    RUN/run_config.json              resolved config (also inside every checkpoint as config.json)
    RUN/metrics.jsonl                one record per ``log_every`` steps: step, loss, loss by t bin,
                                     lr, grad norm, images/s, skipped (non-finite) steps
    RUN/checkpoints/step-0000100/    model.safetensors, ema.safetensors, optimizer.pt, state.json,
                                     config.json (+ lt_table.json with ``lt_table``)
    RUN/samples/step-0000100.png     EMA sample grids (one row per class)
    RUN/loss_curve.png, RUN/samples.png (samples beside real images), RUN/quality.json (embedded data)

Determinism, the basis of exact resume and of DDP = single process: everything random in a step
is a function of (seed, step). The global batch of step s is the slice s of a per-epoch
permutation seeded by (seed, epoch); t, eps and the label-dropout mask of the whole global
micro-batch are drawn from a generator seeded by (seed, step, micro) and each rank takes its rows.
So a run resumed from a checkpoint repeats the uninterrupted run exactly (same process count),
and N processes compute the same mean loss and gradient as one process on the same global batch.

Objectives: continuous time uses `sit.objectives.training_losses` (L_v (7), L_s (6), weighted
score/noise losses) on `sit.paths`; discrete time uses `sit.discrete.DiscreteDiffusion` (DiT's
L_simple + L_vlb). Per-sample losses are averaged over the batch ("mean_flat" then mean).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from sit import dist
from sit.checkpoints import (  # noqa: F401  (re-exported: the store's names as sit.train had them)
    CKPT_FILES,
    CheckpointError,
    clean_stale,
    find_resumable,
    list_checkpoints,
    read_training_state,
    run_dir_of,
    save_checkpoint,
    verify,
)
from sit.config import ModelConfig, TrainConfig, from_dict, to_dict

verify_checkpoint = verify
load_checkpoint_files = read_training_state
NUM_T_BINS = 10
DEMO_STEP_ENV = "SIT_TRAIN_KILL_AT_STEP"  # test hook: SIGKILL this process after that step


class NonFiniteLossError(RuntimeError):
    """Too many non-finite (NaN / inf) losses or gradients in a row."""


# ------------------------------------------------------------------------------------------------
# deterministic randomness
# ------------------------------------------------------------------------------------------------
def _seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy SeedSequence hashing: distinct keys, distinct seeds)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*keys))


class StepSampler:
    """Indices of every (step, micro-batch, rank): the global batch of step s is the slice s of a
    permutation of range(n) seeded by (seed, epoch), epochs of n // global_batch steps (the
    remainder of each epoch is dropped). Rank r takes rows [r*b, (r+1)*b) of each micro-batch."""

    def __init__(self, n: int, global_batch: int, grad_accum: int, world_size: int, rank: int, seed: int):
        if global_batch % (grad_accum * world_size):
            raise ValueError(
                f"global batch {global_batch} must be divisible by grad_accum x world size = {grad_accum} x {world_size}"
            )
        if n < global_batch:
            raise ValueError(f"the dataset has {n} items, fewer than one global batch ({global_batch})")
        self.n, self.global_batch, self.grad_accum = n, global_batch, grad_accum
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.micro_global = global_batch // grad_accum
        self.local = self.micro_global // world_size
        self.steps_per_epoch = n // global_batch
        self._perm: tuple[int, Tensor] | None = None

    def position(self, step: int) -> dict[str, int]:
        """Data position before step ``step`` (0-based): epoch and the index into its permutation."""
        return {"epoch": step // self.steps_per_epoch, "index": (step % self.steps_per_epoch) * self.global_batch}

    def permutation(self, epoch: int) -> Tensor:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(self.n, generator=_generator(self.seed, 1, epoch)))
        return self._perm[1]

    def indices(self, step: int, micro: int) -> tuple[int, Tensor]:
        """(epoch, indices (local,)) of this rank's rows of micro-batch ``micro`` of step ``step``."""
        pos = self.position(step)
        start = pos["index"] + micro * self.micro_global + self.rank * self.local
        return pos["epoch"], self.permutation(pos["epoch"])[start : start + self.local]

    def rows(self) -> slice:
        """This rank's rows within a global micro-batch."""
        return slice(self.rank * self.local, (self.rank + 1) * self.local)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
class _EpochItems(torch.utils.data.Dataset):
    """Wraps a dataset with ``set_epoch``: item (index, epoch) sets the epoch in this worker first."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, epoch = item
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class _BatchList(torch.utils.data.Sampler):
    """Batch sampler yielding this rank's (index, epoch) lists for steps [start, stop)."""

    def __init__(self, sampler: StepSampler, start: int, stop: int):
        self.sampler, self.start, self.stop = sampler, start, stop

    def __len__(self):
        return (self.stop - self.start) * self.sampler.grad_accum

    def __iter__(self):
        for s in range(self.start, self.stop):
            for m in range(self.sampler.grad_accum):
                epoch, idx = self.sampler.indices(s, m)
                yield [(int(i), epoch) for i in idx]


@dataclasses.dataclass
class DataSource:
    """What the loop needs from the data: size, shape, classes and batches per (step, micro)."""

    n: int
    channels: int
    size: int                       # network input side (pixels for embedded, latent side otherwise)
    num_classes: int
    kind: str                       # "embedded" | "images" | "latents"
    info: dict
    x: Tensor | None = None         # embedded: all training images (N, 1, S, S) on the device
    y: Tensor | None = None
    dataset: Any = None
    vae: Any = None

    def loader(self, sampler: StepSampler, start: int, stop: int, num_workers: int, device: torch.device):
        """Iterator of (x, y) micro-batches on ``device`` for steps [start, stop) (this rank)."""
        if self.kind == "embedded":
            for s in range(start, stop):
                for m in range(sampler.grad_accum):
                    _, idx = sampler.indices(s, m)
                    idx = idx.to(self.x.device)
                    yield self.x[idx], self.y[idx]
            return
        dl = torch.utils.data.DataLoader(
            _EpochItems(self.dataset),
            batch_sampler=_BatchList(sampler, start, stop),
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        for xb, yb in dl:
            yield xb.to(device, non_blocking=True), torch.as_tensor(yb).long().to(device, non_blocking=True)


def build_data(cfg: TrainConfig, device: torch.device) -> DataSource:
    """The training data of ``cfg``: embedded (pixels), ImageFolder through the VAE, or latent shards."""
    if cfg.latents is not None:
        from sit.data.latents import LatentShardDataset

        ds = LatentShardDataset(cfg.latents, flip=True, seed=cfg.seed)
        c, h, w = ds.latent_shape
        if h != w:
            raise ValueError(f"latents must be square (got {h}x{w} in {cfg.latents!r})")
        vae = None
        if cfg.vae is not None:
            from sit.vae import VAE

            vae = VAE.from_pretrained(cfg.vae, device=device)
        info = {"kind": "latents", "root": str(cfg.latents), "latent_shape": [c, h, w], "scale_factor": ds.scale_factor}
        return DataSource(len(ds), c, h, ds.num_classes, "latents", info, dataset=ds, vae=vae)
    if cfg.data is not None:
        from sit.data.imagefolder import ImageFolderDataset
        from sit.vae import VAE

        size = cfg.image_size or 256
        ds = ImageFolderDataset(cfg.data, size, flip=True, on_error=cfg.on_error, seed=cfg.seed)
        vae = VAE.from_pretrained(cfg.vae or "ema", device=device)
        c, h, w = vae.latent_shape(size)
        info = {"kind": "images", "root": str(cfg.data), "image_size": size, "vae": vae.name,
                "latent_shape": [c, h, w], "scale_factor": vae.scale_factor}
        return DataSource(len(ds), c, h, ds.num_classes, "images", info, dataset=ds, vae=vae)
    from sit.data.embedded import NUM_CLASSES, load_embedded

    x, y = load_embedded(cfg.dataset, "train", image_size=cfg.image_size, seed=0)
    info = {"kind": "embedded", "dataset": cfg.dataset, "image_size": int(x.shape[-1]), "split": "train",
            "heldout_fraction": 0.1, "split_seed": 0}
    return DataSource(x.shape[0], 1, int(x.shape[-1]), NUM_CLASSES, "embedded", info, x=x.to(device), y=y.to(device))


# ------------------------------------------------------------------------------------------------
# model pieces
# ------------------------------------------------------------------------------------------------
class _NoDrop(nn.Module):
    """Calls the (possibly DDP-wrapped) network with label dropout disabled: the loop replaces
    dropped labels by the null class itself, from its own seeded generator."""

    def __init__(self, net: nn.Module, in_channels: int, out_channels: int):
        super().__init__()
        self.net = net
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        return self.net(x, t, y, force_drop_ids=torch.zeros_like(y))


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * net, for every trainable parameter."""
    e = list(ema.parameters())
    n = [p.detach() for p in net.parameters()]
    torch._foreach_lerp_(e, n, 1.0 - decay)


def ema_decay_at(cfg: TrainConfig, updates: int) -> float:
    if cfg.ema_warmup:
        return min(cfg.ema_decay, (1.0 + updates) / (10.0 + updates))
    return cfg.ema_decay


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up over ``warmup_steps``, then constant."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


def run_meta(cfg: TrainConfig, model_cfg: ModelConfig, data_info: dict | None = None) -> dict:
    """The config.json of a run and of each checkpoint (read by sit.models.checkpoint.load_model)."""
    import sit

    discrete = cfg.time_input == "discrete"
    return {
        "model": to_dict(model_cfg),
        "path": "ddpm" if discrete else cfg.path,
        "prediction": "noise" if discrete else cfg.prediction,
        "loss_weight": None if discrete else cfg.loss_weight,
        "time_input": cfg.time_input,
        "train": to_dict(cfg),
        "data": data_info or {},
        "sit_version": sit.__version__,
    }


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------
def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def rng_state() -> dict:
    """torch / numpy / python global RNG states as JSON-safe values (base64 / lists)."""
    np_state = np.random.get_state()
    py = random.getstate()
    out = {
        "torch": _b64(torch.get_rng_state().numpy().tobytes()),
        "numpy": [np_state[0], _b64(np_state[1].astype(np.uint32).tobytes()), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py[0], list(py[1]), py[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [_b64(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state((n[0], np.frombuffer(base64.b64decode(n[1]), dtype=np.uint32).copy(), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        cs = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        if len(cs) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cs)


# ------------------------------------------------------------------------------------------------
# sampling and pictures
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    net: nn.Module, cfg: TrainConfig, model_cfg: ModelConfig, y: Tensor, seed: int, device: torch.device,
    cfg_scale: float | None = None, batch_size: int = 500,
) -> Tensor:
    """Class-conditional samples (B, C, S, S) of ``net`` (e.g. the EMA model) for labels ``y``,
    with guidance ``cfg_scale`` (default cfg.cfg_scale), noise seeded by ``seed``."""

    scale = cfg.cfg_scale if cfg_scale is None else cfg_scale
    was_training = net.training
    net.eval()
    C, S = model_cfg.in_channels, model_cfg.input_size
    g = _generator(seed, 7)
    outs = []
    try:
        for i in range(0, y.shape[0], batch_size):
            yb = y[i : i + batch_size].to(device)
            noise = torch.randn((yb.shape[0], C, S, S), generator=g).to(device)
            outs.append(_sample_batch(net, cfg, model_cfg, yb, noise, scale, g, device))
    finally:
        net.train(was_training)
    return torch.cat(outs)


def _sample_batch(net, cfg, model_cfg, y, noise, scale, g, device) -> Tensor:
    from sit.guidance import GuidedModel

    ac = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()
    null = model_cfg.num_classes
    use_cfg = scale != 1.0 and model_cfg.class_dropout_prob > 0
    if cfg.time_input == "discrete":
        from sit.discrete import DiscreteConfig, DiscreteDiffusion, sample_ddpm

        def raw(x, k, yy):
            with ac:
                return net(x, k, yy).float()

        fn = GuidedModel(raw, scale, null, channels=model_cfg.in_channels) if use_cfg else raw
        diff = DiscreteDiffusion(DiscreteConfig(learn_sigma=model_cfg.learn_sigma)).respace(cfg.sample_steps)
        return sample_ddpm(lambda x, k: fn(x, k, y), noise, diff, generator=g)
    from sit.models.field import ModelField
    from sit.objectives import velocity_field
    from sit.paths import get_path
    from sit.samplers import SampleConfig, sample

    path = get_path(cfg.path)
    mf = ModelField(net, cfg.prediction, "continuous", dtype=torch.bfloat16 if cfg.precision == "bf16" else None)
    fn = GuidedModel(mf, scale, null) if use_cfg else mf
    field = velocity_field(fn, path, cfg.prediction, y=y)
    x, _ = sample(field, noise, SampleConfig(method=cfg.sample_method, num_steps=cfg.sample_steps), path,
                  prediction=cfg.prediction)
    return x


def image_grid(x: Tensor, ncol: int, min_side: int = 32, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] (C = 1 or 3; other C: first 3 or 1 channel) -> uint8 (rows*H', ncol*W', 3)
    with ``ncol`` images per row, each upscaled by an integer factor to at least ``min_side`` pixels."""
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
        canvas[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = x[i]
    return ((canvas.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def side_by_side(left: np.ndarray, right: np.ndarray, titles=("samples (EMA, guided)", "real"), gap: int = 12) -> np.ndarray:
    """Two grids next to each other with a title strip above each (PIL default font)."""
    from PIL import Image, ImageDraw

    h = max(left.shape[0], right.shape[0])
    strip = 16
    W = left.shape[1] + gap + right.shape[1]
    img = Image.new("RGB", (W, h + strip), (255, 255, 255))
    img.paste(Image.fromarray(left), (0, strip))
    img.paste(Image.fromarray(right), (left.shape[1] + gap, strip))
    d = ImageDraw.Draw(img)
    d.text((2, 2), titles[0], fill=(0, 0, 0))
    d.text((left.shape[1] + gap + 2, 2), titles[1], fill=(0, 0, 0))
    return np.asarray(img)


def plot_loss_curve(metrics_path: Path, out: Path) -> None:
    """loss_curve.png: loss against step (log scale) and the last records' loss by t bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(l) for l in metrics_path.read_text().splitlines() if l.strip()]
    recs = [r for r in recs if r.get("loss") is not None and math.isfinite(r["loss"])]
    if not recs:
        return
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [r["step"] for r in recs]
    ax[0].plot(steps, [r["loss"] for r in recs], lw=1)
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("training loss")
    ax[0].set_yscale("log")
    ax[0].grid(alpha=0.3)
    tail = recs[-max(1, len(recs) // 5) :]
    bins = np.array([[b if b is not None else np.nan for b in r["loss_t_bins"]] for r in tail], dtype=float)
    nb = bins.shape[1]
    centers = (np.arange(nb) + 0.5) / nb
    with np.errstate(all="ignore"):
        counts = np.isfinite(bins).sum(0)
        mean_bins = np.where(counts > 0, np.nansum(bins, 0) / np.maximum(counts, 1), np.nan)
    ax[1].plot(centers, mean_bins, "o-")
    ax[1].set_xlabel("t (0 = data, 1 = noise)" if "t_is_step" not in recs[-1] else "k / N")
    ax[1].set_ylabel("loss (last 20% of training)")
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    step: int
    status: str                     # "done" | "terminated"
    last_checkpoint: Path | None
    quality: dict | None = None
    net: nn.Module | None = None    # the trained network and its EMA (this process's copies)
    ema: nn.Module | None = None


class _Window:
    """Sums over the current logging window (float64, exact to restore from state.json)."""

    def __init__(self, d: dict | None = None):
        d = d or {}
        self.loss_sum = float(d.get("loss_sum", 0.0))
        self.count = int(d.get("count", 0))
        self.bin_sum = list(d.get("bin_sum", [0.0] * NUM_T_BINS))
        self.bin_count = list(d.get("bin_count", [0] * NUM_T_BINS))
        self.skipped = int(d.get("skipped", 0))
        self.steps = int(d.get("steps", 0))
        self.images = int(d.get("images", 0))

    def to_dict(self) -> dict:
        return dict(loss_sum=self.loss_sum, count=self.count, bin_sum=self.bin_sum, bin_count=self.bin_count,
                    skipped=self.skipped, steps=self.steps, images=self.images)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records after ``step`` (written by a run killed after its last checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a half-written last line
        if r.get("step", 0) <= step:
            keep.append(line)
    path.write_text("".join(l + "\n" for l in keep))


def train(
    cfg: TrainConfig | None = None,
    model_cfg: ModelConfig | None = None,
    *,
    resume: str | os.PathLike | None = None,
    steps: int | None = None,
    hooks: dict[str, Callable] | None = None,
) -> TrainResult:
    """Train (or, with ``resume``, continue) a run; see the module docstring.

    cfg / model_cfg: a fresh run (model_cfg.input_size / in_channels / num_classes must match the
    data). resume: a run directory (its newest valid checkpoint) or a checkpoint directory; the
    saved configs are used and ``steps`` may extend the run. hooks (tests): "loss"(step, loss
    (B,)) -> loss (B,) applied to the per-sample losses before the backward pass.
    """
    hooks = hooks or {}
    device = dist.init(cfg.device if cfg is not None else None)
    log = dist.print0

    ckpt_loaded = None
    if resume is not None:
        ck, (state, meta, model_sd, ema_sd, opt_sd) = find_resumable(Path(resume), log=log)
        cfg = from_dict(TrainConfig, dict(meta.train))
        model_cfg = meta.model
        if steps is not None:
            cfg = dataclasses.replace(cfg, steps=steps)
        run_dir = run_dir_of(ck)
        ckpt_loaded = (ck, state, model_sd, ema_sd, opt_sd)
        log(f"sit train: resuming {str(run_dir)!r} from {ck.name} (step {state['step']})")
    else:
        if cfg is None or model_cfg is None:
            raise ValueError("train() needs cfg and model_cfg, or resume=RUN_DIR")
        run_dir = Path(cfg.out)
    if cfg.device is not None:
        device = dist.init(cfg.device)
    threads_before = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        with dist.tf32(cfg.tf32):
            return _train(cfg, model_cfg, run_dir, device, ckpt_loaded, hooks)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: TrainConfig, model_cfg: ModelConfig, run_dir: Path, device: torch.device, ckpt_loaded, hooks) -> TrainResult:
    world, rank = dist.world_size(), dist.rank()
    log = dist.print0
    torch.manual_seed(_seed(cfg.seed, 0))  # the same initial weights on every rank (and for the EMA copy)

    data = build_data(cfg, device)
    if (data.channels, data.size, data.num_classes) != (model_cfg.in_channels, model_cfg.input_size, model_cfg.num_classes):
        raise ValueError(
            f"model expects {model_cfg.in_channels}x{model_cfg.input_size}x{model_cfg.input_size} inputs and "
            f"{model_cfg.num_classes} classes; the data gives {data.channels}x{data.size}x{data.size} and {data.num_classes}"
        )
    meta = run_meta(cfg, model_cfg, data.info)
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run_config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    dist.barrier()

    from sit.models.sit import SiT

    net = SiT(model_cfg).to(device)
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))
    torch.manual_seed(_seed(cfg.seed, 0, rank))  # any later use of the global RNG differs per rank
    start = 0
    window = _Window()
    consecutive_bad = 0
    if ckpt_loaded is not None:
        ck, state, model_sd, ema_sd, opt_sd = ckpt_loaded
        net.load_state_dict(model_sd)
        ema.load_state_dict(ema_sd)
        opt.load_state_dict(opt_sd)
        start = int(state["step"])
        window = _Window(state.get("window"))
        consecutive_bad = int(state.get("consecutive_nonfinite", 0))
        if "rng" in state and rank == 0:
            set_rng_state(state["rng"])
        if dist.is_main():
            _truncate_metrics(run_dir / "metrics.jsonl", start)
    dist.barrier()

    sampler = StepSampler(data.n, cfg.global_batch, cfg.grad_accum, world, rank, cfg.seed)
    train_net: nn.Module = net
    if cfg.compile:
        train_net = torch.compile(net)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_net = DDP(train_net, device_ids=[device.index] if device.type == "cuda" else None)
    fn_net = _NoDrop(train_net, model_cfg.in_channels, model_cfg.out_channels)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if cfg.precision == "bf16" else nullcontext

    if cfg.time_input == "discrete":
        from sit.discrete import DiscreteConfig, DiscreteDiffusion

        diffusion = DiscreteDiffusion(DiscreteConfig(learn_sigma=model_cfg.learn_sigma))
        n_steps = diffusion.num_steps
    else:
        from sit.models.field import ModelField
        from sit.objectives import LossConfig, training_losses
        from sit.paths import get_path
        from sit.timegrid import sample_training_t

        path = get_path(cfg.path)
        loss_cfg = LossConfig(prediction=cfg.prediction, loss_weight=cfg.loss_weight, t_min=cfg.t_min,
                              t_max=cfg.t_max, time_dist=cfg.time_dist)
        t_lo, t_hi = loss_cfg.t_range(path)
        model_fn = ModelField(fn_net, cfg.prediction, "continuous")

    # SIGTERM: finish the step, checkpoint, exit
    term = {"flag": False}
    old_handler = None
    if threading_main():
        old_handler = signal.signal(signal.SIGTERM, lambda *_: term.__setitem__("flag", True))
    kill_at = int(os.environ.get(DEMO_STEP_ENV, "0") or 0)

    metrics_f = open(run_dir / "metrics.jsonl", "a") if dist.is_main() else None
    tb = _tensorboard(run_dir) if dist.is_main() else None
    bar = None
    if dist.is_main() and cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", dynamic_ncols=True, file=sys.stderr)

    rows = sampler.rows()
    micro_global = sampler.micro_global
    null = model_cfg.num_classes
    drop_p = model_cfg.class_dropout_prob
    last_ckpt: Path | None = None
    status = "done"
    t_window = time.perf_counter()
    grad_norm = float("nan")
    data_iter = data.loader(sampler, start, cfg.steps, cfg.num_workers, device)
    net.train()
    step = start
    try:
        while step < cfg.steps:
            lr = lr_at(cfg, step)
            for gparam in opt.param_groups:
                gparam["lr"] = lr
            loss_sum = torch.zeros((), dtype=torch.float64)
            bin_sum = torch.zeros(NUM_T_BINS, dtype=torch.float64)
            bin_cnt = torch.zeros(NUM_T_BINS, dtype=torch.float64)
            bad_local = torch.zeros((), dtype=torch.float64)
            bad_t: list[float] = []
            for micro in range(cfg.grad_accum):
                x, y = next(data_iter)
                g = _generator(cfg.seed, 2, step, micro)
                if data.kind == "images":
                    # posterior sample z = mean + std * noise, the noise drawn for the whole global
                    # micro-batch on the CPU from (seed, step, micro) and this rank's rows taken: the
                    # same on every device and any number of processes, so resume is exact
                    with torch.no_grad():
                        mean, std = data.vae.encode_moments(x)
                        vg = _generator(cfg.seed, 3, step, micro)
                        noise = torch.randn((micro_global, *mean.shape[1:]), generator=vg)[rows]
                        x = (mean + std * noise.to(mean.device)) * data.vae.scale_factor
                # the whole global micro-batch's randomness, then this rank's rows
                if cfg.time_input == "discrete":
                    t_all = torch.randint(0, n_steps, (micro_global,), generator=g)
                else:
                    t_all = sample_training_t(micro_global, t_lo, t_hi, cfg.time_dist, generator=g)
                eps_all = torch.randn((micro_global, *x.shape[1:]), generator=g)
                drop_all = torch.rand(micro_global, generator=g) < drop_p
                t = t_all[rows].to(device)
                eps = eps_all[rows].to(device, x.dtype)
                y = torch.where(drop_all[rows].to(device), torch.full_like(y, null), y) if drop_p > 0 else y
                sync = nullcontext()
                if world > 1 and micro < cfg.grad_accum - 1:
                    sync = train_net.no_sync()
                with sync:
                    with autocast():
                        if cfg.time_input == "discrete":
                            out = diffusion.training_losses(lambda xx, kk: fn_net(xx, kk, y).float(), x, t, eps)
                            tb_frac = t.double() / n_steps
                        else:
                            out = training_losses(model_fn, path, x, loss_cfg, y=y, t=t, eps=eps)
                            tb_frac = t.double()
                    losses = out["loss"].float()
                    if "loss" in hooks:
                        losses = hooks["loss"](step, losses)
                    (losses.mean() / cfg.grad_accum).backward()
                ld = losses.detach().double().cpu()
                finite = torch.isfinite(ld)
                if not bool(finite.all()):
                    bad_local += 1
                    bad_t.extend(tb_frac[~finite.to(tb_frac.device)].cpu().tolist())
                loss_sum += torch.where(finite, ld, torch.zeros_like(ld)).sum()
                b = (tb_frac.cpu() * NUM_T_BINS).long().clamp(0, NUM_T_BINS - 1)
                bin_sum.index_add_(0, b, torch.where(finite, ld, torch.zeros_like(ld)))
                bin_cnt.index_add_(0, b, finite.double())
            # global statistics (one all-reduce)
            stats = torch.cat([loss_sum.view(1), bin_sum, bin_cnt, bad_local.view(1)])
            stats = dist.all_reduce_sum(stats.to(device)).cpu()
            loss_sum_g, bin_sum_g, bin_cnt_g, bad_g = stats[0], stats[1 : 1 + NUM_T_BINS], stats[1 + NUM_T_BINS : 1 + 2 * NUM_T_BINS], stats[-1]
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            gn = torch.nn.utils.clip_grad_norm_(params, max_norm)
            grad_norm = float(gn)
            ok = bad_g.item() == 0 and math.isfinite(grad_norm)
            if ok:
                opt.step()
                ema_update(ema, net, ema_decay_at(cfg, step))
                consecutive_bad = 0
                window.loss_sum += float(loss_sum_g)
                window.count += cfg.global_batch
                for i in range(NUM_T_BINS):
                    window.bin_sum[i] += float(bin_sum_g[i])
                    window.bin_count[i] += int(bin_cnt_g[i])
            else:
                consecutive_bad += 1
                window.skipped += 1
                msg = (f"sit train: non-finite loss or gradient at step {step + 1} (grad norm {grad_norm}); "
                       f"step not applied ({consecutive_bad} in a row)")
                log(msg + (f"; t of the bad samples on rank 0: {[round(v, 5) for v in bad_t[:16]]}" if bad_t else ""))
                if metrics_f is not None:
                    metrics_f.write(json.dumps({"step": step + 1, "nonfinite": True, "grad_norm": grad_norm,
                                                "bad_t": bad_t[:64]}) + "\n")
                    metrics_f.flush()
            opt.zero_grad(set_to_none=True)
            step += 1
            window.steps += 1
            window.images += cfg.global_batch
            if bar is not None:
                bar.update(1)

            # logging
            if step % cfg.log_every == 0 or step == cfg.steps:
                dt = time.perf_counter() - t_window
                rec = {
                    "step": step,
                    "loss": window.loss_sum / window.count if window.count else None,
                    "loss_t_bins": [s / c if c else None for s, c in zip(window.bin_sum, window.bin_count)],
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "img_per_s": window.images / dt if dt > 0 else None,
                    "skipped": window.skipped,
                    "ema_decay": ema_decay_at(cfg, step - 1),
                }
                if cfg.time_input == "discrete":
                    rec["t_is_step"] = True
                if metrics_f is not None:
                    metrics_f.write(json.dumps(rec) + "\n")
                    metrics_f.flush()
                if tb is not None:
                    for k in ("loss", "lr", "grad_norm", "img_per_s"):
                        if rec[k] is not None:
                            tb.add_scalar(f"train/{k}", rec[k], step)
                if bar is not None and rec["loss"] is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rec['img_per_s']:.0f}")
                window = _Window()
                t_window = time.perf_counter()

            stop_bad = consecutive_bad >= cfg.max_nonfinite
            if world > 1:
                flag = dist.all_reduce_sum(torch.tensor([float(term["flag"])], device=device)).item() > 0
                term["flag"] = flag
            want_ckpt = step % cfg.ckpt_every == 0 or step == cfg.steps or term["flag"] or stop_bad
            if want_ckpt:
                last_ckpt = _checkpoint(run_dir, step, net, ema, opt, sampler, window, consecutive_bad, meta, cfg)
            if cfg.sample_every and step % cfg.sample_every == 0 and dist.is_main():
                _sample_grid(ema, cfg, model_cfg, data, device, run_dir / "samples" / f"step-{step:07d}.png")
            if kill_at and step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if stop_bad:
                raise NonFiniteLossError(
                    f"training stopped after {consecutive_bad} non-finite losses/gradients in a row (last at step {step}); "
                    f"the weights were not changed by them; checkpoint to return to: {str(last_ckpt)!r} "
                    f"(resume with `sit train --resume {run_dir}` after lowering --lr or setting --grad-clip)"
                )
            if term["flag"]:
                status = "terminated"
                log(f"sit train: SIGTERM received; saved {str(last_ckpt)!r}; resume with `sit train --resume {run_dir}`")
                break
    finally:
        if bar is not None:
            bar.close()
        if metrics_f is not None:
            metrics_f.close()
        if tb is not None:
            tb.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)

    if world > 1:
        _check_ranks_agree(net, ema, run_dir, device)
    result = TrainResult(run_dir, step, status, last_ckpt, net=net, ema=ema)
    if status == "done" and dist.is_main():
        result.quality = finish_run(run_dir, last_ckpt, ema, cfg, model_cfg, data, device)
    dist.barrier()
    return result


def _params_digest(module: nn.Module) -> bytes:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.digest()


def _check_ranks_agree(net: nn.Module, ema: nn.Module, run_dir: Path, device) -> None:
    """DDP: every rank must hold bit-identical weights; write RUN/ddp_check.json, raise if not."""
    d = torch.tensor(list(_params_digest(net) + _params_digest(ema)), dtype=torch.uint8 if device.type == "cpu" else torch.int32,
                     device=device).view(1, -1)
    allr = dist.all_gather_cat(d.to(torch.int32)).cpu()
    same = bool((allr == allr[0:1]).all())
    if dist.is_main():
        (run_dir / "ddp_check.json").write_text(json.dumps({"world_size": dist.world_size(), "ranks_identical": same}) + "\n")
    if not same:
        raise RuntimeError("DDP ranks ended with different weights (sha256 of model/EMA differ between ranks)")


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001  tensorboard not installed
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _checkpoint(run_dir, step, net, ema, opt, sampler, window, consecutive_bad, meta, cfg) -> Path:
    final = run_dir / "checkpoints" / f"step-{step:07d}"
    if dist.is_main():
        state = {
            "data_position": sampler.position(step),
            "world_size": dist.world_size(),
            "window": window.to_dict(),
            "consecutive_nonfinite": consecutive_bad,
            "rng": rng_state(),
            "time": time.time(),
        }
        save_checkpoint(run_dir, step, net, ema, opt, state, meta, cfg.keep_last)
    dist.barrier()
    return final


def _sample_grid(ema, cfg, model_cfg, data, device, out: Path) -> Tensor:
    k = min(model_cfg.num_classes, 10)
    y = torch.arange(k).repeat_interleave(cfg.samples_per_class)
    x = generate(ema, cfg, model_cfg, y, seed=cfg.seed, device=device)
    img = _to_pixels(x, data)
    if img is not None:
        save_png(image_grid(img, ncol=cfg.samples_per_class), out)
    return x


def _to_pixels(x: Tensor, data: DataSource) -> Tensor | None:
    if data.kind == "embedded":
        return x
    if data.vae is not None:
        return data.vae.decode(x.to(data.vae.device))
    return None


def finish_run(run_dir: Path, ckpt: Path | None, ema, cfg: TrainConfig, model_cfg: ModelConfig, data: DataSource,
               device) -> dict | None:
    """After training (rank 0): loss curve, final sample grid beside real images, quality number
    (embedded data), optional L_t table stored in the checkpoint."""
    if (run_dir / "metrics.jsonl").is_file():
        plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png")
    quality = None
    k = min(model_cfg.num_classes, 10)
    n = cfg.samples_per_class
    x = _sample_grid(ema, cfg, model_cfg, data, device, run_dir / "samples" / "final.png")
    if data.kind == "embedded":
        real = torch.cat([data.x[data.y == c][:n] for c in range(k)])
        save_png(side_by_side(image_grid(x, ncol=n), image_grid(real, ncol=n)), run_dir / "samples.png")
        if cfg.quality:
            quality = _quality(ema, cfg, model_cfg, data, device, run_dir)
    if cfg.lt_table and ckpt is not None:
        _lt_table(ema, cfg, model_cfg, data, device, ckpt)
    return quality


def _quality(ema, cfg, model_cfg, data, device, run_dir: Path) -> dict | None:
    try:
        from sit.evaluate.classifier import quick_quality
    except ImportError as e:
        dist.print0(f"sit train: no quality number ({e})")
        return None
    from sit.data.embedded import load_embedded

    real_x, real_y = load_embedded(cfg.dataset, "all", image_size=data.size)
    m = cfg.quality_samples_per_class
    y = torch.arange(model_cfg.num_classes).repeat_interleave(m)
    t0 = time.perf_counter()
    fake = generate(ema, cfg, model_cfg, y, seed=cfg.seed + 1, device=device).cpu()
    t_sample = time.perf_counter() - t0
    q = quick_quality(real_x, real_y, fake.clamp(-1, 1), y, seed=0)
    q = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in q.items()}
    q.update(samples_per_class=m, cfg_scale=cfg.cfg_scale, sample_method=cfg.sample_method,
             sample_steps=cfg.sample_steps, sampling_seconds=round(t_sample, 2),
             metric="sit.evaluate.classifier.quick_quality (small-CNN feature space; not an Inception FID)")
    (run_dir / "quality.json").write_text(json.dumps(q, indent=2) + "\n")
    dist.print0("sit train: quality " + ", ".join(
        f"{k} {q[k]:.4g}" for k in ("accuracy", "fid", "precision", "recall") if isinstance(q.get(k), float)))
    return q


def _lt_table(ema, cfg, model_cfg, data, device, ckpt: Path) -> None:
    """L_t of the EMA model on held-out data (sit.lt.estimate_loss_table; per-dimension mean, the
    training loss's scale) on a 50-point grid inside (0, 1), stored as ckpt/lt_table.json."""
    if cfg.time_input != "continuous":
        dist.print0("sit train: --lt-table needs continuous time (w_KL,eta is a continuous-time SDE); skipped")
        return
    from sit.lt import estimate_loss_table
    from sit.models.field import ModelField
    from sit.paths import get_path

    if data.kind == "embedded":
        from sit.data.embedded import load_embedded

        hx, hy = load_embedded(cfg.dataset, "heldout", image_size=data.size)
    else:
        n = min(len(data.dataset), 512)
        items = [data.dataset[i] for i in range(len(data.dataset) - n, len(data.dataset))]
        hx = torch.stack([a for a, _ in items])
        hy = torch.tensor([b for _, b in items])
        if data.kind == "images":
            hx = data.vae.encode(hx.to(device))
    eps_edge = 1e-3 if cfg.prediction != "velocity" or cfg.path == "vp" else 0.0
    grid = torch.linspace(max(eps_edge, 1e-3), 1.0 - eps_edge, 50, dtype=torch.float64)
    ema.eval()
    model_fn = ModelField(ema, cfg.prediction, "continuous")
    table = estimate_loss_table(model_fn, get_path(cfg.path), cfg.prediction, [(hx.to(device), hy.to(device))], grid,
                                samples_per_t=min(256, max(2, hx.shape[0])), generator=_generator(cfg.seed, 11))
    table.save(ckpt / "lt_table.json")
    dist.print0(f"sit train: L_t table stored in {str(ckpt / 'lt_table.json')!r}")
