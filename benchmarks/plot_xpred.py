"""Quality against patch size, velocity vs x-prediction, from `bench_demo.py --json` rows
(docs/training.md "x-prediction"): mean and spread over seeds of the classifier-feature FD (guided)
and the SVC accuracy (unguided), one line per prediction; prints the table as Markdown.

    python benchmarks/plot_xpred.py benchmarks/results/xpred_patch.jsonl docs/img/xpred_patch.png
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def rows_by_arm(path: str) -> dict:
    groups = defaultdict(list)
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            o = r["overrides"]
            arm = "x-prediction, loss on v" if o.get("prediction") == "data" else "velocity"
            arm += f", width {o.get('hidden_size', 128)}"
            groups[(arm, int(o["patch_size"]))].append(r)
    return groups


def main(src: str, out: str) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = rows_by_arm(src)
    print("| prediction | patch | tokens | token dims | seeds | feature FD (zeta = 2) | SVC accuracy, unguided | "
          "SVC accuracy, zeta = 2 | train CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for arm in sorted({a for a, _ in groups}, key=lambda a: ("width 32" in a, a)):
        marker = "s" if arm.startswith("x-") else "o"
        style = "--" if "width 32" in arm else "-"
        patches = sorted(p for a, p in groups if a == arm)
        stats = {"feature_fid": [], "svc_acc_cfg1": []}
        for p in patches:
            rs = groups[(arm, p)]
            cells = []
            for key in ("feature_fid", "svc_acc_cfg1", "svc_acc_cfg2", "train_cpu_s"):
                v = [r[key] for r in rs]
                sd = statistics.stdev(v) if len(v) > 1 else 0.0
                cells.append(f"{statistics.mean(v):.3g} ± {sd:.2g}" if key != "train_cpu_s" else f"{statistics.mean(v):.0f}")
                if key in stats:
                    stats[key].append((statistics.mean(v), sd))
            side = 8 // p
            print(f"| {arm} | {p} | {side * side} | {p * p} | {len(rs)} | " + " | ".join(cells) + " |")
        for ax, key in zip(axes, ("feature_fid", "svc_acc_cfg1")):
            ax.errorbar(patches, [m for m, _ in stats[key]], yerr=[s for _, s in stats[key]], marker=marker,
                        linestyle=style, capsize=3, label=arm)
    axes[0].set_ylabel("classifier-feature FD (guided, lower is better)")
    axes[1].set_ylabel("SVC accuracy, unguided")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks([2, 4, 8], ["2", "4", "8"])
        ax.set_xlabel("patch size (8x8 digits; 8 = one token)")
    axes[1].legend(fontsize=8, loc="center right")
    fig.suptitle("digits demo (8x8), 300 steps: mean ± sd over seeds; width = hidden size")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
