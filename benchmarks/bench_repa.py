"""REPA on the embedded demo: linear-velocity training with and without the alignment term, the
same budget (steps, batch, lr, seeds), quality of the EMA against the training step, >= 3 seeds.

Each (arm, seed) trains the digits demo (`sit train` defaults, one thread; seed = the run's seed)
and keeps a checkpoint every ``--every`` steps. Every checkpoint's EMA is then judged by an
*independent* classifier, scikit-learn's RBF SVC fitted on the real training split (as
benchmarks/bench_demo.py): the share of class-conditional samples it assigns to their class,
unguided (cfg 1) and at the demo's cfg 2, plus the small-CNN feature FID (`quick_quality`) of the
guided samples. The REPA arm's encoder (`digits-cnn`) is the same small CNN family as the feature
FID's network (another seed, another split), so the SVC accuracy is the fairer figure.
Prints one line per (arm, seed, step) and a table of mean +- standard error over seeds.

    python benchmarks/bench_repa.py --seeds 3 --every 150
    python benchmarks/bench_repa.py --seeds 3 --repa "repa_coeff=1.0,repa_depth=1"
    python benchmarks/bench_repa.py --from-json rows.jsonl --plot repa.png   # table + plot of saved rows
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_demo import draw, parse_variant, svc_judge  # noqa: E402


def train_arm(arm: str, overrides: dict, seed: int, every: int, threads: int):
    from sit.config import ModelConfig, TrainConfig
    from sit.train import train
    from sit.train.recipes import DEMO_MODEL, DEMO_REPA_PROJ_DIM
    from sit.train.recipes import DEMO_TRAIN_600x128 as DEMO_TRAIN

    out = tempfile.mkdtemp(prefix=f"bench_repa_{arm}_s{seed}_")
    extra = {"repa_encoder": "digits-cnn", "repa_proj_dim": DEMO_REPA_PROJ_DIM, **overrides} if arm == "repa" else {}
    cfg = TrainConfig(**{**DEMO_TRAIN, "threads": threads, "progress": False, "quality": False, "seed": seed,
                         "ckpt_every": every, "keep_last": 1000, **extra, "out": out})
    mc = ModelConfig(**{**DEMO_MODEL, "input_size": cfg.image_size, "in_channels": 1, "num_classes": 10})
    t0 = time.perf_counter()
    res = train(cfg, mc)
    return cfg, mc, res.run_dir, time.perf_counter() - t0


def judge(cfg, mc, run_dir, clf, per_class: int) -> list[dict]:
    from sit import checkpoints
    from sit.data.embedded import load_embedded
    from sit.evaluate.classifier import quick_quality

    real_x, real_y = load_embedded("digits", "all")
    y = torch.arange(10).repeat_interleave(per_class)
    rows = []
    for ck in checkpoints.list_checkpoints(run_dir):
        ema, meta = checkpoints.load(ck)
        row = {"step": meta.step}
        for scale in (1.0, cfg.cfg_scale):
            x = draw(ema, cfg, mc, y, scale, seed=1234)
            row[f"svc_acc_cfg{scale:g}"] = float((clf.predict(x.flatten(1).numpy()) == y.numpy()).mean())
            if scale != 1.0:
                row["feature_fid"] = float(quick_quality(real_x, real_y, x, y, seed=0)["fid"])
        rows.append(row)
    return rows


def mean_se(v: list[float]) -> str:
    m = sum(v) / len(v)
    se = math.sqrt(sum((a - m) ** 2 for a in v) / (len(v) - 1) / len(v)) if len(v) > 1 else float("nan")
    return f"{m:.3f} ± {se:.3f}"


def print_table(rows: list[dict]) -> None:
    results: dict[tuple, list[float]] = {}
    walls: dict[str, dict[int, float]] = {}
    for row in rows:
        walls.setdefault(row["arm"], {})[row["seed"]] = row["train_wall_s"]
        for k in ("svc_acc_cfg1", "svc_acc_cfg2", "feature_fid"):
            results.setdefault((row["arm"], row["step"], k), []).append(row[k])
    seeds = sorted({r["seed"] for r in rows})
    print(f"\nmean ± s.e. over seeds {seeds} (train wall s, mean: "
          + ", ".join(f"{a} {sum(w.values()) / len(w):.0f}" for a, w in walls.items()) + ")")
    print("| step | arm | seeds | SVC acc. cfg 1 | SVC acc. cfg 2 | feature FID cfg 2 |")
    print("|---|---|---|---|---|---|")
    for step in sorted({k[1] for k in results}):
        for arm in ("base", "repa"):
            if (arm, step, "feature_fid") not in results:
                continue
            cells = [mean_se(results[(arm, step, k)]) for k in ("svc_acc_cfg1", "svc_acc_cfg2", "feature_fid")]
            print(f"| {step} | {arm} | {len(results[(arm, step, 'feature_fid')])} | " + " | ".join(cells) + " |")


def plot(rows: list[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sit.io import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (k, label) in zip(axes, [("svc_acc_cfg1", "SVC accuracy, cfg 1"), ("svc_acc_cfg2", "SVC accuracy, cfg 2"),
                                     ("feature_fid", "feature FID, cfg 2 (lower is better)")]):
        for arm, color in (("base", "tab:blue"), ("repa", "tab:orange")):
            steps = sorted({r["step"] for r in rows if r["arm"] == arm})
            vals = [[r[k] for r in rows if r["arm"] == arm and r["step"] == s] for s in steps]
            m = [sum(v) / len(v) for v in vals]
            se = [math.sqrt(sum((a - mm) ** 2 for a in v) / max(1, len(v) - 1) / len(v)) for v, mm in zip(vals, m)]
            ax.errorbar(steps, m, yerr=se, color=color, marker="o", capsize=3, label=arm)
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds per arm: 0 .. N-1 (default 3)")
    ap.add_argument("--seed", type=int, action="append", help="run only these seeds (repeatable; e.g. one process per seed)")
    ap.add_argument("--arm", choices=["base", "repa"], action="append", help="run only this arm (repeatable; default both)")
    ap.add_argument("--every", type=int, default=150, help="steps between judged checkpoints (default 150)")
    ap.add_argument("--per-class", type=int, default=50, help="samples per class per judgement (default 50)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--repa", default="", help="field=value,... overrides of the REPA arm (e.g. repa_coeff=1.0)")
    ap.add_argument("--json", help="append one JSON line per (arm, seed, step) to this file")
    ap.add_argument("--from-json", metavar="FILE", help="no training: the table (and --plot) of rows saved by --json")
    ap.add_argument("--plot", metavar="PNG", help="quality against step, mean ± s.e. per arm")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        print_table(rows)
        if args.plot:
            plot(rows, args.plot)
        return 0
    torch.set_num_threads(args.threads)
    clf, held = svc_judge()
    print(f"# torch {torch.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"SVC held-out accuracy on real digits {held:.4f}; REPA arm overrides {args.repa or 'none'}", flush=True)
    rows = []
    for seed in args.seed or range(args.seeds):
        for arm in args.arm or ("base", "repa"):
            cfg, mc, run_dir, wall = train_arm(arm, parse_variant(args.repa), seed, args.every, args.threads)
            for row in judge(cfg, mc, run_dir, clf, args.per_class):
                row = {"arm": arm, "seed": seed, "train_wall_s": round(wall, 1), **row}
                print(json.dumps(row), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
                rows.append(row)
    print_table(rows)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
