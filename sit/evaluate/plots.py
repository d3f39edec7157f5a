"""CSV tables and PNG plots for the paper's measurements (Fig. 4 path length, Fig. 5 FID vs NFE,
the per-time loss L_t against the diffusion coefficients w_t).

matplotlib is used with the non-interactive Agg backend, so plots work on machines without a
display; every file is written through `sit.io.atomic_path` (temporary name, then rename).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from sit.io import atomic_path


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) as CSV with a header; columns default to the keys in first-seen order."""
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k, "")) for k in columns})
    return path


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.8g}"
    return v


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return path


def plot_lines(
    path: str | os.PathLike,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    errors: Mapping[str, Sequence[float]] | None = None,
    markers: bool = True,
    hline: tuple[float, str] | None = None,
    xticks: Sequence[float] | None = None,
) -> Path:
    """One line per entry of ``series`` (name -> (xs, ys)), optional error bars (name -> yerr) and a
    dashed horizontal reference line ``hline = (y, label)``. Non-finite points are dropped.
    ``xticks``: the only x ticks, labelled as plain numbers (also on a log axis)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, (xs, ys) in series.items():
        pts = [(float(x), float(y), i) for i, (x, y) in enumerate(zip(xs, ys)) if math.isfinite(float(y))]
        if not pts:
            continue
        xx, yy, idx = zip(*pts)
        if errors and name in errors:
            ee = [float(errors[name][i]) for i in idx]
            ax.errorbar(xx, yy, yerr=ee, label=name, marker="o" if markers else None, ms=4, capsize=2)
        else:
            ax.plot(xx, yy, label=name, marker="o" if markers else None, ms=4)
    if hline is not None:
        ax.axhline(hline[0], ls="--", color="grey", lw=1, label=hline[1])
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if xticks is not None:
        from matplotlib.ticker import FixedLocator, NullLocator

        ticks = sorted({float(v) for v in xticks})
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{v:g}" for v in ticks], fontsize=8 if len(ticks) > 10 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both")
    if len(series) > 1 or hline is not None:
        ax.legend(fontsize=8)
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_quality_vs_nfe(path, rows: Iterable[Mapping[str, object]], metric: str = "fid", title: str = "") -> Path:
    """Fig. 5: ``metric`` against NFE, one line per sampler (rows with keys 'sampler', 'nfe', metric);
    log x axis with a tick at every NFE that occurs."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        xs, ys = series.setdefault(str(r["sampler"]), ([], []))
        xs.append(float(r["nfe"]))
        ys.append(float(r[metric]))
    for name, (xs, ys) in series.items():
        order = sorted(range(len(xs)), key=xs.__getitem__)
        series[name] = ([xs[i] for i in order], [ys[i] for i in order])
    ticks = [x for xs, _ in series.values() for x in xs]
    return plot_lines(path, series, xlabel="NFE (network evaluations per sample)", ylabel=metric, title=title, logx=True,
                      xticks=ticks)


def plot_loss_and_w(
    path,
    t: Sequence[float],
    loss: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    *,
    loss_err: Sequence[float] | None = None,
    title: str = "",
) -> Path:
    """The per-time loss L_t (left axis, with error bars) and the diffusion coefficients w_t of
    eq. (4) (w_KL, w_KL,eta for a few eta, sigma_t, sin^2(pi t); right axis, log scale) against t."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    tt = [float(v) for v in t]
    if loss_err is not None:
        ax.errorbar(tt, loss, yerr=loss_err, color="black", marker="o", ms=3, capsize=2, label="L_t (left)")
    else:
        ax.plot(tt, loss, color="black", marker="o", ms=3, label="L_t (left)")
    ax.set_xlabel("t (0 = data, 1 = noise)")
    ax.set_ylabel("L_t: per-time velocity loss")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    finite = [float(y) for ys in curves.values() for y in ys if math.isfinite(float(y)) and float(y) > 0]
    floor = max(finite) * 1e-4 if finite else 0.0  # w_t -> 0 at the ends would squash the log axis
    for name, ys in curves.items():
        pts = [(x, float(y)) for x, y in zip(tt, ys) if math.isfinite(float(y)) and float(y) > floor]
        if pts:
            ax2.plot(*zip(*pts), label=name, lw=1.4, ls="--")
    ax2.set_yscale("log")
    ax2.set_ylabel("w_t (right, log)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both")
    out = _save(fig, path)
    plt.close(fig)
    return out
