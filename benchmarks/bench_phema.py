"""Post-hoc EMA on the embedded demo: does a reconstructed EMA length beat the demo's fixed EMA?

Each seed trains the digits demo (`sit train` defaults, one thread) with power-function EMAs of
sigma_rel 0.05 and 0.10 tracked and snapshotted every ``--every`` steps, then judges the final
ordinary EMA (decay 0.999 with warm-up) and the post-hoc reconstructions at the final step for
each ``--sigma`` with the independent SVC of benchmarks/bench_demo.py (share of class-conditional
samples assigned to their class, cfg 1 and the demo's cfg 2) and the small-CNN feature FID (cfg 2).
Prints one line per (seed, weights) and a mean +- standard error table.

    python benchmarks/bench_phema.py --seeds 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_demo import draw, svc_judge  # noqa: E402


def main() -> int:
    from sit.config import ModelConfig, TrainConfig, from_dict
    from sit.data.embedded import load_embedded
    from sit.evaluate.classifier import quick_quality
    from sit.models.sit import SiT
    from sit.train import train
    from sit.train.phema import reconstruct
    from sit.train.recipes import DEMO_MODEL
    from sit.train.recipes import DEMO_TRAIN_600x128 as DEMO_TRAIN

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--every", type=int, default=25, help="steps between snapshots (default 25)")
    ap.add_argument("--sigma", type=float, action="append", help="sigma_rel to reconstruct (repeatable)")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--run", action="append", metavar="DIR", help="judge these finished runs instead of training (repeatable)")
    args = ap.parse_args()
    sigmas = args.sigma or [0.02, 0.05, 0.10, 0.15, 0.20, 0.25]
    torch.set_num_threads(args.threads)
    clf, held = svc_judge()
    print(f"# torch {torch.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; SVC held-out {held:.4f}",
          flush=True)
    real_x, real_y = load_embedded("digits", "all")
    y = torch.arange(10).repeat_interleave(args.per_class)
    table: dict[tuple[str, str], list[float]] = {}
    for seed in (range(len(args.run)) if args.run else range(args.seeds)):
        if args.run:
            from sit import checkpoints

            ema, meta = checkpoints.load(args.run[seed])
            cfg, mc, run_dir = from_dict(TrainConfig, dict(meta.train)), meta.model, args.run[seed]
        else:
            out = tempfile.mkdtemp(prefix=f"bench_phema_s{seed}_")
            cfg = TrainConfig(**{**DEMO_TRAIN, "threads": args.threads, "progress": False, "quality": False, "seed": seed,
                                 "phema_sigmas": (0.05, 0.10), "phema_every": args.every, "out": out})
            mc = ModelConfig(**{**DEMO_MODEL, "input_size": cfg.image_size, "in_channels": 1, "num_classes": 10})
            res = train(cfg, mc)
            ema, run_dir = res.ema, res.run_dir
        candidates = {f"ema {cfg.ema_decay}": ema}
        for s in sigmas:
            net = SiT(mc)
            net.load_state_dict(reconstruct(run_dir, s)[0])
            candidates[f"phema {s:g}"] = net.eval()
        for name, net in candidates.items():
            row = {"seed": cfg.seed, "weights": name}
            for scale in (1.0, cfg.cfg_scale):
                x = draw(net, cfg, mc, y, scale, seed=1234)
                row[f"svc_acc_cfg{scale:g}"] = float((clf.predict(x.flatten(1).numpy()) == y.numpy()).mean())
                if scale != 1.0:
                    row["feature_fid"] = float(quick_quality(real_x, real_y, x, y, seed=0)["fid"])
            print(json.dumps(row), flush=True)
            for k in ("svc_acc_cfg1", "svc_acc_cfg2", "feature_fid"):
                table.setdefault((name, k), []).append(row[k])

    def mse(v):
        m = sum(v) / len(v)
        se = math.sqrt(sum((a - m) ** 2 for a in v) / (len(v) - 1) / len(v)) if len(v) > 1 else float("nan")
        return f"{m:.3f} ± {se:.3f}"

    print(f"\nmean ± s.e. over {len(args.run) if args.run else args.seeds} run(s), final step")
    print("| weights | SVC acc. cfg 1 | SVC acc. cfg 2 | feature FID cfg 2 |")
    print("|---|---|---|---|")
    for name in dict.fromkeys(n for n, _ in table):
        print(f"| {name} | " + " | ".join(mse(table[(name, k)]) for k in ("svc_acc_cfg1", "svc_acc_cfg2", "feature_fid")) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
