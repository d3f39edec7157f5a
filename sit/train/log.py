"""What `sit train` reports while it runs: RUN/metrics.jsonl (one record per ``log_every`` steps
and one per non-finite step), TensorBoard scalars (when installed), the progress bar, and the
loss curve drawn from metrics.jsonl. Rank 0 only; other ranks get a `Logger` that writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from sit.io import write_text_atomic

NUM_T_BINS = 10


class Window:
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
        self.term_sums = {k: float(v) for k, v in d.get("term_sums", {}).items()}  # extra loss terms (REPA)

    def to_dict(self) -> dict:
        d = dict(loss_sum=self.loss_sum, count=self.count, bin_sum=self.bin_sum, bin_count=self.bin_count,
                 skipped=self.skipped, steps=self.steps, images=self.images)
        return dict(d, term_sums=dict(self.term_sums)) if self.term_sums else d

    def add_terms(self, sums: dict[str, float]) -> None:
        for k, v in sums.items():
            self.term_sums[k] = self.term_sums.get(k, 0.0) + float(v)

    def add(self, loss_sum: float, count: int, bin_sum, bin_count) -> None:
        self.loss_sum += float(loss_sum)
        self.count += count
        for i in range(NUM_T_BINS):
            self.bin_sum[i] += float(bin_sum[i])
            self.bin_count[i] += int(bin_count[i])


def truncate_metrics(path: Path, step: int) -> None:
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
    write_text_atomic(path, "".join(l + "\n" for l in keep))


# False while a caller that runs many trainings (`sit study`) has said once for all of them that
# TensorBoard is missing (`missing_tensorboard_said_once`)
SAY_MISSING_TENSORBOARD = [True]


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception:  # noqa: BLE001  tensorboard not installed
        return False
    return True


@contextlib.contextmanager
def missing_tensorboard_said_once(log=print, where: str = "metrics.jsonl of each run"):
    """Within: say once (through ``log``) that TensorBoard is missing, not once per training run."""
    before = SAY_MISSING_TENSORBOARD[0]
    if before and not tensorboard_available():
        log(f"sit: TensorBoard is not installed (pip install tensorboard), so no scalars go to tb/; the metrics "
            f"are in the {where}")
        SAY_MISSING_TENSORBOARD[0] = False
    try:
        yield
    finally:
        SAY_MISSING_TENSORBOARD[0] = before


def _tensorboard(run_dir: Path, log=print):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001  tensorboard not installed
        if SAY_MISSING_TENSORBOARD[0]:
            log(f"sit train: TensorBoard is not installed (pip install tensorboard), so no scalars go to "
                f"{str(run_dir / 'tb')!r}; the metrics are in {str(run_dir / 'metrics.jsonl')!r}")
        return None
    return SummaryWriter(str(run_dir / "tb"))


class Logger:
    """metrics.jsonl + TensorBoard + progress bar of one run (``main``: rank 0 writes)."""

    def __init__(self, run_dir: Path, total: int, start: int, main: bool, progress: bool, log=print):
        self.log = log
        self.metrics = open(run_dir / "metrics.jsonl", "a") if main else None
        self.tb = _tensorboard(run_dir, log) if main else None
        self.bar = None
        if main and progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, file=sys.stderr)
        self.t_window = time.perf_counter()

    def _write(self, rec: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(json.dumps(rec) + "\n")
            self.metrics.flush()

    def nonfinite(self, step: int, grad_norm: float, bad_t: list[float], in_a_row: int) -> None:
        msg = (f"sit train: non-finite loss or gradient at step {step} (grad norm {grad_norm}); "
               f"step not applied ({in_a_row} in a row)")
        self.log(msg + (f"; t of the bad samples on rank 0: {[round(v, 5) for v in bad_t[:16]]}" if bad_t else ""))
        self._write({"step": step, "nonfinite": True, "grad_norm": grad_norm, "bad_t": bad_t[:64]})

    def stepped(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def window(self, step: int, w: Window, lr: float, grad_norm: float, ema_decay: float, extra: dict) -> None:
        """The record of logging window ``w`` ending at ``step``."""
        dt = time.perf_counter() - self.t_window
        rec = {
            "step": step,
            "loss": w.loss_sum / w.count if w.count else None,
            "loss_t_bins": [s / c if c else None for s, c in zip(w.bin_sum, w.bin_count)],
            "lr": lr,
            "grad_norm": grad_norm,
            "img_per_s": w.images / dt if dt > 0 else None,
            "skipped": w.skipped,
            "ema_decay": ema_decay,
            **{f"loss_{k}": (v / w.count if w.count else None) for k, v in w.term_sums.items()},
            **extra,
        }
        self._write(rec)
        if self.tb is not None:
            for k in ("loss", "lr", "grad_norm", "img_per_s"):
                if rec[k] is not None:
                    self.tb.add_scalar(f"train/{k}", rec[k], step)
        if self.bar is not None and rec["loss"] is not None:
            self.bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rec['img_per_s']:.0f}")
        self.t_window = time.perf_counter()

    def close(self) -> None:
        for f in (self.bar, self.metrics, self.tb):
            if f is not None:
                f.close()


def plot_loss_curve(metrics_path: Path, out: Path) -> None:
    """loss_curve.png: loss against step (log scale) and the last records' loss by t bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sit.io import save_figure

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
    save_figure(fig, out)
    plt.close(fig)
